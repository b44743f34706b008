#!/usr/bin/env bash
# Throwaway local CLUSTER for pluspay tests and development, on 127.0.0.1 only: three RabbitMQ
# nodes joined in one cluster, and PostgreSQL 15 under pg_auto_failover (a monitor, a primary
# and a synchronous standby). Everything lives under DIR.
#
#   cluster.sh install
#       apt-get install what is missing (postgresql-15, rabbitmq-server,
#       postgresql-15-auto-failover, pg-auto-failover-cli, python3).
#   cluster.sh up DIR
#       DIR must not exist. Start the 3 RabbitMQ nodes (joined, cluster_partition_handling =
#       pause_minority), the pg_auto_failover monitor and 2 PostgreSQL nodes; return once node 1
#       is "primary" and node 2 "secondary" (synchronous_standby_names set on the primary).
#       Writes DIR/env and prints the settings to use (amqp.urls, database.url) on stdout.
#       On failure everything started is stopped again (as by `down`) and DIR is left for its logs.
#   cluster.sh down DIR
#       Stop everything (tolerates parts that are already stopped). DIR is left in place.
#   cluster.sh status DIR
#       One line per part: "rabbitN up|down ...", "monitor up|down ...", "pgN up|down STATE ..."
#       and "synchronous_standby_names '...' (on pgN)"; exit 0 only if all parts are up.
#   cluster.sh kill-rabbit DIR N       SIGKILL RabbitMQ node N (1..3) and return at once.
#   cluster.sh start-rabbit DIR N      Start node N again with its data; return once it is running
#                                      and back in the cluster.
#   cluster.sh kill-pg DIR N           SIGKILL PostgreSQL node N's (1|2) pg_autoctl and all of its
#                                      postgres processes; return at once.
#   cluster.sh start-pg DIR N          Start node N's pg_autoctl again (it rejoins as a standby if
#                                      the other node became primary); return once the monitor
#                                      reports it secondary or primary.
#   cluster.sh pg-primary DIR          Print the number (1|2) of the node that is the primary (or
#                                      wait_primary) and accepts writes; nothing and exit 1 if none.
#   cluster.sh queue-leader DIR QUEUE  Print the number (1..3) of the node leading quorum queue
#                                      QUEUE in vhost /; exit 1 if unknown.
#   cluster.sh rabbitmqctl DIR N ARGS...
#       Run rabbitmqctl against node N (same user, env and cookie as the node).
#
# DIR/env is a sourceable file exporting PP_CLUSTER_DIR, PP_CLUSTER_AMQP_URLS (comma-separated,
# node 1 first), PP_CLUSTER_AMQP_URL_{1,2,3}, PP_CLUSTER_DATABASE_URL (both nodes,
# target_session_attrs=read-write), PP_CLUSTER_PG_URL_{1,2}, PP_CLUSTER_MONITOR_URL and the ports.
# Progress goes to stderr; stdout only carries the settings printed by `up`, and the output of
# status, pg-primary, queue-leader and rabbitmqctl.
# Timeout for each wait: PP_CLUSTER_TIMEOUT seconds (default 180). Runs as root (PostgreSQL as
# user postgres, RabbitMQ as user rabbitmq) or as any other user (everything as that user).
set -euo pipefail

# Helpers and paths shared with services.sh (log, die, usage, ports, processes, RabbitMQ env...),
# found next to this file wherever it is run from, through a symlink too.
LOG_PREFIX=cluster
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/lib/common.sh"

PG_CTL=$PG_BIN/pg_ctl
PGAF_LIB=/usr/lib/postgresql/15/lib/pgautofailover.so
TIMEOUT=${PP_CLUSTER_TIMEOUT:-180}   # seconds to wait for a part to become ready
RABBITS=(1 2 3)
PGS=(1 2)
NPORTS=20   # one contiguous block: epmd, 3 amqp, 3 dist, monitor, 2 pg, 10 CLI dist ports

