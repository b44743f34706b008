#!/usr/bin/env bash
# Throwaway PostgreSQL 15 + RabbitMQ services for pluspay tests and local development.
#
#   services.sh install
#       Install postgresql / rabbitmq-server (and python3) with apt when missing.
#   services.sh start DIR [--pg-port N] [--amqp-port N] [--dist-port N] [--epmd-port N]
#       Create a fresh PostgreSQL cluster and a private RabbitMQ node whose data all
#       lives under DIR, listening on 127.0.0.1 only (free ports picked at run time
#       unless given), wait until both accept connections and write DIR/env.
#   services.sh stop DIR
#       Stop both (tolerates services that are already stopped). DIR is left in place.
#   services.sh {stop,start,restart}-{postgres,rabbitmq} DIR
#       Stop/start one service again on the same port with the same data.
#   services.sh status DIR
#       Print "postgres up|down" and "rabbitmq up|down"; exit 0 only if both are up.
#   services.sh rabbitmqctl DIR ARGS...
#       Run rabbitmqctl against DIR's node (same user, env and cookie as the node).
#
# DIR/env is a sourceable file exporting PP_TEST_DATABASE_URL, PP_TEST_AMQP_URL,
# PP_SERVICES_DIR and the ports/paths used by the other subcommands.
# Progress goes to stderr; stdout is only used by `status` and `rabbitmqctl`.
# Readiness timeout: PP_SERVICES_TIMEOUT seconds per service (default 120).
# Runs as root (PostgreSQL as user postgres, RabbitMQ as user rabbitmq) or as any
# other user (everything as that user). Works from any working directory.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
RMQ_BIN=/usr/lib/rabbitmq/bin
TIMEOUT=${PP_SERVICES_TIMEOUT:-120}   # seconds to wait for a service to become ready
POLICY_RC_D=/usr/sbin/policy-rc.d
SYS_PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { # [EXIT-CODE]
    local rc=${1:-2}
    if [ "$rc" -eq 0 ]; then
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    else
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    fi
    exit "$rc"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

python() {
    local py
    py=$(command -v python3 || true)
    [ -n "$py" ] || die "python3 is required (run: $0 install)"
    "$py" "$@"
}

# ---------------------------------------------------------------- install
cmd_install() {
    local need=()
    [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/pg_isready" ] || need+=(postgresql)
    if ! [ -x "$RMQ_BIN/rabbitmq-server" ] && ! command -v rabbitmq-server >/dev/null 2>&1 \
        && ! dpkg -s rabbitmq-server >/dev/null 2>&1; then
        need+=(rabbitmq-server)
    fi
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    if [ ${#need[@]} -eq 0 ]; then
        log "postgresql 15, rabbitmq-server and python3 are already installed"
        return 0
    fi
    SUDO=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${need[*]}"
        SUDO=(sudo)
    fi
    # Keep apt from auto-starting the packaged system services (the stock
    # postgresql cluster on 5432, rabbitmq on 5672 with epmd on 4369): we run our own.
    if [ ! -e "$POLICY_RC_D" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC_D"
        trap '"${SUDO[@]}" rm -f "$POLICY_RC_D"' EXIT
    fi
    log "installing: ${need[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
        install -y "${need[@]}" >&2
    [ -x "$PG_BIN/postgres" ] || die "postgresql 15 is still missing after apt-get install"
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is still missing after apt-get install"
}

# ---------------------------------------------------------------- helpers
check_installed() {
    [ -x "$PG_BIN/postgres" ] || die "PostgreSQL 15 not found in $PG_BIN (run: $0 install)"
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "RabbitMQ not found in $RMQ_BIN (run: $0 install)"
}

abs_dir() { # DIR -> absolute path (DIR must exist)
    (cd "$1" && pwd -P)
}

# Prefix to run a command as a service user when we are root (exec-style, so
# `$!` of a backgrounded command is the service's own pid).
runas() { # USER -> sets RUNAS array
    RUNAS=()
    if is_root; then
        RUNAS=(setpriv "--reuid=$1" "--regid=$(id -g "$1")" --init-groups)
    fi
}

port_in_use() { # PORT -> 0 if something listens on / holds 127.0.0.1:PORT
    python - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# SO_REUSEADDR like the servers themselves: TIME_WAIT leftovers of a previous
# run don't count, a listener (or a connected socket) on the port does.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

# Pick N distinct free TCP ports on 127.0.0.1 outside the kernel's ephemeral range
# (so an outgoing connection can't grab one while its service is restarting), and
# record them in a machine-wide reservation directory (under flock) so parallel
# runs never pick the same ports. Reservations are released by `stop`.
RES_DIR="${TMPDIR:-/tmp}/pluspay-port-reservations"
pick_ports() { # N OWNER_DIR -> prints N ports
    python - "$1" "$2" "$RES_DIR" <<'EOF'
import fcntl, os, random, socket, sys
need, owner, rdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(rdir, exist_ok=True)
try:
    os.chmod(rdir, 0o1777)
except OSError:
    pass
lock = open(os.path.join(rdir, ".lock"), "a")
try:
    os.chmod(lock.name, 0o666)
except OSError:
    pass
fcntl.flock(lock, fcntl.LOCK_EX)
reserved = set()
for name in os.listdir(rdir):
    if not name.isdigit():
        continue
    path = os.path.join(rdir, name)
    try:
        with open(path) as f:
            o = f.read().strip()
    except OSError:
        continue
    if o and not os.path.isdir(o):  # its DIR is gone: stale reservation
        try:
            os.unlink(path)
        except OSError:
            pass
        continue
    reserved.add(int(name))
# Well-known ports (dev.sh's fixed ports, epmd, rabbitmq defaults, the
# rabbitmqctl CLI distribution range 35672-35682) are never picked.
excluded = {4369, 5432, 5672, 5671, 14369, 15432, 15672, 25672}
excluded |= set(range(35672, 35683))
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except Exception:
    lo = 32768
candidates = list(range(20000, lo)) if lo - 20000 >= 1000 else []
random.shuffle(candidates)
held, ports = [], []
def try_port(p):
    if p in excluded or p in reserved or p in ports:
        return False
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        return False
    held.append(s)  # keep bound until all are picked
    ports.append(s.getsockname()[1])
    return True
for p in candidates:
    if len(ports) == need:
        break
    try_port(p)
tries = 0
while len(ports) < need and tries < 1000:  # fallback: let the kernel choose
    tries += 1
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    try_port(p)
if len(ports) < need:
    sys.exit("could not find %d free ports" % need)
for p in ports:
    with open(os.path.join(rdir, str(p)), "w") as f:
        f.write(owner + "\n")
print(" ".join(map(str, ports)))
EOF
}

reserve_ports() { # OWNER_DIR PORT... (explicitly chosen ports)
    local owner=$1; shift
    mkdir -p "$RES_DIR" 2>/dev/null && chmod 1777 "$RES_DIR" 2>/dev/null || true
    local p
    for p in "$@"; do printf '%s\n' "$owner" >"$RES_DIR/$p" 2>/dev/null || true; done
}

release_ports() { # OWNER_DIR PORT...
    local owner=$1; shift
    local p
    for p in "$@"; do
        [ -n "$p" ] || continue
        if [ -f "$RES_DIR/$p" ] && [ "$(cat "$RES_DIR/$p" 2>/dev/null)" = "$owner" ]; then
            rm -f "$RES_DIR/$p"
        fi
    done
}

# Serialise service control on one DIR (e.g. two tests restarting the broker at
# once). fd 9 holds the lock; daemons are started with 9>&- so they don't keep it.
lock_dir() { # DIR
    exec 9>>"$1/.lock"
    flock -w 600 9 || die "timed out waiting for the lock on $1"
}

load_env() { # DIR -> sources DIR/env, sets globals
    local dir=$1
    [ -d "$dir" ] || die "no such directory: $dir"
    [ -f "$dir/env" ] || die "$dir/env not found (was '$0 start $dir' run?)"
    # shellcheck disable=SC1091
    source "$dir/env"
    DIR=$PP_SERVICES_DIR
    PG_PORT=$PP_PG_PORT
    AMQP_PORT=$PP_AMQP_PORT
    DIST_PORT=$PP_RABBITMQ_DIST_PORT
    EPMD_PORT=$PP_RABBITMQ_EPMD_PORT
    NODENAME=$PP_RABBITMQ_NODENAME
    set_paths
}

set_paths() {
    PG_DIR=$DIR/postgres
    PG_DATA=$PG_DIR/data
    PG_SOCK=$PG_DIR/sock
    PG_LOG=$PG_DIR/postgres.log
    RMQ_DIR=$DIR/rabbitmq
    RMQ_HOME=$RMQ_DIR/home
    RMQ_LOG_DIR=$RMQ_DIR/log
    RMQ_STARTUP_LOG=$RMQ_LOG_DIR/startup.log
    RMQ_PID_FILE=$RMQ_DIR/rabbitmq.pid
    RMQ_LAUNCHER_PID_FILE=$RMQ_DIR/launcher.pid
    EPMD_PID_FILE=$RMQ_DIR/epmd.pid
    PG_USER=postgres
    RMQ_USER=rabbitmq
    if ! is_root; then
        PG_USER=$(id -un)
        RMQ_USER=$(id -un)
    fi
}

write_env() {
    local f=$DIR/env.tmp
    {
        echo "# Generated by scripts/services.sh; source this file."
        printf 'export PP_SERVICES_DIR=%q\n' "$DIR"
        printf 'export PP_TEST_DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
        printf 'export PP_TEST_AMQP_URL=%q\n' "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
        printf 'export PP_PG_PORT=%q\n' "$PG_PORT"
        printf 'export PP_PG_SOCKET_DIR=%q\n' "$PG_SOCK"
        printf 'export PP_PG_DATA=%q\n' "$PG_DATA"
        printf 'export PP_PG_LOG=%q\n' "$PG_LOG"
        printf 'export PP_AMQP_PORT=%q\n' "$AMQP_PORT"
        printf 'export PP_RABBITMQ_NODENAME=%q\n' "$NODENAME"
        printf 'export PP_RABBITMQ_DIST_PORT=%q\n' "$DIST_PORT"
        printf 'export PP_RABBITMQ_EPMD_PORT=%q\n' "$EPMD_PORT"
        printf 'export PP_RABBITMQ_LOG=%q\n' "$RMQ_LOG_DIR/$NODENAME.log"
    } >"$f"
    chmod 644 "$f"
    mv -f "$f" "$DIR/env"
}

tail_log() { # FILE [N]
    local f=$1 n=${2:-40}
    if [ -f "$f" ]; then
        printf '[services] ---- last %s lines of %s ----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
        printf '[services] ---- end of %s ----\n' "$f" >&2
    else
        log "(no log file at $f)"
    fi
}

# A process that exists and is not a zombie. (Our daemons get reparented to pid 1,
# which may reap them late: a killed one can linger as a zombie for a while.)
proc_running() { # PID
    local pid=$1 stat
    [ -n "$pid" ] && [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    case ${stat%% *} in Z | X | x) return 1 ;; esac
    return 0
}

pid_alive() { # PID [COMM-REGEX]
    local pid=$1 re=${2:-}
    proc_running "$pid" || return 1
    if [ -n "$re" ]; then
        grep -Eq "$re" "/proc/$pid/comm" 2>/dev/null || return 1
    fi
}

wait_pid_exit() { # PID SECONDS
    local pid=$1 n=$(($2 * 10))
    while proc_running "$pid"; do
        [ "$n" -gt 0 ] || return 1
        n=$((n - 1))
        sleep 0.1
    done
}

# ---------------------------------------------------------------- PostgreSQL
pg() { # run a PostgreSQL binary as the postgres user with a clean environment
    local bin=$1; shift
    runas "$PG_USER"
    "${RUNAS[@]}" env -i PATH="$SYS_PATH" LANG=C.UTF-8 LC_ALL=C.UTF-8 HOME="$PG_DIR" \
        "$PG_BIN/$bin" "$@"
}

pg_init() {
    # A Unix socket path is limited to 107 bytes.
    [ $((${#PG_SOCK} + 18)) -le 107 ] || die "DIR path too long for PostgreSQL's socket: $PG_SOCK"
    mkdir -p "$PG_DIR" "$PG_SOCK"
    is_root && chown "$PG_USER:" "$PG_DIR" "$PG_SOCK"
    chmod 700 "$PG_DIR"
    chmod 755 "$PG_SOCK"
    log "postgres: initdb $PG_DATA"
    if ! pg initdb -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
        --no-instructions >"$PG_DIR/initdb.log" 2>&1; then
        tail_log "$PG_DIR/initdb.log"
        die "initdb failed"
    fi
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# ---- pluspay test/dev settings (scripts/services.sh) ----
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
    cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
    is_root && chown "$PG_USER:" "$PG_DATA/pg_hba.conf" "$PG_DATA/postgresql.conf"
    return 0
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U postgres -t 2 >/dev/null 2>&1
}

pg_running() { # postmaster alive for this data dir?
    [ -f "$PG_DATA/postmaster.pid" ] || return 1
    pid_alive "$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null)" 'postgres|postmaster'
}

pg_start() {
    local t0; t0=$(now)
    [ -d "$PG_DATA" ] || die "no PostgreSQL data directory at $PG_DATA"
    if pg_running && pg_ready; then
        log "postgres: already running on 127.0.0.1:$PG_PORT"
        return 0
    fi
    if port_in_use "$PG_PORT"; then
        die "postgres: port 127.0.0.1:$PG_PORT is already in use by another process"
    fi
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    # pg_ctl puts the postmaster in its own session; its output goes to $PG_LOG.
    if ! pg pg_ctl -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" \
        -o "-k $PG_SOCK -c listen_addresses=127.0.0.1 -p $PG_PORT" start >&2 9>&-; then
        tail_log "$PG_LOG"
        die "postgres failed to start on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until pg_ready; do
        if [ $SECONDS -ge "$deadline" ] || ! pg_running; then
            tail_log "$PG_LOG"
            die "postgres is not accepting connections on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
        fi
        sleep 0.1
    done
    log "postgres: ready on 127.0.0.1:$PG_PORT ($(elapsed "$t0")s)"
}

pg_stop() {
    if [ ! -f "$PG_DATA/postmaster.pid" ]; then
        log "postgres: not running"
        return 0
    fi
    local pid; pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
    log "postgres: stopping (fast)"
    if ! pg pg_ctl -D "$PG_DATA" -m fast -w -t 60 stop >&2; then
        if pid_alive "$pid" 'postgres|postmaster'; then
            log "postgres: fast shutdown failed, trying immediate"
            pg pg_ctl -D "$PG_DATA" -m immediate -w -t 30 stop >&2 || true
            if pid_alive "$pid" 'postgres|postmaster'; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    if [ -n "$pid" ] && ! wait_pid_exit "$pid" 30; then
        log "postgres: WARNING: postmaster $pid still running"
    fi
}

# ---------------------------------------------------------------- RabbitMQ
rmq_env() { # sets RMQ_ENV: the complete, clean environment of the node and its CLI
    RMQ_ENV=(
        PATH="$SYS_PATH" LANG=C.UTF-8 LC_ALL=C.UTF-8
        HOME="$RMQ_HOME"
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1
        ERL_CRASH_DUMP="$RMQ_LOG_DIR/erl_crash.dump"
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia"
        RABBITMQ_FEATURE_FLAGS_FILE="$RMQ_DIR/mnesia/$NODENAME-feature_flags"
        RABBITMQ_LOG_BASE="$RMQ_LOG_DIR"
        RABBITMQ_PID_FILE="$RMQ_PID_FILE"
        RABBITMQ_NODENAME="$NODENAME"
        RABBITMQ_USE_LONGNAME=false
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$AMQP_PORT"
        RABBITMQ_DIST_PORT="$DIST_PORT"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    )
}

rmq() { # run a RabbitMQ/Erlang tool as the node's user with the node's env
    local bin=$1; shift
    rmq_env
    runas "$RMQ_USER"
    (cd "$RMQ_DIR" && "${RUNAS[@]}" env -i "${RMQ_ENV[@]}" "$bin" "$@")
}

rmqctl() { rmq "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" "$@"; }

rmq_init() {
    mkdir -p "$RMQ_DIR" "$RMQ_HOME" "$RMQ_LOG_DIR" "$RMQ_DIR/mnesia"
    echo '[].' >"$RMQ_DIR/enabled_plugins"
    : >"$RMQ_DIR/rabbitmq-env.conf"
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# pluspay test/dev node (scripts/services.sh)
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
EOF
    echo '[].' >"$RMQ_DIR/advanced.config"
    python -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' >"$RMQ_HOME/.erlang.cookie"
    chmod 400 "$RMQ_HOME/.erlang.cookie"
    if is_root; then
        chown -R "$RMQ_USER:" "$RMQ_DIR"
    fi
}

amqp_ready() { # real AMQP handshake: send the protocol header, expect Connection.Start
    python - "$AMQP_PORT" <<'EOF' 2>/dev/null
import socket, struct, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    buf = b""
    while len(buf) < 11:
        chunk = s.recv(64)
        if not chunk:
            break
        buf += chunk
    s.close()
    ftype, chan, size = struct.unpack(">BHI", buf[:7])
    cls, meth = struct.unpack(">HH", buf[7:11])
    sys.exit(0 if (ftype, chan, cls, meth) == (1, 0, 10, 10) else 1)
except Exception:
    sys.exit(1)
EOF
}

epmd_ready() {
    rmq epmd -port "$EPMD_PORT" -names >/dev/null 2>&1
}

epmd_start() {
    if [ -f "$EPMD_PID_FILE" ] && pid_alive "$(cat "$EPMD_PID_FILE")" '^epmd' && epmd_ready; then
        return 0
    fi
    if port_in_use "$EPMD_PORT"; then
        die "rabbitmq: epmd port 127.0.0.1:$EPMD_PORT is already in use by another process"
    fi
    rmq_env
    runas "$RMQ_USER"
    (cd "$RMQ_DIR" && exec setsid "${RUNAS[@]}" env -i "${RMQ_ENV[@]}" \
        epmd -port "$EPMD_PORT" -address 127.0.0.1 -relaxed_command_check \
        </dev/null >>"$RMQ_LOG_DIR/epmd.log" 2>&1 9>&-) &
    echo $! >"$EPMD_PID_FILE"
    local deadline=$((SECONDS + 15))
    until epmd_ready; do
        if [ $SECONDS -ge "$deadline" ]; then
            tail_log "$RMQ_LOG_DIR/epmd.log"
            die "rabbitmq: epmd did not start on 127.0.0.1:$EPMD_PORT"
        fi
        sleep 0.05
    done
}

# epmd processes serving our private port (ours, or one a CLI tool spawned)
epmd_pids() {
    local p comm
    for p in /proc/[0-9]*; do
        comm=$(cat "$p/comm" 2>/dev/null) || continue
        [ "$comm" = epmd ] && proc_running "${p#/proc/}" || continue
        if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qx "ERL_EPMD_PORT=$EPMD_PORT" \
            || { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "-port $EPMD_PORT "; then
            echo "${p#/proc/}"
        fi
    done
}

epmd_stop() {
    local pids pid
    pids=$(epmd_pids || true)
    [ -n "$pids" ] || return 0
    # epmd ignores SIGTERM; ask it to quit (it runs with -relaxed_command_check), else SIGKILL.
    rmq epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    for pid in $pids; do wait_pid_exit "$pid" 1 || kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$EPMD_PID_FILE"
}

rmq_node_pid() {
    local pid
    pid=$(cat "$RMQ_PID_FILE" 2>/dev/null || true)
    if pid_alive "$pid" 'beam'; then echo "$pid"; fi
}

rmq_launcher_pid() {
    local pid
    pid=$(cat "$RMQ_LAUNCHER_PID_FILE" 2>/dev/null || true)
    if pid_alive "$pid"; then echo "$pid"; fi
}

rmq_fail() {
    tail_log "$RMQ_STARTUP_LOG" 60
    tail_log "$RMQ_LOG_DIR/$NODENAME.log" 40
    die "$*"
}

rmq_start() {
    local t0; t0=$(now)
    [ -d "$RMQ_DIR/mnesia" ] || die "no RabbitMQ data directory at $RMQ_DIR"
    if [ -n "$(rmq_node_pid)" ] && amqp_ready; then
        log "rabbitmq: already running on 127.0.0.1:$AMQP_PORT"
        return 0
    fi
    local p
    for p in "$AMQP_PORT" "$DIST_PORT"; do
        if port_in_use "$p"; then
            die "rabbitmq: port 127.0.0.1:$p is already in use by another process"
        fi
    done
    epmd_start
    log "rabbitmq: starting node $NODENAME on 127.0.0.1:$AMQP_PORT (dist $DIST_PORT, epmd $EPMD_PORT)"
    rm -f "$RMQ_PID_FILE"
    rmq_env
    runas "$RMQ_USER"
    # Own session: a Ctrl-C in the caller's terminal must not reach the node.
    (cd "$RMQ_DIR" && exec setsid "${RUNAS[@]}" env -i "${RMQ_ENV[@]}" \
        "$RMQ_BIN/rabbitmq-server" </dev/null >>"$RMQ_STARTUP_LOG" 2>&1 9>&-) &
    local launcher=$!
    echo "$launcher" >"$RMQ_LAUNCHER_PID_FILE"
    local deadline=$((SECONDS + TIMEOUT))
    until amqp_ready; do
        if ! proc_running "$launcher"; then
            rmq_fail "rabbitmq: node $NODENAME exited during startup"
        fi
        if [ $SECONDS -ge "$deadline" ]; then
            rmq_fail "rabbitmq: node $NODENAME did not accept AMQP connections on 127.0.0.1:$AMQP_PORT within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    # The listener is up; confirm through the CLI (same env and cookie) that the
    # node finished booting. This also proves `stop` will be able to reach it.
    if ! rmqctl -q await_startup --timeout "$TIMEOUT" >"$RMQ_LOG_DIR/await_startup.log" 2>&1; then
        tail_log "$RMQ_LOG_DIR/await_startup.log" 20
        rmq_fail "rabbitmq: 'rabbitmqctl await_startup' failed for $NODENAME"
    fi
    log "rabbitmq: ready on 127.0.0.1:$AMQP_PORT ($(elapsed "$t0")s)"
}

rmq_stop() {
    local pid launcher
    pid=$(rmq_node_pid)
    launcher=$(rmq_launcher_pid)
    if [ -z "$pid" ] && [ -z "$launcher" ]; then
        log "rabbitmq: not running"
    else
        log "rabbitmq: stopping node $NODENAME"
        if [ -n "$pid" ]; then
            # `stop` with the pid file waits until the VM process has exited.
            rmqctl -q stop "$RMQ_PID_FILE" >"$RMQ_LOG_DIR/stop.log" 2>&1 \
                || log "rabbitmq: 'rabbitmqctl stop' failed; terminating pid $pid"
            if ! wait_pid_exit "$pid" 30; then
                kill -TERM "$pid" 2>/dev/null || true
                wait_pid_exit "$pid" 15 || kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        launcher=$(rmq_launcher_pid)
        if [ -n "$launcher" ] && ! wait_pid_exit "$launcher" 5; then
            kill -TERM "$launcher" 2>/dev/null || true
            wait_pid_exit "$launcher" 10 || kill -KILL "$launcher" 2>/dev/null || true
        fi
        # beam's helper ports (erl_child_setup, inet_gethost) die with the VM.
    fi
    rm -f "$RMQ_LAUNCHER_PID_FILE"
    epmd_stop
}

# ---------------------------------------------------------------- commands
cmd_start() {
    local dir="" pg_port="" amqp_port="" dist_port="" epmd_port=""
    while [ $# -gt 0 ]; do
        case $1 in
            --pg-port) pg_port=${2:?--pg-port needs a value}; shift 2 ;;
            --pg-port=*) pg_port=${1#*=}; shift ;;
            --amqp-port) amqp_port=${2:?--amqp-port needs a value}; shift 2 ;;
            --amqp-port=*) amqp_port=${1#*=}; shift ;;
            --dist-port) dist_port=${2:?--dist-port needs a value}; shift 2 ;;
            --dist-port=*) dist_port=${1#*=}; shift ;;
            --epmd-port) epmd_port=${2:?--epmd-port needs a value}; shift 2 ;;
            --epmd-port=*) epmd_port=${1#*=}; shift ;;
            -*) die "start: unknown option $1" ;;
            *) [ -z "$dir" ] || die "start: more than one DIR given"; dir=$1; shift ;;
        esac
    done
    [ -n "$dir" ] || die "usage: $0 start DIR [--pg-port N] [--amqp-port N]"
    local p
    for p in "$pg_port" "$amqp_port" "$dist_port" "$epmd_port"; do
        [ -z "$p" ] || [[ $p =~ ^[0-9]+$ && $p -gt 0 && $p -lt 65536 ]] || die "invalid port: $p"
    done
    check_installed
    local t0; t0=$(now)
    mkdir -p "$dir"
    DIR=$(abs_dir "$dir")
    set_paths
    lock_dir "$DIR"
    if [ -e "$PG_DIR" ] || [ -e "$RMQ_DIR" ]; then
        die "$DIR already holds service data; use start-postgres/start-rabbitmq, or stop and delete it first"
    fi
    if is_root; then
        # mktemp -d makes 0700 directories: the service users must be able to enter DIR.
        chmod 755 "$DIR"
        local u
        for u in "$PG_USER" "$RMQ_USER"; do
            setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups test -x "$DIR" \
                || die "user $u cannot access $DIR (a parent directory is not world-searchable); use a DIR under /tmp or chmod o+x its parents"
        done
    fi

    # Ports: explicit ones are used as given; the rest are picked free, distinct and reserved.
    local need=0
    [ -n "$pg_port" ] || need=$((need + 1))
    [ -n "$amqp_port" ] || need=$((need + 1))
    if [ -z "$dist_port" ] && [ -n "$amqp_port" ] && [ $((amqp_port + 20000)) -lt 65536 ] \
        && ! port_in_use $((amqp_port + 20000)); then
        dist_port=$((amqp_port + 20000))   # RabbitMQ's own convention (5672 -> 25672)
    fi
    [ -n "$dist_port" ] || need=$((need + 1))
    [ -n "$epmd_port" ] || need=$((need + 1))
    local picked=()
    if [ $need -gt 0 ]; then
        read -r -a picked <<<"$(pick_ports "$need" "$DIR")" || die "could not pick free ports"
        [ ${#picked[@]} -eq "$need" ] || die "could not pick free ports"
    fi
    local i=0
    [ -n "$pg_port" ] || { pg_port=${picked[$i]}; i=$((i + 1)); }
    [ -n "$amqp_port" ] || { amqp_port=${picked[$i]}; i=$((i + 1)); }
    [ -n "$dist_port" ] || { dist_port=${picked[$i]}; i=$((i + 1)); }
    [ -n "$epmd_port" ] || { epmd_port=${picked[$i]}; i=$((i + 1)); }
    if [ "$(printf '%s\n' "$pg_port" "$amqp_port" "$dist_port" "$epmd_port" | sort -u | wc -l)" -ne 4 ]; then
        die "ports must be distinct: pg=$pg_port amqp=$amqp_port dist=$dist_port epmd=$epmd_port"
    fi
    reserve_ports "$DIR" "$pg_port" "$amqp_port" "$dist_port" "$epmd_port"
    PG_PORT=$pg_port AMQP_PORT=$amqp_port DIST_PORT=$dist_port EPMD_PORT=$epmd_port
    NODENAME="pp${AMQP_PORT}@localhost"
    # Written first, so that `stop DIR` can clean up even if a start fails halfway.
    write_env
    log "starting services in $DIR (postgres $PG_PORT, amqp $AMQP_PORT, dist $DIST_PORT, epmd $EPMD_PORT)"

    # Boot RabbitMQ (the slow one, ~7 s) while PostgreSQL initialises.
    # (Each runs in a background subshell so that `set -e` and `die` apply inside.)
    rmq_init
    local rmq_status=0 pg_status=0 rmq_job pg_job
    rmq_start 2>"$DIR/rabbitmq-start.log" &
    rmq_job=$!
    { pg_init; pg_start; } &
    pg_job=$!
    wait "$pg_job" || pg_status=$?
    wait "$rmq_job" || rmq_status=$?
    cat "$DIR/rabbitmq-start.log" >&2
    rm -f "$DIR/rabbitmq-start.log"
    if [ "$pg_status" -ne 0 ] || [ "$rmq_status" -ne 0 ]; then
        die "start failed; run '$0 stop $DIR' to clean up"
    fi
    log "all services ready in $(elapsed "$t0")s; source $DIR/env"
}

cmd_stop() {
    local dir=${1:?usage: $0 stop DIR}
    if [ ! -f "$dir/env" ]; then
        log "nothing to stop in $dir (no env file)"
        return 0
    fi
    load_env "$dir"
    lock_dir "$DIR"
    rmq_stop
    pg_stop
    release_ports "$DIR" "$PG_PORT" "$AMQP_PORT" "$DIST_PORT" "$EPMD_PORT"
    log "stopped services in $DIR"
}

cmd_status() {
    load_env "${1:?usage: $0 status DIR}"
    local rc=0
    if pg_ready; then echo "postgres up 127.0.0.1:$PG_PORT"; else echo "postgres down"; rc=1; fi
    if [ -n "$(rmq_node_pid)" ] && amqp_ready; then
        echo "rabbitmq up 127.0.0.1:$AMQP_PORT $NODENAME"
    else
        echo "rabbitmq down"; rc=1
    fi
    return $rc
}

main() {
    [ $# -ge 1 ] || usage
    local cmd=$1; shift
    case $cmd in
        install) cmd_install ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        stop-postgres) load_env "${1:?DIR}"; lock_dir "$DIR"; pg_stop ;;
        start-postgres) load_env "${1:?DIR}"; check_installed; lock_dir "$DIR"; pg_start ;;
        restart-postgres) load_env "${1:?DIR}"; check_installed; lock_dir "$DIR"; pg_stop; pg_start ;;
        stop-rabbitmq) load_env "${1:?DIR}"; lock_dir "$DIR"; rmq_stop ;;
        start-rabbitmq) load_env "${1:?DIR}"; check_installed; lock_dir "$DIR"; rmq_start ;;
        restart-rabbitmq) load_env "${1:?DIR}"; check_installed; lock_dir "$DIR"; rmq_stop; rmq_start ;;
        rabbitmqctl) load_env "${1:?DIR}"; shift; rmqctl "$@" ;;
        -h | --help | help) usage 0 ;;
        *) log "unknown subcommand: $cmd"; usage ;;
    esac
}

main "$@"
