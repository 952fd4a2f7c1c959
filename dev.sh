#!/usr/bin/env bash
# dev.sh — the two set-up commands of the README.
#   ./dev.sh run [ringmail flags...]   install build deps, build, start the relay (embedded defaults)
#   ./dev.sh test                      install test deps, build (release, ASan/UBSan, fuzzers), run
#                                      every test
set -euo pipefail
cd "$(dirname "$0")"
jobs=$(nproc)
build() { # build DIR TYPE [cmake args...] [--target T...]
    local dir=$1 type=$2 targets=(); shift 2
    local args=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --target ]; then targets+=(--target "$2"); shift 2; else args+=("$1"); shift; fi
    done
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "${args[@]}" >/dev/null
    cmake --build "$dir" -j "$jobs" "${targets[@]}"
}
case "${1:-}" in
run)
    shift
    tools/install-deps.sh
    # Only what it runs: the relay, not the tests and benchmarks.
    build build Release --target ringmail
    exec build/ringmail "$@"
    ;;
test)
    tools/install-deps.sh test
    # The .clang-format is applied to all code: a file that is not formatted fails the run.
    git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror
    build build Release
    # The sanitizer build runs the unit tests only; the integration suite uses the release daemon.
    build build-asan Debug -DRINGMAIL_SANITIZE=ON -DRINGMAIL_UNIT_ONLY=ON
    # libFuzzer targets of the parsers (clang, ASan+UBSan), 30 s each over their corpora.
    cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGMAIL_FUZZ=ON \
        -DRINGMAIL_UNIT_ONLY=ON -DRINGMAIL_FUZZ_SECONDS=30 \
        -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
    cmake --build build-fuzz --target ringmail_fuzzers -j "$jobs"
    status=0
    ctest --test-dir build-asan --output-on-failure -j "$jobs" || status=1
    ctest --test-dir build --output-on-failure || status=1
    ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$jobs" || status=1
    exit $status
    ;;
*)
    sed -n '2,5p' "$0"; exit 2
    ;;
esac