# ---------------------------------------------------------------- install
missing_packages() { # prints the Debian packages still to install
    [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/pg_isready" ] && [ -x "$PG_BIN/psql" ] \
        || echo postgresql-15
    [ -x "$RMQ_BIN/rabbitmq-server" ] || echo rabbitmq-server
    [ -f "$PGAF_LIB" ] || echo postgresql-15-auto-failover
    command -v pg_autoctl >/dev/null 2>&1 || echo pg-auto-failover-cli
    command -v python3 >/dev/null 2>&1 || echo python3
    return 0
}

cmd_install() {
    local need=()
    read -r -a need <<<"$(missing_packages | tr '\n' ' ')" || true
    if [ ${#need[@]} -eq 0 ]; then
        log "postgresql 15, pg_auto_failover, rabbitmq-server and python3 are already installed"
        return 0
    fi
    apt_install "${need[@]}"
    [ "$APT_RC" -eq 0 ] || die "apt-get install ${need[*]} failed"
    local still
    still=$(missing_packages | tr '\n' ' ')
    [ -z "$still" ] || die "still missing after apt-get install: $still"
}

check_installed() {
    local still
    still=$(missing_packages | tr '\n' ' ')
    [ -z "$still" ] || die "missing: $still(run: $0 install)"
}

# ---------------------------------------------------------------- helpers
abs_path() { # PATH (need not exist; its parent must) -> absolute path
    local d b
    d=$(dirname -- "$1"); b=$(basename -- "$1")
    d=$(cd "$d" && pwd -P) || return 1
    printf '%s/%s\n' "${d%/}" "$b"
}

# Serialise control commands on one DIR: up and down take DIR/.lock, start-rabbit DIR/.lock-rabbit
# and start-pg DIR/.lock-pg (so that a RabbitMQ node can be restarted while a PostgreSQL node
# rejoins). fd 9 holds the lock; daemons are started with 9>&-.
lock_dir() { # DIR [PART]
    local f=$1/.lock${2:+-$2}
    exec 9>>"$f"
    flock -w 900 9 || die "timed out waiting for the lock $f"
}

# Live (non-zombie) processes matching all the given criteria, one pid a line:
#   sid=S (session), ppid=P, comm=REGEX, env=NAME=VALUE (exact entry in /proc/PID/environ),
#   envprefix=NAME=PREFIX (an entry starting with it), uid=UID (owner).
# Several ppid= (or uid=) criteria match any of them.
procscan() {
    python - "$@" <<'EOF'
import os, re, sys
crit = [a.split("=", 1) for a in sys.argv[1:]]
ppids = {c[1] for c in crit if c[0] == "ppid"}
uids = {int(c[1]) for c in crit if c[0] == "uid"}
me = os.getpid()
for d in os.listdir("/proc"):
    if not d.isdigit() or int(d) == me:
        continue
    try:
        with open("/proc/%s/stat" % d) as f:
            st = f.read()
        comm = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        state, ppid, sid = fields[0], fields[1], fields[3]
        if state in ("Z", "X", "x"):
            continue
        if ppids and ppid not in ppids:
            continue
        if uids and os.stat("/proc/%s" % d).st_uid not in uids:
            continue
        env = None
        ok = True
        for k, v in crit:
            if k == "sid" and sid != v:
                ok = False
            elif k == "comm" and not re.search(v, comm):
                ok = False
            elif k in ("env", "envprefix"):
                if env is None:
                    with open("/proc/%s/environ" % d, "rb") as f:
                        env = f.read().decode("utf-8", "replace").split("\0")
                if k == "env" and v not in env:
                    ok = False
                if k == "envprefix" and not any(e.startswith(v) for e in env):
                    ok = False
            if not ok:
                break
        if ok:
            print(d)
    except (OSError, ValueError):
        continue
EOF
}

# ---------------------------------------------------------------- env / layout
load_env() { # DIR -> sources DIR/env, sets globals
    local dir=$1
    [ -d "$dir" ] || die "no such directory: $dir"
    [ -f "$dir/env" ] || die "$dir/env not found (was '$0 up $dir' run?)"
    # shellcheck disable=SC1091
    source "$dir/env"
    DIR=$PP_CLUSTER_DIR
    PORT_BASE=$PP_CLUSTER_PORT_BASE
    set_layout
}

set_layout() { # from DIR and PORT_BASE
    PG_USER=$(svc_user postgres)
    RMQ_USER=$(svc_user rabbitmq)
    EPMD_PORT=$PORT_BASE
    EPMD_DIR=$DIR/epmd
    EPMD_PID_FILE=$EPMD_DIR/epmd.pid
    CTL_PORT_MIN=$((PORT_BASE + 10))
    CTL_PORT_MAX=$((PORT_BASE + NPORTS - 1))
    MONITOR_PORT=$((PORT_BASE + 7))
    MONITOR_URL="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"
    # The CLI tools' own distribution ports, inside the block too (for the shared rmq_env).
    RMQ_ENV_EXTRA=(RABBITMQ_CTL_DIST_PORT_MIN="$CTL_PORT_MIN" RABBITMQ_CTL_DIST_PORT_MAX="$CTL_PORT_MAX")
}

amqp_port() { echo $((PORT_BASE + $1)); }        # N -> AMQP port of rabbit N
dist_port() { echo $((PORT_BASE + 3 + $1)); }    # N -> distribution port of rabbit N
pg_port() { echo $((PORT_BASE + 7 + $1)); }      # N (0 = monitor) -> PostgreSQL port
nodename() { echo "pp${PORT_BASE}r$1@localhost"; }
amqp_url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
pg_url() { echo "postgres://postgres@127.0.0.1:$(pg_port "$1")/pluspay"; }

kv() { # NAME VALUE -> a sourceable export line (single-quoted: readable by non-shell parsers too)
    case $2 in *"'"*) die "unexpected quote in $1" ;; esac
    printf "export %s='%s'\n" "$1" "$2"
}

write_env() {
    local f=$DIR/env.tmp n urls=() pghosts=()
    for n in "${RABBITS[@]}"; do urls+=("$(amqp_url "$n")"); done
    for n in "${PGS[@]}"; do pghosts+=("127.0.0.1:$(pg_port "$n")"); done
    {
        echo "# Generated by scripts/cluster.sh; source this file."
        kv PP_CLUSTER_DIR "$DIR"
        kv PP_CLUSTER_PORT_BASE "$PORT_BASE"
        kv PP_CLUSTER_PORT_COUNT "$NPORTS"
        kv PP_CLUSTER_AMQP_URLS "$(IFS=,; echo "${urls[*]}")"
        for n in "${RABBITS[@]}"; do
            kv "PP_CLUSTER_AMQP_URL_$n" "$(amqp_url "$n")"
            kv "PP_CLUSTER_AMQP_PORT_$n" "$(amqp_port "$n")"
            kv "PP_CLUSTER_RABBIT_DIST_PORT_$n" "$(dist_port "$n")"
            kv "PP_CLUSTER_RABBIT_NODENAME_$n" "$(nodename "$n")"
            kv "PP_CLUSTER_RABBIT_LOG_$n" "$DIR/rabbit$n/log/$(nodename "$n").log"
        done
        kv PP_CLUSTER_RABBIT_EPMD_PORT "$EPMD_PORT"
        kv PP_CLUSTER_RABBIT_CTL_DIST_PORTS "$CTL_PORT_MIN-$CTL_PORT_MAX"
        kv PP_CLUSTER_DATABASE_URL \
            "postgres://postgres@$(IFS=,; echo "${pghosts[*]}")/pluspay?target_session_attrs=read-write&connect_timeout=2"
        for n in "${PGS[@]}"; do
            kv "PP_CLUSTER_PG_URL_$n" "$(pg_url "$n")"
            kv "PP_CLUSTER_PG_PORT_$n" "$(pg_port "$n")"
            kv "PP_CLUSTER_PG_DATA_$n" "$DIR/pg$n/data"
        done
        kv PP_CLUSTER_MONITOR_URL "$MONITOR_URL"
        kv PP_CLUSTER_MONITOR_PORT "$MONITOR_PORT"
    } >"$f"
    chmod 644 "$f"
    mv -f "$f" "$DIR/env"
}

print_settings() {
    local n urls=() pghosts=()
    for n in "${RABBITS[@]}"; do urls+=("\"$(amqp_url "$n")\""); done
    for n in "${PGS[@]}"; do pghosts+=("127.0.0.1:$(pg_port "$n")"); done
    local joined
    joined=$(IFS=,; echo "${urls[*]}")
    printf 'amqp.urls    = [%s]\n' "${joined//,/, }"
    printf 'database.url = "postgres://postgres@%s/pluspay?target_session_attrs=read-write&connect_timeout=2"\n' \
        "$(IFS=,; echo "${pghosts[*]}")"
}

# ---------------------------------------------------------------- RabbitMQ
rmq_set() { # N -> per-node globals
    RN=$1
    case $RN in 1 | 2 | 3) ;; *) die "RabbitMQ node must be 1, 2 or 3 (got '$RN')" ;; esac
    RMQ_DIR=$DIR/rabbit$RN
    RMQ_HOME=$RMQ_DIR/home
    RMQ_LOG_DIR=$RMQ_DIR/log
    RMQ_PID_FILE=$RMQ_DIR/rabbitmq.pid
    RMQ_LAUNCHER_PID_FILE=$RMQ_DIR/launcher.pid
    NODENAME=$(nodename "$RN")
    AMQP_PORT=$(amqp_port "$RN")
    DIST_PORT=$(dist_port "$RN")
}

