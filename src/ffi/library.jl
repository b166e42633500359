# Library loading and the ABI check. deps/build.jl writes deps/deps.jl with
# `const libmmsb = "<path>"`.

const DEPS_FILE = joinpath(dirname(dirname(@__DIR__)), "deps", "deps.jl")
isfile(DEPS_FILE) || error("MMSB is not built: run `import Pkg; Pkg.build(\"MMSB\")` (needs Rust's cargo, or MMSB_LIB pointing at a prebuilt libmmsb)")
include(DEPS_FILE)
include_dependency(DEPS_FILE)

const ABI_VERSION = UInt32(2)

function check_library()
    isfile(libmmsb) || error("MMSB library $(libmmsb) is missing: run `Pkg.build(\"MMSB\")`")
    v = ccall((:mmsb_abi_version, libmmsb), UInt32, ())
    v == ABI_VERSION || error("MMSB library $(libmmsb) has ABI version $v, this package needs $ABI_VERSION: run `Pkg.build(\"MMSB\")`")
    return nothing
end
