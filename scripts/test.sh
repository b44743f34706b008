#!/usr/bin/env bash
# The project's single test command:
#
#   scripts/test.sh [cargo test args...]
#
# Installs PostgreSQL 15 / RabbitMQ / Prometheus / Chromium / PHP with php-amqplib when
# missing, starts throwaway instances of the first two in a temporary directory (free ports,
# 127.0.0.1 only), runs `cargo test --all-targets "$@"` against them and always stops and
# deletes them afterwards (on success, failure and Ctrl-C). Exits with cargo's exit code.
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
#   PP_CLUSTER_DIR        (the whole suite only) a local cluster of scripts/cluster.sh, up,
#                         for the cluster fault test
#
# PP_LINT=1 also runs `cargo fmt --all -- --check` (the fuzz targets' too),
# `cargo clippy --all-targets -- -D warnings` and `cargo deny --offline check licenses bans
# sources` (installing cargo-deny when missing) before the tests (CI does).
# The whole suite (no arguments) ends with `scripts/fuzz.sh smoke`: each fuzz target for
# PP_FUZZ_SMOKE_SECONDS (10) from its corpus; their build runs at the lowest priority beside
# everything else from the start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CARGO_DENY_VERSION=0.20.2
FUZZ_SMOKE_SECONDS=${PP_FUZZ_SMOKE_SECONDS:-10}
SERVICES=$ROOT/scripts/services.sh
cd "$ROOT"

log() { printf '[test] %s\n' "$*" >&2; }

# The alert rules' test (tests/it/alerts.rs) runs promtool and a Prometheus of its own on free
# ports. Installed like PostgreSQL and RabbitMQ (apt_install keeps the packaged service from
# starting); without recommends, which would add a node exporter serving on port 9100.
# The operator console's browser test (tests/it/console.rs) drives Debian's Chromium through
# its ChromeDriver; both are installed here too, in the same apt-get run, with a Chinese font.
MISSING_PACKAGES=()
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    MISSING_PACKAGES+=(prometheus)
fi
command -v chromium >/dev/null 2>&1 || MISSING_PACKAGES+=(chromium)
command -v chromedriver >/dev/null 2>&1 || MISSING_PACKAGES+=(chromium-driver)
# A Chinese font, so that the screenshots show the wallet API's messages rather than boxes.
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || MISSING_PACKAGES+=(fonts-wqy-zenhei)
# The PHP client's tests (tests/it/php_client.rs) run clients/php with Debian's PHP 8.2 and
# php-amqplib (no Composer download here).
command -v php >/dev/null 2>&1 || MISSING_PACKAGES+=(php-cli)
[ -e /usr/share/php/PhpAmqpLib/autoload.php ] || MISSING_PACKAGES+=(php-amqplib)
if [ "${#MISSING_PACKAGES[@]}" -gt 0 ]; then
    (
        LOG_PREFIX="test"
        # shellcheck source=scripts/lib/common.sh
        source "$ROOT/scripts/lib/common.sh"
        apt_install --no-install-recommends "${MISSING_PACKAGES[@]}"
        [ "$APT_RC" -eq 0 ] || exit "$APT_RC"   # apt-get has said why
        for tool in promtool chromium chromedriver php; do
            command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after apt-get install"
        done
        [ -e /usr/share/php/PhpAmqpLib/autoload.php ] || die "php-amqplib is still missing after apt-get install"
    )
fi

# shellcheck source=scripts/services-session.sh
source "$ROOT/scripts/services-session.sh"
# Started in the background while the linters run and the tests compile.
services_begin test

