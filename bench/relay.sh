#!/usr/bin/env bash
# relay.sh — the end-to-end relay benchmark: ringmail against Postfix on the same machine.
#
# Who runs it: an operator or developer, as root, on a machine they may reconfigure (it installs
# and configures Postfix, then stops it, purges its queue and restores its configuration). See
# bench/README.md.
#
# What it measures, REPS times in one invocation, Postfix and ringmail one after the other so
# that machine noise hits both alike, each relaying everything to a fresh smtp-sink:
#   1. postfix  — Postfix on 127.0.0.1:25, relayhost = the sink;
#   2. ringmail — ringmail on a fresh spool, --smarthost = the sink;
# timed from the first connect until the sink has counted every message; plus the connections
# each opened to the sink per 1000 messages. Then once:
#   3. queue memory — ringmail with an unreachable smarthost keeps N messages queued: growth of
#      its VmRSS per queued message.
# Load: smtp-source -d -s 20 -m M -l 1024 (20 sessions reusing their connections, 1 KiB text).
# It prints a markdown table of medians and the ratio ringmail/Postfix. Loopback only.
#
# Usage: bench/relay.sh [-r REPS] [-m MESSAGES] [-q QUEUED] [-b RINGMAIL_BINARY]
#                       [-p PREVIOUS_BINARY] [-n]
#   -q: messages for the queue-memory run (default 100000; 0 skips it)
#   -n: no Postfix (ringmail only; Postfix is neither installed nor touched)
#   -p: also relay with another ringmail build (e.g. the previous commit's) in every
#       repetition, in alternating order with -b, and print the ratio of the two
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPS=3
MESSAGES=20000
QUEUED=100000
RINGMAIL=build/ringmail
PREVIOUS=""
WITH_POSTFIX=1
SESSIONS=20
SIZE_BYTES=1024
# ringmail's mail-loop check treats every address it listens on as itself, whatever the port:
# a smarthost on 127.0.0.1 would be "myself". The sink therefore listens on 127.0.0.2 (still
# loopback), for Postfix too so that both relay to the same place.
SINK_HOST=127.0.0.2
SINK_PORT=${SINK_PORT:-2626}
CLOSED_PORT=9          # nothing listens there: every delivery attempt is refused at once
DEADLINE_S=${DEADLINE_S:-300}  # bound on every wait

usage() { sed -n '2,24p' "$0"; exit 2; }
while getopts "r:m:q:b:p:nh" opt; do
    case $opt in
    r) REPS=$OPTARG ;;
    m) MESSAGES=$OPTARG ;;
    q) QUEUED=$OPTARG ;;
    b) RINGMAIL=$OPTARG ;;
    p) PREVIOUS=$OPTARG ;;
    n) WITH_POSTFIX=0 ;;
    *) usage ;;
    esac
done

preflight ringmail previous

WORK=$(mktemp -d /tmp/ringmail-relay.XXXXXX)
SINK_OUT=""
SINK_SESSIONS=0
SRC_PID=""
cleanup() {
    set +e
    [ -n "$SRC_PID" ] && kill "$SRC_PID" 2>/dev/null
    bench_cleanup
}
trap cleanup EXIT

# --- Postfix (the rest in lib.sh) ------------------------------------------------------------
# Relay everything to the sink, durable as always (Postfix fsyncs each queue file before its
# 250); 20 connections to the destination, as ringmail's default
# --max-connections-per-destination. No HOLD: mail leaves at once.
postfix_settings=(
    "smtpd_data_restrictions ="
    "relayhost = [$SINK_HOST]:$SINK_PORT"
    "default_destination_concurrency_limit = 20"
    "smtp_destination_concurrency_limit = 20"
    "default_process_limit = 200"
)

# --- the sink --------------------------------------------------------------------------------
# smtp-sink -c rewrites "sess=S quit=Q mesg=M\r" on stdout (flushed each time) whenever a
# message's final dot arrives or a session ends: mesg counts messages, sess counts connections
# that have ended. One fresh sink per run, its output in a file of its own.
start_sink() {
    SINK_OUT=$1
    local user=()
    [ "$(id -u)" = 0 ] && user=(-u nobody)
    port_free "$SINK_PORT" || die "something already listens on port $SINK_PORT (SINK_PORT=...)"
    smtp-sink "${user[@]}" -c "$SINK_HOST:$SINK_PORT" 2000 >"$SINK_OUT" 2>/dev/null &
    SINK_PID=$!
    wait_port "$SINK_HOST" "$SINK_PORT" || die "smtp-sink is not listening on $SINK_HOST:$SINK_PORT"
}