rmq_init() { # COOKIE
    local cookie=$1
    mkdir -p "$RMQ_DIR" "$RMQ_HOME" "$RMQ_LOG_DIR" "$RMQ_DIR/mnesia"
    # No plugins: in particular no stream plugin, so no stream listener to place.
    echo '[].' >"$RMQ_DIR/enabled_plugins"
    : >"$RMQ_DIR/rabbitmq-env.conf"
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# pluspay local cluster node $RN of 3 (scripts/cluster.sh)
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
cluster_name = pluspay-$PORT_BASE
cluster_partition_handling = pause_minority
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
EOF
    echo '[].' >"$RMQ_DIR/advanced.config"
    printf '%s' "$cookie" >"$RMQ_HOME/.erlang.cookie"
    chmod 400 "$RMQ_HOME/.erlang.cookie"
    if is_root; then
        chown -R "$RMQ_USER:" "$RMQ_DIR"
    fi
}

epmd_env() {
    EPMD_ENV=(PATH="$SYS_PATH" LANG=C.UTF-8 LC_ALL=C.UTF-8 HOME="$EPMD_DIR"
        ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1)
}

epmd_ready() {
    epmd_env
    runas "$RMQ_USER"
    "${RUNAS[@]}" env -i "${EPMD_ENV[@]}" epmd -port "$EPMD_PORT" -names >/dev/null 2>&1
}

# One epmd for the whole cluster: the nodes find each other through it.
epmd_start() {
    if [ -f "$EPMD_PID_FILE" ] && pid_alive "$(cat "$EPMD_PID_FILE")" '^epmd' && epmd_ready; then
        return 0
    fi
    if epmd_ready; then
        return 0   # started by a CLI tool or node with our ERL_EPMD_PORT
    fi
    port_in_use "$EPMD_PORT" && die "epmd port 127.0.0.1:$EPMD_PORT is in use by another process"
    epmd_env
    runas "$RMQ_USER"
    (cd "$EPMD_DIR" && exec setsid "${RUNAS[@]}" env -i "${EPMD_ENV[@]}" \
        epmd -port "$EPMD_PORT" -address 127.0.0.1 -relaxed_command_check \
        </dev/null >>"$EPMD_DIR/epmd.log" 2>&1 9>&-) &
    echo $! >"$EPMD_PID_FILE"
    local deadline=$((SECONDS + 15))
    until epmd_ready; do
        if [ $SECONDS -ge "$deadline" ]; then
            tail_log "$EPMD_DIR/epmd.log"
            die "epmd did not start on 127.0.0.1:$EPMD_PORT"
        fi
        sleep 0.05
    done
}

epmd_stop() {
    local pids pid
    pids=$({ procscan comm='^epmd$' env="ERL_EPMD_PORT=$EPMD_PORT"; \
        pid=$(cat "$EPMD_PID_FILE" 2>/dev/null || true); \
        pid_alive "$pid" '^epmd' && echo "$pid"; } | sort -u || true)
    [ -n "$pids" ] || { rm -f "$EPMD_PID_FILE"; return 0; }
    # epmd ignores SIGTERM; ask it to quit (it runs with -relaxed_command_check), else SIGKILL.
    epmd_env
    runas "$RMQ_USER"
    "${RUNAS[@]}" env -i "${EPMD_ENV[@]}" epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    for pid in $pids; do wait_pid_exit "$pid" 1 || kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$EPMD_PID_FILE"
}

rmq_node_pids() { # beam processes of node RN
    local pid
    {
        pid=$(cat "$RMQ_PID_FILE" 2>/dev/null || true)
        if pid_alive "$pid" 'beam'; then echo "$pid"; fi
        procscan comm='^beam' env="HOME=$RMQ_HOME" env=PP_CLUSTER_ROLE=rabbit-node
    } | sort -u
}

# Start node RN (any data it has) and wait until it boots: AMQP answers and
# `rabbitmqctl await_startup` (retried: it fails until the node is registered with epmd).
rmq_start() {
    local t0; t0=$(now)
    [ -d "$RMQ_DIR/mnesia" ] || die "no RabbitMQ data directory at $RMQ_DIR"
    if [ -n "$(rmq_node_pids)" ] && amqp_ready "$AMQP_PORT"; then
        log "rabbit$RN: already running on 127.0.0.1:$AMQP_PORT"
        return 0
    fi
    local p
    for p in "$AMQP_PORT" "$DIST_PORT"; do
        if port_in_use "$p"; then
            die "rabbit$RN: port 127.0.0.1:$p is already in use by another process"
        fi
    done
    log "rabbit$RN: starting $NODENAME on 127.0.0.1:$AMQP_PORT (dist $DIST_PORT, epmd $EPMD_PORT)"
    rm -f "$RMQ_PID_FILE"
    rmq_env
    runas "$RMQ_USER"
    # /usr/lib/rabbitmq/bin/rabbitmq-server directly (the /usr/sbin wrapper forces its own HOME).
    # Own session: a Ctrl-C in the caller's terminal must not reach the node. PP_CLUSTER_ROLE
    # tells the node's VM from the CLI tools' VMs (same HOME and env otherwise).
    (cd "$RMQ_DIR" && exec setsid "${RUNAS[@]}" env -i "${RMQ_ENV[@]}" PP_CLUSTER_ROLE=rabbit-node \
        "$RMQ_BIN/rabbitmq-server" </dev/null >>"$RMQ_LOG_DIR/startup.log" 2>&1 9>&-) &
    local launcher=$!
    echo "$launcher" >"$RMQ_LAUNCHER_PID_FILE"
    local deadline=$((SECONDS + TIMEOUT))
    until amqp_ready "$AMQP_PORT"; do
        proc_running "$launcher" || rmq_fail "rabbit$RN: $NODENAME exited during startup"
        [ $SECONDS -lt "$deadline" ] \
            || rmq_fail "rabbit$RN: no AMQP on 127.0.0.1:$AMQP_PORT within ${TIMEOUT}s"
        sleep 0.2
    done
    rmq_await_startup "$deadline"
    log "rabbit$RN: ready on 127.0.0.1:$AMQP_PORT ($(elapsed "$t0")s)"
}

rmq_await_startup() { # DEADLINE (in $SECONDS)
    until rmqctl -q await_startup --timeout 30 >"$RMQ_LOG_DIR/await_startup.log" 2>&1; do
        [ -n "$(rmq_node_pids)" ] || rmq_fail "rabbit$RN: $NODENAME exited during startup"
        if [ $SECONDS -ge "$1" ]; then
            tail_log "$RMQ_LOG_DIR/await_startup.log" 20
            rmq_fail "rabbit$RN: 'rabbitmqctl await_startup' failed for $NODENAME"
        fi
        sleep 0.5
    done
}

