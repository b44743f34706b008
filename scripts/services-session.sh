# Sourced by scripts/test.sh and scripts/bench.sh: throwaway PostgreSQL and RabbitMQ for the
# length of the calling script, started in the background while it builds, always stopped and
# deleted when it exits (on success, failure and Ctrl-C). Needs SERVICES (scripts/services.sh)
# and a `log` function.
#
#   services_begin NAME   install what is missing, start the services in a new temporary
#                         directory ($DIR) in the background, arrange the clean-up
#   services_ready        wait for them; exit 1 if they did not start; export their env

services_cleanup() {
    local rc=$?
    # Ignore further Ctrl-C/TERM (the commands below inherit that) so that the clean-up itself
    # can't be interrupted halfway and leave services running.
    trap - EXIT
    trap '' INT TERM HUP
    set +e
    if [ -n "${BACKGROUND_GROUP_FILE:-}" ] && [ -s "$BACKGROUND_GROUP_FILE" ]; then
        # A background job of the caller's in a process group of its own (setsid), unfinished:
        # the file holds the group's id.
        kill -- -"$(cat "$BACKGROUND_GROUP_FILE")" 2>/dev/null
    fi
    if [ -n "${START_PID:-}" ]; then
        # A start still in progress would race with stop: let it finish first.
        wait "$START_PID" 2>/dev/null
    fi
    bash "$SERVICES" stop "$DIR" || log "WARNING: stopping the services in $DIR failed"
    rm -rf "$DIR"
    exit "$rc"
}

services_begin() {
    bash "$SERVICES" install
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pluspay-$1.XXXXXX")
    START_PID=
    trap services_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    # RabbitMQ takes several seconds to boot: the caller builds meanwhile.
    log "starting PostgreSQL and RabbitMQ in $DIR"
    bash "$SERVICES" start "$DIR" >"$DIR/start.log" 2>&1 &
    START_PID=$!
}

services_ready() {
    local start_rc=0
    wait "$START_PID" || start_rc=$?
    START_PID=
    cat "$DIR/start.log" >&2
    if [ "$start_rc" -ne 0 ]; then
        log "ERROR: could not start the services (see above)"
        exit 1
    fi
    set -a
    # shellcheck disable=SC1091
    source "$DIR/env"
    set +a
}
