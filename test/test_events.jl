# Events (SPEC §6): order within a cycle, create/delete, batching,
# unsubscribe, throwing and writing callbacks, no-op writes, per-state
# subscriptions. Included from runtests.jl after `using MMSB, Test, Random`.

const TEV_TYPES = (PAGE_CREATED, PAGE_DELETED, PAGE_INVALIDATED, DELTA_APPLIED, PAGE_CHANGED)

# Subscribe one recorder per event type; all push to one vector, so the
# vector holds the delivery order.
function tev_record_all(st)
    evs = Event[]
    subs = [subscribe!(ev -> push!(evs, ev), st, t) for t in TEV_TYPES]
    return evs, subs
end

tev_exc(r) = r isa Test.Pass ? r.value : nothing

# Delta log records after sequence `from` as (page, delta id).
tev_log_deltas(st, from) = [(e.page_id, e.delta_id) for e in tlog_entries(st) if e.kind === :delta && e.seq > from]
tev_lastseq(st) = (es = tlog_entries(st); isempty(es) ? UInt64(0) : es[end].seq)

# Checks the structure SPEC §6 asks of the events of one propagation cycle.
# Returns the pages in the order their events appear.
function tev_check_cycle(st, evs, written, edges)
    order = UInt64[]
    for ev in evs
        (isempty(order) || order[end] != ev.page_id) && push!(order, ev.page_id)
    end
    @test allunique(order)                                # a page's events are contiguous
    @test order[1] == written                             # the written page first
    pos = Dict(p => i for (i, p) in enumerate(order))
    for (p, c) in edges                                   # pages in topological order
        if haskey(pos, p) && haskey(pos, c)
            @test pos[p] < pos[c]
        end
    end
    for p in order
        pe = [ev for ev in evs if ev.page_id == p]
        types = [ev.type for ev in pe]
        if types == [PAGE_INVALIDATED]
            continue
        end
        # optional INVALIDATED, then DELTA_APPLIED -> PAGE_CHANGED per delta, by epoch
        i = types[1] == PAGE_INVALIDATED ? 2 : 1
        rest = pe[i:end]
        @test iseven(length(rest)) && !isempty(rest)
        for k in 1:2:length(rest)-1
            @test rest[k].type == DELTA_APPLIED
            @test rest[k+1].type == PAGE_CHANGED
            @test rest[k].delta_id == rest[k+1].delta_id != 0
            @test rest[k].epoch == rest[k+1].epoch
        end
        eps = [ev.epoch for ev in rest]
        @test issorted(eps)
        @test isempty(rest) || rest[end].epoch == page_epoch(st, p)
    end
    return order
end

@testset "events: order in a multi-level graph" begin
    st = mmsb_start()
    a, b, c, d, e, g = [create_page(st; size = 8).id for _ in 1:6]
    register_recompute!((v, p) -> read_page(v, a) .+ 0x01, st, b, [a])
    register_passthrough_recompute!(st, c, a)
    register_recompute!((v, p) -> read_page(v, b) .⊻ read_page(v, c), st, d, [b, c])
    add_dependency!(st, d, e)                               # e: no recompute
    register_recompute!((v, p) -> read_page(v, b) .* 0x03, st, g, [b])
    edges = [(a, b), (a, c), (b, d), (c, d), (d, e), (b, g)]
    evs, _ = tev_record_all(st)
    for k in 1:3
        empty!(evs)
        from = tev_lastseq(st)
        update_page(st, a, fill(UInt8(k), 8))
        logd = tev_log_deltas(st, from)
        # the written page's DELTA_APPLIED / PAGE_CHANGED come first
        @test length(evs) >= 2
        @test evs[1] == Event(DELTA_APPLIED, a, logd[1][2], UInt64(k))
        @test evs[2] == Event(PAGE_CHANGED, a, logd[1][2], UInt64(k))
        order = tev_check_cycle(st, evs, a, edges)
        @test Set(order) == Set([a, b, c, d, e, g])
        @test [ev.type for ev in evs if ev.page_id == e] == [PAGE_INVALIDATED]
        # every applied delta has its events, in the order of the log
        applied = [(ev.page_id, ev.delta_id) for ev in evs if ev.type == DELTA_APPLIED]
        @test applied == logd
        @test Set(first.(applied)) == Set([a, b, c, d, g])
    end

    # a batch with two deltas on the root: by epoch within the page
    empty!(evs)
    from = tev_lastseq(st)
    e0 = page_epoch(st, a)
    d1 = create_delta(st, a, [1:2], UInt8[0x40, 0x41])
    d2 = create_delta(st, a, [2:3], UInt8[0x50, 0x51])
    @test batch_route_deltas!(st, [d2, d1]) == 2
    order = tev_check_cycle(st, evs, a, edges)
    ae = [ev for ev in evs if ev.page_id == a]
    @test [ev.type for ev in ae] == [DELTA_APPLIED, PAGE_CHANGED, DELTA_APPLIED, PAGE_CHANGED]
    @test [ev.epoch for ev in ae] == [e0 + 1, e0 + 1, e0 + 2, e0 + 2]
    @test [ev.delta_id for ev in ae] == [d1.id, d1.id, d2.id, d2.id]
    for p in (b, c, d, g)                                   # children once, after both
        @test count(ev -> ev.page_id == p && ev.type == DELTA_APPLIED, evs) == 1
    end
    @test [(ev.page_id, ev.delta_id) for ev in evs if ev.type == DELTA_APPLIED] == tev_log_deltas(st, from)
    mmsb_stop(st)
