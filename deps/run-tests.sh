#!/usr/bin/env bash
# Sets up (deps/setup.sh) and runs every test: Rust (cargo test), Julia
# (Pkg.test with 2 threads) and a fresh-environment install check.
set -euo pipefail
# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deps/setup.sh

echo "== Rust tests (cargo test) =="
cargo test --locked -p mmsb 2>&1

echo "== Julia tests (Pkg.test, 2 threads) =="
JULIA_NUM_THREADS=${JULIA_NUM_THREADS:-2} deps/julia --project=. -e 'using Pkg; Pkg.test()'

echo "== Install check: Pkg.add(path=<this clone>) in a fresh environment =="
deps/julia deps/install_check.jl "$ROOT"
