# Batches and parallelism (SPEC §7, §2 determinism, §10 pool): batch order,
# one propagation cycle, validation, sequential == parallel == pooled ==
# reset, and a multi-threaded stress test. Included from runtests.jl after
# `using MMSB, Test, Random`.

const TBAT_TYPES = (PAGE_CREATED, PAGE_DELETED, PAGE_INVALIDATED, DELTA_APPLIED, PAGE_CHANGED)

tbat_entries(st) = [(e.seq, e.kind, e.page_id, e.aux, e.delta_id, e.base_epoch, e.timestamp, e.source,
                     e.encoding, e.mask, e.data) for e in tlog_entries(st)]
tbat_u64(b::Vector{UInt8}) = reinterpret(UInt64, b)[1]
tbat_bytes(v::Integer) = collect(reinterpret(UInt8, [UInt64(v)]))

@testset "batch: grouped by page, then base epoch, then delta id (parallel=$par)" for par in (false, true)
    st = mmsb_start()
    evs = Event[]
    subscribe!(ev -> push!(evs, ev), st, DELTA_APPLIED)
    p1, p2, p3 = [create_page(st; size = 8).id for _ in 1:3]
    update_page(st, p2, fill(0x01, 8))                      # p2 at epoch 1
    empty!(evs)
    nlog = length(tlog_entries(st))
    dB = create_delta(st, p2, [1:2], UInt8[0xb1, 0xb2])     # base 1
    dA = create_delta(st, p3, [1:2], UInt8[0xa1, 0xa2])
    dD = create_delta(st, p2, [1:1], UInt8[0xd1])           # base 1, after dB by id
    dC = create_delta(st, p1, [8:8], UInt8[0xc8])
    e0 = create_delta(st, p2, [2:3], UInt8[0xe2, 0xe3])     # the largest id ...
    dE = Delta(e0.id, e0.page_id, UInt64(0), e0.mask, e0.payload, e0.source, e0.timestamp, e0.page_size)  # ... base 0
    dN = create_delta(st, p1, [1:1], UInt8[0x00])           # changes nothing
    @test batch_route_deltas!(st, [dA, dE, dN, dD, dC, dB]; parallel = par) == 5
    order = [dC.id, dE.id, dB.id, dD.id, dA.id]
    @test [e.delta_id for e in tlog_entries(st)[nlog+1:end] if e.kind === :delta] == order
    @test [ev.delta_id for ev in evs] == order
    @test read_page(st, p2) == UInt8[0xd1, 0xb2, 0xe3, 1, 1, 1, 1, 1]   # dE, then dB, then dD
    @test read_page(st, p1) == UInt8[0, 0, 0, 0, 0, 0, 0, 0xc8]
    @test read_page(st, p3) == UInt8[0xa1, 0xa2, 0, 0, 0, 0, 0, 0]
    @test page_epoch(st, p2) == 4 && page_epoch(st, p1) == 1 && page_epoch(st, p3) == 1
    # the log records each delta's own base epoch
    ents = filter(e -> e.kind === :delta, tlog_entries(st)[nlog+1:end])
    @test [e.base_epoch for e in ents] == [0, 0, 1, 1, 0]
    mmsb_stop(st)
end