end

@testset "events: PAGE_CREATED and PAGE_DELETED" begin
    st = mmsb_start()
    evs, _ = tev_record_all(st)
    p1 = create_page(st; size = 4).id
    p2 = create_page(st; size = 16).id
    @test evs == [Event(PAGE_CREATED, p1, 0, 0), Event(PAGE_CREATED, p2, 0, 0)]
    empty!(evs)
    delete_page!(st, p1)
    @test length(evs) == 1 && evs[1].type == PAGE_DELETED && evs[1].page_id == p1 && evs[1].delta_id == 0
    # a refused delete emits nothing; a forced one emits the deletion
    p3 = create_page(st; size = 16).id
    register_passthrough_recompute!(st, p3, p2)
    empty!(evs)
    @test_throws ArgumentError delete_page!(st, p2)
    @test isempty(evs)
    delete_page!(st, p2; force = true)
    @test [(ev.type, ev.page_id) for ev in evs] == [(PAGE_DELETED, p2)]
    @test_throws PageNotFoundError delete_page!(st, p2)
    @test length(evs) == 1
    mmsb_stop(st)
end

# A small workload with closures, passthroughs, plain edges, single and
# batched deltas, creation and deletion. Deterministic for a given seed.
function tev_workload!(st, seed; chunks = nothing)
    rng = MersenneTwister(seed)
    ids = [create_page(st; size = 8).id for _ in 1:8]
    register_recompute!((v, p) -> read_page(v, ids[1]) .+ read_page(v, ids[2]), st, ids[3], ids[1:2])
    register_passthrough_recompute!(st, ids[4], ids[3])
    register_recompute!((v, p) -> read_page(v, ids[4]) .& 0xf0, st, ids[5], [ids[4]])   # lossy
    add_dependency!(st, ids[5], ids[6])
    register_recompute!((v, p) -> reverse(read_page(v, ids[3])), st, ids[7], [ids[3], ids[6]])
    for k in 1:40
        chunks !== nothing && k % 10 == 1 && chunks(:open)
        r = rand(rng)
        p = rand(rng, (ids[1], ids[2], ids[6], ids[8]))
        if r < 0.6
            bytes = read_page(st, p)
            rand(rng) < 0.8 && (bytes[rand(rng, 1:8)] = rand(rng, UInt8))
            update_page(st, p, bytes)
        elseif r < 0.8
            route_delta!(st, create_delta(st, p, [2:3], rand(rng, UInt8, 2)))
        else
            ds = [create_delta(st, rand(rng, (ids[1], ids[2], ids[8])), [rand(rng, 1:8):8], rand(rng, UInt8, 8))
                  for _ in 1:3]
            batch_route_deltas!(st, ds)
        end
        chunks !== nothing && k % 10 == 0 && chunks(:close)
    end
    q = create_page(st; size = 3).id
    update_page(st, q, UInt8[1, 2, 3])
    delete_page!(st, q)
    return ids
end

