#!/usr/bin/env bash
# compare.sh — ringmail side by side with Postfix on the same machine (issue 5), with
# ringmail-bench as the load for every run and the machine's own ceiling next to them.
#
# Who runs it: an operator or developer, as root, on a machine they may reconfigure (it installs
# and configures Postfix, then stops it, purges its queue and restores its configuration). See
# bench/README.md, section compare.sh.
#
# What it measures, REPS times per workload, ceiling / Postfix / ringmail one after the other so
# that machine noise hits all alike (medians reported):
#   throughput  durable ingest (Postfix: every message held; ringmail: --no-delivery) and end-to-
#               end relay (both relay to one ringmail-bench sink; timed until the sink counted
#               every accepted message), at 1 KiB and 100 KiB, pipelining on and off, 20 and
#               1000 sessions; the ceiling is ringmail-bench source straight into the sink;
#   latency     p99 end-of-data -> 250 in open loop at 50% and 80% of ringmail's peak ingest rate
#               (1 KiB, pipelining), for each session count with that count's peak;
#   memory      per idle connection (after EHLO): ringmail with 10000 held, Postfix (a process
#               per session) with 1000 held.
# It prints markdown tables (stdout; per-run lines on stderr) and the targets of issue 5.
# Everything listens on loopback only.
#
# Usage: bench/compare.sh [-r REPS] [-d SECONDS] [-q] [-n] [-b RINGMAIL] [-B RINGMAIL_BENCH]
#   -r: repetitions per workload (default 3)
#   -d: seconds of load per throughput or latency run (default 3)
#   -q: quick: 1 repetition, 2 s, a few rows, fewer idle connections (for development)
#   -n: no Postfix (ceiling and ringmail only; Postfix is neither installed nor touched)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPS=3
DURATION=3
QUICK=0
WITH_POSTFIX=1
RINGMAIL=build/ringmail
BENCH=build/bench/ringmail-bench
# ringmail's mail-loop check treats every address it listens on as itself, whatever the port: the
# sink listens on 127.0.0.2 (still loopback) so that ringmail may relay to it.
SINK_HOST=127.0.0.2
SINK_PORT=${SINK_PORT:-2626}
RM_IDLE=10000
PF_IDLE=1000
DEADLINE_S=${DEADLINE_S:-120} # bound on every wait
# Client addresses for the many-session runs: ringmail admits 200 connections per client address
# by default (--max-connections-per-ip); 100 addresses keep every run under it, as real clients
# would be. 127.0.1.0/24 is loopback and clear of the sink's 127.0.0.2.
SOURCE_IPS=$(seq -s, -f '127.0.1.%g' 1 100)

usage() { sed -n '2,27p' "$0"; exit 2; }
while getopts "r:d:qnb:B:h" opt; do
    case $opt in
    r) REPS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    q) QUICK=1 ;;
    n) WITH_POSTFIX=0 ;;
    b) RINGMAIL=$OPTARG ;;
    B) BENCH=$OPTARG ;;
    *) usage ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    REPS=1
    DURATION=2
    RM_IDLE=2000
    PF_IDLE=200
fi
COMMAND="bench/compare.sh $*"

preflight ringmail ringmail-bench

WORK=$(mktemp -d /tmp/ringmail-compare.XXXXXX)
SRC_PID=""

# --- Postfix (the rest in lib.sh) ------------------------------------------------------------
# Settings for take_postfix: 20 connections to the next hop, as ringmail's default
# --max-connections-per-destination; default_process_limit: Postfix forks one smtpd per session,
# so 1000 sessions need 1000 processes.
postfix_settings=(
    "relayhost = [$SINK_HOST]:$SINK_PORT"
    "default_destination_concurrency_limit = 20"
    "smtp_destination_concurrency_limit = 20"
    "default_process_limit = $((PF_IDLE > 1000 ? PF_IDLE + 100 : 1100))"
)

# Ingest runs hold every message (no delivery: durable ingest only); relay runs release them.
postfix_hold() {
    if [ "$1" = on ]; then
        postconf -e "smtpd_data_restrictions = check_client_access static:HOLD"
    else
        postconf -e "smtpd_data_restrictions ="
    fi
    postfix reload >/dev/null 2>&1
}

