#!/usr/bin/env bash
# The project's single test command:
#
#   scripts/test.sh [cargo test args...]
#
# Installs PostgreSQL 15 / RabbitMQ when missing, starts throwaway instances of
# both in a temporary directory (free ports, 127.0.0.1 only), runs
# `cargo test --all-targets "$@"` against them and always stops and deletes them
# afterwards (on success, failure and Ctrl-C). Exits with cargo's exit code.
# `--all-targets` includes the benchmarks benches/e2e.rs and benches/webhooks.rs, which cargo
# test runs in their smoke versions (a few hundred commands, 2 s of pgbench per scenario; 500
# webhooks): they check, never time.
#
# Tests see (from DIR/env, see scripts/services.sh):
#   PP_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:<port>/postgres (superuser, trust auth)
#   PP_TEST_AMQP_URL      amqp://guest:guest@127.0.0.1:<port>/%2f
#   PP_SERVICES_DIR       the services' directory
#   PP_SERVICES_SCRIPT    absolute path of scripts/services.sh, for outage tests:
#                         "$PP_SERVICES_SCRIPT" restart-rabbitmq "$PP_SERVICES_DIR"
#
# PP_LINT=1 also runs `cargo fmt --all -- --check` and
# `cargo clippy --all-targets -- -D warnings` before the tests (CI does).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SERVICES=$ROOT/scripts/services.sh
cd "$ROOT"

log() { printf '[test] %s\n' "$*" >&2; }

bash "$SERVICES" install

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pluspay-test.XXXXXX")
START_PID=

cleanup() {
    local rc=$?
    # Ignore further Ctrl-C/TERM (the commands below inherit that) so that the
    # cleanup itself can't be interrupted halfway and leave services running.
    trap - EXIT
    trap '' INT TERM HUP
    set +e
    if [ -n "$START_PID" ]; then
        # A start still in progress would race with stop: let it finish first.
        wait "$START_PID" 2>/dev/null
    fi
    bash "$SERVICES" stop "$DIR" || log "WARNING: stopping the services in $DIR failed"
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# RabbitMQ takes several seconds to boot: start the services in the background
# while the linters run and the tests compile.
log "starting PostgreSQL and RabbitMQ in $DIR"
bash "$SERVICES" start "$DIR" >"$DIR/start.log" 2>&1 &
START_PID=$!

if [ "${PP_LINT:-}" = 1 ]; then
    log "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    log "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
fi
if [ $# -eq 0 ]; then
    # Same artifacts as the `cargo test --all-targets` below, so it costs nothing extra.
    cargo test --all-targets --no-run
fi

start_rc=0
wait "$START_PID" || start_rc=$?
START_PID=
cat "$DIR/start.log" >&2
if [ "$start_rc" -ne 0 ]; then
    log "ERROR: could not start the test services (see above)"
    exit 1
fi

set -a
# shellcheck disable=SC1091
source "$DIR/env"
set +a
export PP_SERVICES_SCRIPT=$SERVICES

# With arguments that pick targets (--test X, --lib, ...), only those run; cargo would take the
# union with --all-targets.
targets=(--all-targets)
for arg in "$@"; do
    case $arg in --test|--test=*|--lib|--bins|--bin|--bin=*|--bench|--bench=*|--benches|--tests|--doc|--examples) targets=() ;; esac
done
log "cargo test ${targets[*]} $*"
rc=0
cargo test "${targets[@]}" "$@" || rc=$?
exit "$rc"