@testset "batch: one propagation cycle, validation" begin
    st = mmsb_start()
    a, b, c, d = [create_page(st; size = 8).id for _ in 1:4]
    calls = Ref(0)
    register_recompute!(st, c, [a, b]) do v, p
        calls[] += 1
        read_page(v, a) .+ read_page(v, b)
    end
    register_passthrough_recompute!(st, d, c)
    cyc = stats(st).propagation_cycles
    @test batch_route_deltas!(st, [create_delta(st, a, [1:8], fill(0x01, 8)),
                                   create_delta(st, b, [1:8], fill(0x02, 8)),
                                   create_delta(st, a, [1:1], UInt8[0x05])]) == 3
    @test calls[] == 1                                      # once, on complete inputs
    @test stats(st).propagation_cycles == cyc + 1
    @test read_page(st, c) == UInt8[7, 3, 3, 3, 3, 3, 3, 3]
    @test read_page(st, d) == read_page(st, c)
    # propagate = false: applied only; a later propagate_change! catches up
    @test batch_route_deltas!(st, [create_delta(st, a, [2:2], UInt8[0x09])]; propagate = false) == 1
    @test calls[] == 1 && read_page(st, c)[2] == 0x03
    propagate_change!(st, [a])
    @test calls[] == 2 && read_page(st, d)[2] == 0x0b
    # an empty batch is fine
    @test batch_route_deltas!(st, Delta[]) == 0

    # all validated before any is applied: on an error nothing changes
    x = create_page(st; size = 8).id
    dx = create_delta(st, x, [1:1], UInt8[0x01])
    delete_page!(st, x)
    good = create_delta(st, a, [1:8], fill(0x44, 8))
    snap = canonical_snapshot(st)                           # (create_delta takes an id)
    ents = tbat_entries(st)
    @test_throws PageNotFoundError batch_route_deltas!(st, [good, dx])
    @test canonical_snapshot(st) == snap && tbat_entries(st) == ents
    forged = Delta(UInt64(10^6), a, UInt64(0), [1:1], UInt8[1], :api, UInt64(0), 8)   # id never issued
    @test_throws ArgumentError batch_route_deltas!(st, [good, forged])
    @test canonical_snapshot(st) == snap && tbat_entries(st) == ents
    @test batch_route_deltas!(st, [good]) == 1              # the good delta is still fine
    @test read_page(st, a) == fill(0x44, 8)
    mmsb_stop(st)

    # strict epochs: a stale delta in a batch refuses the whole batch
    st = mmsb_start(MMSBConfig(strict_epochs = true))
    p = create_page(st; size = 4).id
    q = create_page(st; size = 4).id
    old = create_delta(st, p, [1:1], UInt8[0x01])
    update_page(st, p, fill(0x02, 4))
    snap = canonical_snapshot(st)
    @test_throws StaleDeltaError batch_route_deltas!(st, [create_delta(st, q, [1:1], UInt8[0x03]), old])
    @test read_page(st, q) == zeros(UInt8, 4)
    @test canonical_snapshot(st).pages == snap.pages
    mmsb_stop(st)
end

# A deterministic workload of batches on a graph with closures and passthroughs.
# `parallel`: nothing (use the state's default) or a Bool keyword.
function tbat_run!(st, seed; parallel = nothing)
    evs = Event[]
    for t in TBAT_TYPES
        subscribe!(ev -> push!(evs, ev), st, t)
    end
    rng = MersenneTwister(seed)
    n = 12
    sizes = [rand(rng, (8, 64, 300)) for _ in 1:n]
    ids = [create_page(st; size = sizes[j]).id for j in 1:n]
    for j in 4:n
        r = rand(rng)
        same = [i for i in 1:j-1 if sizes[i] == sizes[j]]
        if r < 0.4
            ps = ids[unique(rand(rng, 1:j-1, 2))]
            salt = rand(rng, UInt8)
            z = sizes[j]
            register_recompute!(st, ids[j], ps) do v, p
                out = fill(salt, z)
                for q in ps
                    b = read_page(v, q)
                    for k in 1:z
                        out[k] = out[k] * 0x03 + b[mod1(k, length(b))]
                    end
                end
                out
            end
        elseif r < 0.6 && !isempty(same)
            register_passthrough_recompute!(st, ids[j], ids[rand(rng, same)])
        end
    end
    for round in 1:8
        ds = Delta[]
        for _ in 1:rand(rng, 1:20)
            j = rand(rng, 1:n)
            z = sizes[j]
            if rand(rng) < 0.3
                push!(ds, create_delta(st, ids[j], BitVector(rand(rng, Bool, z)), rand(rng, UInt8, z)))
            elseif rand(rng) < 0.1
                cur = read_page(st, ids[j])                  # a delta that changes nothing
                push!(ds, create_delta(st, ids[j], [1:z], cur))
            else
                a = rand(rng, 1:z); b = min(z, a + rand(rng, 0:40))
                push!(ds, create_delta(st, ids[j], [a:b], rand(rng, UInt8, b - a + 1)))
            end
        end
        shuffle!(rng, ds)
        if parallel === nothing
            batch_route_deltas!(st, ds)
        else
            batch_route_deltas!(st, ds; parallel = parallel)
        end
        j = rand(rng, 1:3)
        update_page(st, ids[j], rand(rng, UInt8, sizes[j]))
    end
    return (canonical_snapshot(st), tbat_entries(st), evs)