rmq_join() { # join node RN to node 1's cluster
    local t0 target; t0=$(now)
    target=$(nodename 1)
    log "rabbit$RN: joining the cluster of $target"
    # What `rabbitmqctl stop_app; reset; join_cluster TARGET; start_app` do, in one CLI run
    # (each rabbitmqctl run starts an Erlang VM: a second or more apiece on a busy machine).
    if ! rmqctl -q eval "ok = rabbit:stop(), ok = rabbit_mnesia:reset(),
        case rabbit_mnesia:join_cluster('$target', disc) of
            ok -> ok; {ok, already_member} -> ok
        end,
        ok = rabbit:start(), joined." >"$RMQ_LOG_DIR/join.log" 2>&1 \
        || ! grep -qx joined "$RMQ_LOG_DIR/join.log"; then
        tail_log "$RMQ_LOG_DIR/join.log" 30
        rmq_fail "rabbit$RN: could not join the cluster of $target"
    fi
    log "rabbit$RN: joined ($(elapsed "$t0")s)"
}

# Running nodes of the cluster as node RN sees it, one name a line.
rmq_running_nodes() {
    rmqctl -q cluster_status --formatter json 2>/dev/null | python -c '
import json, sys
for n in json.load(sys.stdin).get("running_nodes", []):
    print(n)'
}

rmq_stop() {
    local pids launcher pid t0; t0=$(now)
    pids=$(rmq_node_pids)
    launcher=$(rmq_launcher_pid)
    if [ -z "$pids" ] && [ -z "$launcher" ]; then
        log "rabbit$RN: not running"
    else
        log "rabbit$RN: stopping $NODENAME"
        if [ -n "$pids" ]; then
            # `stop` with the pid file waits until the VM process has exited.
            rmqctl -q stop "$RMQ_PID_FILE" >"$RMQ_LOG_DIR/stop.log" 2>&1 \
                || log "rabbit$RN: 'rabbitmqctl stop' failed; terminating it"
            for pid in $pids; do end_pid "$pid" 30 15; done
        fi
        launcher=$(rmq_launcher_pid)
        [ -z "$launcher" ] || end_pid "$launcher" 5 10
    fi
    rm -f "$RMQ_LAUNCHER_PID_FILE"
    [ -z "$pids" ] || log "rabbit$RN: stopped ($(elapsed "$t0")s)"
}

# ---------------------------------------------------------------- pg_auto_failover
pg_set() { # N (0 = monitor) -> per-node globals
    PN=$1
    case $PN in
        0) PG_NAME=monitor ;;
        1 | 2) PG_NAME=pg$PN ;;
        *) die "PostgreSQL node must be 1 or 2 (got '$PN')" ;;
    esac
    PG_DIR=$DIR/$PG_NAME
    PG_DATA=$PG_DIR/data
    PG_SOCK=$PG_DIR/sock
    PG_LOG=$PG_DIR/pg_autoctl.log
    PG_RUN_PID_FILE=$PG_DIR/pg_autoctl-run.pid
    PG_PORT=$(pg_port "$PN")
}

pg_env() { # sets PG_ENV: the complete, clean environment of pg_autoctl (and its postgres)
    PG_ENV=(
        PATH="$PG_BIN:$SYS_PATH" LANG=C.UTF-8 LC_ALL=C.UTF-8
        HOME="$PG_DIR/home"
        XDG_CONFIG_HOME="$PG_DIR/home/.config"
        XDG_DATA_HOME="$PG_DIR/home/.local/share"
        XDG_RUNTIME_DIR="$PG_DIR/run"
        TMPDIR="$PG_DIR/tmp"
        PGDATA="$PG_DATA"
        PGPORT="$PG_PORT"
        PGHOST="$PG_SOCK"
        PG_REGRESS_SOCK_DIR="$PG_SOCK"   # pg_autoctl then starts postgres with -k $PG_SOCK
    )
}

autoctl() { # ARGS... : run pg_autoctl as postgres with node PN's env
    pg_env
    runas "$PG_USER"
    (cd "$PG_DIR" && "${RUNAS[@]}" env -i "${PG_ENV[@]}" pg_autoctl "$@")
}

pg_mkdirs() {
    check_pg_socket_dir "$PG_SOCK"
    mkdir -p "$PG_DIR/home" "$PG_DIR/run" "$PG_DIR/tmp" "$PG_SOCK"
    chmod 755 "$PG_DIR"
    chmod 700 "$PG_DIR/run" "$PG_DIR/tmp"
    is_root && chown -R "$PG_USER:" "$PG_DIR"
    return 0
}

psql_at() { # PORT DB SQL : one value, unaligned, no headers
    "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$1" -U postgres -d "$2" \
        -v ON_ERROR_STOP=1 -c "$3" 2>/dev/null </dev/null
}

monitor_sql() { PGCONNECT_TIMEOUT=3 psql_at "$MONITOR_PORT" pg_auto_failover "$1"; }

# "reportedstate goalstate" of node N as the monitor has them; with SINCE (epoch seconds),
# only once the node's keeper has reported, with postgres running, and the monitor's health
# check has found it healthy, both after SINCE (a node killed a moment ago still has its old
# state on the monitor).
monitor_node_state() { # N [SINCE]
    local fresh=""
    if [ -n "${2:-}" ]; then
        fresh="and reporttime > to_timestamp($2) and reportedpgisrunning
               and healthchecktime > to_timestamp($2) and health = 1"
    fi
    monitor_sql "select reportedstate || ' ' || goalstate from pgautofailover.node
                 where nodename = 'pg$1' and formationid = 'default' $fresh"
}

# Settings appended to each postgresql.conf (pg_auto_failover includes its own file at the top,
# so these win). pg_auto_failover sizes shared_buffers & co from the machine's RAM (25%); three
# instances on one machine get modest fixed values instead.
pg_tuning() {
    cat <<'EOF'

# ---- pluspay local cluster (scripts/cluster.sh) ----
shared_buffers = '128MB'
work_mem = '4MB'
maintenance_work_mem = '64MB'
effective_cache_size = '1GB'
max_connections = 200
wal_keep_size = '512MB'
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
}

# Monitor: fast failure detection (a promotion in seconds instead of ~50 s).
monitor_tuning() {
    cat <<'EOF'
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 3000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = 3000
EOF
}

# Not as root, initdb (run by pg_autoctl) names the superuser after the OS user: add the
# role "postgres" that the URLs use.
pg_ensure_postgres_role() { # PORT
    is_root && return 0
    "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$1" -U "$(id -un)" -d postgres -v ON_ERROR_STOP=1 \
        -c "DO \$\$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postgres') THEN
                CREATE ROLE postgres SUPERUSER LOGIN;
              END IF;
            END \$\$" </dev/null >/dev/null
}

