//! systemd integration (`Type=notify`): readiness, watchdog pings, and stopping. Outside
//! systemd (no NOTIFY_SOCKET) every call does nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

pub fn ready() {
    notify(NotifyState::Ready);
}

pub fn stopping() {
    notify(NotifyState::Stopping);
}

fn notify(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Pings the watchdog at half its interval while the runtime is alive; a hung process stops
/// pinging and systemd restarts it.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => notify(NotifyState::Watchdog),
            }
        }
    });
}
