#!/usr/bin/env bash
# ingest.sh — the durable-ingest benchmark: ringmail against Postfix on the same machine.
#
# Who runs it: an operator or developer, as root, on a machine they may reconfigure (it installs
# and configures Postfix, then stops it and restores its configuration). See bench/README.md.
#
# What it measures, REPS times in one invocation, Postfix and ringmail one after the other so
# that machine noise hits both alike:
#   1. ceiling  — smtp-source straight into smtp-sink: the client's own limit, nothing stored;
#   2. postfix  — Postfix on 127.0.0.1:25 holding every message (durable ingest, no delivery);
#   3. ringmail — ringmail on a fresh spool (default threads), same load.
# Load: smtp-source -d -s 20 -m M -l 1024 (20 sessions reusing their connections, 1 KiB text).
# It prints a markdown table of medians and the ratios ringmail/Postfix and ringmail/ceiling.
# Everything listens on 127.0.0.1 only.
#
# Usage: bench/ingest.sh [-r REPS] [-m MESSAGES] [-b RINGMAIL_BINARY] [-p PREVIOUS_BINARY]
#                        [-t THREADS] [-n]
#   -n: no Postfix (ceiling and ringmail only; Postfix is neither installed nor touched)
#   -p: also run another ringmail build (e.g. the previous commit's) in every repetition, in
#       alternating order with -b, and print the ratio of the two: a change is judged against
#       its predecessor in the same run
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPS=3
MESSAGES=20000
RINGMAIL=build/ringmail
PREVIOUS=""
THREADS=""
WITH_POSTFIX=1
SESSIONS=20
SIZE_BYTES=1024
SINK_PORT=${SINK_PORT:-2626}
DEADLINE_S=${DEADLINE_S:-300} # bound on every wait

usage() { sed -n '2,22p' "$0"; exit 2; }
while getopts "r:m:b:p:t:nh" opt; do
    case $opt in
    r) REPS=$OPTARG ;;
    m) MESSAGES=$OPTARG ;;
    b) RINGMAIL=$OPTARG ;;
    p) PREVIOUS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    n) WITH_POSTFIX=0 ;;
    *) usage ;;
    esac
done

preflight ringmail previous

WORK=$(mktemp -d /tmp/ringmail-ingest.XXXXXX)
trap bench_cleanup EXIT

# --- Postfix (the rest in lib.sh) ------------------------------------------------------------
# Durable ingest with delivery held: Postfix fsyncs each queue file before its 250, then HOLD
# keeps the message. The relayhost is the sink, should anything be released.
postfix_settings=(
    "smtpd_data_restrictions = check_client_access static:HOLD"
    "relayhost = [127.0.0.1]:$SINK_PORT"
    "default_process_limit = 200"
)

# --- helpers ---------------------------------------------------------------------------------
# Run the load against PORT; prints the elapsed seconds.
load() {
    local port=$1 t0 t1
    t0=$(date +%s.%N)
    smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE_BYTES" -f a@example.com \
        -t b@example.net "127.0.0.1:$port" >/dev/null ||
        die "smtp-source into port $port failed"
    t1=$(date +%s.%N)
    calc "$t1 - $t0"
}

# One durable-ingest run of ringmail BINARY; msg/s appended to $WORK/NAME (CPU and fdatasync
# figures too, for the main build).
ringmail_run() {
    local binary=$1 name=$2 rep=$3 args=(--no-delivery) saved=$RINGMAIL c0 c1 s
    [ -n "$THREADS" ] && args+=(--threads "$THREADS")
    local log="$WORK/$name-$rep.log"
    RINGMAIL=$binary
    start_ringmail "$log" "${args[@]}"
    RINGMAIL=$saved
    c0=$(cpu_ticks "$RM_PID")
    s=$(load "$RM_PORT")
    c1=$(cpu_ticks "$RM_PID")
    stop_ringmail
    calc "$MESSAGES / $s" >>"$WORK/$name"
    [ "$name" = ringmail ] || return 0
    calc "($c1 - $c0) / $CLK_TCK / $MESSAGES * 1000" >>"$WORK/cpu"
    local commits msgs
    commits=$(stats_field "$log" commits)
    msgs=$(stats_field "$log" messages)
    if [ -n "$commits" ] && [ -n "$msgs" ] && [ "$msgs" != 0 ]; then
        calc "$commits / $msgs" >>"$WORK/syncs"
    fi
}

