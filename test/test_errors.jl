@testset "error mapping: every status code reaches its exception type" begin
    expected = Dict(-1 => ArgumentError, -2 => ArgumentError, -3 => DimensionMismatch,
                    -4 => PageNotFoundError, -5 => CycleError, -6 => ArgumentError,
                    -7 => StaleDeltaError, -8 => TLogCorruptError, -9 => CheckpointError,
                    -10 => GPUUnavailableError, -11 => MMSBIOError, -12 => ArgumentError,
                    -13 => ArgumentError, -99 => MMSBInternalError, -1234 => MMSBInternalError)
    for (code, T) in expected
        e = MMSB.status_exception(code, "message $code")
        @test e isa T
        @test occursin("message $code", sprint(showerror, e))
    end
    @test all(T -> T <: MMSBError, (PageNotFoundError, CycleError, UndeclaredDependencyError, RecomputeError,
                                    StaleDeltaError, TLogCorruptError, CheckpointError, GPUUnavailableError,
                                    StateClosedError, MMSBIOError, MMSBInternalError, CallbackError))

    @testset "native messages reach the exception" begin
        st = mmsb_start()
        p = create_page(st; size = 8)
        e = try read_page!(zeros(UInt8, 3), st, p.id) catch ex ex end
        @test e isa DimensionMismatch && occursin("3", e.msg)
        e = try delete_page!(st, 77) catch ex ex end
        @test e isa PageNotFoundError && occursin("77", e.msg)
        mktempdir() do dir
            empty_state = mmsb_start()
            @test_throws CheckpointError load_checkpoint!(empty_state, joinpath(dir, "missing.ckpt"))
            mmsb_stop(empty_state)
            @test_throws ArgumentError load_checkpoint!(st, joinpath(dir, "missing.ckpt"))   # st is not empty
            bad = joinpath(dir, "bad.tlog")
            write(bad, rand(MersenneTwister(1), UInt8, 300))
            @test_throws TLogCorruptError mmsb_start(config = MMSBConfig(tlog_path = bad))
            @test_throws MMSBIOError mmsb_start(config = MMSBConfig(tlog_path = joinpath(dir, "no", "such", "dir", "x.tlog")))
        end
        mmsb_stop(st)
    end
end

@testset "errors: arguments of the wrong type are ArgumentError" begin
    st = mmsb_start()
    q = create_page(st; size = 4).id
    for f in (() -> read_page(st, 1.0), () -> read_page(st, Int128(2)^64), () -> read_page(st, 0),
              () -> create_page(st; size = big(2)^64), () -> create_page(st; size = 4.0),
              () -> create_page(st; size = 4, location = "gpu"),
              () -> create_delta(st, q, trues(4), zeros(Int, 4)), () -> batch_route_deltas!(st, Any[1]),
              () -> create_delta(st, q, trues(4), zeros(UInt8, 4); source = :propagation),   # recomputes only
              () -> subscribe!(identity, st, :PAGE_CHANGED), () -> register_recompute!((v, p) -> v, st, q, [1.5]))
        @test_throws ArgumentError f()
    end
    @test canonical_snapshot(st) == canonical_snapshot(begin s2 = mmsb_start(); create_page(s2; size = 4); s2 end)
    @test batch_route_deltas!(st, Any[create_delta(st, q, trues(4), fill(0x02, 4))]) == 1   # a Vector{Any} of deltas is fine
    mmsb_stop(st)
end
