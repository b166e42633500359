# Propagation (SPEC §5): diamonds, early cutoff, signatures, undeclared reads,
# writes from recomputes, cycles, passthrough chains, failing recomputes,
# invalidation, and a randomized comparison against a plain-Julia model.
# Included from runtests.jl after `using MMSB, Test, Random`.

# The exception an expression threw (from a passing @test_throws), or nothing.
tprop_exc(r) = r isa Test.Pass ? r.value : nothing

@testset "propagation: diamond join recomputes once, after both parents" begin
    st = mmsb_start()
    a = create_page(st; size = 8).id
    b = create_page(st; size = 8).id
    c = create_page(st; size = 8).id
    d = create_page(st; size = 8).id
    order = UInt64[]                      # every recompute call, in order
    seen = Tuple{Vector{UInt8},Vector{UInt8}}[]   # what d read from b and c
    register_recompute!(st, b, [a]) do view, page
        push!(order, page.id)
        read_page(view, a) .+ 0x01
    end
    register_recompute!(st, c, [a]) do view, page
        push!(order, page.id)
        read_page(view, a) .⊻ 0x55
    end
    register_recompute!(st, d, [b, c]) do view, page
        push!(order, page.id)
        bb = read_page(view, b)
        cc = Vector{UInt8}(undef, 8)
        read_page!(cc, view, c)
        push!(seen, (bb, cc))
        vcat(bb[1:4], cc[5:8])
    end
    @test sort(parents(st, d)) == sort([b, c])
    @test children(st, a) == sort([b, c])
    for (cycle, v) in enumerate(UInt8[3, 7, 200, 201, 0])
        empty!(order); empty!(seen)
        update_page(st, a, fill(v, 8))
        @test count(==(d), order) == 1
        @test count(==(b), order) == 1
        @test count(==(c), order) == 1
        @test length(order) == 3
        # d ran last, after both of its parents
        @test order[end] == d
        nb = fill(v + 0x01, 8)
        nc = fill(v ⊻ 0x55, 8)
        @test length(seen) == 1 && seen[1] == (nb, nc)
        @test read_page(st, b) == nb
        @test read_page(st, c) == nc
        @test read_page(st, d) == vcat(nb[1:4], nc[5:8])
        @test page_epoch(st, a) == cycle
        @test page_epoch(st, d) == cycle
    end
    mmsb_stop(st)
end

@testset "propagation: early cutoff stops at an unchanged page" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    calls = Dict(b => 0, c => 0)
    # b only keeps whether a's first byte is odd: most changes of a leave it alone
    register_recompute!(st, b, [a]) do view, page
        calls[b] += 1
        fill(read_page(view, a)[1] & 0x01, 4)
    end
    register_recompute!(st, c, [b]) do view, page
        calls[c] += 1
        read_page(view, b) .+ 0x10
    end
    update_page(st, a, UInt8[1, 0, 0, 0])          # b: 0 -> 1, c recomputed
    @test calls[b] == 1 && calls[c] == 1
    @test read_page(st, b) == fill(0x01, 4)
    @test read_page(st, c) == fill(0x11, 4)
    eb, ec = page_epoch(st, b), page_epoch(st, c)
    s0 = stats(st)
    update_page(st, a, UInt8[3, 9, 9, 9])          # b still all 1s: cutoff
    s1 = stats(st)
    @test calls[b] == 2
    @test calls[c] == 1                            # c not recomputed
    @test s1.recomputes_cutoff == s0.recomputes_cutoff + 1
    @test page_epoch(st, b) == eb                  # no delta for b
    @test page_epoch(st, c) == ec
    @test read_page(st, c) == fill(0x11, 4)
    @test page_epoch(st, a) == 2
    # the log holds a's delta and b's stored signature (its parent's epoch:
    # replay must skip what the live state skips), nothing for c
    rec = tlog_entries(st)[end-1:end]
    @test rec[1].kind === :delta && rec[1].page_id == a
    @test (rec[2].kind, rec[2].page_id, rec[2].encoding) == (:prop_state, b, :signature)
    @test log_u64(rec[2].data) == page_epoch(st, a)
    update_page(st, a, UInt8[4, 9, 9, 9])          # b: 1 -> 0, c follows
    @test calls[b] == 3 && calls[c] == 2
    @test read_page(st, c) == fill(0x10, 4)
    @test stats(st).recomputes_cutoff == s1.recomputes_cutoff
    mmsb_stop(st)
