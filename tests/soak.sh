#!/usr/bin/env bash
# soak.sh — the chaos soak (tests/integration/test_chaos_soak.py) for longer than CTest runs it.
#
# Usage: tests/soak.sh [--duration 1h] [--runs N] [--seed S] [--build DIR] [--out DIR]
#   --duration  chaos time per run: 90s, 10m, 1h, or plain seconds (default 1h)
#   --runs      how many runs one after the other, each with its own seed (default 1, max 100)
#   --seed      seed of the first run (the next runs use S+1, S+2, ...); default: random
#   --build     the build directory holding ringmail, ringmail-spool, ringmail-bench (default
#               build, relative to the repository root)
#   --out       where logs and the summary go (default: soak under the build directory)
#
# Each run is the same test with RINGMAIL_SOAK_SECONDS set, bounded by `timeout` (duration plus
# five minutes for setup, drain and checks). The one-line summary of every run is printed and
# collected in summary.txt in the output directory; pytest's output goes to run-N.log there, and
# the daemon's, dnsmasq's and the sinks' files to tmp-N. Exit status: 0 when every run passed,
# else 1 (a failing run's log says why; its seed replays the same random choices).
#
# Build first:
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
#   cmake --build build --target ringmail ringmail-spool ringmail-bench
set -euo pipefail

duration=1h
runs=1
seed=""
build=build

out=""

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --seed) seed="${2:?}"; shift 2 ;;
        --build) build="${2:?}"; shift 2 ;;
        --out) out="${2:?}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "soak.sh: unknown argument $1" >&2; usage ;;
    esac
done

to_seconds() {
    local v="$1"
    case "$v" in
        *h) echo $(( ${v%h} * 3600 )) ;;
        *m) echo $(( ${v%m} * 60 )) ;;
        *s) echo $(( ${v%s} )) ;;
        *) echo $(( v )) ;;
    esac
}

if ! seconds=$(to_seconds "$duration") || [ "$seconds" -lt 10 ] || [ "$seconds" -gt 86400 ]; then
    echo "soak.sh: --duration $duration: want 10s .. 24h" >&2
    exit 2
fi
if ! [[ "$runs" =~ ^[0-9]+$ ]] || [ "$runs" -lt 1 ] || [ "$runs" -gt 100 ]; then
    echo "soak.sh: --runs $runs: want 1 .. 100" >&2
    exit 2
fi
if [ -z "$seed" ]; then
    seed=$(( (RANDOM << 15 | RANDOM) + 1 ))
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
for bin in ringmail ringmail-spool bench/ringmail-bench; do
    if [ ! -x "$build/$bin" ]; then
        echo "soak.sh: $build/$bin not built (see --help)" >&2
        exit 2
    fi
done

out="${out:-$build/soak}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/summary.txt"
failed=0
for run in $(seq 1 "$runs"); do
    s=$(( seed + run - 1 ))
    log="$out/run-$run.log"
    echo "soak.sh: run $run/$runs, ${seconds}s of chaos, seed $s, log $log"
    rc=0
    RINGMAIL_SOAK_SECONDS="$seconds" RINGMAIL_SOAK_SEED="$s" RINGMAIL_SOAK_SUMMARY="$summary" \
    RINGMAIL_BIN="$build/ringmail" RINGMAIL_SPOOL_BIN="$build/ringmail-spool" \
    RINGMAIL_BENCH_BIN="$build/bench/ringmail-bench" \
        timeout --kill-after=30 $(( seconds + 300 )) \
        /usr/bin/python3 -m pytest -q -s -p no:cacheprovider --basetemp="$out/tmp-$run" \
        "$root/tests/integration/test_chaos_soak.py" >"$log" 2>&1 || rc=$?
    grep -E '^soak( counts)?:' "$log" || true
    if [ "$rc" -ne 0 ]; then
        echo "soak.sh: run $run (seed $s) FAILED (exit $rc); see $log" >&2
        failed=1
    fi
done
exit "$failed"
