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

REPS=3
MESSAGES=20000
RINGMAIL=build/ringmail
THREADS=""
WITH_POSTFIX=1
SESSIONS=20
SIZE_BYTES=1024
PF_PORT=25
SINK_PORT=${SINK_PORT:-2626}
RM_PORT=${RM_PORT:-2525}

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

die() { echo "ingest.sh: $*" >&2; exit 1; }
[ "$WITH_POSTFIX" = 0 ] || [ "$(id -u)" = 0 ] || die "run as root (it configures Postfix)"
[ -x "$RINGMAIL" ] || die "no ringmail binary at $RINGMAIL (use -b PATH)"
RINGMAIL=$(realpath "$RINGMAIL")

WORK=$(mktemp -d /tmp/ringmail-ingest.XXXXXX)
SINK_PID=""
RM_PID=""
PF_WAS_RUNNING=0

# --- Postfix ---------------------------------------------------------------------------------
install_postfix() {
    command -v postconf >/dev/null && command -v smtp-source >/dev/null && return 0
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
}

# Durable ingest with delivery held: Postfix fsyncs each queue file before its 250, then HOLD
# keeps the message. Limits raised as a performance-minded admin would, nothing that trades
# durability away. The relayhost is the sink, should anything be released.
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
        "smtpd_data_restrictions = check_client_access static:HOLD" \
        "relayhost = [127.0.0.1]:$SINK_PORT" \
        "default_process_limit = 200" \
        "smtpd_client_connection_count_limit = 0" \
        "smtpd_client_connection_rate_limit = 0"
}

postfix_running() { postfix status >/dev/null 2>&1; }

start_postfix() {
    if postfix_running; then postfix reload >/dev/null 2>&1; else postfix start >/dev/null 2>&1; fi
    wait_port "$PF_PORT" || die "postfix is not listening on 127.0.0.1:$PF_PORT"
}

stop_postfix() {
    postfix_running || return 0
    local pid
    pid=$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)
    postfix stop >/dev/null 2>&1 || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
}

purge_postfix() { postsuper -d ALL >/dev/null 2>&1 || true; }

# --- helpers ---------------------------------------------------------------------------------
# Wait until something answers 220 on 127.0.0.1:PORT (bounded: 20 s).
wait_port() {
    local port=$1
    for _ in $(seq 200); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 3 <&3" 2>/dev/null |
            grep -q 220; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

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

# Floating-point arithmetic without bc: calc "1 / 3".
calc() { awk "BEGIN { print $1 }"; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

cleanup() {
    set +e
    [ -n "$RM_PID" ] && kill -KILL "$RM_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ -f "$WORK/main.cf.orig" ]; then
        purge_postfix
        stop_postfix
        cp "$WORK/main.cf.orig" /etc/postfix/main.cf
        cp "$WORK/master.cf.orig" /etc/postfix/master.cf
        [ "$PF_WAS_RUNNING" = 1 ] && postfix start >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

median() { sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- the runs --------------------------------------------------------------------------------
if [ "$WITH_POSTFIX" = 1 ]; then
    install_postfix
    postfix_running && PF_WAS_RUNNING=1
    configure_postfix
    stop_postfix
    purge_postfix
    start_postfix
fi
command -v smtp-source >/dev/null || die "smtp-source (package postfix) is not installed"

sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -c "127.0.0.1:$SINK_PORT" 2000 >/dev/null 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" || die "smtp-sink is not listening on 127.0.0.1:$SINK_PORT"

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

    spool="$WORK/spool-$rep"
    # Delivery held, as Postfix's is: durable ingest only (and no DNS lookups for the
    # benchmark's recipient domain).
    args=(--listen "127.0.0.1:$RM_PORT" --spool-dir "$spool" --no-delivery)
    [ -n "$THREADS" ] && args+=(--threads "$THREADS")
    "$RINGMAIL" "${args[@]}" 2>"$WORK/ringmail-$rep.log" &
    RM_PID=$!
    wait_port "$RM_PORT" || die "ringmail is not ready on 127.0.0.1:$RM_PORT"
    c0=$(cpu_ticks "$RM_PID")
    s=$(load "$RM_PORT")
    c1=$(cpu_ticks "$RM_PID")
    kill -TERM "$RM_PID"
    rc=0
    wait "$RM_PID" || rc=$?
    RM_PID=""
    [ "$rc" = 0 ] || echo "warning: ringmail exited $rc (log $WORK/ringmail-$rep.log)" >&2
    calc "$MESSAGES / $s" >>"$WORK/ringmail"
    calc "($c1 - $c0) / $CLK_TCK / $MESSAGES * 1000" >>"$WORK/cpu"
    stats=$(grep -E 'stats .*commits=' "$WORK/ringmail-$rep.log" | tail -1 || true)
    commits=$(sed -n 's/.*commits=\([0-9]*\).*/\1/p' <<<"$stats")
    msgs=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' <<<"$stats")
    if [ -n "$commits" ] && [ -n "$msgs" ] && [ "$msgs" != 0 ]; then
        calc "$commits / $msgs" >>"$WORK/syncs"
    fi
    rm -rf "$spool"
    pf_last=$(tail -1 "$WORK/postfix")
    printf 'rep %d: ceiling %s  postfix %s (held %s)  ringmail %s msg/s\n' "$rep" \
        "$(tail -1 "$WORK/ceiling")" "${pf_last:-n/a}" "$held" "$(tail -1 "$WORK/ringmail")" >&2
done

ceil=$(median <"$WORK/ceiling")
pf=$(median <"$WORK/postfix")
rm_=$(median <"$WORK/ringmail")
cpu=$(median <"$WORK/cpu")
syncs=$(median <"$WORK/syncs")
# shellcheck disable=SC2059  # the format is ours, passed by the callers below
fmt() { [ "$1" = n/a ] && echo n/a || printf "$2" "$1"; }

echo
echo "Durable ingest, $MESSAGES messages of ${SIZE_BYTES} B, $SESSIONS sessions, median of $REPS" \
    "($(nproc) CPUs, $(uname -r))"
echo
echo "| run | msg/s | ringmail / this |"
echo "|---|---|---|"
ceil_ratio=$(calc "$rm_ / $ceil")
echo "| smtp-source → smtp-sink (ceiling) | $(fmt "$ceil" %.0f) | $(fmt "$ceil_ratio" %.2f) |"
pf_ratio=n/a
[ "$pf" != n/a ] && pf_ratio=$(calc "$rm_ / $pf")
echo "| Postfix, held (durable ingest) | $(fmt "$pf" %.0f) | $(fmt "$pf_ratio" %.2f) |"
echo "| ringmail (durable ingest) | $(fmt "$rm_" %.0f) | 1.00 |"
echo
echo "| ringmail | median |"
echo "|---|---|"
echo "| CPU seconds per 1000 messages | $(fmt "$cpu" %.3f) |"
echo "| fdatasyncs per message | $(fmt "$syncs" %.4f) |"