pg_append_conf() { # FILE (content on stdin)
    cat >>"$1"
    is_root && chown "$PG_USER:" "$1"
    return 0
}

pg_fail() {
    tail_log "$PG_LOG" 60
    local f
    f=$(find "$PG_DATA/log" -name '*.log' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n1 | cut -d' ' -f2-)
    [ -z "$f" ] || tail_log "$f" 30
    die "$*"
}

pg_run_pid() { # live `pg_autoctl run` of node PN
    local pid
    pid=$(cat "$PG_RUN_PID_FILE" 2>/dev/null || true)
    if pid_alive "$pid" '^pg_autoctl'; then echo "$pid"; fi
}

pg_postmaster_pid() {
    local pid
    pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
    if pid_alive "$pid" '^postgres|^postmaster'; then echo "$pid"; fi
}

# Every process of node PN: the `pg_autoctl run` session (pg_autoctl's services, the postmaster,
# pg_basebackup/pg_rewind), any pg_autoctl with the node's HOME, the postmaster of the data dir
# and its children (postgres backends each have a session of their own).
pg_all_pids() {
    local run pm leaders
    run=$(pg_run_pid)
    pm=$(pg_postmaster_pid)
    leaders=$({
        [ -z "$run" ] || procscan sid="$run"
        procscan comm='^pg_autoctl' env="HOME=$PG_DIR/home"
        [ -z "$pm" ] || echo "$pm"
    } | sort -u)
    [ -n "$leaders" ] || return 0
    local args=() p
    for p in $leaders; do args+=("ppid=$p"); done
    { echo "$leaders"; procscan "${args[@]}"; } | sort -u
}

# Start `pg_autoctl run` for node PN in its own session; record its pid.
pg_run() {
    if [ -n "$(pg_run_pid)" ]; then
        log "$PG_NAME: pg_autoctl is already running"
        return 0
    fi
    local stale
    stale=$(pg_all_pids)
    [ -z "$stale" ] || die "$PG_NAME: processes of a previous run are still alive: $(xargs <<<"$stale")"
    # A SIGKILLed pg_autoctl leaves its pid files behind; with a recycled pid it would refuse
    # to start ("already running").
    find "$PG_DIR/run" -name 'pg_autoctl*.pid' -delete 2>/dev/null || true
    if port_in_use "$PG_PORT"; then
        die "$PG_NAME: port 127.0.0.1:$PG_PORT is already in use by another process"
    fi
    pg_env
    runas "$PG_USER"
    (cd "$PG_DIR" && exec setsid "${RUNAS[@]}" env -i "${PG_ENV[@]}" pg_autoctl run \
        </dev/null >>"$PG_LOG" 2>&1 9>&-) &
    local pid=$! n=100
    echo "$pid" >"$PG_RUN_PID_FILE"
    # setsid/setpriv/env exec one another: wait until the process is pg_autoctl itself.
    while proc_running "$pid" && ! pid_alive "$pid" '^pg_autoctl' && [ $n -gt 0 ]; do
        n=$((n - 1))
        sleep 0.05
    done
}

pg_wait_ready() { # DEADLINE
    until pg_ready_port "$PG_PORT"; do
        [ -n "$(pg_run_pid)" ] || pg_fail "$PG_NAME: pg_autoctl exited"
        [ $SECONDS -lt "$1" ] || pg_fail "$PG_NAME: postgres not ready on 127.0.0.1:$PG_PORT"
        sleep 0.2
    done
}

# Wait until the monitor reports node N in one of STATES (reported = goal), and its postgres
# accepts connections; with SINCE, reported and health-checked after SINCE (epoch seconds).
pg_wait_state() { # N DEADLINE SINCE|"" STATE...
    local n=$1 deadline=$2 since=$3; shift 3
    local st="" s
    while :; do
        st=$(monitor_node_state "$n" "$since" || true)
        for s in "$@"; do
            [ "$st" = "$s $s" ] && pg_ready_port "$(pg_port "$n")" && return 0
        done
        [ -n "$(pg_run_pid)" ] || pg_fail "$PG_NAME: pg_autoctl exited (monitor state: ${st:-?})"
        [ $SECONDS -lt "$deadline" ] \
            || pg_fail "pg$n: not $* within ${TIMEOUT}s (monitor state: ${st:-?})"
        sleep 0.3
    done
}

monitor_create() {
    local t0; t0=$(now)
    pg_set 0
    pg_mkdirs
    log "monitor: creating on 127.0.0.1:$PG_PORT"
    autoctl create monitor --pgctl "$PG_CTL" --pgdata "$PG_DATA" --pgport "$PG_PORT" \
        --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl >>"$PG_LOG" 2>&1 \
        || pg_fail "monitor: pg_autoctl create monitor failed"
    { pg_tuning; monitor_tuning; } | pg_append_conf "$PG_DATA/postgresql.conf"
    pg_run
    local deadline=$((SECONDS + TIMEOUT))
    pg_wait_ready "$deadline"
    pg_ensure_postgres_role "$PG_PORT" || pg_fail "monitor: could not create the role postgres"
    until monitor_sql 'select count(*) from pgautofailover.node' >/dev/null; do
        [ $SECONDS -lt "$deadline" ] || pg_fail "monitor: pgautofailover not ready"
        sleep 0.2
    done
    log "monitor: ready on 127.0.0.1:$PG_PORT ($(elapsed "$t0")s)"
}

pg_create() { # N
    local t0; t0=$(now)
    pg_set "$1"
    pg_mkdirs
    log "$PG_NAME: creating on 127.0.0.1:$PG_PORT"
    local cp_loop=""
    if [ "$PN" -ne 1 ]; then
        # A standby's pg_basebackup waits for a spread checkpoint on the primary: ask for one.
        (
            trap 'exit 0' TERM
            while sleep 0.5; do psql_at "$(pg_port 1)" postgres CHECKPOINT || true; done
        ) </dev/null >/dev/null 2>&1 9>&- &
        cp_loop=$!
    fi
    local rc=0
    autoctl create postgres --pgctl "$PG_CTL" --pgdata "$PG_DATA" --pgport "$PG_PORT" \
        --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl --dbname pluspay \
        --name "$PG_NAME" --monitor "$MONITOR_URL" >>"$PG_LOG" 2>&1 || rc=$?
    if [ -n "$cp_loop" ]; then
        kill -TERM "$cp_loop" 2>/dev/null || true
        wait "$cp_loop" 2>/dev/null || true
    fi
    [ "$rc" -eq 0 ] || pg_fail "$PG_NAME: pg_autoctl create postgres failed"
    # The standby got the primary's postgresql.conf (tuning included) with its base backup.
    grep -q 'pluspay local cluster' "$PG_DATA/postgresql.conf" \
        || pg_tuning | pg_append_conf "$PG_DATA/postgresql.conf"
    pg_run
    pg_wait_ready $((SECONDS + TIMEOUT))
    log "$PG_NAME: running ($(elapsed "$t0")s)"
}

