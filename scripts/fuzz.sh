#!/usr/bin/env bash
# Coverage-guided fuzzing of what untrusted bytes reach (fuzz/, cargo fuzz with libFuzzer).
#
#   scripts/fuzz.sh build                 build every target
#   scripts/fuzz.sh smoke [SECONDS]       each target for SECONDS (20) on its corpus: CI
#   scripts/fuzz.sh smoke-build           only build what smoke runs (scripts/test.sh builds
#                                         it beside the tests, then smoke finds it built)
#   scripts/fuzz.sh run TARGET SECONDS [LIBFUZZER ARGS...]
#                                         one target, new inputs kept in fuzz/corpus-run/TARGET
#   scripts/fuzz.sh replay TARGET FILE... run the target on these inputs once (a crash's)
#   scripts/fuzz.sh cmin TARGET           minimize fuzz/corpus/TARGET with what a run found
#   scripts/fuzz.sh list                  the targets
#
# Only stable Rust is assumed: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z flags. No
# sanitizer: the crate has no unsafe code and ASan would not reach the C inside aws-lc; what is
# looked for (panics, overflows under debug assertions, hangs, runaway memory) needs none.
# A crash leaves its input in fuzz/artifacts/TARGET/; replay it with
# `scripts/fuzz.sh replay TARGET fuzz/artifacts/TARGET/crash-...`.
#
# FUZZ_BUILD_FLAGS overrides how build, run and cmin build (see `cargo fuzz build --help`).
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
# smoke builds unoptimized (--dev: debug assertions and overflow checks, about half the build
# of an optimized one, fast enough for seconds of fuzzing); run, cmin and build build optimized
# with debug assertions (cargo fuzz's default), for hours of fuzzing.
SMOKE_FLAGS=(--dev --sanitizer none)
read -r -a BUILD_FLAGS <<<"${FUZZ_BUILD_FLAGS:---sanitizer none}"
LIBFUZZER_FLAGS=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

targets() { cargo fuzz list --fuzz-dir fuzz; }

ensure_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
    fi
}

dict_for() {
    if [[ -f "fuzz/dict/$1.dict" ]]; then
        echo "-dict=fuzz/dict/$1.dict"
    fi
}

build() { cargo fuzz build "${BUILD_FLAGS[@]}" "$@"; }

# run TARGET SECONDS [ARGS...]: new inputs go to a scratch corpus, the committed seeds are read.
run() {
    local target=$1 seconds=$2
    shift 2
    mkdir -p "fuzz/corpus-run/$target" "fuzz/artifacts/$target"
    local dict
    dict=$(dict_for "$target")
    cargo fuzz run "${BUILD_FLAGS[@]}" "$target" \
        "fuzz/corpus-run/$target" "fuzz/corpus/$target" -- \
        "${LIBFUZZER_FLAGS[@]}" ${dict:+"$dict"} -max_total_time="$seconds" \
        -artifact_prefix="fuzz/artifacts/$target/" "$@"
}

replay() {
    local target=$1
    shift
    cargo fuzz run "${BUILD_FLAGS[@]}" "$target" "$@"
}

smoke_build() {
    BUILD_FLAGS=("${SMOKE_FLAGS[@]}")
    build
}

smoke() {
    local seconds=${1:-20} failed=0
    smoke_build
    for target in $(targets); do
        echo "== fuzz $target for ${seconds}s"
        # A scratch corpus per smoke run: CI never writes into the committed one.
        rm -rf "fuzz/corpus-run/$target"
        if ! run "$target" "$seconds" >"fuzz/smoke-$target.log" 2>&1; then
            failed=1
            echo "fuzz target $target failed:"
            tail -n 60 "fuzz/smoke-$target.log"
        else
            grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' \
                "fuzz/smoke-$target.log" || true
        fi
    done
    return "$failed"
}

cmin() {
    local target=$1 merged
    merged=$(mktemp -d)
    cargo fuzz cmin "${BUILD_FLAGS[@]}" "$target" "$merged" -- \
        "fuzz/corpus/$target" "fuzz/corpus-run/$target"
    rm -rf "fuzz/corpus/$target"
    mv "$merged" "fuzz/corpus/$target"
    du -sh "fuzz/corpus/$target"
}

command=${1:-}
shift || true
ensure_cargo_fuzz
case "$command" in
    build) build "$@" ;;
    smoke) smoke "$@" ;;
    smoke-build) smoke_build ;;
    run) run "$@" ;;
    replay) replay "$@" ;;
    cmin) cmin "$@" ;;
    list) targets ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