end

@testset "propagation: an unchanged signature skips the recompute" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    n = Ref(0)
    register_recompute!(st, b, [a]) do view, page
        n[] += 1
        read_page(view, a) .+ 0x02
    end
    @test n[] == 0                                 # registering runs nothing
    recompute_page!(st, b)                         # first time: no stored signature
    @test n[] == 1
    @test read_page(st, b) == fill(0x02, 4)
    s0 = stats(st)
    recompute_page!(st, b)                         # up to date: skipped
    @test n[] == 1
    s1 = stats(st)
    @test s1.recomputes_skipped == s0.recomputes_skipped + 1
    @test s1.recomputes_run == s0.recomputes_run
    propagate_change!(st, [a])                     # a did not really change
    @test n[] == 1
    @test stats(st).recomputes_skipped == s1.recomputes_skipped + 1
    update_page(st, a, fill(0x05, 4))
    @test n[] == 2
    @test read_page(st, b) == fill(0x07, 4)
    @test stats(st).recomputes_run > s1.recomputes_run
    update_page(st, a, fill(0x05, 4))              # a no-op write: nothing runs
    @test n[] == 2
    mmsb_stop(st)
end

@testset "propagation: compute_signature" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    x = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    plain = create_page(st; size = 4).id
    register_recompute!((v, p) -> read_page(v, a) .⊻ read_page(v, x), st, b, [a, x])
    @test compute_signature(st, b) == RecomputeSignature([a, x], UInt64[0, 0])
    update_page(st, a, fill(0x01, 4))
    update_page(st, a, fill(0x02, 4))
    update_page(st, x, fill(0x03, 4))
    sig = compute_signature(st, b)
    @test sig == RecomputeSignature([a, x], UInt64[2, 1])
    @test sig.parent_ids == [a, x]
    @test sig.parent_epochs == UInt64[page_epoch(st, a), page_epoch(st, x)]
    # a page without a recompute has an empty signature
    @test compute_signature(st, plain) == RecomputeSignature(UInt64[], UInt64[])
    @test compute_signature(st, a) == RecomputeSignature(UInt64[], UInt64[])
    # declared in another order: the same set of (parent, epoch) pairs
    c = create_page(st; size = 4).id
    register_recompute!((v, p) -> read_page(v, x), st, c, [x, a])
    s = compute_signature(st, c)
    @test Set(zip(s.parent_ids, s.parent_epochs)) == Set([(a, UInt64(2)), (x, UInt64(1))])
    @test_throws PageNotFoundError compute_signature(st, 999)
    # a passthrough's signature is its one parent
    p = create_page(st; size = 4).id
    register_passthrough_recompute!(st, p, x)
    @test compute_signature(st, p) == RecomputeSignature([x], UInt64[1])
    mmsb_stop(st)
end

@testset "propagation: undeclared reads raise UndeclaredDependencyError" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    secret = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    update_page(st, secret, fill(0x09, 4))
    register_recompute!(st, b, [a]) do view, page
        read_page(view, a) .+ read_page(view, secret)    # secret is not declared
    end
    register_recompute!(st, c, [a]) do view, page
        buf = zeros(UInt8, 4)
        read_page!(buf, view, secret)                     # nor through read_page!
        buf
    end
    eb = page_epoch(st, b)
    r = @test_throws RecomputeError update_page(st, a, fill(0x01, 4))
    err = tprop_exc(r)
    @test err isa RecomputeError && err.page_id in (b, c)
    @test err isa RecomputeError && err.cause isa UndeclaredDependencyError
    if err isa RecomputeError && err.cause isa UndeclaredDependencyError
        @test err.cause.page_id == err.page_id
        @test err.cause.requested == secret
        @test occursin(string(secret), sprint(showerror, err))
    end
    @test read_page(st, a) == fill(0x01, 4)              # the write itself stays
    @test read_page(st, b) == zeros(UInt8, 4)
    @test read_page(st, c) == zeros(UInt8, 4)
    @test page_epoch(st, b) == eb
    # the same error through recompute_page! (stale pages join the cycle, so
    # the error may name the other failing page)
    for p in (b, c)
        r = @test_throws RecomputeError recompute_page!(st, p)
        e = tprop_exc(r)
        @test e isa RecomputeError && e.page_id in (b, c) && e.cause isa UndeclaredDependencyError
    end
    # reading a page that does not exist is also undeclared
    d = create_page(st; size = 4).id
    register_recompute!((v, p) -> read_page(v, 12345), st, d, [a])
    r = @test_throws RecomputeError recompute_page!(st, d)
    e = tprop_exc(r)
    @test e isa RecomputeError && e.cause isa UndeclaredDependencyError
    mmsb_stop(st)