# --- helpers ---------------------------------------------------------------------------------
# Proportional set size (KiB) of the processes PIDS_CMD lists, summed: shared pages counted once over all sharers, so
# Postfix's many smtpd processes are charged only what each adds.
pss_kib() {
    local total=0 p v pids
    read -ra pids <<<"$("$1")"
    for p in "${pids[@]}"; do
        v=$(awk '$1 == "Pss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

cleanup() {
    set +e
    [ -n "$SRC_PID" ] && kill -KILL "$SRC_PID" 2>/dev/null
    bench_cleanup
}
trap cleanup EXIT

# --- the sink (one for the whole run) --------------------------------------------------------
# ringmail-bench sink rewrites its --stats-file (atomically) every 50 ms; its "messages" count
# only grows, so each end-to-end run waits for its start value plus what the source got 250 for.
start_sink() {
    port_free "$SINK_PORT" || die "something already listens on port $SINK_PORT (SINK_PORT=...)"
    "$BENCH" sink --listen "$SINK_HOST:$SINK_PORT" --stats-file "$WORK/sink.json" \
        --report-interval 0.05 >/dev/null 2>"$WORK/sink.log" &
    SINK_PID=$!
    wait_port "$SINK_HOST" "$SINK_PORT" || die "the sink is not listening on $SINK_HOST:$SINK_PORT"
}

sink_messages() { jnum "$WORK/sink.json" messages 2>/dev/null || echo 0; }

wait_sink() {
    local n=$1 t0=$EPOCHREALTIME c
    while :; do
        c=$(sink_messages)
        [ "${c:-0}" -ge "$n" ] && return 0
        past_deadline "$t0" && return 1
        sleep 0.02
    done
}

# --- one load (source_run in lib.sh) ---------------------------------------------------------
# Durable ingest (or ceiling): msg/s that got their 250.
ingest_rate() {
    local target=$1 size=$2 pl=$3 sessions=$4 out=$WORK/src.json
    source_run "$target" "$out" "$size" "$pl" "$sessions"
    note_failures "$out" "$target"
    jnum "$out" accepted_per_s
}

# End to end: accepted messages / seconds from the source's start until the sink counted them.
relay_rate() {
    local target=$1 size=$2 pl=$3 sessions=$4 out=$WORK/src.json base t0 t1 accepted
    base=$(sink_messages)
    t0=$EPOCHREALTIME
    source_run "$target" "$out" "$size" "$pl" "$sessions"
    accepted=$(jnum "$out" messages_accepted)
    wait_sink "$((base + accepted))" ||
        die "the sink counted $(($(sink_messages) - base)) of $accepted within ${DEADLINE_S}s"
    t1=$EPOCHREALTIME
    note_failures "$out" "$target"
    calc "$accepted / ($t1 - $t0)"
}

# --- throughput rows -------------------------------------------------------------------------
# Rows are "kind size pipelining sessions"; results go to $WORK/r.<row>.<system>, one a line.
rows=()
if [ "$QUICK" = 1 ]; then
    rows=("ingest 1k on 20" "ingest 1k on 1000" "ingest 100k on 20" "relay 1k on 20")
else
    for kind in ingest relay; do
        for size in 1k 100k; do
            for pl in on off; do
                for sessions in 20 1000; do rows+=("$kind $size $pl $sessions"); done
            done
        done
    done
fi
key() { echo "${1// /_}"; }

throughput_row() {
    local row=$1 kind size pl sessions k rep c p r
    read -r kind size pl sessions <<<"$row"
    k=$(key "$row")
    for rep in $(seq "$REPS"); do
        c=n/a
        p=n/a
        # The ceiling is the same load into the sink: measured once per load, with the ingest
        # rows; a relay row uses the ingest row's.
        if [ "$kind" = ingest ]; then
            c=$(ingest_rate "$SINK_HOST:$SINK_PORT" "$size" "$pl" "$sessions")
            echo "$c" >>"$WORK/r.$k.ceiling"
        fi
        if [ "$WITH_POSTFIX" = 1 ]; then
            purge_postfix
            if [ "$kind" = ingest ]; then
                p=$(ingest_rate "127.0.0.1:$PF_PORT" "$size" "$pl" "$sessions")
            else
                p=$(relay_rate "127.0.0.1:$PF_PORT" "$size" "$pl" "$sessions")
            fi
            purge_postfix
            echo "$p" >>"$WORK/r.$k.postfix"
        fi
        if [ "$kind" = ingest ]; then
            start_ringmail "$WORK/ringmail.log" --no-delivery
            r=$(ingest_rate "127.0.0.1:$RM_PORT" "$size" "$pl" "$sessions")
        else
            start_ringmail "$WORK/ringmail.log" --smarthost "[$SINK_HOST]:$SINK_PORT"
            r=$(relay_rate "127.0.0.1:$RM_PORT" "$size" "$pl" "$sessions")
        fi
        stop_ringmail
        echo "$r" >>"$WORK/r.$k.ringmail"
        printf '%-24s rep %d: ceiling %s  postfix %s  ringmail %s msg/s\n' "$row" "$rep" "$c" \
            "$p" "$r" >&2
    done
}

# --- latency at a fraction of ringmail's peak ------------------------------------------------
# Open loop (message k due at start + k/rate), so a server that stalls is charged for the
# messages it delayed too (the txn figure, measured from the due time). eom: end-of-data -> 250.
# A server far slower than the rate would take ages to work off the schedule: each run is cut
# at twice its duration plus 2 s (what was due and not started then is not counted).
latency_row() {
    local pct=$1 rate=$2 sessions=$3 rep out=$WORK/lat.json sys l
    local SRC_TIMEOUT
    SRC_TIMEOUT=$(calc "int(2 * $DURATION + 2)")
    for rep in $(seq "$REPS"); do
        for sys in sink postfix ringmail; do
            [ "$sys" = postfix ] && [ "$WITH_POSTFIX" = 0 ] && continue
            if [ "$sys" = sink ]; then
                # The floor: the same schedule answered at once, with the load generator's
                # own share of the two CPUs in it.
                source_run "$SINK_HOST:$SINK_PORT" "$out" 1k on "$sessions" --rate "$rate"
            elif [ "$sys" = postfix ]; then
                purge_postfix
                source_run "127.0.0.1:$PF_PORT" "$out" 1k on "$sessions" --rate "$rate"
                purge_postfix
            else
                start_ringmail "$WORK/ringmail.log" --no-delivery
                source_run "127.0.0.1:$RM_PORT" "$out" 1k on "$sessions" --rate "$rate"
                stop_ringmail
            fi
            note_failures "$out" "$sys at $pct%"
            l=$WORK/l.$sessions.$pct.$sys
            jnum_in "$out" latency_eom_ms p99 >>"$l.eom"
            jnum_in "$out" latency_txn_ms p99 >>"$l.txn"
            jnum "$out" accepted_per_s >>"$l.rate"
            printf 'latency %d%% (%s msg/s, %s sessions) rep %d: %s p99 eom %s ms, txn %s ms,' \
                "$pct" "$rate" "$sessions" "$rep" "$sys" "$(tail -1 "$l.eom")" \
                "$(tail -1 "$l.txn")" >&2
            printf ' %s msg/s\n' "$(tail -1 "$l.rate")" >&2
        done
    done
}

# --- memory per idle connection --------------------------------------------------------------
# Hold N connections open after EHLO; wait until the server has them all (bounded) and its
# memory has settled (two readings 0.5 s apart within 1%); prints (after - before) / N bytes.
# PIDS_CMD lists the server's processes (Postfix's change as smtpd processes are forked); it must
# list at least MIN_PIDS of them before memory is read.
idle_bytes() {
    local port=$1 n=$2 pids_cmd=$3 min_pids=$4 before after prev t0 ips=()
    before=$(pss_kib "$pids_cmd")
    [ "$n" -gt 100 ] && ips=(--source-ip "$SOURCE_IPS")
    "$BENCH" source "127.0.0.1:$port" --idle --sessions "$n" "${ips[@]}" \
        --duration "$DEADLINE_S" --no-progress >/dev/null 2>>"$WORK/source.log" &
    SRC_PID=$!
    t0=$EPOCHREALTIME
    until [ "$(ss -Htn state established "( sport = :$port )" | wc -l)" -ge "$n" ]; do
        past_deadline "$t0" && { echo "warning: not all $n connections up on $port" >&2; break; }
        sleep 0.2
    done
    until [ "$("$pids_cmd" | wc -w)" -ge "$min_pids" ]; do
        past_deadline "$t0" && { echo "warning: fewer than $min_pids processes" >&2; break; }
        sleep 0.2
    done
    prev=0
    after=$(pss_kib "$pids_cmd")
    while [ "$(calc "($after - $prev) * 100 > $after ? 1 : 0")" = 1 ]; do
        past_deadline "$t0" && break
        sleep 0.5
        prev=$after
        after=$(pss_kib "$pids_cmd")
    done
    echo "idle $port: $(ss -Htn state established "( sport = :$port )" | wc -l) held," \
        "Pss $before -> $after KiB" >&2
    kill -INT "$SRC_PID" 2>/dev/null || true
    wait "$SRC_PID" 2>/dev/null || true
    SRC_PID=""
    calc "($after - $before) * 1024 / $n"
}

ringmail_pids() { echo "$RM_PID"; }
postfix_pids() {
    local master
    master=$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)
    echo "$master" "$(pgrep -P "$master" | tr '\n' ' ')"
}

# --- the run ---------------------------------------------------------------------------------
START=$EPOCHREALTIME
if [ "$WITH_POSTFIX" = 1 ]; then
    take_postfix "${postfix_settings[@]}"
fi
start_sink
if [ "$WITH_POSTFIX" = 1 ]; then
    start_postfix
    postfix_hold on
fi

for row in "${rows[@]}"; do
    [ "${row%% *}" = ingest ] && throughput_row "$row"
done

# Peak: the median of ringmail's 1 KiB pipelined ingest row, per session count (the rate one
# machine sustains depends on it); the latency runs use the same sessions. PEAK is the best.
PEAK=0
PEAK_SESSIONS=20
LAT_SESSIONS=()
for row in "${rows[@]}"; do
    read -r kind size pl sessions <<<"$row"
    [ "$kind $size $pl" = "ingest 1k on" ] || continue
    m=$(median <"$WORK/r.$(key "$row").ringmail")
    LAT_SESSIONS+=("$sessions")
    echo "$m" >"$WORK/peak.$sessions"
    for pct in 50 80; do latency_row "$pct" "$(calc "int($m * $pct / 100)")" "$sessions"; done
    if [ "$(calc "$m > $PEAK")" = 1 ]; then
        PEAK=$m
        PEAK_SESSIONS=$sessions
    fi
done

start_ringmail "$WORK/ringmail.log" --no-delivery
RM_IDLE_BYTES=$(idle_bytes "$RM_PORT" "$RM_IDLE" ringmail_pids 1)
stop_ringmail
PF_IDLE_BYTES=n/a
if [ "$WITH_POSTFIX" = 1 ]; then
    # A fresh Postfix: smtpd processes left from the runs above would serve some of the idle
    # connections (adding nothing) or exit during the reading.
    stop_postfix
    start_postfix
    PF_IDLE_BYTES=$(idle_bytes "$PF_PORT" "$PF_IDLE" postfix_pids "$PF_IDLE")
    # The relay rows start from a fresh Postfix too.
    stop_postfix
    purge_postfix
    start_postfix
    postfix_hold off
fi

for row in "${rows[@]}"; do
    [ "${row%% *}" = relay ] && throughput_row "$row"
done

# --- the tables ------------------------------------------------------------------------------
size_name() { case $1 in 1k) echo "1 KiB" ;; 100k) echo "100 KiB" ;; *) echo "$1" ;; esac; }

