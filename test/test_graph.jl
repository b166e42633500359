@testset "graph" begin
    st = mmsb_start()
    ps = [create_page(st; size = 4).id for _ in 1:6]
    a, b, c, d, e, f = ps

    @testset "edges, parents, children" begin
        add_dependency!(st, a, b)
        add_dependency!(st, a, c)
        add_dependency!(st, b, d)
        add_dependency!(st, c, d)
        add_dependency!(st, a, b)                  # existing edge: no-op
        @test children(st, a) == [b, c]
        @test parents(st, d) == [b, c]
        @test dependencies(st) == [(a, b, :data), (a, c, :data), (b, d, :data), (c, d, :data)]
        @test Set(descendants(st, a)) == Set([b, c, d])
        @test descendants(st, d) == UInt64[]
        @test_throws PageNotFoundError add_dependency!(st, a, 999)
        @test_throws PageNotFoundError children(st, 999)
        @test_throws ArgumentError add_dependency!(st, a, e, :weird)
    end

    @testset "cycles rejected, graph unchanged" begin
        before = dependencies(st)
        @test_throws CycleError add_dependency!(st, d, a)
        @test_throws CycleError add_dependency!(st, b, b)
        @test_throws CycleError add_dependency!(st, d, b)
        @test dependencies(st) == before
        err = try add_dependency!(st, d, a) catch ex ex end
        @test occursin(string(d), err.msg) && occursin(string(a), err.msg)
    end

    @testset "topological order" begin
        add_dependency!(st, e, a)
        add_dependency!(st, d, f, :control)
        order = topological_order(st)
        @test sort(order) == sort(ps)
        pos = Dict(id => i for (i, id) in enumerate(order))
        for (p, ch, _) in dependencies(st)
            @test pos[p] < pos[ch]
        end
        remove_dependency!(st, e, a)
        @test parents(st, a) == UInt64[]
        remove_dependency!(st, e, a)               # no edge: no-op
    end

    @testset "random DAGs: order respects every edge, cycles always caught" begin
        rng = MersenneTwister(11)
        for trial in 1:20
            s = mmsb_start()
            n = 40
            ids = [create_page(s; size = 1).id for _ in 1:n]
            perm = shuffle(rng, ids)                 # a hidden topological order
            for _ in 1:80
                i, j = rand(rng, 1:n), rand(rng, 1:n)
                i == j && continue
                i > j && ((i, j) = (j, i))
                add_dependency!(s, perm[i], perm[j])
                @test_throws CycleError add_dependency!(s, perm[j], perm[i])
            end
            order = topological_order(s)
            pos = Dict(id => k for (k, id) in enumerate(order))
            @test all(pos[p] < pos[ch] for (p, ch, _) in dependencies(s))
            mmsb_stop(s)
        end
    end

    @testset "dot output" begin
        dot = to_dot(st)
        @test startswith(dot, "digraph mmsb {")
        @test occursin("p$(a) -> p$(b);", dot)
        @test occursin("p$(d) -> p$(f) [style=dashed];", dot)
        @test occursin("page $(a)", dot)
        io = IOBuffer(); write_dot(io, st)
        @test String(take!(io)) == dot
    end
    mmsb_stop(st)
end