end

# Leave a state in a used, messy condition.
function tbat_dirty!(st, hits)
    a = create_page(st; size = 16).id
    b = create_page(st; size = 16).id
    register_recompute!((v, p) -> read_page(v, a), st, b, [a])
    subscribe!(ev -> (hits[] += 1), st, PAGE_CHANGED)
    update_page(st, a, fill(0x0f, 16))
    batch_route_deltas!(st, [create_delta(st, a, [1:3], UInt8[1, 2, 3])]; parallel = true)
    create_delta(st, b, [1:1], UInt8[9])                     # stamped, never routed
    return st
end

@testset "batch: sequential == parallel == pooled == reset (determinism)" begin
    mismatches = String[]
    for seed in 1:12
        ref = mmsb_start()
        want = tbat_run!(ref, seed; parallel = false)
        mmsb_stop(ref)
        @test length(want[2]) > 30 && length(want[3]) > 30
        variants = Pair{String,Any}[]
        s = mmsb_start()
        push!(variants, "parallel keyword" => tbat_run!(s, seed; parallel = true)); mmsb_stop(s)
        s = mmsb_start(MMSBConfig(parallel = true, threads = 3))
        push!(variants, "parallel config" => tbat_run!(s, seed)); mmsb_stop(s)
        hits = Ref(0)
        d = tbat_dirty!(get_pooled_state!(), hits)
        h0 = hits[]
        return_to_pool!(d)
        s = get_pooled_state!()
        s === d || push!(mismatches, "seed $seed: the pool did not hand back the returned state")
        push!(variants, "pooled" => tbat_run!(s, seed; parallel = false))
        hits[] == h0 || push!(mismatches, "seed $seed: an old subscription of the pooled state fired")
        return_to_pool!(s)
        s = tbat_dirty!(mmsb_start(), hits)
        reset!(s)
        push!(variants, "reset, parallel" => tbat_run!(s, seed; parallel = true)); mmsb_stop(s)
        for (name, got) in variants
            got[1] == want[1] || push!(mismatches, "seed $seed, $name: canonical_snapshot differs")
            got[2] == want[2] || push!(mismatches, "seed $seed, $name: tlog_entries differ")
            got[3] == want[3] || push!(mismatches, "seed $seed, $name: events differ")
        end
    end
    @test isempty(mismatches)
    isempty(mismatches) || foreach(println, mismatches)
end