# The latest value of a sink counter (sess, quit or mesg); 0 before the first update. A record
# read while half written yields a prefix of the true number: never more than it.
sink_counter() {
    local last
    last=$(tail -c 64 "$SINK_OUT" 2>/dev/null) || true
    last=${last%$'\r'}
    last=${last##*$'\r'}
    if [[ $last =~ $1=([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}

# Poll (every 20 ms, bounded) until the sink has counted N messages. Fails at the deadline.
wait_sink_messages() {
    local n=$1 t0=$EPOCHREALTIME
    until [ "$(sink_counter mesg)" -ge "$n" ]; do
        past_deadline "$t0" && return 1
        sleep 0.02
    done
}

# Once the senders are done: wait (bounded) until the sink has closed every connection to it,
# so each has ended its session and been counted; stop the sink; SINK_SESSIONS = its sessions.
finish_sink() {
    local t0=$EPOCHREALTIME
    while [ -n "$(ss -Htn state established state close-wait \
        "( sport = :$SINK_PORT and src $SINK_HOST )")" ]; do
        past_deadline "$t0" && { echo "warning: connections to the sink still open" >&2; break; }
        sleep 0.05
    done
    stop_process "$SINK_PID" || true
    SINK_PID=""
    SINK_SESSIONS=$(sink_counter sess)
}

# --- one relay run ---------------------------------------------------------------------------
# Load PORT while timing until the sink has counted every message; appends msg/s to $2.
# The clock starts before smtp-source connects and stops when the sink has the last message.
relay_run() {
    local port=$1 out=$2 t0 t1 rc=0
    t0=$EPOCHREALTIME
    timeout "$DEADLINE_S" smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE_BYTES" \
        -f a@example.com -t b@example.net "127.0.0.1:$port" >/dev/null &
    SRC_PID=$!
    wait_sink_messages "$MESSAGES" || die "the sink counted $(sink_counter mesg) of $MESSAGES" \
        "messages within ${DEADLINE_S}s (port $port)"
    t1=$EPOCHREALTIME
    wait "$SRC_PID" || rc=$?
    SRC_PID=""
    [ "$rc" = 0 ] || die "smtp-source into port $port failed ($rc)"
    calc "$MESSAGES / ($t1 - $t0)" >>"$out"
}

# One relay run of ringmail BINARY into a fresh sink: msg/s appended to $WORK/NAME, its
# connections to the sink to $WORK/NAME_conns (fdatasyncs too, for the main build).
ringmail_relay() {
    local binary=$1 name=$2 rep=$3 saved=$RINGMAIL
    start_sink "$WORK/sink-$name-$rep.out"
    local log="$WORK/$name-$rep.log"
    RINGMAIL=$binary
    start_ringmail "$log" --smarthost "[$SINK_HOST]:$SINK_PORT"
    RINGMAIL=$saved
    relay_run "$RM_PORT" "$WORK/$name"
    stop_ringmail  # closes its delivery connections; the sink then counts their sessions
    finish_sink
    rm_msgs=$(sink_counter mesg)
    calc "$SINK_SESSIONS / $MESSAGES * 1000" >>"$WORK/${name}_conns"
    [ "$name" = ringmail ] || return 0
    local commits msgs
    commits=$(stats_field "$log" commits)
    msgs=$(stats_field "$log" messages)
    if [ -n "$commits" ] && [ -n "$msgs" ] && [ "$msgs" != 0 ]; then
        calc "$commits / $msgs" >>"$WORK/syncs"
    fi
}

rss_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# --- the runs --------------------------------------------------------------------------------
if [ "$WITH_POSTFIX" = 1 ]; then
    take_postfix "${postfix_settings[@]}"
fi
command -v smtp-source >/dev/null || die "smtp-source/smtp-sink (package postfix) are not installed"

for f in postfix ringmail previous pf_conns ringmail_conns previous_conns syncs; do : >"$WORK/$f"; done

for rep in $(seq "$REPS"); do
    pf_msgs=n/a
    if [ "$WITH_POSTFIX" = 1 ]; then
        # The sink first: Postfix starts delivering whatever it finds at once.
        start_sink "$WORK/sink-postfix-$rep.out"
        start_postfix
        relay_run "$PF_PORT" "$WORK/postfix"
        # Postfix keeps idle connections cached for smtp_connection_cache_time_limit (2 s):
        # finish_sink waits for it to close them.
        finish_sink
        pf_msgs=$(sink_counter mesg)
        calc "$SINK_SESSIONS / $MESSAGES * 1000" >>"$WORK/pf_conns"
        stop_postfix
        purge_postfix
    fi

    if [ -n "$PREVIOUS" ] && [ $((rep % 2)) = 1 ]; then ringmail_relay "$PREVIOUS" previous "$rep"; fi
    ringmail_relay "$RINGMAIL" ringmail "$rep"
    if [ -n "$PREVIOUS" ] && [ $((rep % 2)) = 0 ]; then ringmail_relay "$PREVIOUS" previous "$rep"; fi
    pf_last=$(tail -1 "$WORK/postfix")
    printf 'rep %d: postfix %s msg/s (%s conns, sink got %s)  ringmail %s msg/s (%s conns,' \
        "$rep" "${pf_last:-n/a}" "$(tail -1 "$WORK/pf_conns")" "$pf_msgs" \
        "$(tail -1 "$WORK/ringmail")" "$(tail -1 "$WORK/ringmail_conns")" >&2
    printf ' sink got %s)\n' "$rm_msgs" >&2
done

# Queue memory: every delivery attempt is refused, the retry schedule keeps all N queued.
per_msg_rss=n/a
per_msg_anon=n/a
if [ "$QUEUED" -gt 0 ]; then
    port_free "$CLOSED_PORT" || die "something listens on port $CLOSED_PORT"
    log="$WORK/ringmail-queue.log"
    start_ringmail "$log" --smarthost "[$SINK_HOST]:$CLOSED_PORT" --retry-schedule 1h:1h
    rss0=$(rss_kib "$RM_PID" VmRSS)
    anon0=$(rss_kib "$RM_PID" RssAnon)
    timeout "$DEADLINE_S" smtp-source -d -s "$SESSIONS" -m "$QUEUED" -l "$SIZE_BYTES" \
        -f a@example.com -t b@example.net "127.0.0.1:$RM_PORT" >/dev/null ||
        die "smtp-source into ringmail (queue run) failed"
    # One refused attempt per message, then 1 h until the next: N deferred lines, then quiet.
    t0=$EPOCHREALTIME
    until [ "$(grep -c 'status=deferred' "$log")" -ge "$QUEUED" ]; do
        past_deadline "$t0" && { echo "warning: not all $QUEUED deferred in time" >&2; break; }
        sleep 0.5
    done
    deferred=$(grep -c 'status=deferred' "$log" || true)
    rss1=$(rss_kib "$RM_PID" VmRSS)
    anon1=$(rss_kib "$RM_PID" RssAnon)
    stop_ringmail
    per_msg_rss=$(calc "($rss1 - $rss0) * 1024 / $QUEUED")
    per_msg_anon=$(calc "($anon1 - $anon0) * 1024 / $QUEUED")
    printf 'queue: %s deferred; VmRSS %s -> %s KiB, RssAnon %s -> %s KiB\n' "$deferred" \
        "$rss0" "$rss1" "$anon0" "$anon1" >&2
fi

pf=$(median <"$WORK/postfix")
rm_=$(median <"$WORK/ringmail")
pf_conns=$(median <"$WORK/pf_conns")
rm_conns=$(median <"$WORK/ringmail_conns")
syncs=$(median <"$WORK/syncs")
ratio=$(ratio "$rm_" "$pf")

echo
echo "End-to-end relay, $MESSAGES messages of ${SIZE_BYTES} B, $SESSIONS sessions, median of" \
    "$REPS ($(nproc) CPUs, $(uname -r))"
echo
echo "| run | msg/s end to end | connections to the sink / 1000 msg |"
echo "|---|---|---|"
echo "| Postfix (relayhost) | $(fmt "$pf" %.0f) | $(fmt "$pf_conns" %.1f) |"
echo "| ringmail (--smarthost) | $(fmt "$rm_" %.0f) | $(fmt "$rm_conns" %.1f) |"
echo "| ringmail / Postfix | $(fmt "$ratio" %.2f) | |"
if [ -n "$PREVIOUS" ]; then
    prev=$(median <"$WORK/previous")
    echo "| ringmail, previous build (-p) | $(fmt "$prev" %.0f) |" \
        "$(fmt "$(median <"$WORK/previous_conns")" %.1f) |"
    echo "| ringmail / previous build | $(fmt "$(ratio "$rm_" "$prev")" %.2f) | |"
fi
echo
echo "| ringmail | value |"
echo "|---|---|"
echo "| fdatasyncs per message (ingest and delivery statuses) | $(fmt "$syncs" %.4f) |"
echo "| bytes of VmRSS per queued message ($QUEUED queued) | $(fmt "$per_msg_rss" %.0f) |"
echo "| bytes of RssAnon per queued message | $(fmt "$per_msg_anon" %.0f) |"
