# The Julia binding's copies of include/mmsb.h's constants (status codes,
# flags, record kinds, sources, events) agree with the header, which
# rust/tests/c_header.rs in turn checks against the library.

function header_defines(path)
    defs = Dict{String,Int128}()
    for line in eachline(path)
        m = match(r"^#define\s+(MMSB_\w+)\s+(-?\d+)u?\b", line)
        m === nothing || (defs[m.captures[1]] = parse(Int128, m.captures[2]))
    end
    return defs
end

@testset "the Julia binding agrees with include/mmsb.h" begin
    h = header_defines(joinpath(dirname(pathof(MMSB)), "..", "include", "mmsb.h"))
    @test length(h) > 40   # the parser finds the constants
    @test MMSB.ABI_VERSION == h["MMSB_ABI_VERSION"]
    for name in ("LOC_CPU", "LOC_GPU", "ENC_DENSE", "ENC_SPARSE", "WRITE_PROPAGATE", "WRITE_PARALLEL",
                 "WRITE_DEFER_SYNC", "WRITE_SHARED", "PROP_NEED_LOCK", "RECOMPUTE_NONE",
                 "RECOMPUTE_PASSTHROUGH", "RECOMPUTE_CLOSURE", "ERR_BUFFER_TOO_SMALL")
        @test (name, getfield(MMSB, Symbol(name))) == (name, h["MMSB_" * name])
    end
    @test MMSB.ENQUEUE_CHILDREN == h["MMSB_PROP_ENQUEUE_CHILDREN"]
    @test MMSB.ENQUEUE_SELF == h["MMSB_PROP_ENQUEUE_SELF"]
    for (i, kind) in enumerate(MMSB.RECORD_KINDS)
        @test (kind, i) == (kind, h["MMSB_REC_" * uppercase(string(kind))])
    end
    @test length(MMSB.RECORD_KINDS) == count(k -> startswith(k, "MMSB_REC_"), keys(h))
    for (i, s) in enumerate(MMSB.SOURCES)
        @test (s, i - 1) == (s, h["MMSB_SOURCE_" * uppercase(string(s))])
    end
    @test length(MMSB.SOURCES) == count(k -> startswith(k, "MMSB_SOURCE_"), keys(h))
    for t in instances(EventType)
        @test (t, Int(t)) == (t, h["MMSB_EVENT_" * string(t)])
    end
    @test length(instances(EventType)) == count(k -> startswith(k, "MMSB_EVENT_"), keys(h))
    for (d, name) in ((:none, "NONE"), (:buffered, "BUFFERED"), (:fsync, "FSYNC"))
        @test (d, MMSB.durability_code(d)) == (d, h["MMSB_DURABILITY_" * name])
    end
    # every status code of the header reaches the exception type SPEC §12 names
    expected = Dict("NULL" => ArgumentError, "INVALID" => ArgumentError, "DIMENSION" => DimensionMismatch,
                    "PAGE_NOT_FOUND" => PageNotFoundError, "CYCLE" => CycleError, "HAS_DEPENDENTS" => ArgumentError,
                    "STALE_DELTA" => StaleDeltaError, "TLOG_CORRUPT" => TLogCorruptError,
                    "CHECKPOINT" => CheckpointError, "GPU_UNAVAILABLE" => GPUUnavailableError, "IO" => MMSBIOError,
                    "BUSY" => ArgumentError, "BUFFER_TOO_SMALL" => ArgumentError, "CLOSED" => StateClosedError,
                    "INTERNAL" => MMSBInternalError)
    errs = sort!([k[10:end] for k in keys(h) if startswith(k, "MMSB_ERR_")])
    @test errs == sort!(collect(keys(expected)))
    for name in errs
        @test (name, MMSB.status_exception(h["MMSB_ERR_" * name], "m")) isa Tuple{String,expected[name]}
    end
end
