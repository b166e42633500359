#!/usr/bin/env bash
# Fresh-machine setup for MMSB on Debian 12. Idempotent: a quick no-op when done.
#
#   bash deps/setup.sh          # install toolchain pieces, build the library
#
# What it does (see README "Setup" for why each step is needed):
#  1. Julia: a `julia` >= 1.5 already on PATH whose exception handling works is
#     used as is. Otherwise Julia 1.5.3 is installed from Debian 11 packages
#     through a private apt source list (bookworm + bullseye only, so nothing
#     else on the system changes), and run through a wrapper that puts
#     bullseye's libunwind8 1.3.2 on LD_LIBRARY_PATH and preloads the system
#     libgcc_s.so.1.
#  2. An offline Julia depot with an empty local registry, so Pkg never tries
#     the network.
#  3. Rust (cargo) must be on PATH; `Pkg.build()` of the package runs
#     deps/build.jl, which builds the Rust library.
# Everything lands in $MMSB_HOME (default ~/.cache/mmsb); deps/julia reads
# $MMSB_HOME/env.sh.
set -euo pipefail
# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac

MMSB_HOME=${MMSB_HOME:-$HOME/.cache/mmsb}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$MMSB_HOME"
log() { printf '[setup] %s\n' "$*" >&2; }

julia_works() { # $1: julia command line (may include env); exits 0 if >= 1.5 and exceptions work
    # Unwinding a nested call and printing its backtrace is what crashes
    # Debian 11's Julia 1.5.3 under Debian 12's libunwind; a bare try/catch does not.
    (env $1 -e 'VERSION >= v"1.5" || exit(1)
               f() = error("probe"); g() = f()
               for i in 1:3
                   try g() catch; Base.show_backtrace(devnull, catch_backtrace()) end
               end
               exit(0)' >/dev/null 2>&1; exit $?) 2>/dev/null   # keeps bash's crash notice quiet
}

# The private apt source list (bookworm + bullseye from the machine's own
# Debian mirror) and its package lists, fetched once per $MMSB_HOME.
APT_DIR="$MMSB_HOME/apt"
APT_OPTS=(-oDir::Etc::SourceList="$APT_DIR/sources.list" -oDir::Etc::SourceParts=/dev/null
          -oDir::State::Lists="$APT_DIR/lists" -oAPT::Default-Release=bookworm -oAPT::Sandbox::User=root)
private_apt_update() {
    [ -f "$APT_DIR/updated" ] && return 0
    mkdir -p "$APT_DIR/lists/partial"
    # The machine's own Debian mirror (first '.../debian' URI in its apt sources).
    local mirror
    mirror=${MMSB_DEBIAN_MIRROR:-$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
                                         /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
        | awk '!m { for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { m = $i; break } }
               END { print m }')}
    mirror=${mirror:-http://deb.debian.org/debian}
    cat > "$APT_DIR/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $mirror bullseye main
SRC
    apt-get "${APT_OPTS[@]}" update -qq
    touch "$APT_DIR/updated"
}

# ---- 1. Julia ---------------------------------------------------------------
JULIA_BIN="" ; JULIA_ENV=""
if command -v julia >/dev/null 2>&1 && julia_works "$(command -v julia)"; then
    JULIA_BIN=$(command -v julia)
    log "using julia on PATH: $JULIA_BIN"
else
    # No early-exiting reader in a pipe (grep -q, awk exit, head): under pipefail
    # the writer's SIGPIPE (exit 141) would end the script.
    julia_status=$(dpkg-query -W -f='${Status}' julia 2>/dev/null || true)
    if [[ "$julia_status" != *"ok installed"* ]]; then
        log "installing Julia 1.5.3 from Debian 11 packages (private apt source list)"
        private_apt_update
        # julia exists only in bullseye; everything it needs is satisfied by bookworm.
        DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends julia/bullseye
    fi
    UNW="$MMSB_HOME/libunwind"
    if [ ! -e "$UNW/usr/lib/x86_64-linux-gnu/libunwind.so.8" ]; then
        log "unpacking bullseye libunwind8 (1.3.2) privately"
        private_apt_update   # also when julia was already installed (a fresh $MMSB_HOME)
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get "${APT_OPTS[@]}" download -qq libunwind8/bullseye)
        mkdir -p "$UNW" && dpkg-deb -x "$tmp"/libunwind8_*.deb "$UNW"
        rm -rf "$tmp"
    fi
    GCC_S=$(ldconfig -p | awk '/libgcc_s.so.1 .*x86-64/ && !f {print $NF; f = 1}')
    [ -n "$GCC_S" ] || GCC_S=/lib/x86_64-linux-gnu/libgcc_s.so.1
    JULIA_BIN=/usr/bin/julia
    JULIA_ENV="LD_LIBRARY_PATH=$UNW/usr/lib/x86_64-linux-gnu LD_PRELOAD=$GCC_S"
    julia_works "$JULIA_ENV $JULIA_BIN" || { log "julia does not run correctly even with the wrapper"; exit 1; }
    log "julia: $JULIA_BIN with private libunwind 1.3.2 and preloaded libgcc_s"
fi

# ---- 2. Offline depot with an empty local registry ---------------------------
DEPOT="$MMSB_HOME/depot"
REG="$DEPOT/registries/MMSBEmpty"
if [ ! -f "$REG/Registry.toml" ]; then
    mkdir -p "$REG"
    cat > "$REG/Registry.toml" <<'TOML'
name = "MMSBEmpty"
uuid = "6e5c7b0a-0d1f-4c55-9b5e-6d6d5b0e6a11"
repo = ""
description = "Empty local registry: keeps Pkg offline (only stdlib packages are used)."

[packages]
TOML
fi

cat > "$MMSB_HOME/env.sh" <<ENV
# written by deps/setup.sh
export MMSB_JULIA_BIN="$JULIA_BIN"
export MMSB_JULIA_ENV="$JULIA_ENV"
export JULIA_DEPOT_PATH="$DEPOT"
export JULIA_PKG_OFFLINE=true
ENV

# ---- 3. Rust library ----------------------------------------------------------
command -v cargo >/dev/null 2>&1 || { log "cargo is required (https://rustup.rs)"; exit 1; }
log "building the Rust library (Pkg.build)"
"$ROOT/deps/julia" --project="$ROOT" -e 'using Pkg; Pkg.instantiate(); Pkg.build(verbose=true)' >&2
log "done"
