# shellcheck shell=bash
# lib.sh — what the whole-system benchmarks (compare.sh, ingest.sh, relay.sh, tls.sh) share:
# Postfix taken over for a run and given back, ringmail started and stopped, bounded waits,
# ringmail-bench source runs and their JSON reports, arithmetic and medians, and the guard
# against two benchmarks at once. Sourced, never run: `. "$(dirname "$0")/lib.sh"`.
#
# The sourcing script sets, before it calls anything here: WORK (its scratch directory),
# RINGMAIL and BENCH (binaries, where used), DEADLINE_S (bound on every wait, seconds),
# DURATION (seconds of load per ringmail-bench source run), and SOURCE_IPS (client addresses
# for runs of more than 100 sessions) where it has such runs. Ports: PF_PORT (Postfix, 25) and
# RM_PORT (ringmail, $RM_PORT or 2525), both on 127.0.0.1.

PF_PORT=25
RM_PORT=${RM_PORT:-2525}
RM_PID=""
SINK_PID=""
PF_WAS_RUNNING=0

die() { echo "${0##*/}: $*" >&2; exit 1; }

# preflight BINARY...: what every script checks before it touches anything: root (unless
# WITH_POSTFIX=0), the binaries it uses (ringmail: RINGMAIL, ringmail-bench: BENCH) there and
# made absolute, and no other benchmark running.
preflight() {
    [ "$WITH_POSTFIX" = 0 ] || [ "$(id -u)" = 0 ] || die "run as root (it configures Postfix)"
    local b
    for b in "$@"; do
        case $b in
        ringmail)
            [ -x "$RINGMAIL" ] || die "no ringmail binary at $RINGMAIL (use -b PATH)"
            RINGMAIL=$(realpath "$RINGMAIL")
            ;;
        previous)
            [ -z "$PREVIOUS" ] || [ -x "$PREVIOUS" ] || die "no ringmail binary at $PREVIOUS (-p)"
            [ -z "$PREVIOUS" ] || PREVIOUS=$(realpath "$PREVIOUS")
            ;;
        ringmail-bench)
            [ -x "$BENCH" ] || die "no ringmail-bench binary at $BENCH (use -B PATH)"
            BENCH=$(realpath "$BENCH")
            ;;
        esac
    done
    refuse_concurrent_benchmarks
}

# Two benchmarks at once would measure each other (and fight over Postfix and the ports).
refuse_concurrent_benchmarks() {
    local others="" p
    for p in $(pgrep -f '^[^ ]*bash [^ ]*bench/(ingest|relay|compare|tls)\.sh( |$)' || true); do
        # This script's own subshells carry its command line too (and may be gone by now).
        [ "$p" = $$ ] || [ ! -e "/proc/$p" ] && continue
        [ "$(ps -o ppid= -p "$p" | tr -d ' ')" = $$ ] || others+=" $p"
    done
    [ -z "$others" ] || die "another benchmark script is running (pids:$others)"
}

# --- Postfix ---------------------------------------------------------------------------------
install_postfix() {
    command -v postconf >/dev/null && command -v smtp-source >/dev/null && return 0
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
}

# Saves main.cf / master.cf to $WORK (restore_postfix puts them back), then sets what every run
# needs — loopback only, no local delivery, relaying for 127/8 only, no per-client limits — and
# the run's own SETTINGS ("name = value" each). Limits are raised as a performance-minded admin
# would, nothing that trades durability away (Postfix fsyncs each queue file before its 250).
configure_postfix() {
    [ -f /etc/postfix/main.cf ] || cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
    cp /etc/postfix/main.cf "$WORK/main.cf.orig"
    cp /etc/postfix/master.cf "$WORK/master.cf.orig"
    postconf -e \
        "compatibility_level = 3.6" \
        "inet_interfaces = loopback-only" \
        "inet_protocols = ipv4" \
        "myhostname = bench.local" \
        "mydestination =" \
        "mynetworks = 127.0.0.0/8" \
        "smtpd_recipient_restrictions = permit_mynetworks,reject" \
        "smtpd_client_connection_count_limit = 0" \
        "smtpd_client_connection_rate_limit = 0" \
        "$@"
}

postfix_running() { postfix status >/dev/null 2>&1; }

start_postfix() {
    if postfix_running; then postfix reload >/dev/null 2>&1; else postfix start >/dev/null 2>&1; fi
    wait_port 127.0.0.1 "$PF_PORT" || die "postfix is not listening on 127.0.0.1:$PF_PORT"
}

stop_postfix() {
    postfix_running || return 0
    local pid
    pid=$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)
    postfix stop >/dev/null 2>&1 || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
}

purge_postfix() { postsuper -d ALL >/dev/null 2>&1 || true; }

# Install Postfix if missing, remember whether it ran, configure it with SETTINGS (as
# configure_postfix), and leave it stopped with an empty queue and port 25 free for it.
take_postfix() {
    install_postfix
    postfix_running && PF_WAS_RUNNING=1
    configure_postfix "$@"
    stop_postfix # also one left running by an earlier run
    purge_postfix
    port_free "$PF_PORT" || die "something other than Postfix listens on port $PF_PORT"
}

# Give Postfix back as it was found: queue purged, configuration restored, running if it was.
# Does nothing unless configure_postfix ran.
restore_postfix() {
    [ -f "$WORK/main.cf.orig" ] || return 0
    purge_postfix
    stop_postfix
    purge_postfix
    cp "$WORK/main.cf.orig" /etc/postfix/main.cf
    cp "$WORK/master.cf.orig" /etc/postfix/master.cf
    if [ "$PF_WAS_RUNNING" = 1 ]; then postfix start >/dev/null 2>&1 || true; fi
}