elapsed=$(calc "int(($EPOCHREALTIME - $START) / 60 + 0.5)")
echo
echo "ringmail vs Postfix, median of $REPS, ${DURATION} s of load per run; $(nproc) CPUs," \
    "$(uname -r); $(date -u +%Y-%m-%d); \`$COMMAND\` (${elapsed} min)"
echo
echo "| workload | ceiling msg/s | Postfix msg/s | ringmail msg/s | ringmail / Postfix" \
    "| ringmail / ceiling |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
    read -r kind size pl sessions <<<"$row"
    k=$(key "$row")
    c=$(med "$WORK/r.$(key "ingest $size $pl $sessions").ceiling")
    p=$(med "$WORK/r.$k.postfix")
    r=$(med "$WORK/r.$k.ringmail")
    name="durable ingest"
    [ "$kind" = relay ] && name="end-to-end relay"
    printf '| %s, %s, pipelining %s, %s sessions | %s | %s | %s | %s | %s |\n' "$name" \
        "$(size_name "$size")" "$pl" "$sessions" "$(fmt "$c" %.0f)" "$(fmt "$p" %.0f)" \
        "$(fmt "$r" %.0f)" "$(fmt "$(ratio "$r" "$p")" %.2f)" "$(fmt "$(ratio "$r" "$c")" %.2f)"
