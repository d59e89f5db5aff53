#!/usr/bin/env bash
# Private dockerd for tests and CI: own data-root, exec-root, socket and pidfile,
# and no iptables/bridge so it never touches the host's firewall.
# The data-root is persistent so test images stay cached between runs.
#
#   bash tests/harness/dockerd.sh start   # idempotent; waits up to 30 s for `docker info`
#   bash tests/harness/dockerd.sh stop
#   eval "$(bash tests/harness/dockerd.sh env)"
#
# RR_TEST_DOCKERD=NAME runs a second, separate daemon (own socket and data-root),
# so two checkouts can run their docker tests side by side without deleting each
# other's images.
set -euo pipefail

NAME=${RR_TEST_DOCKERD:+-$RR_TEST_DOCKERD}
RUN_DIR=/run/runrecipe-test
DATA_ROOT=/var/lib/runrecipe-test/docker$NAME
EXEC_ROOT=$RUN_DIR/exec$NAME
SOCK=$RUN_DIR/docker$NAME.sock
PIDFILE=$RUN_DIR/dockerd$NAME.pid
LOG=$RUN_DIR/dockerd$NAME.log
HOST_URL=unix://$SOCK

# The 20.10 client matches the 20.10 engine; any client works for `info`.
DOCKER_CLI=$(command -v /usr/bin/docker || command -v docker || true)

answers() {
    [ -n "$DOCKER_CLI" ] && DOCKER_HOST=$HOST_URL timeout 10 "$DOCKER_CLI" info >/dev/null 2>&1
}

running_pid() {
    # Prints the pid from the pidfile if that process is alive.
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
    if answers; then
        echo "dockerd already answering at $HOST_URL" >&2
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "dockerd.sh: must run as root to start dockerd" >&2
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "dockerd.sh: no dockerd binary (apt-get install docker.io)" >&2
        return 1
    fi
    mkdir -p "$RUN_DIR" "$EXEC_ROOT" "$DATA_ROOT"
    if ! running_pid >/dev/null; then
        # A stale pidfile or socket from a crashed daemon would make dockerd refuse to start.
        rm -f "$PIDFILE" "$SOCK"
        nohup dockerd \
            --data-root "$DATA_ROOT" \
            --exec-root "$EXEC_ROOT" \
            -H "$HOST_URL" \
            --pidfile "$PIDFILE" \
            --iptables=false --bridge=none \
            >>"$LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 60); do
        if answers; then
            echo "dockerd ready at $HOST_URL" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "dockerd.sh: dockerd did not answer within 30 s; last log lines:" >&2
    tail -n 20 "$LOG" >&2 || true
    return 1
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        echo "dockerd not running" >&2
        rm -f "$PIDFILE"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { echo "dockerd stopped" >&2; return 0; }
        sleep 0.5
    done
    echo "dockerd.sh: dockerd (pid $pid) still running after 30 s" >&2
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export DOCKER_HOST=$HOST_URL" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
