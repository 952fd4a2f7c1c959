#!/usr/bin/env bash
# tls.sh — what TLS costs ringmail and Postfix on the same machine (issue 4): full STARTTLS
# handshakes per second, and durable ingest over STARTTLS with connection reuse, each next to the
# same load in clear.
#
# Who runs it: an operator or developer, as root, on a machine they may reconfigure (it installs
# and configures Postfix, then stops it, purges its queue and restores its configuration). See
# bench/README.md, section "TLS (issue 4)".
#
# What it measures, REPS times per workload, Postfix and ringmail one after the other so that
# machine noise hits both alike (medians reported), with ringmail-bench source (1 KiB messages,
# SESSIONS sessions, -d seconds of load per run):
#   handshakes  --messages-per-connection 1: each connection EHLO, STARTTLS, a full handshake,
#               EHLO, one message, QUIT: connections/s (= handshakes/s) and msg/s;
#   ingest      STARTTLS once per connection, then messages without limit (connection reuse),
#               pipelining on and off: msg/s that got their 250;
#   in clear    each of the above without STARTTLS (the servers still offer it), so that the
#               tables show what TLS costs each server;
#   CPU         CPU time (user + system) each server spent per message: ringmail's process;
#               Postfix's master and all its children (smtpd, cleanup, tlsmgr, ...), the exited
#               ones through the master's cutime/cstime.
# Both servers use one self-signed certificate made with openssl for the run, RSA 2048 or (-k ec)
# ECDSA P-256; either way the key exchange is ECDHE, X25519 when the client offers it. Postfix:
# smtpd_tls_security_level = may, every message held (it fsyncs each queue file before its 250,
# no delivery). ringmail: --tls-cert/--tls-key, --no-delivery, a fresh spool per run. It prints
# markdown tables (stdout; per-run lines on stderr) and the target of issue 4 (ringmail ≥ 5×
# Postfix on STARTTLS ingest) as met / not met. Everything listens on loopback only.
#
# Usage: bench/tls.sh [-r REPS] [-d SECONDS] [-s SESSIONS] [-k rsa|ec] [-n] [-b RINGMAIL]
#                     [-B RINGMAIL_BENCH]
#   -r: repetitions per workload (default 3)
#   -d: seconds of load per run (default 5)
#   -s: concurrent sessions (default 20)
#   -k: the certificate's key: rsa (2048 bits, default) or ec (P-256)
#   -n: no Postfix (ringmail only; Postfix is neither installed nor touched)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPS=3
DURATION=5
SESSIONS=20
SIZE=1k
WITH_POSTFIX=1
RINGMAIL=build/ringmail
BENCH=build/bench/ringmail-bench
DEADLINE_S=${DEADLINE_S:-120} # bound on every wait

KEYTYPE=rsa
usage() { sed -n '2,35p' "$0"; exit 2; }
while getopts "r:d:s:k:nb:B:h" opt; do
    case $opt in
    r) REPS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    k) KEYTYPE=$OPTARG ;;
    n) WITH_POSTFIX=0 ;;
    b) RINGMAIL=$OPTARG ;;
    B) BENCH=$OPTARG ;;
    *) usage ;;
    esac
done
COMMAND="bench/tls.sh $*"

[ "$SESSIONS" -le 100 ] || die "at most 100 sessions (all from 127.0.0.1)"
case $KEYTYPE in
rsa) KEYGEN=(-newkey rsa:2048) KEYNAME="RSA 2048" ;;
ec) KEYGEN=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) KEYNAME="ECDSA P-256" ;;
*) die "-k: rsa or ec" ;;
esac
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
preflight ringmail ringmail-bench

WORK=$(mktemp -d /tmp/ringmail-tls.XXXXXX)
trap bench_cleanup EXIT
CLK_TCK=$(getconf CLK_TCK)

# One certificate for both servers, self-signed (ringmail-bench does not verify it).
CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 "${KEYGEN[@]}" -nodes -keyout "$KEY" -out "$CERT" -days 2 \
    -subj "/CN=bench.local" 2>"$WORK/openssl.log" || die "openssl: $(cat "$WORK/openssl.log")"

if [ "$KEYTYPE" = rsa ]; then RSA_CERT=$CERT RSA_KEY=$KEY; else EC_CERT=$CERT EC_KEY=$KEY; fi

# --- Postfix (the rest in lib.sh) ------------------------------------------------------------
# Durable ingest with delivery held, as in ingest.sh and compare.sh; STARTTLS offered with the
# run's certificate alone: any other certificate main.cf names (EC, DSA, chain files) is cleared
# so that both servers sign with the same key. smtpd reads the key as root, before its
# chroot. One smtpd per session.
postfix_settings=(
    "smtpd_data_restrictions = check_client_access static:HOLD"
    "default_process_limit = $((SESSIONS + 100 > 200 ? SESSIONS + 100 : 200))"
    "smtpd_tls_security_level = may"
    "smtpd_tls_cert_file = ${RSA_CERT-}"
    "smtpd_tls_key_file = ${RSA_KEY-}"
    "smtpd_tls_chain_files ="
    "smtpd_tls_eccert_file = ${EC_CERT-}"
    "smtpd_tls_eckey_file = ${EC_KEY-}"
    "smtpd_tls_dcert_file ="
    "smtpd_tls_dkey_file ="
    "smtpd_tls_loglevel = 0"
)