done
echo
echo "Open loop (1 KiB, pipelining) at a fraction of ringmail's peak with as many sessions;" \
    "p99 in ms: eom = end-of-data -> 250, txn = from the due time; the sink (answers at once," \
    "stores nothing) is the floor the load generator measures on this machine"
echo
echo "| load | sink p99 eom | Postfix p99 eom | ringmail p99 eom | ringmail / Postfix" \
    "| Postfix p99 txn | ringmail p99 txn | Postfix msg/s | ringmail msg/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for sessions in "${LAT_SESSIONS[@]}"; do
    peak=$(cat "$WORK/peak.$sessions")
    for pct in 50 80; do
        l=$WORK/l.$sessions.$pct
        pe=$(med "$l.postfix.eom")
        re=$(med "$l.ringmail.eom")
        printf '| %d%% of %.0f = %.0f msg/s, %s sessions | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$pct" "$peak" "$(calc "$peak * $pct / 100")" "$sessions" \
            "$(fmt "$(med "$l.sink.eom")" %.2f)" "$(fmt "$pe" %.2f)" \
            "$(fmt "$re" %.2f)" "$(fmt "$(ratio "$re" "$pe")" %.2f)" \
            "$(fmt "$(med "$l.postfix.txn")" %.2f)" "$(fmt "$(med "$l.ringmail.txn")" %.2f)" \
            "$(fmt "$(med "$l.postfix.rate")" %.0f)" "$(fmt "$(med "$l.ringmail.rate")" %.0f)"
    done
