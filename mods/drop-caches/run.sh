#!/bin/sh
# Mod drop-caches: start one background loop that flushes dirty pages and
# drops the kernel page cache every 60 seconds, so that cached model files do
# not crowd out the GPU's share of the Spark's unified memory while a large
# model loads. Needs a privileged container (the default), where
# /proc/sys/vm/drop_caches is writable. Runs as root. Safe to run again: a
# second run finds the loop alive and does nothing.
#
# Settings (environment, for tests and tuning):
#   DROP_CACHES_FILE      file to write "3" to   (default /proc/sys/vm/drop_caches)
#   DROP_CACHES_INTERVAL  seconds between drops  (default 60)
#   DROP_CACHES_STATE_DIR where the pid and log files go (default /tmp)
set -eu

mod=drop-caches
target=${DROP_CACHES_FILE:-/proc/sys/vm/drop_caches}
interval=${DROP_CACHES_INTERVAL:-60}
state_dir=${DROP_CACHES_STATE_DIR:-/tmp}
pid_file="$state_dir/drop-caches.pid"
log_file="$state_dir/drop-caches.log"

fail() {
    echo "$mod: ERROR: $*" >&2
    exit 1
}

case $interval in
    '' | *[!0-9]* | 0) fail "DROP_CACHES_INTERVAL must be a positive whole number of seconds, got '$interval'" ;;
esac

if [ ! -e "$target" ]; then
    fail "$target does not exist; this mod needs a Linux /proc (or DROP_CACHES_FILE set to a file)"
fi
# A trial write, not `[ -w ]`: test(1) says yes for root even on a read-only /proc/sys.
if ! (printf 1 >"$target") 2>/dev/null; then
    fail "$target is not writable; run the container privileged (not --non-privileged) and as root"
fi
mkdir -p "$state_dir" || fail "cannot create state directory '$state_dir'"

# True if $1 is a live copy of our loop. Where /proc is readable the command
# line must name the loop, which also rules out zombies and reused pids.
loop_alive() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/cmdline" ]; then
        tr '\000' ' ' <"/proc/$1/cmdline" | grep -q drop-caches-loop || return 1
    fi
    return 0
}

if [ -f "$pid_file" ]; then
    old_pid=$(cat "$pid_file" 2>/dev/null || true)
    if loop_alive "$old_pid"; then
        echo "$mod: loop already running (pid $old_pid); nothing to do"
        exit 0
    fi
    echo "$mod: removing stale pid file $pid_file"
    rm -f "$pid_file"
fi

# The loop gets its own session where setsid exists, and all of its standard
# streams point at the log, so `docker exec` returns as soon as this script ends.
# The single quotes are intended: $1, $2 and $3 belong to the loop shell.
# shellcheck disable=SC2016
loop='
target=$1
interval=$2
echo $$ > "$3"
while :; do
    sync
    if echo 3 > "$target"; then
        echo "$(date "+%Y-%m-%d %H:%M:%S") dropped page cache"
    else
        echo "$(date "+%Y-%m-%d %H:%M:%S") could not write $target"
    fi
    sleep "$interval"
done
'
if command -v setsid >/dev/null 2>&1; then
    setsid sh -c "$loop" drop-caches-loop "$target" "$interval" "$pid_file" </dev/null >>"$log_file" 2>&1 &
else
    nohup sh -c "$loop" drop-caches-loop "$target" "$interval" "$pid_file" </dev/null >>"$log_file" 2>&1 &
fi
# The loop records its own pid (setsid may fork), so wait for it briefly.
tries=0
loop_pid=
while [ $tries -lt 10 ]; do
    sleep 0.3 2>/dev/null || sleep 1
    loop_pid=$(cat "$pid_file" 2>/dev/null || true)
    loop_alive "$loop_pid" && break
    tries=$((tries + 1))
done
loop_alive "$loop_pid" || fail "background loop did not start or exited at once; see $log_file"
echo "$mod: started loop (pid $loop_pid) writing 3 to $target every ${interval}s; log $log_file"