end

@testset "propagation: recomputes must not write" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    x = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    caught = Any[]
    register_recompute!(st, b, [a]) do view, page
        try
            update_page(st, x, fill(0x77, 4))
        catch e
            push!(caught, e)
        end
        try
            route_delta!(st, create_delta(st, x, [1:1], UInt8[0x66]))
        catch e
            push!(caught, e)
        end
        read_page(view, a)
    end
    update_page(st, a, fill(0x01, 4))
    @test length(caught) == 2
    @test all(e -> e isa ArgumentError, caught)
    @test read_page(st, x) == zeros(UInt8, 4)            # refused: nothing written
    @test page_epoch(st, x) == 0
    @test read_page(st, b) == fill(0x01, 4)              # the recompute still worked
    @test !any(e -> e.kind === :delta && e.page_id == x, tlog_entries(st))
    # a recompute that lets the refusal escape: RecomputeError wrapping it
    register_recompute!(st, c, [a]) do view, page
        update_page(st, x, fill(0x55, 4))
        read_page(view, a)
    end
    r = @test_throws RecomputeError update_page(st, a, fill(0x02, 4))
    e = tprop_exc(r)
    @test e isa RecomputeError && e.page_id == c && e.cause isa ArgumentError
    @test read_page(st, x) == zeros(UInt8, 4)
    # once c behaves, the state is writable and c (left stale) catches up
    register_recompute!((v, p) -> read_page(v, a), st, c, [a])
    update_page(st, x, fill(0x03, 4))
    @test read_page(st, x) == fill(0x03, 4)
    @test read_page(st, c) == fill(0x02, 4)
    # structural changes and checkpoints from inside a recompute are refused
    # too (the cycle is paused; nothing may change under it), and log nothing
    mktempdir() do dir
        ck = joinpath(dir, "mid.ckpt")
        attempts = [() -> create_page(st; size = 4), () -> add_dependency!(st, x, a),
                    () -> remove_dependency!(st, a, x), () -> delete_page!(st, x),
                    () -> register_passthrough_recompute!(st, x, a), () -> checkpoint_log!(st, ck),
                    () -> reset!(st)]
        refused = Any[]
        register_recompute!(st, c, [a]) do view, page
            for f in attempts
                push!(refused, try f() catch e e end)
            end
            read_page(view, a)
        end
        n = length(tlog_entries(st))
        graph = dependencies(st)
        update_page(st, a, fill(0x04, 4))
        @test length(refused) == length(attempts)
        @test all(e -> e isa ArgumentError && occursin(r"pending|recompute functions must not", e.msg), refused)
        @test !isfile(ck)
        @test dependencies(st) == graph
        @test length(pages(st)) == 4
        kinds = [e.kind for e in tlog_entries(st)[n+1:end]]
        @test !any(in((:page_create, :page_delete, :edge_add, :edge_remove)), kinds)
        @test read_page(st, c) == fill(0x04, 4)
    end
    mmsb_stop(st)
end

