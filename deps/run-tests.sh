#!/usr/bin/env bash
# Sets up (deps/setup.sh) and runs every test: Rust (cargo test), Julia
# (Pkg.test with 2 threads) and a fresh-environment install check.
set -euo pipefail
# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deps/setup.sh

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

echo "== Rust tests (cargo test) =="
cargo test --locked -p mmsb 2>&1 | tee "$LOGS/rust.txt"

echo "== Julia tests (Pkg.test, 2 threads) =="
JULIA_NUM_THREADS=${JULIA_NUM_THREADS:-2} deps/julia --project=. -e 'using Pkg; Pkg.test()' 2>&1 | tee "$LOGS/julia.txt"

echo "== Install check: Pkg.add(path=<this clone>) in a fresh environment =="
deps/julia deps/install_check.jl "$ROOT"

# One closing line for all of it (any failure above has already stopped the script).
rust_passed=$(grep -oE '^test result: ok\. [0-9]+ passed' "$LOGS/rust.txt" | awk '{s += $4} END {print s + 0}')
julia_passed=$(awk -F'|' '/^MMSB +\|/ {split($2, a, " "); print a[1]; exit}' "$LOGS/julia.txt")
echo "tests: $((rust_passed + ${julia_passed:-0})) passed, 0 failed"

