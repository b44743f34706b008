#!/usr/bin/env bash
# The benchmarks (docs/BENCHMARKS.md), one command each:
#
#   scripts/bench.sh [--scenario uniform|hot|mixed|all] [--commands N] [--publishers P]
#                    [--rate R] [--smoke] [--pgbench-secs S] [--pgbench-clients C] ...
#       the end-to-end benchmark of the worker (benches/e2e.rs)
#   scripts/bench.sh --scale [--scale-wallets N] [--scale-transfers N] [--big-wallet-orders N]
#                    [--scale-copy] [other e2e options...]
#       the same scenarios on the small ledger and on a big one built once (by default
#       1,000,000 wallets, 5,000,000 transfers of history, wallet 1 with 100,000 orders), side
#       by side, with the periodic check, orders.list/get, the full audit, retention and bytes
#       per transfer measured on it (benches/e2e/scale.rs; 22 min and 6.7 GiB of disk on the
#       2-CPU machine of docs/BENCHMARKS.md; --smoke: tiny, 41 s). An e2e option like the
#       others: passed on as it is
#   scripts/bench.sh --webhooks [--webhooks N] [--connections C] [--bad B] [--smoke]
#       the webhook listener's benchmark (benches/webhooks.rs)
#   scripts/bench.sh --cluster [e2e options...]
#       the end-to-end benchmark on the local cluster of scripts/cluster.sh (three RabbitMQ
#       nodes, a PostgreSQL primary with a synchronous standby): the worker gets every node in
#       PLUSPAY_AMQP_URLS, the bench publishes to node 1, and pgbench runs on the primary
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
CLUSTER=
case "${1:-}" in
    --webhooks) BENCH=webhooks; shift ;;
    --cluster) CLUSTER=1; shift ;;
esac

log() { printf '[bench] %s\n' "$*" >&2; }

if [ -n "$CLUSTER" ]; then
    CLUSTER_SCRIPT=$ROOT/scripts/cluster.sh
    bash "$CLUSTER_SCRIPT" install
    CLUSTER_DIR=$(mktemp -u "${TMPDIR:-/tmp}/pluspay-bench-cluster.XXXXXX")
    cluster_cleanup() {
        local rc=$?
        trap - EXIT
        trap '' INT TERM HUP
        [ -n "${CLUSTER_PID:-}" ] && wait "$CLUSTER_PID" 2>/dev/null
        bash "$CLUSTER_SCRIPT" down "$CLUSTER_DIR" || log "WARNING: stopping the cluster failed"
        rm -rf "$CLUSTER_DIR"
        exit "$rc"
    }
    trap cluster_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "starting the cluster in $CLUSTER_DIR"
    bash "$CLUSTER_SCRIPT" up "$CLUSTER_DIR" >"${CLUSTER_DIR}.log" 2>&1 &
    CLUSTER_PID=$!
else
    # shellcheck source=scripts/services-session.sh
    source "$ROOT/scripts/services-session.sh"
    # Where PostgreSQL's time goes, per statement (benches/e2e.rs prints it).
    export PP_PG_STAT_STATEMENTS=1
    services_begin bench
fi

log "cargo build --release (the process under test) and cargo bench --bench $BENCH --no-run"
cargo build --release --bin pluspay
cargo bench --bench "$BENCH" --no-run

if [ -n "$CLUSTER" ]; then
    cluster_rc=0
    wait "$CLUSTER_PID" || cluster_rc=$?
    CLUSTER_PID=
    cat "${CLUSTER_DIR}.log" >&2
    rm -f "${CLUSTER_DIR}.log"
    [ "$cluster_rc" -eq 0 ] || { log "ERROR: the cluster did not start"; exit 1; }
    # shellcheck disable=SC1091
    source "$CLUSTER_DIR/env"
    export PP_TEST_DATABASE_URL=$PP_CLUSTER_DATABASE_URL
    export PP_TEST_AMQP_URL=$PP_CLUSTER_AMQP_URL_1
    export PLUSPAY_AMQP_URLS="[$PP_CLUSTER_AMQP_URLS]"
    bash "$CLUSTER_SCRIPT" status "$CLUSTER_DIR"
else
    services_ready
fi

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