done
echo
echo "| memory per idle connection (after EHLO; growth of Pss / connections) | connections held" \
    "| bytes |"
echo "|---|---|---|"
echo "| Postfix (one smtpd process per session) | $PF_IDLE | $(fmt "$PF_IDLE_BYTES" %.0f) |"
echo "| ringmail | $RM_IDLE | $(fmt "$RM_IDLE_BYTES" %.0f) |"

# Targets of issue 5: reported, not asserted.
ceil1k=$(med "$WORK/r.$(key "ingest 1k on 20").ceiling")
peak_ceil=$(med "$WORK/r.$(key "ingest 1k on $PEAK_SESSIONS").ceiling")
verdict() {
    if [ "$1" = n/a ]; then echo n/a; elif [ "$(calc "$1 ? 1 : 0")" = 1 ]; then echo met; else
        echo "not met"
    fi
}
cond() { { [ "$1" = n/a ] || [ "$2" = n/a ]; } && echo n/a || echo "$1 $3 $2"; }
echo
echo "| target (issue 5) | value | |"
echo "|---|---|---|"
echo "| ceiling ≥ 40000 msg/s at 1 KiB (pipelining, 20 sessions) | $(fmt "$ceil1k" %.0f)" \
    "| $(verdict "$(cond "$ceil1k" 40000 '>=')") |"
pr=$(ratio "$PEAK" "$peak_ceil")
echo "| ringmail durable ingest ≥ 50% of the ceiling (1 KiB, pipelining, $PEAK_SESSIONS sessions)" \
    "| $(fmt "$pr" %.2f) | $(verdict "$(cond "$pr" 0.5 '>=')") |"
for sessions in "${LAT_SESSIONS[@]}"; do
    p80=$(med "$WORK/l.$sessions.80.ringmail.eom")
    s80=$(med "$WORK/l.$sessions.80.sink.eom")
    echo "| ringmail p99 end-of-data → 250 ≤ 3 ms at 80% of peak ($sessions sessions)" \
        "| $(fmt "$p80" %.2f) ms (sink: $(fmt "$s80" %.2f) ms) |" \
        "$(verdict "$(cond "$p80" 3 '<=')") |"
done
echo "| ≤ 16 KiB per idle connection | $(fmt "$RM_IDLE_BYTES" %.0f) B" \
    "| $(verdict "$(cond "$RM_IDLE_BYTES" 16384 '<=')") |"