@testset "propagation: cycles are rejected, graph unchanged" begin
    st = mmsb_start()
    a, b, c, x = [create_page(st; size = 4).id for _ in 1:4]
    fcalls = Ref(0)
    register_recompute!((v, p) -> read_page(v, a), st, b, [a])
    register_recompute!((v, p) -> read_page(v, b), st, c, [b])
    deps0 = dependencies(st)
    @test (a, b, :data) in deps0 && (b, c, :data) in deps0
    bad = (v, p) -> (fcalls[] += 1; read_page(v, c))
    @test_throws CycleError register_recompute!(bad, st, a, [c])           # a -> b -> c -> a
    @test_throws CycleError register_recompute!(bad, st, a, [x, c])        # all or none
    @test_throws CycleError register_recompute!(bad, st, a, [a])           # self-loop
    @test_throws CycleError register_passthrough_recompute!(st, a, c)
    @test_throws CycleError add_dependency!(st, c, a)
    @test_throws CycleError add_dependency!(st, b, b)
    @test dependencies(st) == deps0
    @test isempty(parents(st, a))
    @test children(st, x) == UInt64[]
    @test compute_signature(st, a) == RecomputeSignature(UInt64[], UInt64[])
    # a still works as a root and the failed function is never called
    update_page(st, a, fill(0x04, 4))
    @test read_page(st, c) == fill(0x04, 4)
    @test fcalls[] == 0
    @test topological_order(st) isa Vector{UInt64}
    ord = topological_order(st)
    @test findfirst(==(a), ord) < findfirst(==(b), ord) < findfirst(==(c), ord)
    mmsb_stop(st)
end

@testset "propagation: passthrough chains" begin
    st = mmsb_start()
    a = create_page(st; size = 16).id
    b = create_page(st; size = 16).id
    c = create_page(st; size = 16).id
    d = create_page(st; size = 16).id
    small = create_page(st; size = 8).id
    register_passthrough_recompute!(st, b, a)
    register_passthrough_recompute!(st, c, b)
    dcalls = Ref(0)
    register_recompute!(st, d, [c]) do view, page
        dcalls[] += 1
        reverse(read_page(view, c))
    end
    @test (a, b, :data) in dependencies(st) && (b, c, :data) in dependencies(st)
    rng = MersenneTwister(11)
    for k in 1:5
        v = rand(rng, UInt8, 16)
        update_page(st, a, v)
        @test read_page(st, b) == v
        @test read_page(st, c) == v
        @test read_page(st, d) == reverse(v)
        @test page_epoch(st, b) == k
        @test page_epoch(st, c) == k
        @test dcalls[] == k
    end
    # passthrough deltas are logged as propagation deltas
    ents = filter(e -> e.kind === :delta && e.page_id in (b, c), tlog_entries(st))
    @test length(ents) == 10
    @test all(e -> e.source === :propagation, ents)
    @test any(e -> e.kind === :recompute_set && e.page_id == b, tlog_entries(st))
    # sizes must match; nothing changes when they do not
    deps0 = dependencies(st)
    @test_throws ArgumentError register_passthrough_recompute!(st, small, a)
    @test_throws ArgumentError register_passthrough_recompute!(st, a, small)
    @test dependencies(st) == deps0
    @test isempty(parents(st, small))
    @test_throws PageNotFoundError register_passthrough_recompute!(st, 999, a)
    @test_throws PageNotFoundError register_passthrough_recompute!(st, b, 999)
    # replacing a closure recompute with a passthrough: the closure no longer runs
    register_passthrough_recompute!(st, d, c)
    n = dcalls[]
    v = rand(rng, UInt8, 16)
    update_page(st, a, v)
    @test read_page(st, d) == v
    @test dcalls[] == n
    mmsb_stop(st)
end