# --- processes and ports ---------------------------------------------------------------------
# Wait until something answers 220 on HOST:PORT (bounded: 20 s).
wait_port() {
    local host=$1 port=$2
    for _ in $(seq 200); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 3 <&3" 2>/dev/null |
            grep -q 220; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Nothing may listen on PORT (any address): ringmail's listeners use SO_REUSEPORT, so a stale
# one would silently take part of the load, and a stale sink would count someone else's mail.
port_free() { [ -z "$(ss -Hltn "( sport = :$1 )")" ]; }

# More than DEADLINE_S seconds since $1 (an $EPOCHREALTIME)? Whole seconds, no fork per poll.
past_deadline() { ((${EPOCHREALTIME%.*} - ${1%.*} > DEADLINE_S)); }

# Stop PID with SIGTERM (SIGKILL after DEADLINE_S); its exit status.
stop_process() {
    local pid=$1 t0=$EPOCHREALTIME rc=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if past_deadline "$t0"; then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

# CPU time (utime + stime) of PID so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# --- ringmail --------------------------------------------------------------------------------
# start_ringmail LOG [flags...]: ringmail on 127.0.0.1:$RM_PORT with a fresh spool
# ($WORK/spool), its stderr to LOG; RM_PID.
start_ringmail() {
    local log=$1
    shift
    port_free "$RM_PORT" || die "something already listens on port $RM_PORT (RM_PORT=...)"
    rm -rf "$WORK/spool"
    "$RINGMAIL" --listen "127.0.0.1:$RM_PORT" --spool-dir "$WORK/spool" "$@" 2>"$log" &
    RM_PID=$!
    wait_port 127.0.0.1 "$RM_PORT" || die "ringmail is not ready on 127.0.0.1:$RM_PORT"
}

stop_ringmail() {
    local rc=0
    stop_process "$RM_PID" || rc=$?
    RM_PID=""
    [ "$rc" = 0 ] || echo "warning: ringmail exited $rc" >&2
    rm -rf "$WORK/spool"
}

# A field of the "stats ..." line ringmail logs (to LOG) when it stops; empty if missing.
stats_field() {
    grep -E 'stats .*commits=' "$1" | tail -1 | sed -n "s/.* $2=\([0-9]*\).*/\1/p" || true
}

# What every script's exit trap does (after killing its own extra processes): kill ringmail and
# the sink, give Postfix back, remove WORK.
bench_cleanup() {
    set +e
    [ -n "$RM_PID" ] && kill -KILL "$RM_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    restore_postfix
    rm -rf "$WORK"
}

# --- ringmail-bench source -------------------------------------------------------------------
# source_run TARGET OUT.json SIZE PIPELINING SESSIONS [extra flags...]: DURATION seconds of load
# (HOST:PORT); bounded by SRC_TIMEOUT (default DEADLINE_S): SIGINT makes the source stop starting
# messages, finish what is in flight and report. More than 100 sessions are spread over
# SOURCE_IPS.
source_run() {
    local target=$1 out=$2 size=$3 pl=$4 sessions=$5
    shift 5
    local ips=()
    [ "$sessions" -gt 100 ] && ips=(--source-ip "$SOURCE_IPS")
    timeout -s INT "${SRC_TIMEOUT:-$DEADLINE_S}" "$BENCH" source "$target" --duration "$DURATION" \
        --size "$size" --pipelining "$pl" --sessions "$sessions" "${ips[@]}" --json \
        --no-progress "$@" >"$out" 2>>"$WORK/source.log" || true
    [ -s "$out" ] || die "ringmail-bench source into $target gave no report"
}

# A number from a ringmail-bench JSON report: top-level KEY, or KEY inside object OBJ.
jnum() { grep -o "\"$2\":[0-9.]*" "$1" | head -1 | cut -d: -f2; }
jnum_in() { sed -n "s/.*\"$2\":{[^}]*\"$3\":\([0-9.]*\).*/\1/p" "$1"; }

# Refusals are results, but they must be seen: a server that refuses fast is not fast.
note_failures() {
    local f a c t more=""
    f=$(jnum "$1" messages_failed)
    a=$(jnum "$1" messages_aborted)
    c=$(jnum "$1" connect_errors)
    t=$(jnum "$1" tls_failures)
    [ "${t:-0}" = 0 ] || more=", $t TLS failures"
    if [ "$f$a$c" != 000 ] || [ -n "$more" ]; then
        echo "  note ($2): $f failed, $a aborted, $c connect errors$more" >&2
    fi
}

# --- arithmetic and tables -------------------------------------------------------------------
# Floating-point arithmetic without bc: calc "1 / 3". Parenthesised: awk would read a bare ">"
# in print as a redirection to a file.
calc() { awk "BEGIN { print ($1) }"; }

# The median of the numbers on stdin, one a line; n/a if none.
median() { sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The median of the numbers in FILE; n/a if there is no such file.
med() { [ -f "$1" ] && median <"$1" || echo n/a; }

# fmt VALUE FORMAT: VALUE printf'd, or n/a if it is n/a or empty.
# shellcheck disable=SC2059  # the format is the caller's
fmt() { [ "$1" = n/a ] || [ -z "$1" ] && echo n/a || printf "$2" "$1"; }

# A / B, or n/a if either is n/a or B is 0.
ratio() {
    if [ "$1" = n/a ] || [ "$2" = n/a ] || [ "$(calc "$2 == 0")" = 1 ]; then echo n/a; else
        calc "$1 / $2"
    fi
}