@testset "events: batched and unbatched deliver the same sequence" begin
    for seed in 1:4
        # unbatched
        s1 = mmsb_start()
        ev1, _ = tev_record_all(s1)
        tev_workload!(s1, seed)
        # one with_event_batch around everything
        s2 = mmsb_start()
        ev2, _ = tev_record_all(s2)
        held = Ref(-1)
        with_event_batch(s2) do
            tev_workload!(s2, seed)
            held[] = length(ev2)
        end
        @test held[] == 0                    # nothing delivered while collecting
        # several collect_events!/flush_events! chunks
        s3 = mmsb_start()
        ev3, _ = tev_record_all(s3)
        batch = Ref{Any}(nothing)
        chunks = function (what)
            if what === :open
                batch[] = collect_events!(s3)
            else
                flush_events!(s3, batch[])
                batch[] = nothing
            end
        end
        tev_workload!(s3, seed; chunks = chunks)
        batch[] === nothing || flush_events!(s3, batch[])
        @test length(ev1) > 50
        @test ev1 == ev2
        @test ev1 == ev3
        @test canonical_snapshot(s1) == canonical_snapshot(s2) == canonical_snapshot(s3)
        foreach(mmsb_stop, (s1, s2, s3))
    end

    st = mmsb_start()
    evs, _ = tev_record_all(st)
    b = collect_events!(st)
    @test_throws ArgumentError collect_events!(st)           # one batch at a time
    p = create_page(st; size = 2).id
    update_page(st, p, UInt8[1, 2])
    @test isempty(evs)
    other = mmsb_start()
    @test_throws ArgumentError flush_events!(other, b)       # a batch of another state
    flush_events!(st, b)
    @test [ev.type for ev in evs] == [PAGE_CREATED, DELTA_APPLIED, PAGE_CHANGED]
    # with_event_batch delivers also when its function throws
    empty!(evs)
    @test_throws ErrorException with_event_batch(st) do
        update_page(st, p, UInt8[3, 4])
        error("inside the batch")
    end
    @test [ev.type for ev in evs] == [DELTA_APPLIED, PAGE_CHANGED]
    update_page(st, p, UInt8[5, 6])                           # the batch is closed again
    @test length(evs) == 4
    mmsb_stop(st); mmsb_stop(other)
end

@testset "events: unsubscribe!" begin
    st = mmsb_start()
    p = create_page(st; size = 4).id
    n1 = Ref(0); n2 = Ref(0)
    s1 = subscribe!(ev -> (n1[] += 1), st, PAGE_CHANGED)
    s2 = subscribe!(ev -> (n2[] += 1), st, PAGE_CHANGED)
    update_page(st, p, fill(0x01, 4))
    @test n1[] == 1 && n2[] == 1
    unsubscribe!(s1)
    update_page(st, p, fill(0x02, 4))
    @test n1[] == 1 && n2[] == 2
    unsubscribe!(s1)                                         # twice: a no-op
    unsubscribe!(s2)
    update_page(st, p, fill(0x03, 4))
    @test n1[] == 1 && n2[] == 2
    @test page_epoch(st, p) == 3
    mmsb_stop(st)
end

@testset "events: a throwing callback" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    register_passthrough_recompute!(st, b, a)
    got1 = Event[]; got3 = Event[]; applied = Event[]
    s1 = subscribe!(ev -> push!(got1, ev), st, PAGE_CHANGED)
    s2 = subscribe!(ev -> error("callback fails on page $(ev.page_id)"), st, PAGE_CHANGED)
    s3 = subscribe!(ev -> push!(got3, ev), st, PAGE_CHANGED)
    s4 = subscribe!(ev -> push!(applied, ev), st, DELTA_APPLIED)
    r = @test_throws CallbackError update_page(st, a, fill(0x07, 4))
    err = tev_exc(r)
    @test length(got1) == 2 && got1 == got3                 # the others saw everything
    @test [ev.page_id for ev in got1] == [a, b]
    @test length(applied) == 2
    @test err isa CallbackError && length(err.errors) == 2
    if err isa CallbackError
        @test all(x -> x[1] === s2 && x[2] isa ErrorException, err.errors)
        @test occursin("callback fails", sprint(showerror, err))
    end
    # the state is intact
    @test read_page(st, a) == fill(0x07, 4) && read_page(st, b) == fill(0x07, 4)
    @test page_epoch(st, a) == 1 && page_epoch(st, b) == 1
    @test count(e -> e.kind === :delta, tlog_entries(st)) == 2
    @test_throws CallbackError update_page(st, a, fill(0x08, 4))
    @test read_page(st, b) == fill(0x08, 4)
    unsubscribe!(s2)
    update_page(st, a, fill(0x09, 4))                        # no error any more
    @test length(got1) == 6 && got1 == got3
    @test read_page(st, b) == fill(0x09, 4)
    mmsb_stop(st)
end

