#!/usr/bin/env bash
# GPU check for MMSB, in two halves:
#   benchmark/gpu_check.sh build   # HERE (has cargo): builds the release lib-test
#                                  # binary (GPU tests + the ignored GPU bench) into gpu-bin/
#   benchmark/gpu_check.sh run     # THERE (GPU machine, no cargo needed): finds
#                                  # libcuda/libnvrtc, runs the GPU tests and the bench,
#                                  # writes $OUT/gpu_check.txt and $OUT/gpu_results.json
# gpu-bin/ is git-ignored (.git/info/exclude) and must be carried to the GPU machine.
# `run` exits non-zero when a test fails or the GPU is not usable. Total: well under 5 minutes.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/gpu-bin"
cmd="${1:-}"

build() {
    set -e
    cd "$ROOT/rust"
    mkdir -p "$BIN"
    local json exe
    json="$(cargo test --release --lib --no-run --message-format=json)"
    exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"mmsb"' \
           | grep '"test":true' | grep -o '"executable":"[^"]*"' | sed -n 1p | cut -d'"' -f4)"
    [ -n "$exe" ] && [ -x "$exe" ] || { echo "gpu_check build: lib test binary not found" >&2; exit 1; }
    cp -f "$exe" "$BIN/mmsb-lib-tests"
    json="$(cargo test --release --test gpu_pages --no-run --message-format=json)"
    exe="$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"gpu_pages"' \
           | grep -o '"executable":"[^"]*"' | sed -n 1p | cut -d'"' -f4)"
    [ -n "$exe" ] && [ -x "$exe" ] || { echo "gpu_check build: gpu_pages test binary not found" >&2; exit 1; }
    cp -f "$exe" "$BIN/mmsb-gpu-pages"
    git -C "$ROOT" rev-parse HEAD > "$BIN/COMMIT" 2>/dev/null || true
    echo "built $BIN/mmsb-lib-tests from $exe"
    ls -l "$BIN"
}

# Adds every folder holding libcuda / libnvrtc to LD_LIBRARY_PATH. cudarc (dynamic
# loading) dlopen()s, in order, libX.so, libX.so.12, .11, .10, .9, .1 (and some
# Windows-style names): libcuda.so.1 always matches, but a CUDA 13 NVRTC ships as
# libnvrtc.so.13, so without the unversioned dev link we add a shim folder with
# libnvrtc.so -> the real file (the real folder is added too, for libnvrtc-builtins).
find_libs() {
    local dirs=() f d shim=/tmp/mmsb-gpu-shim
    mapfile -t cands < <( { ldconfig -p 2>/dev/null | grep -E 'lib(cuda|nvrtc)\.so' | awk '{print $NF}';
        for r in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib \
                 /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib; do
            ls "$r"/libcuda.so* "$r"/libnvrtc.so* 2>/dev/null; done;
        py="$(command -v python3 || true)"
        if [ -n "$py" ]; then "$py" - <<'PY' 2>/dev/null
import site, glob, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()])
for r in roots:
    for p in glob.glob(r + "/nvidia/**/libnvrtc.so*", recursive=True): print(p)
PY
        fi
        find /opt /usr/local/lib /usr/lib/python3* -maxdepth 7 -name 'libnvrtc.so*' 2>/dev/null; } | sort -u )
    echo "library candidates:"; printf '  %s\n' "${cands[@]}"
    NVRTC_FILE=""; CUDA_FILE=""
    for f in "${cands[@]}"; do
        [ -e "$f" ] || continue
        case "$(basename "$f")" in
            libcuda.so*) [ -z "$CUDA_FILE" ] && CUDA_FILE="$f";;
            libnvrtc.so*) case "$(basename "$f")" in libnvrtc.so|libnvrtc.so.1[0-9]|libnvrtc.so.1[0-9].*) ;; *) continue;; esac
                          # prefer the newest major (13 > 12) found
                          if [ -z "$NVRTC_FILE" ] || [[ "$(basename "$f")" > "$(basename "$NVRTC_FILE")" ]]; then NVRTC_FILE="$f"; fi;;
        esac
        d="$(dirname "$f")"; [[ " ${dirs[*]-} " == *" $d "* ]] || dirs+=("$d")
    done
    if [ -n "$NVRTC_FILE" ]; then
        mkdir -p "$shim"; ln -sf "$(readlink -f "$NVRTC_FILE")" "$shim/libnvrtc.so"
        dirs=("$shim" "${dirs[@]}")
    fi
    local IFS=:
    export LD_LIBRARY_PATH="${dirs[*]-}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libcuda: ${CUDA_FILE:-NOT FOUND}"
    echo "libnvrtc: ${NVRTC_FILE:-NOT FOUND} (shim: $shim/libnvrtc.so)"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}

