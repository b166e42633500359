@testset "pages" begin
    st = mmsb_start()

    @testset "create, get, list" begin
        p = create_page(st; size = 16)
        @test p.id == 1
        @test p.size == 16
        @test p.location === :cpu
        @test p.epoch == 0
        @test read_page(st, p.id) == zeros(UInt8, 16)
        @test get_page(st, p.id) == p
        @test get_page(st, 999) === nothing
        @test get_page(st, 0) === nothing
        q = create_page(st; size = 1)
        @test q.id == 2
        @test [x.id for x in pages(st)] == [1, 2]
        @test occursin("Page(id=1, size=16, cpu, epoch=0)", sprint(show, p))
        @test_throws ArgumentError create_page(st; size = 0)
        @test_throws ArgumentError create_page(st; size = -5)
        @test_throws ArgumentError create_page(st; size = 8, location = :tpu)
        @test_throws ArgumentError p.nonexistent
    end

    @testset "epoch semantics (SPEC §2)" begin
        p = create_page(st; size = 8)
        @test page_epoch(st, p.id) == 0
        update_page(st, p.id, UInt8[1, 0, 0, 0, 0, 0, 0, 0])
        @test page_epoch(st, p.id) == 1
        n = stats(st).log_records
        # a write that changes nothing: no delta, no log record, epoch unchanged
        update_page(st, p.id, UInt8[1, 0, 0, 0, 0, 0, 0, 0])
        @test page_epoch(st, p.id) == 1
        @test stats(st).log_records == n
        update_page(st, p.id, fill(0xff, 8))
        @test page_epoch(st, p.id) == 2
        @test read_page(st, p.id) == fill(0xff, 8)
        @test p.epoch isa UInt64
        # any AbstractVector{UInt8} works
        update_page(st, p.id, view(fill(0x07, 10), 1:8))
        @test read_page(st, p.id) == fill(0x07, 8)
        @test page_epoch(st, p.id) == 3
    end

    @testset "read_page! fills a caller buffer without allocating" begin
        p = create_page(st; size = 1024)
        data = rand(MersenneTwister(1), UInt8, 1024)
        update_page(st, p.id, data)
        buf = zeros(UInt8, 1024)
        read_page!(buf, st, p.id)
        @test buf == data
        f(buf, st, id) = @allocated read_page!(buf, st, id)
        f(buf, st, p.id)
        @test f(buf, st, p.id) == 0
        @test_throws DimensionMismatch read_page!(zeros(UInt8, 10), st, p.id)
    end

    @testset "update_page allocates nothing on the hot path" begin
        p = create_page(st; size = 1024)
        a = rand(MersenneTwister(2), UInt8, 1024); b = copy(a); b[10] ⊻= 0x01
        g(st, id, a, b, n) = @allocated for i in 1:n
            update_page(st, id, isodd(i) ? a : b)
        end
        g(st, p.id, a, b, 2)
        @test g(st, p.id, a, b, 100) == 0
    end

    @testset "bad input: typed errors, nothing changes" begin
        p = create_page(st; size = 8)
        update_page(st, p.id, fill(0x01, 8))
        before = canonical_snapshot(st)
        @test_throws DimensionMismatch update_page(st, p.id, zeros(UInt8, 7))
        @test_throws DimensionMismatch update_page(st, p.id, zeros(UInt8, 9))
        @test_throws PageNotFoundError update_page(st, 12345, zeros(UInt8, 8))
        @test_throws ArgumentError update_page(st, 0, zeros(UInt8, 8))
        @test_throws ArgumentError update_page(st, p.id, zeros(Int, 8))
        @test_throws PageNotFoundError read_page(st, 12345)
        @test_throws PageNotFoundError page_epoch(st, 12345)
        @test_throws PageNotFoundError delete_page!(st, 12345)
        @test canonical_snapshot(st) == before
        err = try
            update_page(st, 12345, zeros(UInt8, 8))
        catch e
            e
        end
        @test occursin("12345", sprint(showerror, err))
        err = try
            update_page(st, p.id, zeros(UInt8, 3))
        catch e
            e
        end
        @test occursin("8", err.msg) && occursin("3", err.msg)
    end

    @testset "delete_page!" begin
        a = create_page(st; size = 4); b = create_page(st; size = 4)
        add_dependency!(st, a.id, b.id)
        @test_throws ArgumentError delete_page!(st, a.id)   # b depends on a
        @test get_page(st, a.id) !== nothing
        @test children(st, a.id) == [b.id]
        delete_page!(st, a.id; force = true)
        @test get_page(st, a.id) === nothing
        @test parents(st, b.id) == UInt64[]
        @test_throws PageNotFoundError a.size
        @test occursin("deleted", sprint(show, a))
        delete_page!(st, b.id)
        @test get_page(st, b.id) === nothing
        # ids are never reused
        c = create_page(st; size = 4)
        @test c.id > b.id
        # a forced delete drops the closure recomputes that declared the page,
        # natively and in Julia
        d = create_page(st; size = 4)
        register_recompute!((v, p) -> read_page(v, c.id), st, d.id, [c.id])
        delete_page!(st, c.id; force = true)
        @test !haskey(st.recomputes, d.id)
        @test compute_signature(st, d.id).parent_ids == UInt64[]
    end

    @testset "stats" begin
        s = stats(st)
        @test s.pages == length(pages(st))
        @test s.deltas_applied > 0
        @test s.bytes_logged > 0
        @test occursin("pages", sprint(show, st))
    end
    mmsb_stop(st)
end