pg_up() {
    local t0; t0=$(now)
    monitor_create
    pg_create 1
    pg_set 1
    pg_wait_state 1 $((SECONDS + TIMEOUT)) "" single primary wait_primary
    pg_ensure_postgres_role "$(pg_port 1)" || pg_fail "pg1: could not create the role postgres"
    pg_create 2
    local deadline=$((SECONDS + TIMEOUT))
    pg_set 2
    pg_wait_state 2 "$deadline" "" secondary
    pg_set 1
    pg_wait_state 1 "$deadline" "" primary
    local ssn=""
    until ssn=$(psql_at "$(pg_port 1)" postgres 'show synchronous_standby_names') && [ -n "$ssn" ]; do
        [ $SECONDS -lt "$deadline" ] || pg_fail "pg1: synchronous_standby_names is still empty"
        sleep 0.3
    done
    log "postgres: pg1 primary, pg2 secondary, synchronous_standby_names '$ssn' ($(elapsed "$t0")s)"
}

# Stop node PN's pg_autoctl (it stops its postgres), then kill whatever is left.
pg_stop() {
    local run pids pid t0; t0=$(now)
    run=$(pg_run_pid)
    pids=$(pg_all_pids)
    if [ -z "$run" ] && [ -z "$pids" ]; then
        log "$PG_NAME: not running"
    else
        log "$PG_NAME: stopping"
        if [ -n "$run" ]; then
            kill -TERM "$run" 2>/dev/null || true
            wait_pid_exit "$run" 30 || log "$PG_NAME: pg_autoctl did not stop in 30s; killing it"
        fi
        pids=$(pg_all_pids)
        if [ -n "$pids" ]; then
            local pm; pm=$(pg_postmaster_pid)
            if [ -n "$pm" ] && [ -z "$(pg_run_pid)" ]; then
                pg_env
                runas "$PG_USER"
                "${RUNAS[@]}" env -i "${PG_ENV[@]}" "$PG_CTL" -D "$PG_DATA" -m fast -w -t 30 \
                    stop >/dev/null 2>&1 || true
            fi
            pids=$(pg_all_pids)
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
            for pid in $pids; do wait_pid_exit "$pid" 5 || true; done
        fi
        log "$PG_NAME: stopped ($(elapsed "$t0")s)"
    fi
    pg_cleanup_ipc
}

# A SIGKILLed node leaves SysV IPC objects behind: pg_autoctl's semaphore (its id is line 5 of
# each of its pid files) and the postmaster's small shared memory segment (line 7 of
# postmaster.pid: key and id). Remove the ones recorded in our files once nothing of the node
# runs (postgres would reuse or remove its segment on the next start, but `down` is final).
pg_cleanup_ipc() {
    [ -d "$PG_DIR" ] || return 0
    [ -z "$(pg_all_pids)" ] || return 0
    command -v ipcrm >/dev/null 2>&1 || return 0
    local f id key
    while IFS= read -r f; do
        id=$(sed -n 5p "$f" 2>/dev/null || true)
        if [[ $id =~ ^[0-9]+$ ]] && ipcs -s 2>/dev/null \
            | awk -v i="$id" -v u="$PG_USER" '$2 == i && $3 == u { f = 1 } END { exit !f }'; then
            ipcrm -s "$id" 2>/dev/null || true
        fi
        rm -f "$f"
    done < <(find "$PG_DIR/run" -name 'pg_autoctl*.pid' 2>/dev/null)
    if [ -f "$PG_DATA/postmaster.pid" ]; then
        read -r key id < <(sed -n 7p "$PG_DATA/postmaster.pid" 2>/dev/null) || true
        if [[ ${key:-} =~ ^[0-9]+$ && ${id:-} =~ ^[0-9]+$ ]]; then
            # only that very segment (key and id match), and only with nothing attached
            if ipcs -m 2>/dev/null | awk -v k="$(printf '0x%08x' "$key")" -v i="$id" \
                -v u="$PG_USER" '$1 == k && $2 == i && $3 == u && $6 == 0 { f = 1 } END { exit !f }'; then
                ipcrm -m "$id" 2>/dev/null || true
            fi
        fi
    fi
    return 0
}

# ---------------------------------------------------------------- commands
cmd_up() {
    [ $# -eq 1 ] || die "usage: $0 up DIR"
    local t0; t0=$(now)
    cmd_install
    check_installed
    [ ! -e "$1" ] || die "$1 already exists (up needs a new DIR)"
    case $1 in *"'"* | *$'\n'*) die "DIR must not contain quotes or newlines: $1" ;; esac
    mkdir -p "$(dirname -- "$1")"
    mkdir "$1" || die "cannot create $1"
    DIR=$(abs_path "$1")
    chmod 755 "$DIR"   # the service users must be able to enter DIR
    lock_dir "$DIR"
    if is_root; then
        check_users_can_enter "$DIR" postgres rabbitmq
    fi
    PORT_BASE=$(pick_port_block "$NPORTS" "$DIR") || die "could not pick free ports"
    set_layout
    # Written first, so that `down DIR` can clean up even if `up` fails halfway.
    write_env
    UP_OK=0
    trap 'up_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    log "bringing up a cluster in $DIR (ports $PORT_BASE-$((PORT_BASE + NPORTS - 1)))"

    # RabbitMQ (3 nodes booting in parallel, then joining) and PostgreSQL (monitor, primary,
    # standby) at the same time; each in a background subshell so `set -e`/`die` apply inside.
    local rjob pjob done_job="" left
    rabbit_up >&2 &
    rjob=$!
    pg_up >&2 &
    pjob=$!
    # The first to fail fails `up` at once (up_cleanup stops the other one).
    wait -n -p done_job "$rjob" "$pjob" || die "up failed"
    if [ "$done_job" = "$rjob" ]; then left=$pjob; else left=$rjob; fi
    wait "$left" || die "up failed"
    UP_OK=1
    log "cluster up in $(elapsed "$t0")s; source $DIR/env"
    print_settings
}

up_cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM HUP
    if [ "${UP_OK:-0}" -ne 1 ]; then
        set +e
        log "up failed: stopping what was started (logs stay in $DIR)"
        # Jobs still starting things (when interrupted) would race with down: stop them first.
        abort_descendants
        ( do_down ) || log "WARNING: down $DIR failed"
        [ "$rc" -ne 0 ] || rc=1
    fi
    exit "$rc"
}

