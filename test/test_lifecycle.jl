@testset "lifecycle" begin
    @testset "start, stop, use after stop" begin
        st = mmsb_start()
        @test isopen(st)
        p = create_page(st; size = 8)
        mmsb_stop(st)
        @test !isopen(st)
        @test mmsb_stop(st) === nothing          # twice: no-op
        @test_throws StateClosedError create_page(st; size = 8)
        @test_throws StateClosedError read_page(st, p.id)
        @test_throws StateClosedError update_page(st, p.id, zeros(UInt8, 8))
        @test_throws StateClosedError page_epoch(st, p.id)
        @test_throws StateClosedError stats(st)
        @test_throws StateClosedError add_dependency!(st, 1, 2)
        @test_throws StateClosedError reset!(st)
        @test sprint(show, st) == "MMSBState(closed)"
        @test occursin("state closed", sprint(show, p))
    end

    @testset "mmsb_stop while other tasks read and write: typed errors, no crash" begin
        for round in 1:20
            st = mmsb_start()
            p = create_page(st; size = 256).id
            outcomes = Vector{Any}(undef, 4)
            tasks = [Threads.@spawn begin
                         n = 0
                         try
                             for i in 1:100_000
                                 isodd(k) ? update_page(st, p, fill(UInt8(i % 256), 256)) : read_page(st, p)
                                 n += 1
                             end
                             outcomes[k] = n
                         catch e
                             outcomes[k] = e
                         end
                     end for k in 1:4]
            sleep(0.001 * (round % 5))
            mmsb_stop(st)
            foreach(wait, tasks)
            @test all(o -> o isa Int || o isa StateClosedError, outcomes)
        end
    end

    @testset "config validation" begin
        @test_throws ArgumentError MMSBConfig(durability = :fsync)          # needs a path
        @test_throws ArgumentError MMSBConfig(durability = :sometimes)
        @test_throws ArgumentError MMSBConfig(tlog_path = "")
        @test_throws ArgumentError MMSBConfig(tlog_path = "x.tlog", durability = :none)
        @test_throws ArgumentError MMSBConfig(gpu_threshold = -1)
        @test MMSBConfig(tlog_path = "x.tlog").durability === :buffered
        @test MMSBConfig().durability === :none
    end

    @testset "reset! restarts ids and empties everything" begin
        st = mmsb_start()
        a = create_page(st; size = 4); b = create_page(st; size = 4)
        add_dependency!(st, a.id, b.id)
        update_page(st, a.id, UInt8[1, 2, 3, 4])
        fresh = mmsb_start()
        reset!(st)
        @test isempty(pages(st))
        @test isempty(tlog_entries(st))
        @test stats(st).pages == 0
        @test canonical_snapshot(st) == canonical_snapshot(fresh)
        c = create_page(st; size = 4)
        @test c.id == 1
        mmsb_stop(st); mmsb_stop(fresh)
    end

    @testset "pool: pooled state indistinguishable from fresh" begin
        work(st) = begin
            p = create_page(st; size = 64); q = create_page(st; size = 64)
            register_passthrough_recompute!(st, q.id, p.id)
            update_page(st, p.id, rand(MersenneTwister(7), UInt8, 64))
            canonical_snapshot(st)
        end
        used = get_pooled_state!()
        work(used)
        return_to_pool!(used)
        pooled = get_pooled_state!()
        fresh = mmsb_start()
        @test canonical_snapshot(pooled) == canonical_snapshot(fresh)
        @test work(pooled) == work(fresh)
        return_to_pool!(pooled); mmsb_stop(fresh)
    end

    # Functions, so that no state stays reachable from a top-level local.
    function churn(n, size; stop)
        for i in 1:n
            st = mmsb_start()
            create_page(st; size = size)
            stop(i) && mmsb_stop(st)
        end
    end
    rss_kib() = parse(Int, split(first(filter(l -> startswith(l, "VmRSS"), readlines("/proc/self/status"))))[2])

    @testset "10,000 states leave no native memory behind" begin
        GC.gc(); GC.gc()
        base = live_native_states()
        churn(5_000, 1024; stop = i -> true)
        @test live_native_states() == base
        churn(5_000, 1024; stop = i -> false)      # dropped to the GC
        GC.gc(); GC.gc(); GC.gc()
        @test live_native_states() == base
        # Two rounds let the allocators reach their working size (RSS still
        # grows by ~30 MiB in the second: handles of stopped states are freed
        # by the GC, later); a leak shows up as growth over the next two
        # (2 × 10,000 × 16 KiB = 320 MiB if leaked).
        for _ in 1:2
            churn(10_000, 16 * 1024; stop = iseven)
            GC.gc(); GC.gc(); GC.gc()
        end
        before = rss_kib()
        for _ in 1:2
            churn(10_000, 16 * 1024; stop = iseven)
            GC.gc(); GC.gc(); GC.gc()
        end
        @test live_native_states() == base
        @test rss_kib() - before < 32 * 1024
    end
end

@testset "lifecycle: a state returned to the pool twice is kept once" begin
    s = get_pooled_state!()
    return_to_pool!(s)
    return_to_pool!(s)
    a = get_pooled_state!()
    b = get_pooled_state!()
    @test a !== b
    mmsb_stop(a)
    mmsb_stop(b)
end