# The whole suite includes the cluster fault test: its cluster (scripts/cluster.sh) boots in the
# background too, and the test takes it over through PP_CLUSTER_DIR. A run of a few tests
# leaves it out; the cluster test, run alone, brings up its own.
CLUSTER_DIR=
CLUSTER_PID=
if [ $# -eq 0 ]; then
    # `up` installs what is missing first (pg_auto_failover's packages).
    CLUSTER_DIR="$DIR/cluster"
    # The cluster's users (postgres, rabbitmq) must be able to enter $DIR, which
    # services.sh, starting at the same time, opens too.
    chmod 755 "$DIR"
    log "starting the local cluster in $CLUSTER_DIR"
    bash "$ROOT/scripts/cluster.sh" up "$CLUSTER_DIR" >"$DIR/cluster-up.log" 2>&1 &
    CLUSTER_PID=$!
    cluster_cleanup() {
        local rc=$?
        # errexit is still on in an EXIT trap: without this, `(exit "$rc")` below would end the
        # script after a failed run before the services are stopped.
        set +e
        if [ -n "$CLUSTER_PID" ]; then
            wait "$CLUSTER_PID" 2>/dev/null
        fi
        bash "$ROOT/scripts/cluster.sh" down "$CLUSTER_DIR" >/dev/null 2>&1 || true
        # services_cleanup stops the services and removes $DIR, the cluster's too.
        (exit "$rc")
        services_cleanup
    }
    trap cluster_cleanup EXIT
fi

# The whole suite ends with the fuzz targets' smoke run. Their build (its own target
# directory, every crate instrumented) starts now at the lowest priority, so that it takes the
# cycles the linters, the tests' build and the tests leave idle rather than adding its minutes.
FUZZ_BUILD_PID=
if [ $# -eq 0 ]; then
    log "building the fuzz targets in the background (log: $DIR/fuzz-build.log)"
    # Its own process group, so that a failed run can stop the whole build. A new session is
    # also a new scheduling autogroup, which competes with the others as an equal whatever the
    # nice of its processes: the autogroup itself is niced too. setsid forks when it starts as
    # a group leader (as under a shell with job control), so the new group's id is written down
    # by the session's own first process.
    BACKGROUND_GROUP_FILE="$DIR/fuzz-build.group"   # stopped by the clean-up if still building
    setsid -w bash -c 'echo $$ >"$1"; echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 bash "$0" smoke-build' \
        "$ROOT/scripts/fuzz.sh" "$BACKGROUND_GROUP_FILE" >"$DIR/fuzz-build.log" 2>&1 &
    FUZZ_BUILD_PID=$!
fi

if [ "${PP_LINT:-}" = 1 ]; then
    log "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    (cd fuzz && cargo fmt --all -- --check)
    log "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
    # Licenses, banned crates and sources (deny.toml). The advisory database cannot be fetched
    # here, so advisories are not checked (README, "Dependency policy"). An unoptimized build
    # of cargo-deny takes a third of the time of an optimized one and checks as fast.
    if ! cargo deny --version >/dev/null 2>&1; then
        log "installing cargo-deny $CARGO_DENY_VERSION"
        cargo install --locked --debug cargo-deny --version "$CARGO_DENY_VERSION"
    fi
    log "cargo deny --offline check licenses bans sources"
    cargo deny --offline check licenses bans sources
fi
if [ $# -eq 0 ]; then
    # Same artifacts as the `cargo test --all-targets` below, so it costs nothing extra.
    cargo test --all-targets --no-run
fi

services_ready
export PP_SERVICES_SCRIPT=$SERVICES
if [ -n "$CLUSTER_PID" ]; then
    cluster_rc=0
    wait "$CLUSTER_PID" || cluster_rc=$?
    CLUSTER_PID=
    cat "$DIR/cluster-up.log" >&2
    if [ "$cluster_rc" -ne 0 ]; then
        log "ERROR: could not start the local cluster (see above)"
        exit 1
    fi
    export PP_CLUSTER_DIR=$CLUSTER_DIR
fi

# With arguments that pick targets (--test X, --lib, ...), only those run; cargo would take the
# union with --all-targets.
targets=(--all-targets)
for arg in "$@"; do
    case $arg in --test|--test=*|--lib|--bins|--bin|--bin=*|--bench|--bench=*|--benches|--tests|--doc|--examples) targets=() ;; esac
done
log "cargo test ${targets[*]} $*"
rc=0
cargo test "${targets[@]}" "$@" || rc=$?
if [ -n "$FUZZ_BUILD_PID" ] && [ "$rc" -eq 0 ]; then
    # A short run of each fuzz target from its corpus (fuzz/).
    fuzz_built=0
    wait "$FUZZ_BUILD_PID" || fuzz_built=$?
    BACKGROUND_GROUP_FILE=
    if [ "$fuzz_built" -ne 0 ]; then
        tail -n 40 "$DIR/fuzz-build.log" >&2
        log "ERROR: the fuzz targets did not build (see above)"
        exit 1
    fi
    log "scripts/fuzz.sh smoke $FUZZ_SMOKE_SECONDS"
    bash "$ROOT/scripts/fuzz.sh" smoke "$FUZZ_SMOKE_SECONDS" || rc=$?
fi
exit "$rc"
