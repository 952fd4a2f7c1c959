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
# Usage: bench/ingest.sh [-r REPS] [-m MESSAGES] [-b RINGMAIL_BINARY] [-t THREADS] [-n]
#   -n: no Postfix (ceiling and ringmail only; Postfix is neither installed nor touched)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPS=3
MESSAGES=20000
RINGMAIL=build/ringmail
THREADS=""
WITH_POSTFIX=1
SESSIONS=20
SIZE_BYTES=1024
SINK_PORT=${SINK_PORT:-2626}
DEADLINE_S=${DEADLINE_S:-300} # bound on every wait

usage() { sed -n '2,18p' "$0"; exit 2; }
while getopts "r:m:b:t:nh" opt; do
    case $opt in
    r) REPS=$OPTARG ;;
    m) MESSAGES=$OPTARG ;;
    b) RINGMAIL=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    n) WITH_POSTFIX=0 ;;
    *) usage ;;
    esac
done

preflight ringmail

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
for f in ceiling postfix ringmail cpu syncs; do : >"$WORK/$f"; done

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
    # benchmark's recipient domain).
    args=(--no-delivery)
    [ -n "$THREADS" ] && args+=(--threads "$THREADS")
    log="$WORK/ringmail-$rep.log"
    start_ringmail "$log" "${args[@]}"
    c0=$(cpu_ticks "$RM_PID")
    s=$(load "$RM_PORT")
    c1=$(cpu_ticks "$RM_PID")
    stop_ringmail
    calc "$MESSAGES / $s" >>"$WORK/ringmail"
    calc "($c1 - $c0) / $CLK_TCK / $MESSAGES * 1000" >>"$WORK/cpu"
    commits=$(stats_field "$log" commits)
    msgs=$(stats_field "$log" messages)
    if [ -n "$commits" ] && [ -n "$msgs" ] && [ "$msgs" != 0 ]; then
        calc "$commits / $msgs" >>"$WORK/syncs"
    fi
    pf_last=$(tail -1 "$WORK/postfix")
    printf 'rep %d: ceiling %s  postfix %s (held %s)  ringmail %s msg/s\n' "$rep" \
        "$(tail -1 "$WORK/ceiling")" "${pf_last:-n/a}" "$held" "$(tail -1 "$WORK/ringmail")" >&2
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
echo
echo "| ringmail | median |"
echo "|---|---|"
echo "| CPU seconds per 1000 messages | $(fmt "$cpu" %.3f) |"
echo "| fdatasyncs per message | $(fmt "$syncs" %.4f) |"
