# shellcheck shell=bash
# Helpers shared by scripts/services.sh and scripts/cluster.sh, sourced by both (not run);
# scripts/test.sh uses apt_install from here too.
#
# The sourcing script sets LOG_PREFIX (the tag of its log lines) first. The RabbitMQ helpers
# read the globals both scripts set for the node being handled: RMQ_USER, RMQ_DIR, RMQ_HOME,
# RMQ_LOG_DIR, RMQ_PID_FILE, RMQ_LAUNCHER_PID_FILE, NODENAME, AMQP_PORT, DIST_PORT, EPMD_PORT,
# and RMQ_ENV_EXTRA (more NAME=VALUE for the node's environment).
# Both scripts run under `set -euo pipefail`; so does everything here.

# The sourcing script: its header comment is the usage text.
SCRIPT_FILE=${BASH_SOURCE[1]:-$0}

# Where Debian 12's packages put things.
PG_BIN=/usr/lib/postgresql/15/bin
RMQ_BIN=/usr/lib/rabbitmq/bin
POLICY_RC_D=/usr/sbin/policy-rc.d
# The whole PATH of the services and their tools (they run with env -i).
SYS_PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$LOG_PREFIX" "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { # [EXIT-CODE]: the header comment of SCRIPT_FILE, up to `set -euo`
    local rc=${1:-2}
    if [ "$rc" -eq 0 ]; then
        sed -n '2,/^set -euo/p' "$SCRIPT_FILE" | sed '$d; s/^# \{0,1\}//'
    else
        sed -n '2,/^set -euo/p' "$SCRIPT_FILE" | sed '$d; s/^# \{0,1\}//' >&2
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

tail_log() { # FILE [N]
    local f=$1 n=${2:-40}
    if [ -f "$f" ]; then
        printf '[%s] ---- last %s lines of %s ----\n' "$LOG_PREFIX" "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
        printf '[%s] ---- end of %s ----\n' "$LOG_PREFIX" "$f" >&2
    else
        log "(no log file at $f)"
    fi
}

# ---------------------------------------------------------------- install
# apt-get update + install PACKAGE...; sets APT_RC to apt-get's status rather than returning
# it, so that the caller chooses how to fail and `set -e` still holds in here.
apt_install() { # PACKAGE...
    local sudo=() guard=0 saved_trap="" rc=0
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    # Keep apt from auto-starting the packaged system services (the stock postgresql cluster
    # on 5432, rabbitmq on 5672 with epmd on 4369): we run our own. The guard goes again
    # afterwards, or at exit if we are interrupted meanwhile.
    if [ ! -e "$POLICY_RC_D" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$POLICY_RC_D" >/dev/null
        "${sudo[@]}" chmod 755 "$POLICY_RC_D"
        guard=1
        saved_trap=$(trap -p EXIT)
        # shellcheck disable=SC2064   # expanded now: sudo is local
        trap "$(printf '%q ' "${sudo[@]}" rm -f "$POLICY_RC_D")" EXIT
    fi
    log "installing: $*"
    { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >&2 \
        && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
            install -y "$@" >&2; } || rc=$?
    if [ "$guard" -eq 1 ]; then
        "${sudo[@]}" rm -f "$POLICY_RC_D"
        eval "${saved_trap:-trap - EXIT}"
    fi
    # shellcheck disable=SC2034   # read by the caller
    APT_RC=$rc
}

# ---------------------------------------------------------------- users
# Prefix to run a command as a service user when we are root (exec-style, so `$!` of a
# backgrounded command is the service's own pid).
runas() { # USER -> sets RUNAS array
    RUNAS=()
    if is_root; then
        RUNAS=(setpriv "--reuid=$1" "--regid=$(id -g "$1")" --init-groups)
    fi
}

svc_user() { # postgres|rabbitmq -> the user that runs it
    if is_root; then echo "$1"; else id -un; fi
}

check_users_can_enter() { # DIR USER...
    local dir=$1 u; shift
    for u in "$@"; do
        runas "$u"
        "${RUNAS[@]}" test -x "$dir" \
            || die "user $u cannot access $dir (a parent directory is not world-searchable); use a DIR under /tmp or chmod o+x its parents"
    done
}

# ---------------------------------------------------------------- ports
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

# Free TCP ports on 127.0.0.1 outside the kernel's ephemeral range (so an outgoing connection
# can't grab one while its service is restarting), recorded in a machine-wide reservation
# directory under flock: parallel runs of either script never pick the same ports. A
# reservation is a file named after the port holding the owner's DIR; it is stale once that
# DIR is gone. Reservations are released by services.sh's `stop` and cluster.sh's `down`.
RES_DIR="${TMPDIR:-/tmp}/pluspay-port-reservations"

pick_ports() { # N OWNER_DIR -> prints N distinct ports, space-separated
    reserve_free_ports any "$1" "$2"
}

pick_port_block() { # N OWNER_DIR -> prints the first of N contiguous ports
    reserve_free_ports block "$1" "$2"
}

reserve_free_ports() { # any|block N OWNER_DIR
    python - "$1" "$2" "$3" "$RES_DIR" <<'EOF'
import fcntl, os, random, socket, sys
mode, need, owner, rdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
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

def free(p):  # a socket bound to p, or None if p is not ours to take
    if p in excluded or p in reserved:
        return None
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        return None
    return s

def reserve(ports):
    for p in ports:
        with open(os.path.join(rdir, str(p)), "w") as f:
            f.write(owner + "\n")

if mode == "block":
    starts = list(range(20000, lo - need, need))
    random.shuffle(starts)
    for start in starts:
        held = []
        for p in range(start, start + need):
            s = free(p)
            if s is None:
                break
            held.append(s)
        if len(held) == need:
            reserve(range(start, start + need))
            print(start)
            sys.exit(0)
        for s in held:
            s.close()
    sys.exit("could not find %d contiguous free ports" % need)

candidates = list(range(20000, lo)) if lo - 20000 >= 1000 else []
random.shuffle(candidates)
held, ports = [], []
def try_port(p):
    s = None if p in ports else free(p)
    if s is None:
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
reserve(ports)
print(" ".join(map(str, ports)))
EOF
}

reserve_ports() { # OWNER_DIR PORT... (explicitly chosen ports)
    local owner=$1; shift
    mkdir -p "$RES_DIR" 2>/dev/null && chmod 1777 "$RES_DIR" 2>/dev/null || true
    local p
    for p in "$@"; do printf '%s\n' "$owner" >"$RES_DIR/$p" 2>/dev/null || true; done
}

release_ports() { # OWNER_DIR PORT... (only the reservations OWNER_DIR holds)
    local owner=$1; shift
    local p
    for p in "$@"; do
        [ -n "$p" ] || continue
        if [ -f "$RES_DIR/$p" ] && [ "$(cat "$RES_DIR/$p" 2>/dev/null)" = "$owner" ]; then
            rm -f "$RES_DIR/$p"
        fi
    done
}

# ---------------------------------------------------------------- processes
# A process that exists and is not a zombie. (Our daemons are reparented to pid 1, which may
# reap them late: a killed one can linger as a zombie for a while.)
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

# Give PID SECONDS to exit by itself, then SIGTERM it and give it TERM-SECONDS, then SIGKILL.
end_pid() { # PID SECONDS TERM-SECONDS
    wait_pid_exit "$1" "$2" && return 0
    kill -TERM "$1" 2>/dev/null || true
    wait_pid_exit "$1" "$3" || kill -KILL "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- PostgreSQL
pg_ready_port() { # PORT
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -d postgres -U postgres -t 2 >/dev/null 2>&1
}

check_pg_socket_dir() { # SOCKET-DIR: a Unix socket path is limited to 107 bytes
    [ $((${#1} + 18)) -le 107 ] || die "DIR path too long for PostgreSQL's socket: $1"
}

# ---------------------------------------------------------------- RabbitMQ
RMQ_ENV_EXTRA=()

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
        "${RMQ_ENV_EXTRA[@]}"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    )
}

rmq() { # BIN ARGS...: run a RabbitMQ/Erlang tool as the node's user with the node's env
    local bin=$1; shift
    rmq_env
    runas "$RMQ_USER"
    (cd "$RMQ_DIR" && "${RUNAS[@]}" env -i "${RMQ_ENV[@]}" "$bin" "$@")
}

rmqctl() { rmq "$RMQ_BIN/rabbitmqctl" -n "$NODENAME" "$@"; }

amqp_ready() { # PORT: real AMQP handshake: send the protocol header, expect Connection.Start
    python - "$1" <<'EOF' 2>/dev/null
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

rmq_launcher_pid() { # the `rabbitmq-server` script that started the node, while it runs
    local pid
    pid=$(cat "$RMQ_LAUNCHER_PID_FILE" 2>/dev/null || true)
    if pid_alive "$pid"; then echo "$pid"; fi
}

rmq_fail() { # MESSAGE: show the node's logs, then die
    tail_log "$RMQ_LOG_DIR/startup.log" 60
    tail_log "$RMQ_LOG_DIR/$NODENAME.log" 40
    die "$*"
}