@testset "propagation: a throwing recompute leaves a consistent state" begin
    # a -> b -> e,  a -> c -> d ; c throws while `broken`.
    function build(broken)
        st = mmsb_start()
        a, b, c, d, e = [create_page(st; size = 4).id for _ in 1:5]
        calls = Dict(p => 0 for p in (b, c, d, e))
        fb(v, p) = (calls[b] += 1; read_page(v, a) .+ 0x01)
        fc(v, p) = (calls[c] += 1; broken[] && error("recompute of c is broken"); read_page(v, a) .* 0x02)
        fd(v, p) = (calls[d] += 1; read_page(v, c) .+ 0x03)
        fe(v, p) = (calls[e] += 1; read_page(v, b) .⊻ 0xf0)
        register_recompute!(fb, st, b, [a])
        register_recompute!(fc, st, c, [a])
        register_recompute!(fd, st, d, [c])
        register_recompute!(fe, st, e, [b])
        return st, (a, b, c, d, e), calls
    end
    model(x) = (b = x .+ 0x01, c = x .* 0x02, d = (x .* 0x02) .+ 0x03, e = (x .+ 0x01) .⊻ 0xf0)
    function check_model(st, ids, x)
        a, b, c, d, e = ids
        m = model(x)
        return read_page(st, a) == x && read_page(st, b) == m.b && read_page(st, c) == m.c &&
               read_page(st, d) == m.d && read_page(st, e) == m.e
    end

    for recovery in (:recompute_page, :propagate, :write)
        broken = Ref(false)
        st, ids, calls = build(broken)
        a, b, c, d, e = ids
        x1 = fill(0x05, 4)
        update_page(st, a, x1)
        @test check_model(st, ids, x1)
        old = Dict(p => read_page(st, p) for p in ids)
        olde = Dict(p => page_epoch(st, p) for p in ids)
        nlog = length(tlog_entries(st))
        changed = UInt64[]
        subscribe!(ev -> push!(changed, ev.page_id), st, PAGE_CHANGED)

        broken[] = true
        dcalls = calls[d]
        x2 = fill(0x09, 4)
        r = @test_throws RecomputeError update_page(st, a, x2)
        err = tprop_exc(r)
        @test err isa RecomputeError && err.page_id == c
        @test err isa RecomputeError && err.cause isa ErrorException
        @test err isa RecomputeError && occursin("page $c", sprint(showerror, err))
        @test read_page(st, a) == x2                  # the write stays applied
        @test page_epoch(st, a) == olde[a] + 1
        @test read_page(st, c) == old[c]              # the failing page keeps its bytes
        @test page_epoch(st, c) == olde[c]
        @test read_page(st, d) == old[d]              # never reached
        @test calls[d] == dcalls
        # b (and then e) either ran before c failed, or are stale and old
        m2 = model(x2)
        @test read_page(st, b) in (old[b], m2.b)
        @test read_page(st, e) in (old[e], m2.e)
        @test a in changed                            # events of the cycle were delivered
        newlog = tlog_entries(st)[nlog+1:end]
        @test all(en -> en.kind === :delta || (en.kind === :prop_state && en.encoding === :stale), newlog)
        @test !any(en -> en.kind === :delta && en.page_id in (c, d), newlog)
        @test any(en -> en.kind === :prop_state && en.page_id == c, newlog)   # c is stale, and the log says so
        @test newlog[1].page_id == a && newlog[1].source === :api

        broken[] = false
        if recovery === :recompute_page
            recompute_page!(st, c)
            @test check_model(st, ids, x2)
        elseif recovery === :propagate
            propagate_change!(st, [a])
            @test check_model(st, ids, x2)
        else
            x3 = fill(0x0b, 4)
            update_page(st, a, x3)
            @test check_model(st, ids, x3)
        end
        # and it stays healthy
        x4 = fill(0x21, 4)
        update_page(st, a, x4)
        @test check_model(st, ids, x4)
        mmsb_stop(st)
    end

    # wrong results are recompute errors too
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    register_recompute!((v, p) -> zeros(UInt8, 3), st, b, [a])   # wrong size
    register_recompute!((v, p) -> "nope", st, c, [a])             # wrong type
    r = @test_throws RecomputeError recompute_page!(st, b)
    e = tprop_exc(r)
    @test e isa RecomputeError && e.page_id == b && e.cause isa DimensionMismatch
    @test read_page(st, b) == zeros(UInt8, 4) && page_epoch(st, b) == 0
    register_recompute!((v, p) -> read_page(v, a), st, b, [a])     # b is fine again
    r = @test_throws RecomputeError recompute_page!(st, c)
    e = tprop_exc(r)
    @test e isa RecomputeError && e.page_id == c && e.cause isa ArgumentError
    mmsb_stop(st)
end