# Processes descending from pid ROOT, deepest first; never the caller's own chain of ancestors.
descendants() { # ROOT
    python - "$1" <<'EOF'
import os, sys
root = sys.argv[1]
parent = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if fields[0] not in ("Z", "X", "x"):
                parent[d] = fields[1]
        except (OSError, ValueError):
            pass
mine, p = set(), str(os.getpid())
while p in parent and p != root:
    mine.add(p)
    p = parent[p]
children = {}
for c, pp in parent.items():
    children.setdefault(pp, []).append(c)
out = []
def walk(p):
    for c in children.get(p, []):
        if c not in mine:
            walk(c)
            out.append(c)
walk(root)
print("\n".join(out))
EOF
}

# Freeze every process started by this script (re-listing until no new one appears), then
# SIGTERM them: the helper subshells die, daemons still among them shut down.
abort_descendants() {
    local all="" pids p new
    for _ in 1 2 3 4 5; do
        pids=$(descendants $$)
        [ -n "$pids" ] || break
        new=0
        for p in $pids; do
            if ! grep -qx "$p" <<<"$all"; then all="$all"$'\n'"$p"; new=1; fi
        done
        # shellcheck disable=SC2086
        kill -STOP $pids 2>/dev/null
        [ "$new" -eq 1 ] || break
    done
    [ -n "$all" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $all 2>/dev/null
    # shellcheck disable=SC2086
    kill -CONT $all 2>/dev/null
    for p in $all; do wait_pid_exit "$p" 15 || kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
}

rabbit_up() {
    local t0; t0=$(now)
    mkdir -p "$EPMD_DIR"
    is_root && chown "$RMQ_USER:" "$EPMD_DIR"
    local cookie n
    cookie=$(python -c 'import secrets; print(secrets.token_hex(20).upper(), end="")')
    for n in "${RABBITS[@]}"; do rmq_set "$n"; rmq_init "$cookie"; done
    epmd_start
    local jobs=() rc=0 j
    for n in "${RABBITS[@]}"; do
        (rmq_set "$n"; rmq_start) &
        jobs+=($!)
    done
    for j in "${jobs[@]}"; do wait "$j" || rc=1; done
    [ "$rc" -eq 0 ] || die "rabbitmq: a node did not start"
    log "rabbitmq: 3 nodes booted ($(elapsed "$t0")s)"
    for n in 2 3; do rmq_set "$n"; rmq_join; done
    rmq_set 1
    local running
    running=$(rmq_running_nodes | wc -l)
    [ "$running" -eq 3 ] || die "rabbitmq: cluster has $running running nodes, expected 3"
    log "rabbitmq: cluster of 3 running nodes ($(elapsed "$t0")s)"
}

do_down() { # (DIR loaded)
    local n jobs=() j
    for n in "${RABBITS[@]}"; do
        [ -d "$DIR/rabbit$n" ] || continue
        (rmq_set "$n"; rmq_stop) &
        jobs+=($!)
    done
    for n in "${PGS[@]}"; do
        [ -d "$DIR/pg$n" ] || continue
        (pg_set "$n"; pg_stop) &
        jobs+=($!)
    done
    for j in "${jobs[@]}"; do wait "$j" || true; done
    if [ -d "$DIR/monitor" ]; then pg_set 0; pg_stop; fi
    epmd_stop
    sweep_leftovers
    # shellcheck disable=SC2046   # seq prints bare numbers
    [ -z "$PORT_BASE" ] || release_ports "$DIR" $(seq "$PORT_BASE" $((PORT_BASE + NPORTS - 1)))
}

# Whatever of the cluster still runs after the orderly stops (the VMs' helper processes exit
# a moment after their VM; anything else is killed): processes of the service users whose
# HOME is one of ours under DIR.
sweep_leftovers() {
    local uids=() u pids n=50
    for u in $(printf '%s\n' "$PG_USER" "$RMQ_USER" | sort -u); do uids+=("uid=$(id -u "$u")"); done
    while pids=$(procscan envprefix="HOME=$DIR/" "${uids[@]}") && [ -n "$pids" ]; do
        if [ $n -le 0 ]; then
            log "killing leftover processes: $(xargs <<<"$pids")"
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 0.2
            break
        fi
        n=$((n - 1))
        sleep 0.1
    done
}

cmd_down() {
    local dir=${1:?usage: $0 down DIR}
    if [ ! -f "$dir/env" ]; then
        log "nothing to stop in $dir (no env file)"
        return 0
    fi
    load_env "$dir"
    lock_dir "$DIR"
    do_down
    log "stopped the cluster in $DIR"
}

cmd_status() {
    load_env "${1:?usage: $0 status DIR}"
    local rc=0 n
    for n in "${RABBITS[@]}"; do
        rmq_set "$n"
        if [ -n "$(rmq_node_pids)" ] && amqp_ready "$AMQP_PORT"; then
            echo "rabbit$n up 127.0.0.1:$AMQP_PORT $NODENAME"
        else
            echo "rabbit$n down"; rc=1
        fi
    done
    local monitor_up=0
    if pg_ready_port "$MONITOR_PORT" && monitor_sql 'select 1' >/dev/null; then
        monitor_up=1
        echo "monitor up 127.0.0.1:$MONITOR_PORT"
    else
        echo "monitor down"; rc=1
    fi
    local st state primary=""
    for n in "${PGS[@]}"; do
        pg_set "$n"
        state=unknown
        if [ "$monitor_up" -eq 1 ]; then
            st=$(monitor_node_state "$n" || true)
            if [ -n "$st" ]; then
                state=${st%% *}
                [ "$state" = "${st#* }" ] || state="$state->${st#* }"
            fi
        fi
        if pg_ready_port "$PG_PORT"; then
            echo "pg$n up $state 127.0.0.1:$PG_PORT"
            if [ "$(psql_at "$PG_PORT" postgres 'select pg_is_in_recovery()' || true)" = f ]; then
                primary=$n
            fi
        else
            echo "pg$n down $state"; rc=1
        fi
    done
    if [ -n "$primary" ]; then
        printf "synchronous_standby_names '%s' (on pg%s)\n" \
            "$(psql_at "$(pg_port "$primary")" postgres 'show synchronous_standby_names' || true)" "$primary"
    else
        echo "synchronous_standby_names unknown (no primary)"
    fi
    return $rc
}

cmd_kill_rabbit() { # DIR N
    load_env "${1:?usage: $0 kill-rabbit DIR N}"
    rmq_set "${2:?usage: $0 kill-rabbit DIR N}"
    local pids
    pids=$(rmq_node_pids)
    if [ -z "$pids" ]; then
        log "rabbit$RN: not running"
        return 0
    fi
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    log "rabbit$RN: killed (pid $(xargs <<<"$pids"))"
}

cmd_start_rabbit() { # DIR N
    load_env "${1:?usage: $0 start-rabbit DIR N}"
    rmq_set "${2:?usage: $0 start-rabbit DIR N}"
    check_installed
    lock_dir "$DIR" rabbit
    local t0; t0=$(now)
    epmd_start
    # A node killed a moment ago may not be gone yet.
    local n=100
    while [ -n "$(rmq_node_pids)" ] && ! amqp_ready "$AMQP_PORT" && [ $n -gt 0 ]; do
        n=$((n - 1))
        sleep 0.1
    done
    rmq_start
    # Back in the cluster: it sees every other node whose VM is alive.
    local deadline=$((SECONDS + TIMEOUT)) m others=() running
    for m in "${RABBITS[@]}"; do
        [ "$m" != "$RN" ] || continue
        (rmq_set "$m"; [ -n "$(rmq_node_pids)" ]) && others+=("$(nodename "$m")")
    done
    while :; do
        running=$(rmq_running_nodes || true)
        local missing=0
        for m in "$NODENAME" "${others[@]}"; do
            grep -qx "$m" <<<"$running" || missing=1
        done
        [ "$missing" -eq 1 ] || break
        [ $SECONDS -lt "$deadline" ] \
            || die "rabbit$RN: not back in the cluster (running nodes: $(xargs <<<"$running"))"
        sleep 0.5
    done
    log "rabbit$RN: running and in the cluster ($(elapsed "$t0")s)"
}

cmd_kill_pg() { # DIR N
    load_env "${1:?usage: $0 kill-pg DIR N}"
    pg_set "${2:?usage: $0 kill-pg DIR N}"
    [ "$PN" -ne 0 ] || die "kill-pg: N must be 1 or 2"
    local pids
    pids=$(pg_all_pids)
    if [ -z "$pids" ]; then
        log "$PG_NAME: not running"
        return 0
    fi
    # Freeze them first (so that neither pg_autoctl restarts postgres nor the postmaster forks
    # a new backend meanwhile), collect the complete set again, then SIGKILL it at once.
    # shellcheck disable=SC2086
    kill -STOP $pids 2>/dev/null || true
    pids=$( { echo "$pids"; pg_all_pids; } | sort -u)
    # shellcheck disable=SC2086
    kill -STOP $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    log "$PG_NAME: killed pg_autoctl and postgres ($(wc -w <<<"$pids") processes)"
}

cmd_start_pg() { # DIR N
    load_env "${1:?usage: $0 start-pg DIR N}"
    pg_set "${2:?usage: $0 start-pg DIR N}"
    [ "$PN" -ne 0 ] || die "start-pg: N must be 1 or 2"
    check_installed
    lock_dir "$DIR" pg
    local t0; t0=$(now)
    # Processes killed a moment ago may not be gone yet.
    local deadline=$((SECONDS + 10))
    while [ -n "$(pg_all_pids)" ] && [ -z "$(pg_run_pid)" ] && [ $SECONDS -lt "$deadline" ]; do
        sleep 0.1
    done
    pg_cleanup_ipc
    log "$PG_NAME: starting pg_autoctl"
    local since; since=$(date +%s.%N)
    pg_run
    pg_wait_state "$PN" $((SECONDS + TIMEOUT)) "$since" secondary primary
    log "$PG_NAME: $(monitor_node_state "$PN" | cut -d' ' -f1) ($(elapsed "$t0")s)"
}

cmd_pg_primary() { # DIR
    load_env "${1:?usage: $0 pg-primary DIR}"
    local rows n found=""
    rows=$(monitor_sql "select nodename from pgautofailover.node
        where formationid = 'default' and reportedstate = goalstate
          and reportedstate in ('single', 'primary', 'wait_primary', 'join_primary', 'apply_settings')
        order by nodeid" || true)
    for n in $rows; do
        n=${n#pg}
        case $n in 1 | 2) ;; *) continue ;; esac
        # Only one that really is up and writable (the monitor may not have noticed a loss yet).
        if [ "$(psql_at "$(pg_port "$n")" postgres 'select pg_is_in_recovery()' || true)" = f ]; then
            found="$found $n"
        fi
    done
    read -r -a found <<<"$found" || true
    [ ${#found[@]} -eq 1 ] || return 1
    echo "${found[0]}"
}

cmd_queue_leader() { # DIR QUEUE
    load_env "${1:?usage: $0 queue-leader DIR QUEUE}"
    local queue=${2:?usage: $0 queue-leader DIR QUEUE}
    # Right after a node's loss the others may still name it leader until they elect a new
    # one: only a leader whose node runs counts; retry for a while (not for a missing queue).
    local deadline=$((SECONDS + 20)) n out leader m listed answered
    while :; do
        listed=0 answered=0
        for n in "${RABBITS[@]}"; do
            rmq_set "$n"
            [ -n "$(rmq_node_pids)" ] || continue
            out=$(rmqctl -q -t 10 list_queues -p / name leader --formatter json 2>/dev/null) \
                || continue
            answered=1
            leader=$(python -c '
import json, sys
for q in json.loads(sys.argv[1] or "[]"):
    if q.get("name") == sys.argv[2]:
        print("listed", q.get("leader") or "")
        break' "$out" "$queue" 2>/dev/null) || continue
            [ -n "$leader" ] || return 1   # that node has no such queue: nobody has
            listed=1
            leader=${leader#listed}
            leader=${leader# }
            for m in "${RABBITS[@]}"; do
                if [ "$leader" = "$(nodename "$m")" ] && (rmq_set "$m"; [ -n "$(rmq_node_pids)" ]); then
                    echo "$m"
                    return 0
                fi
            done
        done
        # No node lists the queue (or none answers): unknown.
        [ "$answered" -eq 1 ] && [ "$listed" -eq 1 ] || return 1
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

cmd_rabbitmqctl() { # DIR N ARGS...
    load_env "${1:?usage: $0 rabbitmqctl DIR N ARGS...}"
    rmq_set "${2:?usage: $0 rabbitmqctl DIR N ARGS...}"
    shift 2
    rmqctl "$@"
}

main() {
    [ $# -ge 1 ] || usage
    local cmd=$1; shift
    case $cmd in
        install) cmd_install ;;
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        kill-rabbit) cmd_kill_rabbit "$@" ;;
        start-rabbit) cmd_start_rabbit "$@" ;;
        kill-pg) cmd_kill_pg "$@" ;;
        start-pg) cmd_start_pg "$@" ;;
        pg-primary) cmd_pg_primary "$@" ;;
        queue-leader) cmd_queue_leader "$@" ;;
        rabbitmqctl) cmd_rabbitmqctl "$@" ;;
        -h | --help | help) usage 0 ;;
        *) log "unknown subcommand: $cmd"; usage ;;
    esac
}

main "$@"