@testset "batch: concurrent writers and readers (threads: $(Threads.nthreads()))" begin
    dir = mktempdir()
    path = joinpath(dir, "stress.tlog")
    # :fsync: concurrent writers go through group commit
    st = mmsb_start(MMSBConfig(tlog_path = path, durability = :fsync, truncate = true))
    W, R, K = 4, 3, 150
    counters = [create_page(st; size = 8).id for _ in 1:W]
    uni = create_page(st; size = 4096).id
    copy1 = create_page(st; size = 8).id
    register_passthrough_recompute!(st, copy1, counters[1])
    total = create_page(st; size = 8).id
    fsum = (v, p) -> tbat_bytes(sum(c -> tbat_u64(read_page(v, c)), counters))
    register_recompute!(fsum, st, total, counters)
    torn = Threads.Atomic{Int}(0)
    backwards = Threads.Atomic{Int}(0)
    stop = Threads.Atomic{Bool}(false)
    errors = Any[]
    errlock = ReentrantLock()
    guard(f) = () -> try
        f()
    catch e
        lock(() -> push!(errors, e), errlock)
        0
    end
    writers = [Threads.@spawn(guard(() -> begin
        for k in 1:K
            update_page(st, counters[w], tbat_bytes(k))
            k % 4 == 0 && yield()
        end
        K
    end)()) for w in 1:W]
    uniw = Threads.@spawn(guard(() -> begin
        for v in 1:K
            update_page(st, uni, fill(UInt8(v % 255 + 1), 4096))
            yield()
        end
        K
    end)())
    readers = [Threads.@spawn(guard(() -> begin
        buf = Vector{UInt8}(undef, 4096)
        last = zeros(UInt64, W)
        n = 0
        deadline = time() + 60                  # never outlive a stuck writer
        while !stop[] && time() < deadline
            read_page!(buf, st, uni)
            all(==(buf[1]), buf) || Threads.atomic_add!(torn, 1)
            for w in 1:W
                v = tbat_u64(read_page(st, counters[w]))
                v < last[w] && Threads.atomic_add!(backwards, 1)
                last[w] = v
            end
            n += 1
            # sleep now and then: a task that only yields can starve the writers
            n % 8 == 0 ? sleep(0.001) : yield()
        end
        n
    end)()) for _ in 1:R]
    foreach(wait, writers)
    wait(uniw)
    stop[] = true
    nreads = sum(fetch, readers)
    @test isempty(errors)
    isempty(errors) || foreach(e -> showerror(stdout, e), errors)
    @test nreads > 0
    @test torn[] == 0                                       # no torn page read
    @test backwards[] == 0
    # no lost update
    @test [tbat_u64(read_page(st, c)) for c in counters] == fill(UInt64(K), W)
    @test [page_epoch(st, c) for c in counters] == fill(UInt64(K), W)
    @test read_page(st, uni) == fill(UInt8(K % 255 + 1), 4096) && page_epoch(st, uni) == K
    @test read_page(st, copy1) == tbat_bytes(K)
    @test tbat_u64(read_page(st, total)) == W * K
    # unique delta ids, and exactly K logged deltas per counter
    es = tlog_entries(st)
    dids = [e.delta_id for e in es if e.kind === :delta]
    @test allunique(dids)
    @test [e.seq for e in es] == UInt64.(1:length(es))
    for c in counters
        @test count(e -> e.kind === :delta && e.page_id == c, es) == K
    end
    snap = canonical_snapshot(st)
    ents = tbat_entries(st)
    # a rebuild from the log alone equals the live state
    replay!(st; upto = length(es))
    @test canonical_snapshot(st) == snap
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))
    @test tbat_entries(st) == ents
    register_recompute!(fsum, st, total, counters)          # closures are registered again
    @test canonical_snapshot(st) == snap
    mmsb_stop(st)
end

@testset "batch: a write from another task waits for a running recompute" begin
    # SPEC §7: concurrent writers serialize. A write from another task (or
    # thread) while a recompute runs is not a write *from* the recompute.
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    x = create_page(st; size = 4).id
    entered = Channel{Nothing}(1)
    register_recompute!(st, b, [a]) do v, p
        isready(entered) || put!(entered, nothing)
        for _ in 1:20
            yield()                                     # e.g. logging or I/O in a recompute
        end
        read_page(v, a)
    end
    t = @async update_page(st, a, fill(0x01, 4))
    take!(entered)
    errs = Any[]
    for (k, f) in enumerate((() -> update_page(st, x, fill(0x02, 4)),
                             () -> route_delta!(st, create_delta(st, x, [1:1], UInt8[0x03])),
                             () -> batch_route_deltas!(st, [create_delta(st, x, [2:2], UInt8[0x04])])))
        try
            f()
        catch e
            push!(errs, e)
        end
    end
    wait(t)
    @test isempty(errs)
    @test read_page(st, x) == UInt8[0x03, 0x04, 0x02, 0x02]
    @test read_page(st, b) == fill(0x01, 4)
    mmsb_stop(st)
end

@testset "batch: the pool under concurrent use" begin
    # every task gets a state nobody else holds, indistinguishable from a fresh one
    want = let s = mmsb_start()
        r = tbat_run!(s, 99; parallel = false)
        mmsb_stop(s)
        r
    end
    inuse = Set{UInt}()
    l = ReentrantLock()
    clashes = Threads.Atomic{Int}(0)
    diffs = Threads.Atomic{Int}(0)
    tasks = [Threads.@spawn begin
        for round in 1:3
            s = get_pooled_state!()
            lock(l) do
                objectid(s) in inuse && Threads.atomic_add!(clashes, 1)
                push!(inuse, objectid(s))
            end
            got = tbat_run!(s, 99; parallel = isodd(round + k))
            got == want || Threads.atomic_add!(diffs, 1)
            lock(() -> delete!(inuse, objectid(s)), l)
            yield()
            return_to_pool!(s)
        end
    end for k in 1:4]
    foreach(wait, tasks)
    @test clashes[] == 0
    @test diffs[] == 0
end
