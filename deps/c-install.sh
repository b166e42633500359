#!/usr/bin/env bash
# For C users: builds libmmsb with cargo-c and installs the library, the
# header (include/mmsb.h) and a pkg-config file (mmsb.pc) under PREFIX
# (default: $MMSB_HOME/c, with MMSB_HOME defaulting to ~/.cache/mmsb), then
# compiles rust/examples/hello.c with `pkg-config --cflags --libs mmsb`
# against that install and runs it.
# cargo-c is installed first if missing (pinned: Debian's cargo-c cannot
# read lock file v4; building it takes about 8 minutes on 2 cores).
set -euo pipefail
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-${MMSB_HOME:-$HOME/.cache/mmsb}/c}
CARGO_C_VERSION=0.10.24+cargo-0.98.0

if ! cargo cinstall --version >/dev/null 2>&1; then
    echo "== installing cargo-c $CARGO_C_VERSION (about 8 minutes) =="
    cargo install cargo-c --version "$CARGO_C_VERSION" --locked
fi
command -v pkg-config >/dev/null || { echo "c-install: pkg-config is needed (apt-get install pkg-config)" >&2; exit 1; }

echo "== cargo cinstall --prefix $PREFIX =="
cd "$ROOT"
cargo cinstall --locked --release -p mmsb --prefix "$PREFIX" --libdir lib

echo "== hello.c through pkg-config =="
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# shellcheck disable=SC2046 # pkg-config prints several flags
cc -std=c99 -Wall -Wextra -Werror rust/examples/hello.c $(pkg-config --cflags --libs mmsb) -o "$OUT/hello"
LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$OUT/hello"
echo "installed: $PREFIX/lib/libmmsb.so, $PREFIX/include/mmsb/mmsb.h, $PREFIX/lib/pkgconfig/mmsb.pc"