@testset "events: a callback that writes runs after the current delivery" begin
    st = mmsb_start()
    a, b, x, y = [create_page(st; size = 4).id for _ in 1:4]
    register_recompute!((v, p) -> read_page(v, a) .+ 0x01, st, b, [a])
    register_passthrough_recompute!(st, y, x)
    evs, _ = tev_record_all(st)
    done = Ref(false)
    subscribe!(st, DELTA_APPLIED) do ev
        if ev.page_id == a && !done[]
            done[] = true
            update_page(st, x, fill(0x09, 4))
            # queued, not yet run
            @test read_page(st, x) == zeros(UInt8, 4)
        end
    end
    update_page(st, a, fill(0x01, 4))
    @test read_page(st, x) == fill(0x09, 4)                  # ran before update_page returned
    @test read_page(st, y) == fill(0x09, 4)
    first_cycle = findall(ev -> ev.page_id in (a, b), evs)
    second = findall(ev -> ev.page_id in (x, y), evs)
    @test !isempty(first_cycle) && !isempty(second)
    @test maximum(first_cycle) < minimum(second)
    @test [(ev.type, ev.page_id) for ev in evs[second]] ==
          [(DELTA_APPLIED, x), (PAGE_CHANGED, x), (DELTA_APPLIED, y), (PAGE_CHANGED, y)] ||
          [(ev.type, ev.page_id) for ev in evs[second]] ==
          [(DELTA_APPLIED, x), (PAGE_CHANGED, x), (PAGE_INVALIDATED, y), (DELTA_APPLIED, y), (PAGE_CHANGED, y)]

    # a callback writing its own page: each cycle's events follow the previous cycle's
    empty!(evs)
    subscribe!(st, PAGE_CHANGED) do ev
        if ev.page_id == a && ev.epoch < 4
            update_page(st, a, fill(UInt8(0x10 + ev.epoch), 4))
        end
    end
    update_page(st, a, fill(0x02, 4))                         # epoch 2 -> 3 -> 4
    @test page_epoch(st, a) == 4
    @test read_page(st, a) == fill(0x13, 4)
    @test read_page(st, b) == fill(0x14, 4)
    seq = [(ev.page_id, ev.epoch) for ev in evs if ev.type == DELTA_APPLIED]
    eb = page_epoch(st, b)
    @test seq == [(a, 2), (b, eb - 2), (a, 3), (b, eb - 1), (a, 4), (b, eb)]
    mmsb_stop(st)
end

@testset "events: no-op writes emit nothing" begin
    st = mmsb_start()
    a = create_page(st; size = 8).id
    b = create_page(st; size = 8).id
    register_passthrough_recompute!(st, b, a)
    update_page(st, a, fill(0x05, 8))
    evs, _ = tev_record_all(st)
    nlog = count(e -> e.kind === :delta, tlog_entries(st))
    update_page(st, a, fill(0x05, 8))
    route_delta!(st, create_delta(st, a, [3:4], UInt8[0x05, 0x05]))
    route_delta!(st, create_delta(st, a, trues(8), fill(0x05, 8)))
    @test batch_route_deltas!(st, [create_delta(st, a, [1:1], UInt8[0x05])]) == 0
    @test isempty(evs)
    @test count(e -> e.kind === :delta, tlog_entries(st)) == nlog   # no delta logged
    @test page_epoch(st, a) == 1 && page_epoch(st, b) == 1
    mmsb_stop(st)
end

@testset "events: subscriptions are per state" begin
    s1 = mmsb_start()
    s2 = mmsb_start()
    ev1, _ = tev_record_all(s1)
    ev2, _ = tev_record_all(s2)
    p = create_page(s2; size = 4).id
    update_page(s2, p, fill(0x01, 4))
    delete_page!(s2, p)
    @test isempty(ev1)
    @test [ev.type for ev in ev2] == [PAGE_CREATED, DELTA_APPLIED, PAGE_CHANGED, PAGE_DELETED]
    q = create_page(s1; size = 4).id
    @test ev1 == [Event(PAGE_CREATED, q, 0, 0)]
    @test length(ev2) == 4
    # a batch on one state does not hold back the other's events
    b = collect_events!(s1)
    r = create_page(s2; size = 4).id
    @test length(ev2) == 5
    flush_events!(s1, b)
    mmsb_stop(s1); mmsb_stop(s2)
end

