#!/usr/bin/env bash
# Sets up (deps/setup.sh) and runs the benchmark suite; arguments select
# categories (see benchmark/benchmarks.jl). Results: benchmark/results/latest.json.
set -euo pipefail
# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash deps/setup.sh
JULIA_NUM_THREADS=${JULIA_NUM_THREADS:-2} deps/julia --project=. benchmark/benchmarks.jl "$@"
