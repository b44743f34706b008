#!/usr/bin/env bash
# The benchmarks (docs/BENCHMARKS.md), one command each:
#
#   scripts/bench.sh [--scenario uniform|hot|mixed|all] [--commands N] [--publishers P]
#                    [--rate R] [--smoke] [--pgbench-secs S] [--pgbench-clients C] ...
#       the end-to-end benchmark of the worker (benches/e2e.rs)
#   scripts/bench.sh --webhooks [--webhooks N] [--connections C] [--bad B] [--smoke]
#       the webhook listener's benchmark (benches/webhooks.rs)
#
# Installs PostgreSQL 15 / RabbitMQ when missing, starts throwaway instances of both in a
# temporary directory (scripts/services.sh: fsync and synchronous_commit on), builds the
# release binary and the bench, prints the machine, runs
# `cargo bench --bench e2e|webhooks -- "$@"` against the services (PP_TEST_DATABASE_URL,
# PP_TEST_AMQP_URL) and always stops and deletes them afterwards. Exits with the bench's code.
# PLUSPAY_* variables in the environment are passed on to the process under test.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SERVICES=$ROOT/scripts/services.sh
cd "$ROOT"

BENCH=e2e
if [ "${1:-}" = "--webhooks" ]; then
    BENCH=webhooks
    shift
fi

log() { printf '[bench] %s\n' "$*" >&2; }

# shellcheck source=scripts/services-session.sh
source "$ROOT/scripts/services-session.sh"
services_begin bench

log "cargo build --release (the process under test) and cargo bench --bench $BENCH --no-run"
cargo build --release --bin pluspay
cargo bench --bench "$BENCH" --no-run

services_ready

machine() {
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
        "$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
    echo "versions: $(dpkg-query -W -f '${Package} ${Version}; ' postgresql-15 rabbitmq-server erlang-base 2>/dev/null)" \
        "$(rustc --version)"
}
machine
echo "before: $(uptime)"
rc=0
cargo bench --bench "$BENCH" -- "$@" || rc=$?
echo "after: $(uptime)"
exit "$rc"