# CPU ticks (user + system) of Postfix so far: the master and its children, plus the children
# the master has reaped (its cutime/cstime).
postfix_cpu_ticks() {
    local master p
    master=$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)
    [ -r "/proc/$master/stat" ] || die "the Postfix master ($master) is gone"
    {
        awk '{print $14 + $15 + $16 + $17}' "/proc/$master/stat"
        for p in $(pgrep -P "$master"); do
            awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || true
        done
    } | awk '{s += $1} END {print s + 0}'
}

# CPU ticks of ringmail so far; dies, with the end of its log, if ringmail is gone.
ringmail_cpu_ticks() {
    kill -0 "$RM_PID" 2>/dev/null ||
        die "ringmail ($RM_PID) is gone; its log ends: $(tail -5 "$WORK/ringmail.log")"
    cpu_ticks "$RM_PID"
}

# --- one run ---------------------------------------------------------------------------------
# Rows are "mode tls pipelining": mode new (one message per connection) or reuse (unlimited);
# tls plain or starttls. Results go to $WORK/<row key>.<system>.<figure>, one a line.
rows=("new plain on" "new starttls on" "reuse plain on" "reuse starttls on"
    "reuse plain off" "reuse starttls off")
key() { echo "${1// /_}"; }

# run SYSTEM ROW: one load into SYSTEM (postfix or ringmail); appends msg/s, connections/s
# and CPU ms per message. Checks that every STARTTLS connection got its handshake.
run() {
    local sys=$1 row=$2 mode tls pl port c0 c1 out=$WORK/src.json flags=() k
    read -r mode tls pl <<<"$row"
    k=$WORK/$(key "$row").$sys
    [ "$mode" = new ] && flags+=(--messages-per-connection 1)
    [ "$tls" = starttls ] && flags+=(--starttls)
    if [ "$sys" = postfix ]; then
        port=$PF_PORT
        purge_postfix
        c0=$(postfix_cpu_ticks)
    else
        port=$RM_PORT
        start_ringmail "$WORK/ringmail.log" --no-delivery --tls-cert "$CERT" --tls-key "$KEY"
        c0=$(ringmail_cpu_ticks)
    fi
    source_run "127.0.0.1:$port" "$out" "$SIZE" "$pl" "$SESSIONS" "${flags[@]}"
    if [ "$sys" = postfix ]; then
        c1=$(postfix_cpu_ticks)
        purge_postfix
    else
        c1=$(ringmail_cpu_ticks)
        stop_ringmail
    fi
    note_failures "$out" "$sys, $row"
    local accepted conns hs resumed
    accepted=$(jnum "$out" messages_accepted)
    conns=$(jnum "$out" connections)
    hs=$(jnum "$out" tls_handshakes)
    resumed=$(jnum "$out" tls_resumed)
    if [ "$tls" = starttls ] && { [ "$hs" != "$conns" ] || [ "${resumed:-0}" != 0 ]; }; then
        echo "  note ($sys, $row): $hs TLS handshakes ($resumed resumed) for $conns connections" >&2
        [ "${hs:-0}" -gt 0 ] || die "$sys: no TLS handshake at all (STARTTLS not offered?)"
    fi
    jnum "$out" accepted_per_s >>"$k.rate"
    jnum "$out" connections_per_s >>"$k.conns"
    if [ "${accepted:-0}" -gt 0 ]; then
        calc "($c1 - $c0) * 1000 / $CLK_TCK / $accepted" >>"$k.cpu"
    fi
}

# --- the run ---------------------------------------------------------------------------------
START=$EPOCHREALTIME
if [ "$WITH_POSTFIX" = 1 ]; then
    take_postfix "${postfix_settings[@]}"
    start_postfix
fi

for row in "${rows[@]}"; do
    for rep in $(seq "$REPS"); do
        line=$(printf '%-20s rep %d:' "$row" "$rep")
        for sys in postfix ringmail; do
            [ "$sys" = postfix ] && [ "$WITH_POSTFIX" = 0 ] && continue
            run "$sys" "$row"
            k=$WORK/$(key "$row").$sys
            line+=$(printf '  %s %s msg/s, %s conn/s, %s ms CPU/msg' "$sys" \
                "$(fmt "$(tail -1 "$k.rate")" %.0f)" "$(fmt "$(tail -1 "$k.conns")" %.0f)" \
                "$(fmt "$(tail -1 "$k.cpu" 2>/dev/null)" %.3f)")
        done
        echo "$line" >&2
    done
