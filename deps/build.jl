# Builds the Rust library (libmmsb) with cargo and records its path in
# deps/deps.jl. Set MMSB_LIB to a prebuilt library to skip the build.
using Libdl

const ROOT = dirname(@__DIR__)
const DEPS_FILE = joinpath(@__DIR__, "deps.jl")

function writable(dir)
    try
        mkpath(dir)
        probe = joinpath(dir, ".mmsb-write-probe")
        touch(probe); rm(probe)
        return true
    catch
        return false
    end
end

function build_library()
    prebuilt = get(ENV, "MMSB_LIB", "")
    if !isempty(prebuilt)
        isfile(prebuilt) || error("MMSB_LIB=$prebuilt: no such file")
        @info "MMSB: using prebuilt library from MMSB_LIB" prebuilt
        return abspath(prebuilt)
    end
    Sys.which("cargo") === nothing &&
        error("MMSB needs Rust's cargo on PATH to build its library (https://rustup.rs), or MMSB_LIB pointing at a prebuilt libmmsb")
    target = joinpath(ROOT, "target")
    if !writable(target)  # e.g. a read-only package directory
        target = joinpath(first(DEPOT_PATH), "mmsb-build", string(hash(ROOT), base = 16))
        mkpath(target)
    end
    manifest = joinpath(ROOT, "Cargo.toml")
    target = get(ENV, "CARGO_TARGET_DIR", target)
    cmd = `cargo build --release --locked --manifest-path $manifest --target-dir $target -p mmsb`
    @info "MMSB: building the Rust library" cmd
    run(cmd)
    lib = joinpath(target, "release", "libmmsb." * Libdl.dlext)
    isfile(lib) || error("cargo finished but $lib is missing")
    return lib
end

lib = build_library()
open(DEPS_FILE, "w") do io
    println(io, "# Written by deps/build.jl; do not edit.")
    println(io, "const libmmsb = ", repr(lib))
end
@info "MMSB: library recorded in deps/deps.jl" lib
