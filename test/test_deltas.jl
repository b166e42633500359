# Apply a delta in plain Julia: the reference for the native kernels.
function reference_apply(bytes::Vector{UInt8}, d::Delta)
    out = copy(bytes)
    if d.mask isa BitVector
        for i in eachindex(out)
            d.mask[i] && (out[i] = d.payload[i])
        end
    else
        k = 0
        for r in d.mask, i in r
            out[i] = d.payload[k+=1]
        end
    end
    return out
end

@testset "deltas" begin
    st = mmsb_start()

    @testset "create_delta: dense and sparse by density" begin
        p = create_page(st; size = 64)
        sparse = create_delta(st, p.id, [3:4, 10:10], UInt8[1, 2, 3])
        @test sparse.mask == [3:4, 10:10]
        @test sparse.payload == UInt8[1, 2, 3]
        @test sparse.page_id == p.id && sparse.epoch == 0 && sparse.source === :api
        dense = create_delta(st, p.id, trues(64), fill(0x05, 64))
        @test dense.mask isa BitVector
        @test dense.id == sparse.id + 1
        @test dense.timestamp > sparse.timestamp
        # the same change through either form, and through a Bool mask
        m = falses(64); m[3:4] .= true; m[10] = true
        full = zeros(UInt8, 64); full[3] = 1; full[4] = 2; full[10] = 3
        viamask = create_delta(st, p.id, Vector{Bool}(m), full)
        @test viamask.mask == sparse.mask && viamask.payload == sparse.payload
        @test occursin("sparse 2 ranges", sprint(show, sparse))
        route_delta!(st, sparse)
        @test read_page(st, p.id)[[3, 4, 10]] == UInt8[1, 2, 3]
        @test page_epoch(st, p.id) == 1
        # routing it again changes nothing: no epoch bump, no log record
        n = stats(st).log_records
        route_delta!(st, sparse)
        @test page_epoch(st, p.id) == 1 && stats(st).log_records == n
        route_delta!(st, dense)
        @test read_page(st, p.id) == fill(0x05, 64)
        @test page_epoch(st, p.id) == 2
    end

    @testset "bad deltas" begin
        p = create_page(st; size = 16)
        @test_throws DimensionMismatch create_delta(st, p.id, trues(15), zeros(UInt8, 16))
        @test_throws DimensionMismatch create_delta(st, p.id, trues(16), zeros(UInt8, 15))
        @test_throws ArgumentError create_delta(st, p.id, [5:6, 4:4], zeros(UInt8, 3))   # unsorted
        @test_throws ArgumentError create_delta(st, p.id, [1:4, 3:5], zeros(UInt8, 7))   # overlap
        @test_throws ArgumentError create_delta(st, p.id, [15:17], zeros(UInt8, 3))      # outside
        @test_throws ArgumentError create_delta(st, p.id, [0:1], zeros(UInt8, 2))
        @test_throws DimensionMismatch create_delta(st, p.id, [1:2], zeros(UInt8, 5))
        @test_throws ArgumentError create_delta(st, p.id, [1:2], zeros(UInt8, 2); source = :bogus)
        @test_throws ArgumentError create_delta(st, p.id, [1.5, 2.0], zeros(UInt8, 2))
        @test_throws PageNotFoundError create_delta(st, 999, [1:2], zeros(UInt8, 2))
        before = MMSB.next_ids(st.handle)
        @test_throws PageNotFoundError create_delta(st, 999, [1:2], zeros(UInt8, 2))
        @test MMSB.next_ids(st.handle) == before        # a failed call consumes no id
        d = create_delta(st, p.id, [1:2], UInt8[9, 9])
        delete_page!(st, p.id)
        @test_throws PageNotFoundError route_delta!(st, d)
    end

    @testset "dense and sparse apply identically (random, vs reference)" begin
        rng = MersenneTwister(42)
        for trial in 1:200
            size = rand(rng, [1, 7, 8, 63, 64, 65, 1000, 4096])
            a = create_page(st; size = size); b = create_page(st; size = size)
            init = rand(rng, UInt8, size)
            update_page(st, a.id, init); update_page(st, b.id, init)
            density = rand(rng, [0.0, 0.01, 0.1, 0.5, 1.0])
            mask = [rand(rng) < density for _ in 1:size]
            full = rand(rng, UInt8, size)
            da = create_delta(st, a.id, mask, full)                               # density-chosen
            ranges = MMSB.mask_ranges(mask)
            db = create_delta(st, b.id, ranges, full)                             # ranges + full payload
            expect = reference_apply(init, da)
            @test expect == reference_apply(init, db)
            e0 = page_epoch(st, a.id)
            @test page_epoch(st, b.id) == e0
            route_delta!(st, da); route_delta!(st, db)
            @test read_page(st, a.id) == expect
            @test read_page(st, b.id) == expect
            @test page_epoch(st, a.id) == page_epoch(st, b.id) == e0 + (expect != init)
            # the dense encoding applied natively equals the sparse one
            c = create_page(st; size = size)
            update_page(st, c.id, init)
            dc = create_delta(st, c.id, mask, full)
            dense = Delta(dc.id, dc.page_id, dc.epoch, MMSB.expand(dc)..., dc.source, dc.timestamp, dc.page_size)
            route_delta!(st, dense)
            @test read_page(st, c.id) == expect
        end
    end

    @testset "merge_deltas: a then b, associative, identity" begin
        rng = MersenneTwister(3)
        size = 200
        p = create_page(st; size = size)
        rnd() = create_delta(st, p.id, [rand(rng) < rand(rng, [0.02, 0.3, 0.9]) for _ in 1:size], rand(rng, UInt8, size))
        empty = create_delta(st, p.id, UnitRange{Int}[], UInt8[])
        for trial in 1:50
            a, b, c = rnd(), rnd(), rnd()
            base = rand(rng, UInt8, size)
            @test reference_apply(base, merge_deltas(a, b)) == reference_apply(reference_apply(base, a), b)
            @test merge_deltas(merge_deltas(a, b), c) == merge_deltas(a, merge_deltas(b, c))
            @test merge_deltas(empty, a) == a
            @test merge_deltas(a, empty) == a
        end
        q = create_page(st; size = size)
        @test_throws ArgumentError merge_deltas(rnd(), create_delta(st, q.id, [1:1], UInt8[1]))
    end

    @testset "stale deltas: last writer wins, or StaleDeltaError when strict" begin
        for strict in (false, true)
            s = mmsb_start(config = MMSBConfig(strict_epochs = strict))
            p = create_page(s; size = 4)
            old = create_delta(s, p.id, [1:1], UInt8[7])        # base epoch 0
            update_page(s, p.id, UInt8[1, 1, 1, 1])              # epoch 1
            if strict
                before = canonical_snapshot(s)
                @test_throws StaleDeltaError route_delta!(s, old)
                @test canonical_snapshot(s) == before
            else
                route_delta!(s, old)
                @test read_page(s, p.id) == UInt8[7, 1, 1, 1]
                @test page_epoch(s, p.id) == 2
            end
            mmsb_stop(s)
        end
    end
    mmsb_stop(st)
end