@testset "propagation: a dependent without recompute is only invalidated" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    x = create_page(st; size = 4).id
    y = create_page(st; size = 4).id
    add_dependency!(st, a, x)
    ycalls = Ref(0)
    register_recompute!(st, y, [x]) do view, page
        ycalls[] += 1
        read_page(view, x) .+ 0x01
    end
    recompute_page!(st, y)
    @test ycalls[] == 1
    update_page(st, x, fill(0x02, 4))
    @test ycalls[] == 2 && read_page(st, y) == fill(0x03, 4)
    evs = Event[]
    for t in (PAGE_CREATED, PAGE_DELETED, PAGE_INVALIDATED, DELTA_APPLIED, PAGE_CHANGED)
        subscribe!(ev -> push!(evs, ev), st, t)
    end
    ex, ey = page_epoch(st, x), page_epoch(st, y)
    update_page(st, a, fill(0x07, 4))
    xev = filter(ev -> ev.page_id == x, evs)
    @test length(xev) == 1 && xev[1].type == PAGE_INVALIDATED
    @test read_page(st, x) == fill(0x02, 4)
    @test page_epoch(st, x) == ex
    @test ycalls[] == 2                        # x did not change: y is not recomputed
    @test page_epoch(st, y) == ey
    @test !any(ev -> ev.page_id == y && ev.type != PAGE_INVALIDATED, evs)
    mmsb_stop(st)
end

# ---- randomized: random DAGs against a plain-Julia model ------------------------

# kinds: :root (no parents), :plain (edges, no recompute), :closure, :lossy
# (closure whose output ignores most of its input), :passthrough.
function tprop_eval(kind, salt::UInt8, size::Int, pbytes::Vector{Vector{UInt8}})
    if kind === :passthrough
        return copy(pbytes[1])
    end
    out = Vector{UInt8}(undef, size)
    for k in 1:size
        acc = UInt32(salt) + UInt32(k)
        for (i, b) in enumerate(pbytes)
            acc = acc * UInt32(31) + UInt32(b[mod1(k, length(b))]) * UInt32(2i + 1)
        end
        if kind === :lossy
            hi = 0
            for b in pbytes
                hi += b[mod1(k, length(b))] >= 0x80
            end
            out[k] = salt + UInt8(hi & 1)
        else
            out[k] = UInt8(acc & 0xff) ⊻ UInt8((acc >> 8) & 0xff)
        end
    end
    return out
end