jstr() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  '; }

run() {
    local out="${OUT:-$ROOT/gpu-out}" exe="$BIN/mmsb-lib-tests" rc=0 log
    mkdir -p "$out"; log="$out/gpu_check.txt"
    [ -x "$exe" ] || { echo "missing $exe: run 'benchmark/gpu_check.sh build' first and carry gpu-bin" | tee "$log"; exit 2; }
    {
        echo "== mmsb gpu_check $(date -u +%FT%TZ) commit $(cat "$BIN/COMMIT" 2>/dev/null)"
        echo "== nvidia-smi -L"; nvidia-smi -L 2>&1 || echo "nvidia-smi failed"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
        echo "== libraries"; find_libs
    } > "$log" 2>&1
    # find_libs must run in this shell for LD_LIBRARY_PATH to stick: rerun quietly.
    find_libs > /dev/null 2>&1
    echo "== tests (gpu::)" >> "$log"
    local t0=$SECONDS
    timeout 180 "$exe" gpu:: --test-threads=1 --nocapture > "$out/tests.txt" 2>&1; local trc=$?
    cat "$out/tests.txt" >> "$log"
    local summary; summary="$(grep -E '^test result' "$out/tests.txt" | tail -1)"
    local skipped=0; grep -q 'GPU not available: skipping' "$out/tests.txt" && skipped=1
    [ $trc -ne 0 ] && rc=1
    [ $skipped -eq 1 ] && { echo "FAIL: GPU tests were skipped: the device is not usable" >> "$log"; rc=1; }
    echo "tests: rc=$trc in $((SECONDS - t0)) s: $summary" >> "$log"
    echo "== GPU pages through the C ABI (tests/gpu_pages.rs)" >> "$log"
    t0=$SECONDS
    timeout 180 "$BIN/mmsb-gpu-pages" --test-threads=1 --nocapture > "$out/abi.txt" 2>&1; local arc=$?
    cat "$out/abi.txt" >> "$log"
    grep -q 'GPU not available: skipping' "$out/abi.txt" && { skipped=1; rc=1; }
    [ $arc -ne 0 ] && rc=1
    echo "abi tests: rc=$arc in $((SECONDS - t0)) s" >> "$log"
    local e2e; e2e="$(grep -o 'GPU_E2E .*' "$out/abi.txt" | sed 's/^GPU_E2E //' | tr '\n' ';')"
    echo "== bench" >> "$log"
    t0=$SECONDS
    MMSB_GPU_BENCH_JSON="$out/gpu_bench.json" timeout 150 "$exe" gpu::tests::gpu_bench --exact --ignored --nocapture \
        > "$out/bench.txt" 2>&1; local brc=$?
    cat "$out/bench.txt" >> "$log"
    echo "bench: rc=$brc in $((SECONDS - t0)) s" >> "$log"
    local bench='null'; [ -s "$out/gpu_bench.json" ] && bench="$(cat "$out/gpu_bench.json")"
    printf '{"commit":"%s","gpu":"%s","libcuda":"%s","libnvrtc":"%s","tests_rc":%d,"tests_skipped":%s,"tests_summary":"%s","abi_rc":%d,"abi_e2e":"%s","bench_rc":%d,"bench":%s,"ok":%s}\n' \
        "$(jstr "$(cat "$BIN/COMMIT" 2>/dev/null)")" "$(jstr "$(nvidia-smi -L 2>/dev/null | sed -n 1p)")" \
        "$(jstr "${CUDA_FILE:-}")" "$(jstr "${NVRTC_FILE:-}")" "$trc" "$([ $skipped -eq 1 ] && echo true || echo false)" \
        "$(jstr "$summary")" "$arc" "$(jstr "$e2e")" "$brc" "$bench" "$([ $rc -eq 0 ] && echo true || echo false)" > "$out/gpu_results.json"
    rm -f "$out/tests.txt" "$out/bench.txt" "$out/abi.txt"
    cat "$log"
    echo "results: $out/gpu_results.json"
    exit $rc
}

case "$cmd" in
    build) build ;;
    run) run ;;
    *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
