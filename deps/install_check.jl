# Shows that a user can install MMSB: in a fresh environment, Pkg.add(path=...)
# of a clone builds the library (deps/build.jl) and `using MMSB` works.
# A clone with uncommitted changes is installed as committed (Pkg clones it).
using Pkg
src = abspath(ARGS[1])
env = mktempdir()
Pkg.activate(env)
Pkg.add(Pkg.PackageSpec(path = src))
code = """
using MMSB
st = mmsb_start()
p = create_page(st; size = 16)
update_page(st, p.id, fill(0x2a, 16))
@assert read_page(st, p.id) == fill(0x2a, 16)
mmsb_stop(st)
println("install check: using MMSB works from ", pathof(MMSB))
"""
run(`$(Base.julia_cmd()) --project=$env -e $code`)