@testset "propagation: randomized DAGs match a from-scratch model" begin
    for seed in 1:3
        rng = MersenneTwister(100 + seed)
        st = mmsb_start()
        n = 30
        sizes = [rand(rng, (4, 8, 16)) for _ in 1:n]
        ids = [create_page(st; size = sizes[j]).id for j in 1:n]
        @test ids == UInt64.(1:n)
        kind = Vector{Symbol}(undef, n)
        ps = [Int[] for _ in 1:n]
        salt = rand(rng, UInt8, n)
        calls = zeros(Int, n)
        for j in 1:n
            if j == 1 || rand(rng) < 0.15
                kind[j] = :root
                continue
            end
            ps[j] = sort!(unique!([rand(rng, 1:j-1) for _ in 1:rand(rng, 1:3)]))
            r = rand(rng)
            if length(ps[j]) == 1 && sizes[ps[j][1]] == sizes[j] && r < 0.4
                kind[j] = :passthrough
                register_passthrough_recompute!(st, ids[j], ids[ps[j][1]])
            elseif r < 0.1
                kind[j] = :plain
                for p in ps[j]
                    add_dependency!(st, ids[p], ids[j])
                end
            else
                kind[j] = r < 0.3 ? :lossy : :closure
                let j = j, pj = ids[ps[j]], kj = kind[j], sj = salt[j], zj = sizes[j]
                    register_recompute!(st, ids[j], pj) do view, page
                        calls[j] += 1
                        tprop_eval(kj, sj, zj, [read_page(view, p) for p in pj])
                    end
                end
            end
        end
        @test all(j -> sort(parents(st, ids[j])) == ids[ps[j]], 1:n)
        # bring every derived page up to date, in topological (= id) order
        for j in 1:n
            kind[j] in (:closure, :lossy, :passthrough) && recompute_page!(st, ids[j])
        end
        model = [zeros(UInt8, sizes[j]) for j in 1:n]
        for j in 1:n
            if kind[j] in (:closure, :lossy, :passthrough)
                model[j] = tprop_eval(kind[j], salt[j], sizes[j], model[ps[j]])
            end
        end
        @test all(j -> read_page(st, ids[j]) == model[j], 1:n)
        epochs = [page_epoch(st, ids[j]) for j in 1:n]
        writable = [j for j in 1:n if kind[j] in (:root, :plain)]
        bad_pages = 0
        bad_calls = 0
        bad_epochs = 0
        twice = 0
        bad_cutoff = 0
        ran = 0
        cut = 0
        for w in 1:150
            j0 = rand(rng, writable)
            new = copy(model[j0])
            r = rand(rng)
            if r < 0.1
                # no-op write
            elseif r < 0.6
                new[rand(rng, 1:sizes[j0])] = rand(rng, UInt8)
            else
                new = rand(rng, UInt8, sizes[j0])
            end
            # model
            changed = falses(n)
            expected = zeros(Int, n)
            cutoffs = 0
            if new != model[j0]
                model[j0] = new
                changed[j0] = true
                epochs[j0] += 1
            end
            for j in j0+1:n
                kind[j] in (:root, :plain) && continue
                any(p -> changed[p], ps[j]) || continue
                v = tprop_eval(kind[j], salt[j], sizes[j], model[ps[j]])
                kind[j] === :passthrough || (expected[j] = 1)
                if v != model[j]
                    model[j] = v
                    changed[j] = true
                    epochs[j] += 1
                else
                    cutoffs += 1
                end
            end
            fill!(calls, 0)
            s0 = stats(st).recomputes_cutoff
            update_page(st, ids[j0], new)
            twice += count(>(1), calls)
            ran += sum(calls)
            cut += cutoffs
            bad_calls += calls != expected
            bad_pages += count(j -> read_page(st, ids[j]) != model[j], 1:n)
            bad_epochs += count(j -> page_epoch(st, ids[j]) != epochs[j], 1:n)
            bad_cutoff += stats(st).recomputes_cutoff - s0 != cutoffs
        end
        @test twice == 0          # no page recomputed twice in one cycle
        @test bad_calls == 0      # exactly the pages with a changed parent ran
        @test bad_pages == 0      # every page equals the model after every write
        @test bad_epochs == 0
        @test bad_cutoff == 0
        @test ran > 100 && cut > 5  # the model exercised recomputes and cutoffs
        mmsb_stop(st)
    end
end

@testset "propagation: error paths change nothing" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    f = (v, p) -> read_page(v, a)
    deps0 = dependencies(st)
    n0 = length(tlog_entries(st))
    @test_throws PageNotFoundError register_recompute!(f, st, b, [a, 999])   # a missing parent
    @test_throws PageNotFoundError register_recompute!(f, st, 999, [a])      # a missing child
    @test_throws ArgumentError register_recompute!(f, st, b, [a, a])         # a parent twice
    @test_throws ArgumentError register_recompute!(f, st, b, [0])
    @test dependencies(st) == deps0 && length(tlog_entries(st)) == n0
    @test compute_signature(st, b) == RecomputeSignature(UInt64[], UInt64[])
    @test_throws PageNotFoundError propagate_change!(st, [999])
    @test_throws PageNotFoundError recompute_page!(st, 999)
    register_recompute!(f, st, b, [a])
    update_page(st, a, fill(0x01, 4))
    snap = canonical_snapshot(st)
    @test_throws PageNotFoundError propagate_change!(st, [a, 999])
    @test canonical_snapshot(st) == snap
    mmsb_stop(st)
    @test_throws StateClosedError register_recompute!(f, st, b, [a])
    @test_throws StateClosedError register_passthrough_recompute!(st, b, a)
    @test_throws StateClosedError propagate_change!(st, [a])
    @test_throws StateClosedError recompute_page!(st, b)
    @test_throws StateClosedError compute_signature(st, b)
end