# --- the runs --------------------------------------------------------------------------------
if [ "$WITH_POSTFIX" = 1 ]; then
    take_postfix "${postfix_settings[@]}"
    start_postfix
fi
command -v smtp-source >/dev/null || die "smtp-source (package postfix) is not installed"

sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -c "127.0.0.1:$SINK_PORT" 2000 >/dev/null 2>&1 &
SINK_PID=$!
wait_port 127.0.0.1 "$SINK_PORT" || die "smtp-sink is not listening on 127.0.0.1:$SINK_PORT"

CLK_TCK=$(getconf CLK_TCK)
for f in ceiling postfix ringmail previous cpu syncs; do : >"$WORK/$f"; done

for rep in $(seq "$REPS"); do
    s=$(load "$SINK_PORT")
    calc "$MESSAGES / $s" >>"$WORK/ceiling"

    held=n/a
    if [ "$WITH_POSTFIX" = 1 ]; then
        purge_postfix
        s=$(load "$PF_PORT")
        calc "$MESSAGES / $s" >>"$WORK/postfix"
        held=$(postqueue -j 2>/dev/null | wc -l)
        purge_postfix
    fi

    # Delivery held, as Postfix's is: durable ingest only (and no DNS lookups for the
    # benchmark's recipient domain). With -p the two builds take turns going first.
    if [ -n "$PREVIOUS" ] && [ $((rep % 2)) = 1 ]; then ringmail_run "$PREVIOUS" previous "$rep"; fi
    ringmail_run "$RINGMAIL" ringmail "$rep"
    if [ -n "$PREVIOUS" ] && [ $((rep % 2)) = 0 ]; then ringmail_run "$PREVIOUS" previous "$rep"; fi
    pf_last=$(tail -1 "$WORK/postfix")
    prev_last=$(tail -1 "$WORK/previous")
    printf 'rep %d: ceiling %s  postfix %s (held %s)  ringmail %s  previous %s msg/s\n' "$rep" \
        "$(tail -1 "$WORK/ceiling")" "${pf_last:-n/a}" "$held" "$(tail -1 "$WORK/ringmail")" \
        "${prev_last:-n/a}" >&2
done

ceil=$(median <"$WORK/ceiling")
pf=$(median <"$WORK/postfix")
rm_=$(median <"$WORK/ringmail")
cpu=$(median <"$WORK/cpu")
syncs=$(median <"$WORK/syncs")

echo
echo "Durable ingest, $MESSAGES messages of ${SIZE_BYTES} B, $SESSIONS sessions, median of $REPS" \
    "($(nproc) CPUs, $(uname -r))"
echo
echo "| run | msg/s | ringmail / this |"
echo "|---|---|---|"
ceil_ratio=$(ratio "$rm_" "$ceil")
echo "| smtp-source → smtp-sink (ceiling) | $(fmt "$ceil" %.0f) | $(fmt "$ceil_ratio" %.2f) |"
pf_ratio=$(ratio "$rm_" "$pf")
echo "| Postfix, held (durable ingest) | $(fmt "$pf" %.0f) | $(fmt "$pf_ratio" %.2f) |"
echo "| ringmail (durable ingest) | $(fmt "$rm_" %.0f) | 1.00 |"
if [ -n "$PREVIOUS" ]; then
    prev=$(median <"$WORK/previous")
    echo "| ringmail, previous build (-p) | $(fmt "$prev" %.0f) | $(fmt "$(ratio "$rm_" "$prev")" %.2f) |"
fi
echo
echo "| ringmail | median |"
echo "|---|---|"
echo "| CPU seconds per 1000 messages | $(fmt "$cpu" %.3f) |"
echo "| fdatasyncs per message | $(fmt "$syncs" %.4f) |"
