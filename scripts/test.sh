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

# shellcheck source=scripts/services-session.sh
source "$ROOT/scripts/services-session.sh"
# Started in the background while the linters run and the tests compile.
services_begin test

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

services_ready
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