done

# --- the tables ------------------------------------------------------------------------------
m() { med "$WORK/$(key "$1").$2.$3"; }
elapsed=$(calc "int(($EPOCHREALTIME - $START) / 60 + 0.5)")
pf_version=n/a
[ "$WITH_POSTFIX" = 1 ] && pf_version=$(postconf -h mail_version 2>/dev/null || echo n/a)
echo
echo "TLS: ringmail vs Postfix $pf_version, median of $REPS, ${DURATION} s of load per run," \
    "$SESSIONS sessions, 1 KiB messages, $KEYNAME certificate; $(nproc) CPUs, $(uname -r);" \
    "$(date -u +%Y-%m-%d); \`$COMMAND\` (${elapsed} min)"
echo
echo "| one message per connection | Postfix conn/s | ringmail conn/s | ringmail / Postfix" \
    "| Postfix msg/s | ringmail msg/s | Postfix CPU ms / msg | ringmail CPU ms / msg |"
echo "|---|---|---|---|---|---|---|---|"
for tls in starttls plain; do
    row="new $tls on"
    name="in clear (no TLS)"
    [ "$tls" = starttls ] && name="STARTTLS, a full handshake each (conn/s = handshakes/s)"
    pc=$(m "$row" postfix conns)
    rc=$(m "$row" ringmail conns)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$(fmt "$pc" %.0f)" \
        "$(fmt "$rc" %.0f)" "$(fmt "$(ratio "$rc" "$pc")" %.2f)" \
        "$(fmt "$(m "$row" postfix rate)" %.0f)" "$(fmt "$(m "$row" ringmail rate)" %.0f)" \
        "$(fmt "$(m "$row" postfix cpu)" %.3f)" "$(fmt "$(m "$row" ringmail cpu)" %.3f)"
done
echo
echo "| ingest with connection reuse | Postfix msg/s | ringmail msg/s | ringmail / Postfix" \
    "| Postfix CPU ms / msg | ringmail CPU ms / msg |"
echo "|---|---|---|---|---|---|"
for pl in on off; do
    for tls in starttls plain; do
        row="reuse $tls $pl"
        name="in clear"
        [ "$tls" = starttls ] && name="STARTTLS"
        p=$(m "$row" postfix rate)
        r=$(m "$row" ringmail rate)
        printf '| %s, pipelining %s | %s | %s | %s | %s | %s |\n' "$name" "$pl" \
            "$(fmt "$p" %.0f)" "$(fmt "$r" %.0f)" "$(fmt "$(ratio "$r" "$p")" %.2f)" \
            "$(fmt "$(m "$row" postfix cpu)" %.3f)" "$(fmt "$(m "$row" ringmail cpu)" %.3f)"
    done
done

# What TLS costs: rate with STARTTLS / rate in clear, and CPU ms per message added.
added() {
    local t=$1 c=$2
    if [ "$t" = n/a ] || [ "$c" = n/a ]; then echo n/a; else calc "$t - $c"; fi
}
echo
echo "| what TLS costs | Postfix: STARTTLS / clear msg/s | ringmail: STARTTLS / clear msg/s" \
    "| Postfix: CPU ms / msg added | ringmail: CPU ms / msg added |"
echo "|---|---|---|---|---|"
for w in "new on" "reuse on" "reuse off"; do
    read -r mode pl <<<"$w"
    name="one message per connection (a handshake each)"
    [ "$mode" = reuse ] && name="connection reuse, pipelining $pl"
    cells=()
    for sys in postfix ringmail; do
        cells+=("$(fmt "$(ratio "$(m "$mode starttls $pl" "$sys" rate)" \
            "$(m "$mode plain $pl" "$sys" rate)")" %.2f)")
    done
    for sys in postfix ringmail; do
        cells+=("$(fmt "$(added "$(m "$mode starttls $pl" "$sys" cpu)" \
            "$(m "$mode plain $pl" "$sys" cpu)")" %.3f)")
    done
    printf '| %s | %s | %s | %s | %s |\n' "$name" "${cells[@]}"
done

# Target of issue 4: reported, not asserted.
echo
echo "| target (issue 4) | ringmail / Postfix | |"
echo "|---|---|---|"
for pl in on off; do
    row="reuse starttls $pl"
    v=$(ratio "$(m "$row" ringmail rate)" "$(m "$row" postfix rate)")
    verdict=n/a
    if [ "$v" != n/a ]; then
        verdict="not met"
        [ "$(calc "$v >= 5")" = 1 ] && verdict=met
    fi
    echo "| ringmail ≥ 5× Postfix on STARTTLS ingest (1 KiB, connection reuse, pipelining $pl)" \
        "| $(fmt "$v" %.2f) | $verdict |"
done