@testset "events: route_delta! and batches from a callback are queued too" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    register_passthrough_recompute!(st, c, a)
    seen = Event[]
    for T in (DELTA_APPLIED, PAGE_CHANGED, PAGE_INVALIDATED)
        subscribe!(ev -> push!(seen, ev), st, T)
    end
    fired = Ref(false)
    subscribe!(st, PAGE_CHANGED) do ev
        if ev.page_id == a && !fired[]
            fired[] = true
            route_delta!(st, create_delta(st, b, [1:1], UInt8[9]))
            batch_route_deltas!(st, [create_delta(st, b, [2:2], UInt8[8])])
        end
    end
    update_page(st, a, UInt8[1, 2, 3, 4])
    @test read_page(st, b) == UInt8[9, 8, 0, 0]
    @test read_page(st, c) == UInt8[1, 2, 3, 4]
    pos_b = findfirst(e -> e.page_id == b, seen)
    last_c = findlast(e -> e.page_id == c, seen)
    @test pos_b !== nothing && last_c !== nothing && last_c < pos_b   # the first cycle's events all come first
    @test [e.epoch for e in seen if e.page_id == b && e.type == DELTA_APPLIED] == [1, 2]
    mmsb_stop(st)
end

@testset "events: subscribing inside callbacks, long callback write chains, errors together" begin
    # (un)subscribing inside a callback does not disturb the delivery in progress
    st = mmsb_start()
    p = create_page(st; size = 4).id
    got = Symbol[]
    sa = Ref{Any}(nothing)
    sa[] = subscribe!(ev -> (push!(got, :A); unsubscribe!(sa[]); subscribe!(_ -> push!(got, :C), st, PAGE_CHANGED)),
                      st, PAGE_CHANGED)
    subscribe!(ev -> push!(got, :B), st, PAGE_CHANGED)
    update_page(st, p, fill(0x01, 4))
    @test got == [:A, :B]                       # C joins from the next delivery on
    update_page(st, p, fill(0x02, 4))
    @test got == [:A, :B, :B, :C]
    mmsb_stop(st)

    # a chain of 10,000 writes, each queued by the callback of the one before:
    # run one after another by the outermost delivery, not recursively
    st = mmsb_start()
    p = create_page(st; size = 8).id
    n = Ref(0)
    subscribe!(st, PAGE_CHANGED) do ev
        n[] += 1
        n[] < 10_000 && update_page(st, p, collect(reinterpret(UInt8, [UInt64(n[])])))
    end
    update_page(st, p, fill(0xff, 8))
    @test n[] == 10_000
    @test reinterpret(UInt64, read_page(st, p))[1] == 9_999
    mmsb_stop(st)

    # a failed recompute is reported even when callbacks throw too
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    register_recompute!((v, q) -> error("recompute boom"), st, b, [a])
    subscribe!(ev -> error("callback boom"), st, PAGE_CHANGED)
    e = @test_logs (:warn, r"callbacks threw") (try update_page(st, a, fill(0x01, 4)) catch ex ex end)
    @test e isa RecomputeError && e.page_id == b
    mmsb_stop(st)
    # with_event_batch: f's own exception wins over the callbacks'
    st = mmsb_start()
    c = create_page(st; size = 4).id
    subscribe!(ev -> error("callback boom"), st, PAGE_CHANGED)
    e = @test_logs (:warn, r"callbacks threw") (try
        with_event_batch(() -> (update_page(st, c, fill(0x02, 4)); error("f failed")), st)
    catch ex
        ex
    end)
    @test e isa ErrorException && e.msg == "f failed"
    mmsb_stop(st)

    # reset! drops events an open batch still holds
    st = mmsb_start()
    bt = collect_events!(st)
    update_page(st, create_page(st; size = 4).id, fill(0x01, 4))
    reset!(st)
    seen = Event[]
    subscribe!(ev -> push!(seen, ev), st, PAGE_CHANGED)
    flush_events!(st, bt)
    @test isempty(seen)
    mmsb_stop(st)
end

@testset "events: reset! or mmsb_stop in a callback ends every subscription at once" begin
    for stop in (false, true)
        st = mmsb_start()
        a = create_page(st; size = 4).id
        b = create_page(st; size = 4).id
        register_passthrough_recompute!(st, b, a)
        got = Any[]
        subscribe!(st, PAGE_CHANGED) do ev
            push!(got, (:first, Int(ev.page_id)))
            ev.page_id == a && (stop ? mmsb_stop(st) : reset!(st))
        end
        subscribe!(ev -> push!(got, (:second, Int(ev.page_id))), st, PAGE_CHANGED)
        update_page(st, a, fill(0x01, 4))
        @test got == [(:first, Int(a))]
        stop || mmsb_stop(st)
    end
end
