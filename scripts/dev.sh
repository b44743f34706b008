#!/usr/bin/env bash
# Local quick start, one command:
#
#   scripts/dev.sh          install what is missing, start (or reuse) PostgreSQL on
#                           127.0.0.1:15432 and RabbitMQ on 127.0.0.1:5672 with their
#                           data under <repo>/.local/services, create database
#                           `pluspay`, run the migrations, then run the daemon
#                           (`cargo run --release -- run`, config/pluspay.toml).
#   scripts/dev.sh services the same, without running the daemon
#   scripts/dev.sh status   show whether the dev services are up
#   scripts/dev.sh stop     stop the dev services (data stays in .local/services;
#                           delete that directory for a clean slate)
#
# The services keep running after the daemon exits (Ctrl-C), and the next
# scripts/dev.sh reuses them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SERVICES=$ROOT/scripts/services.sh
DIR=$ROOT/.local/services
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=15432
AMQP_PORT=5672
DIST_PORT=25672   # RabbitMQ inter-node/CLI port (AMQP + 20000)
EPMD_PORT=14369   # private epmd, so a system-wide RabbitMQ/epmd on 4369 is left alone
DB=pluspay

log() { printf '[dev] %s\n' "$*" >&2; }
die() { printf '[dev] ERROR: %s\n' "$*" >&2; exit 1; }

pg_up() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
}

tcp_up() { # PORT
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

ensure_services() {
    bash "$SERVICES" install
    if [ -f "$DIR/env" ]; then
        if pg_up; then
            log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
        else
            bash "$SERVICES" start-postgres "$DIR"
        fi
        if tcp_up "$AMQP_PORT"; then
            log "RabbitMQ already running on 127.0.0.1:$AMQP_PORT"
        else
            bash "$SERVICES" start-rabbitmq "$DIR"
        fi
    else
        # Never started here (or a half-created directory without its env file).
        pg_up && die "something else already listens on 127.0.0.1:$PG_PORT; stop it first"
        tcp_up "$AMQP_PORT" && die "something else already listens on 127.0.0.1:$AMQP_PORT; stop it first"
        rm -rf "$DIR"
        mkdir -p "$DIR"
        bash "$SERVICES" start "$DIR" --pg-port "$PG_PORT" --amqp-port "$AMQP_PORT" \
            --dist-port "$DIST_PORT" --epmd-port "$EPMD_PORT"
    fi
    local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if [ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
        log "creating database $DB"
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB"
    fi
    log "PostgreSQL: postgres://postgres@127.0.0.1:$PG_PORT/$DB"
    log "RabbitMQ:   amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
}

cd "$ROOT"
case ${1:-run} in
    run)
        ensure_services
        log "cargo run --release -- migrate"
        cargo run --release -- migrate
        log "cargo run --release -- run"
        exec cargo run --release -- run
        ;;
    services)
        ensure_services
        ;;
    status)
        [ -f "$DIR/env" ] || { echo "dev services were never started"; exit 1; }
        exec bash "$SERVICES" status "$DIR"
        ;;
    stop)
        exec bash "$SERVICES" stop "$DIR"
        ;;
    -h | --help | help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        ;;
    *)
        die "unknown command: $1 (try: $0 --help)"
        ;;
esac
