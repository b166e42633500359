# Concurrent writes (SPEC §7): `update_page` writes to distinct pages without
# the state's lock (per-shard write lanes, moved into the log by the next
# other call), the locked path for writes that need Julia, `mmsb_stop` under
# concurrent writers, and determinism of the single-thread path. Included
# from runtests.jl after `using MMSB, Test, Random` and log_decode.jl.

tcon_le(v::Integer) = collect(reinterpret(UInt8, [UInt64(v)]))

# A log entry as a comparable tuple (every field).
tcon_tuple(e) = (e.seq, e.kind, e.page_id, e.aux, e.delta_id, e.base_epoch, e.timestamp, e.source,
                 e.encoding, e.mask, e.data)
tcon_entries(st) = map(tcon_tuple, tlog_entries(st))
# A file log's records but for the :cycle brackets around propagation cycles
# (memory logs have none) and for sequence numbers, which those shift.
tcon_changes(ents) = [t[2:end] for t in ents if t[2] !== :cycle]
# The fields that identify a record's place in the log (cheap to keep).
tcon_key(e) = (e.seq, e.kind, e.page_id, e.delta_id, e.base_epoch, e.timestamp)

# Page bytes and epochs rebuilt from log entries alone.
function tcon_rebuild(entries)
    pg = Dict{UInt64,Vector{UInt8}}()
    ep = Dict{UInt64,UInt64}()
    for e in entries
        log_apply!(pg, e)
        e.kind === :page_create && (ep[e.page_id] = 0)
        e.kind === :delta && (ep[e.page_id] += 1)
    end
    return pg, ep
end

# Structural checks of a log (a Vector{TLogEntry}) that must hold at any
# moment: dense sequence numbers; delta ids unique and rising along the log;
# delta timestamps rising; for every page its delta records' base epochs are
# 0, 1, 2, ... in log order. Returns a list of problems (empty: fine).
function tcon_log_problems(es)
    probs = String[]
    [e.seq for e in es] == UInt64.(1:length(es)) || push!(probs, "sequence numbers are not 1:$(length(es))")
    ds = [e for e in es if e.kind === :delta]
    dids = [e.delta_id for e in ds]
    all(!=(0), dids) || push!(probs, "a delta record has delta id 0")
    allunique(dids) || push!(probs, "delta ids are not unique")
    all(i -> dids[i] < dids[i+1], 1:length(dids)-1) || push!(probs, "delta ids do not rise along the log")
    ts = [e.timestamp for e in ds]
    all(i -> ts[i] < ts[i+1], 1:length(ts)-1) || push!(probs, "delta timestamps do not rise along the log")
    nexte = Dict{UInt64,UInt64}()
    for e in ds
        want = get(nexte, e.page_id, UInt64(0))
        if e.base_epoch != want
            push!(probs, "page $(e.page_id): record #$(e.seq) has base epoch $(e.base_epoch), expected $want")
            break
        end
        nexte[e.page_id] = want + 1
    end
    return probs
end

# --- test 1 -----------------------------------------------------------------

# What writer `w` writes to its own page at step `k`: k in bytes 1:8, w in
# 9:16, then a filler that changes every 50 steps (a dense write), otherwise
# only the counter changes (a sparse write).
function tcon_own_bytes(w, k, size)
    b = fill(UInt8((31w + k ÷ 50) % 256), size)
    b[1:8] = tcon_le(k)
    b[9:16] = tcon_le(w)
    return b
end
# What writer `w` writes to the shared page at step `k`: unique per (w, k), so
# every write to the shared page changes it.
function tcon_shared_bytes(w, k, size)
    b = fill(UInt8(w % 256), size)
    b[1:8] = tcon_le(w)
    b[9:16] = tcon_le(k)
    return b
end
tcon_own_ok(b, w) = b == tcon_own_bytes(w, log_u64(b), length(b)) || all(==(0), b)
tcon_shared_ok(b) = (w = log_u64(b); k = log_u64(b, 8);
                     all(==(0), b) || (1 <= w <= 64 && b == tcon_shared_bytes(w, k, length(b))))

# One round of concurrent writers on a fresh in-memory state; `with_reader`
# adds a task reading pages, epochs, stats and the log all along (so lanes
# are drained while writes go on); without it the lanes hold every write
# until the end (several chunks each).
function tcon_writers_round(; T, K, own_size, shared_size, with_reader)
    st = mmsb_start()
    own = [create_page(st; size = own_size).id for _ in 1:T]
    shared = create_page(st; size = shared_size).id
    other = create_page(st; size = 8).id                   # never written
    errors = Any[]
    errlock = ReentrantLock()
    report(e) = lock(() -> push!(errors, (e, catch_backtrace())), errlock)
    done = Threads.Atomic{Int}(0)
    noops = Threads.Atomic{Int}(0)
    started = Threads.Atomic{Bool}(!with_reader)          # the writers start after the reader
    writers = Task[]
    spawn_writers() = append!(writers, [Threads.@spawn begin
        try
            for k in 1:K
                b = tcon_own_bytes(w, k, own_size)
                update_page(st, own[w], b)
                if k % 10 == 0
                    update_page(st, own[w], b)              # changes nothing
                    Threads.atomic_add!(noops, 1)
                end
                update_page(st, shared, tcon_shared_bytes(w, k, shared_size))
                k % 64 == 0 && yield()
            end
        catch e
            report(e)
        finally
            Threads.atomic_add!(done, 1)
        end
    end for w in 1:T])
    reader = Threads.@spawn begin
        n = 0
        problems = String[]
        prev = nothing                                      # the last log seen (keys)
        if with_reader
            try
                last_epoch = zeros(UInt64, T + 1)
                last_records = 0
                deadline = time() + 300                     # never outlive a stuck writer
                started[] = true
                while (n == 0 || done[] < T) && time() < deadline
                    for w in 1:T
                        b = read_page(st, own[w])
                        tcon_own_ok(b, w) || push!(problems, "torn read of own page $w")
                        e = page_epoch(st, own[w])
                        e < last_epoch[w] && push!(problems, "epoch of own page $w went back")
                        last_epoch[w] = e
                    end
                    tcon_shared_ok(read_page(st, shared)) || push!(problems, "torn read of the shared page")
                    e = page_epoch(st, shared)
                    e < last_epoch[T+1] && push!(problems, "epoch of the shared page went back")
                    last_epoch[T+1] = e
                    s = stats(st)
                    s.log_records < last_records && push!(problems, "log_records went back")
                    last_records = s.log_records
                    if n % 8 == 0
                        es = tlog_entries(st)
                        append!(problems, tcon_log_problems(es))
                        keys = map(tcon_key, es)
                        # the log only grows: what was seen before is a prefix of it
                        prev === nothing || (length(prev) <= length(keys) && keys[1:length(prev)] == prev) ||
                            push!(problems, "a log seen earlier is not a prefix of a later one")
                        prev = keys
                        # no write is visible before it is in the log
                        for (i, p) in enumerate([own; shared])
                            nd = count(x -> x.kind === :delta && x.page_id == p, es)
                            ep = page_epoch(st, p)
                            ep >= nd || push!(problems, "page $p: epoch $ep < its $nd logged deltas")
                        end
                    end
                    n += 1
                    n % 4 == 0 ? sleep(0.001) : yield()
                end
            catch e
                report(e)
            finally
                started[] = true
            end
        end
        (n, unique(problems), prev)
    end
    # (waiting by sleeping: a task spinning on yield() can starve the others)
    wait_until = time() + 60
    while !started[] && time() < wait_until
        sleep(0.001)
    end
    spawn_writers()
    foreach(wait, writers)
    nreads, problems, seen = fetch(reader)
    return (st = st, own = own, shared = shared, other = other, errors = errors, problems = problems,
            nreads = nreads, seen = seen, noops = noops[])
end

function tcon_check_round(r; T, K, own_size, shared_size, with_reader)
    st, own, shared = r.st, r.own, r.shared
    @test isempty(r.errors)
    for (e, bt) in r.errors
        showerror(stdout, e, bt); println()
    end
    @test isempty(r.problems)
    isempty(r.problems) || foreach(println, r.problems)
    with_reader && @test r.nreads > 0
    @test r.noops == T * (K ÷ 10)
    # no write lost: every changing write bumped its page's epoch once
    @test [page_epoch(st, p) for p in own] == fill(UInt64(K), T)
    @test page_epoch(st, shared) == T * K
    @test page_epoch(st, r.other) == 0
    # the bytes are each owner's last write
    @test [read_page(st, own[w]) for w in 1:T] == [tcon_own_bytes(w, K, own_size) for w in 1:T]
    last = read_page(st, shared)
    @test any(w -> last == tcon_shared_bytes(w, K, shared_size), 1:T)
    # the log
    es = tlog_entries(st)
    @test isempty(tcon_log_problems(es))
    foreach(println, tcon_log_problems(es))
    r.seen === nothing || @test map(tcon_key, es)[1:length(r.seen)] == r.seen
    deltas = filter(e -> e.kind === :delta, es)
    @test length(deltas) == T * K + T * K                   # own + shared, no-ops not logged
    @test all(e -> e.source === :api, deltas)
    @test all(e -> e.encoding in (:dense, :sparse), deltas)
    @test any(e -> e.encoding === :dense, deltas) && any(e -> e.encoding === :sparse, deltas)
    s = stats(st)
    @test s.log_records == length(es)
    @test s.deltas_applied == length(deltas)
    @test s.pages == T + 2
    # replaying the log in order: each owner's page took the values 1, 2, ..., K;
    # the shared page took every (w, k) once, each writer's k in order
    pg = Dict{UInt64,Vector{UInt8}}()
    ownvals = Dict(p => UInt64[] for p in own)
    sharedk = [UInt64[] for _ in 1:T]
    for e in es
        log_apply!(pg, e)
        e.kind === :delta || continue
        if e.page_id == shared
            push!(sharedk[log_u64(pg[shared])], log_u64(pg[shared], 8))
        else
            push!(ownvals[e.page_id], log_u64(pg[e.page_id]))
        end
    end
    @test all(p -> ownvals[p] == UInt64.(1:K), own)
    @test all(w -> sharedk[w] == UInt64.(1:K), 1:T)
    # a state rebuilt from the log alone equals the live one
    bytes, epochs = tcon_rebuild(es)
    @test sort!(collect(keys(bytes))) == [p.id for p in pages(st)]
    @test all(p -> bytes[p.id] == read_page(st, p.id) && epochs[p.id] == page_epoch(st, p.id), pages(st))
    snap = canonical_snapshot(st)
    fresh = replay_to_epoch(st, typemax(UInt64))            # a new state, built by replaying the log
    @test canonical_snapshot(fresh) == snap
    @test tcon_entries(fresh) == tcon_entries(st)
    mmsb_stop(fresh)
    replay!(st; upto = length(es))                          # in place, from record 1
    @test canonical_snapshot(st) == snap
    # and the log still takes writes after the replay (lock-free ones too)
    for w in 1:T
        update_page(st, own[w], tcon_own_bytes(w, K + 1, own_size))
    end
    @test [page_epoch(st, p) for p in own] == fill(UInt64(K + 1), T)
    es2 = tlog_entries(st)
    @test length(es2) == length(es) + T
    @test isempty(tcon_log_problems(es2))
    @test map(tcon_key, es2[1:length(es)]) == map(tcon_key, es)
    mmsb_stop(st)
end

@testset "concurrency: writers to own pages and a shared page, with a reader (threads: $(Threads.nthreads()))" begin
    T = Threads.nthreads()
    for (K, own_size, shared_size) in ((3000, 96, 64), (2000, 40, 1024))
        kw = (T = T, K = K, own_size = own_size, shared_size = shared_size, with_reader = true)
        tcon_check_round(tcon_writers_round(; kw...); kw...)
    end
end

@testset "concurrency: writers with nothing draining the lanes (several chunks per lane)" begin
    T = Threads.nthreads()
    # ~1.2 KB per dense frame: each lane passes the 1 MiB chunk size a few times
    kw = (T = T, K = 2500, own_size = 1000, shared_size = 256, with_reader = false)
    tcon_check_round(tcon_writers_round(; kw...); kw...)
end

# --- test 2 -----------------------------------------------------------------

# Starts a state, leaves a write in a lane and drops it; returns the count of
# live states while it was alive.
@noinline function tcon_dropped_state()
    s = mmsb_start()
    p = create_page(s; size = 8).id
    update_page(s, p, fill(0x01, 8))
    return live_native_states()
end

@testset "concurrency: mmsb_stop while threads write (lock-free and locked paths)" begin
    for round in 1:12
        GC.gc(); GC.gc()                                    # pending finalizers of earlier states run now
        live0 = live_native_states()
        st = mmsb_start()
        @test live_native_states() == live0 + 1
        T = max(2, Threads.nthreads())
        own = [create_page(st; size = 64).id for _ in 1:T]
        parent = create_page(st; size = 64).id
        child = create_page(st; size = 64).id
        register_passthrough_recompute!(st, child, parent)   # writes to `parent` take the lock
        progress = Threads.Atomic{Int}(0)
        outcomes = Vector{Any}(undef, T + 2)
        tasks = Task[]
        for w in 1:T+2
            push!(tasks, Threads.@spawn begin
                n = 0
                try
                    for i in 1:10_000_000
                        if w <= T
                            update_page(st, own[w], fill(UInt8(i % 256), 64))       # lock-free
                        elseif w == T + 1
                            update_page(st, parent, fill(UInt8(i % 256), 64))       # locked (dependent)
                        else
                            read_page(st, own[1 + i % T])                            # reader
                            i % 16 == 0 && stats(st)
                        end
                        n += 1
                        Threads.atomic_add!(progress, 1)
                        i % 64 == 0 && yield()
                    end
                    outcomes[w] = n
                catch e
                    outcomes[w] = e
                end
            end)
        end
        # stop while writes are in progress
        target = 200 + 500 * (round % 4)
        deadline = time() + 60
        while progress[] < target && time() < deadline
            sleep(0.0005)
        end
        @test progress[] >= target
        mmsb_stop(st)
        @test !isopen(st)
        @test live_native_states() == live0                 # closed: the count went back down
        foreach(wait, tasks)
        @test all(o -> o isa Int || o isa StateClosedError, outcomes)
        bad = filter(o -> !(o isa Int || o isa StateClosedError), outcomes)
        isempty(bad) || foreach(e -> (showerror(stdout, e); println()), bad)
        @test count(o -> o isa StateClosedError, outcomes) >= 1
        # every later call is refused the same way
        @test_throws StateClosedError update_page(st, own[1], zeros(UInt8, 64))
        @test_throws StateClosedError update_page(st, parent, zeros(UInt8, 64))
        @test_throws StateClosedError read_page(st, own[1])
        @test_throws StateClosedError tlog_entries(st)
        @test mmsb_stop(st) === nothing
        # the GC frees the handle later, without counting the state twice
        st = nothing
        tasks = nothing
        GC.gc(); GC.gc()
        @test live_native_states() == live0
    end
    # a state that is never stopped is freed by the GC (its lane records with it)
    GC.gc(); GC.gc()
    live0 = live_native_states()
    @test tcon_dropped_state() == live0 + 1
    GC.gc(); GC.gc(); GC.gc()
    @test live_native_states() == live0
end


# --- test 3 -----------------------------------------------------------------

# Runs `f` on another thread while this task holds `lk`; returns the task and
# whether it finished before `lk` was released: waited for up to 60 s when it
# is expected to finish, else given 0.3 s to show that it waits.
function tcon_while_locked(f, lk; expect_done::Bool)
    lock(lk)
    local t
    try
        t = Threads.@spawn f()
        if expect_done
            return t, timedwait(() -> istaskdone(t), 60.0) === :ok
        else
            sleep(0.3)
            return t, istaskdone(t)
        end
    finally
        unlock(lk)
    end
end

@testset "concurrency: a plain write does not take the state's lock; a write whose cycle may need Julia does" begin
    st = mmsb_start()
    free = create_page(st; size = 16).id
    parent = create_page(st; size = 16).id
    child = create_page(st; size = 16).id
    register_passthrough_recompute!(st, child, parent)
    lk = st.lock                                            # internal: the state's Julia lock
    t1, finished1 = tcon_while_locked(() -> update_page(st, free, fill(0x07, 16)), lk; expect_done = true)
    # no closure recompute in the state: the cycle (passthrough) runs natively
    t2, finished2 = tcon_while_locked(() -> update_page(st, parent, fill(0x08, 16)), lk; expect_done = true)
    @test finished1                                         # done while the lock was held by another task
    @test finished2
    wait(t1); wait(t2)
    @test read_page(st, free) == fill(0x07, 16) && page_epoch(st, free) == 1
    @test read_page(st, child) == fill(0x08, 16) == read_page(st, parent)
    # a closure recompute anywhere: a write that starts a cycle waits for the lock
    other = create_page(st; size = 16).id
    register_recompute!((view, page) -> read_page(view, child), st, other, [child])
    t4, finished4 = tcon_while_locked(() -> update_page(st, parent, fill(0x0a, 16)), lk; expect_done = false)
    @test !finished4                                        # waited for the lock
    wait(t4)
    @test read_page(st, other) == fill(0x0a, 16) == read_page(st, child)
    # with a subscriber, a plain write needs Julia (its events) and takes the lock too
    sub = subscribe!(_ -> nothing, st, PAGE_CHANGED)
    t3, finished3 = tcon_while_locked(() -> update_page(st, free, fill(0x09, 16)), lk; expect_done = false)
    @test !finished3
    wait(t3)
    @test read_page(st, free) == fill(0x09, 16)
    unsubscribe!(sub)
    mmsb_stop(st)
end

tcon_val(k, n) = (b = zeros(UInt8, n); b[1:8] = tcon_le(k); b[n] = UInt8(k % 251); b)

@testset "concurrency: locked and lock-free writers together; a subscriber attached mid-way" begin
    for round in 1:3
        st = mmsb_start()
        n = 48
        A = create_page(st; size = n).id                    # has a passthrough dependent: locked path
        B = create_page(st; size = n).id                    # B = copy of A
        C = create_page(st; size = n).id                    # independent: lock-free until a subscriber exists
        register_passthrough_recompute!(st, B, A)
        subscribed = Threads.Atomic{Bool}(false)          # set once subscribe! returned
        unsubscribing = Threads.Atomic{Bool}(false)       # set before unsubscribe! begins
        unsubscribed = Threads.Atomic{Bool}(false)        # set once unsubscribe! returned
        evs = Event[]
        evlock = ReentrantLock()
        rec = ev -> lock(() -> push!(evs, ev), evlock)
        progress = [Threads.Atomic{Int}(0) for _ in 1:2]
        inwindow = [Threads.Atomic{Int}(0) for _ in 1:2]
        # each writer writes k = 1, 2, ... and notes for each write whether it
        # began after subscribe! returned and ended before unsubscribe! began
        # (it must have its events), or began after unsubscribe! returned (it
        # must have none); it goes on until 300 writes were made after that
        function writer(page, slot)
            within = Bool[]
            later = Bool[]
            k = 0
            postun = 0
            while postun < 300 && k < 5_000_000
                k += 1
                s = subscribed[]
                u = unsubscribed[]
                update_page(st, page, tcon_val(k, n))
                w = s && !unsubscribing[]
                push!(within, w)
                push!(later, u)
                w && Threads.atomic_add!(inwindow[slot], 1)
                u && (postun += 1)
                progress[slot][] = k
                k % 32 == 0 && yield()
            end
            return (k, within, later)
        end
        ta = Threads.@spawn writer(A, 1)
        tc = Threads.@spawn writer(C, 2)
        deadline = time() + 60
        while (progress[1][] < 500 || progress[2][] < 500) && time() < deadline
            sleep(0.001)
        end
        subs = [subscribe!(rec, st, t) for t in (DELTA_APPLIED, PAGE_CHANGED)]
        subscribed[] = true
        while (inwindow[1][] < 300 * round || inwindow[2][] < 300 * round) && time() < deadline + 60
            sleep(0.001)
        end
        unsubscribing[] = true
        foreach(unsubscribe!, subs)
        unsubscribed[] = true
        ka, aftera, afterun_a = fetch(ta)
        kc, afterc, afterun_c = fetch(tc)
        # the dependent always equals its parent
        @test read_page(st, A) == tcon_val(ka, n) == read_page(st, B)
        @test page_epoch(st, A) == ka && page_epoch(st, B) == ka
        @test read_page(st, C) == tcon_val(kc, n) && page_epoch(st, C) == kc
        @test count(aftera) >= 300 * round && count(afterc) >= 300 * round
        # every write made while subscribed has its events (C's lock-free ones too), once each
        got = Dict{Tuple{EventType,UInt64},Vector{UInt64}}()
        for ev in evs
            push!(get!(got, (ev.type, ev.page_id), UInt64[]), ev.epoch)
        end
        for t in (DELTA_APPLIED, PAGE_CHANGED)
            ea, eb, ec = (get(got, (t, p), UInt64[]) for p in (A, B, C))
            @test issubset(findall(aftera), ea)
            @test issubset(findall(aftera), eb)              # propagated to B, at the same epochs
            @test issubset(findall(afterc), ec)
            @test allunique(ea) && allunique(eb) && allunique(ec)
            @test issorted(ea) && issorted(eb) && issorted(ec)
            # nothing for writes made after unsubscribing
            @test isempty(intersect(findall(afterun_a), ea)) && isempty(intersect(findall(afterun_c), ec))
        end
        # events name the delta ids that the log gave those writes
        es = tlog_entries(st)
        @test isempty(tcon_log_problems(es))
        logged = Dict((e.page_id, e.base_epoch + 1) => e.delta_id for e in es if e.kind === :delta)
        @test all(ev -> ev.delta_id == get(logged, (ev.page_id, ev.epoch), UInt64(0)), evs)
        @test count(e -> e.kind === :delta && e.page_id == B && e.source === :propagation, es) == ka
        # the log rebuilds the state
        snap = canonical_snapshot(st)
        fresh = replay_to_epoch(st, typemax(UInt64))
        @test canonical_snapshot(fresh) == snap
        mmsb_stop(fresh)
        mmsb_stop(st)
    end
end

# --- test 4 -----------------------------------------------------------------

# A fixed sequence of calls on one task: creates, writes (some changing
# nothing, some dense, most sparse), passthrough dependents and control edges
# (whose parents' writes take the locked path), deletes. No reads: a local
# mirror of the written pages is kept, so lane records pile up between the
# exclusive calls; `drain_often` adds a read after every step (moving them
# into the log at once) without changing the calls otherwise.
function tcon_sequence!(st; drain_often::Bool = false, seed = 20261127, steps = 700)
    rng = MersenneTwister(seed)
    mirror = Dict{UInt64,Vector{UInt8}}()
    ids = UInt64[]
    derived = Set{UInt64}()                                 # never written directly
    for step in 1:steps
        r = rand(rng)
        writable = setdiff(ids, derived)
        if length(ids) < 3 || isempty(writable) || r < 0.05
            sz = rand(rng, (1, 8, 64, 300, 2048))
            p = create_page(st; size = sz).id
            push!(ids, p)
            mirror[p] = zeros(UInt8, sz)
        elseif r < 0.065 && length(ids) > 4
            p = rand(rng, ids)
            delete_page!(st, p; force = true)
            filter!(!=(p), ids)
            delete!(mirror, p)
            delete!(derived, p)
        elseif r < 0.08
            sz = Dict(i => length(mirror[i]) for i in ids)
            pairs = [(i, j) for i in ids for j in ids if i < j && sz[i] == sz[j] && !(j in derived)]
            if !isempty(pairs)
                i, j = rand(rng, pairs)
                register_passthrough_recompute!(st, j, i)
                push!(derived, j)
            end
        elseif r < 0.09
            i, j = rand(rng, ids), rand(rng, ids)
            i < j && add_dependency!(st, i, j, :control)
        else
            p = rand(rng, writable)
            b = copy(mirror[p])
            if rand(rng) < 0.9
                if rand(rng) < 0.2
                    rand!(rng, b)
                else
                    for _ in 1:rand(rng, 1:4)
                        b[rand(rng, 1:length(b))] = rand(rng, UInt8)
                    end
                end
            end
            update_page(st, p, b)
            mirror[p] = b
        end
        drain_often && page_epoch(st, ids[1 + step % length(ids)])
    end
    return st
end

# Dirties a state: pages, a dependent, a subscriber, concurrent writes whose
# records are still in the lanes when this returns.
function tcon_dirty!(st)
    a = create_page(st; size = 64).id
    b = create_page(st; size = 64).id
    register_passthrough_recompute!(st, b, a)
    sub = subscribe!(_ -> nothing, st, PAGE_CHANGED)
    update_page(st, a, fill(0x03, 64))
    unsubscribe!(sub)
    own = [create_page(st; size = 128).id for _ in 1:max(2, Threads.nthreads())]
    ts = [Threads.@spawn begin
        for k in 1:500
            update_page(st, own[w], fill(UInt8(k % 256), 128))
        end
    end for w in 1:length(own)]
    foreach(wait, ts)
    return st
end

@testset "concurrency: the single-thread path is deterministic (fresh, reset!, drained, file log)" begin
    for seed in (20261127, 77)
        fresh = tcon_sequence!(mmsb_start(); seed = seed)
        want_snap = canonical_snapshot(fresh)
        want_log = tcon_entries(fresh)
        es = tlog_entries(fresh)
        @test count(e -> e.kind === :delta, es) > 300
        @test any(e -> e.source === :propagation, es)         # the locked path was taken too
        @test isempty(tcon_log_problems(es))

        # a reset! state, reset while writes were still in its lanes
        used = tcon_dirty!(mmsb_start())
        reset!(used)
        tcon_sequence!(used; seed = seed)
        @test canonical_snapshot(used) == want_snap
        @test tcon_entries(used) == want_log
        # and reset! again (the lanes empty this time), the same
        reset!(used)
        tcon_sequence!(used; seed = seed)
        @test canonical_snapshot(used) == want_snap
        @test tcon_entries(used) == want_log
        mmsb_stop(used)

        # the same calls with a read after each step: the lanes drained every time
        drained = tcon_sequence!(mmsb_start(); seed = seed, drain_often = true)
        @test canonical_snapshot(drained) == want_snap
        @test tcon_entries(drained) == want_log
        mmsb_stop(drained)

        # a file log (:buffered): every write takes the exclusive native path;
        # its log must read the same as the one that went through the lanes
        # (but for the brackets a file log puts around propagation cycles)
        dir = mktempdir()
        path = joinpath(dir, "det.tlog")
        filed = tcon_sequence!(mmsb_start(MMSBConfig(tlog_path = path, truncate = true)); seed = seed)
        @test canonical_snapshot(filed) == want_snap
        @test tcon_changes(tcon_entries(filed)) == tcon_changes(want_log)
        @test any(t -> t[2] === :cycle, tcon_entries(filed))
        mmsb_stop(filed)
        reopened = mmsb_start(MMSBConfig(tlog_path = path))
        @test canonical_snapshot(reopened) == want_snap
        mmsb_stop(reopened)

        # the log alone rebuilds it
        bytes, epochs = tcon_rebuild(es)
        @test bytes == want_snap.pages
        @test all(id -> want_snap.meta[id][2] == epochs[id], collect(keys(want_snap.meta)))
        rebuilt = replay_to_epoch(fresh, typemax(UInt64))
        @test canonical_snapshot(rebuilt) == want_snap
        mmsb_stop(rebuilt)
        mmsb_stop(fresh)
    end
end

# replay! cuts the log; lock-free writes after it go to lanes that are later
# adopted into the log; appends after that must not overwrite them.
@testset "concurrency: lock-free writes after replay! (the log cut, then lanes adopted)" for nw in (150, 300)
    st = mmsb_start()
    p = create_page(st; size = 4096).id
    q = create_page(st; size = 64).id
    for k in 1:5
        update_page(st, p, fill(UInt8(k), 4096))
    end
    cut = length(tlog_entries(st))
    update_page(st, p, fill(0x06, 4096))
    replay!(st; upto = cut)                                 # the log is cut before the last write
    @test read_page(st, p) == fill(0x05, 4096)
    # ~4.7 KB dense frames: 150 of them fill more than half of a 1 MiB lane
    # chunk (adopted as it is), 300 more than one chunk
    for k in 1:nw
        update_page(st, p, rand(MersenneTwister(k), UInt8, 4096))
    end
    @test page_epoch(st, p) == 5 + nw                      # drains the lane
    create_page(st; size = 32)                              # appended after the adopted frames
    update_page(st, q, fill(0x01, 64))
    page_epoch(st, q)
    es = try
        tlog_entries(st)
    catch e
        e
    end
    @test es isa Vector{TLogEntry}
    es isa Vector{TLogEntry} || (println("tlog_entries threw: ", sprint(showerror, es)); es = TLogEntry[])
    @test isempty(tcon_log_problems(es))
    foreach(println, tcon_log_problems(es))
    @test [e.kind for e in es[cut+1:end]] == [fill(:delta, nw); :page_create; :delta]
    @test [e.page_id for e in es[cut+1:end]] == [fill(p, nw); 3; q]
    if length(es) == cut + nw + 2
        bytes, epochs = tcon_rebuild(es)
        @test bytes[p] == rand(MersenneTwister(nw), UInt8, 4096) == read_page(st, p)
        @test epochs[p] == 5 + nw
    end
    snap = canonical_snapshot(st)
    fresh = try
        replay_to_epoch(st, typemax(UInt64))
    catch e
        e
    end
    @test fresh isa MMSBState && canonical_snapshot(fresh) == snap
    fresh isa MMSBState && mmsb_stop(fresh)
    mmsb_stop(st)
end

# A snapshot takes several native calls; writers on other threads must not
# land between them (bytes and epoch of one page from two different states).
@testset "concurrency: canonical_snapshot is not torn by lock-free writers" begin
    st = mmsb_start()
    p = create_page(st; size = 64).id
    done = Threads.Atomic{Bool}(false)
    w = Threads.@spawn begin
        b = zeros(UInt8, 64)
        k = UInt64(0)
        while !done[]
            k += 1
            b[1:8] .= reinterpret(UInt8, [k])
            update_page(st, p, b)       # the k-th write brings the page to epoch k
            k % 64 == 0 && yield()
        end
        k
    end
    # snapshots only count while the writer writes: wait for its first write
    t0 = time()
    while page_epoch(st, p) == 0 && time() - t0 < 60
        yield()
    end
    torn = 0
    for _ in 1:3000
        s = canonical_snapshot(st)
        reinterpret(UInt64, s.pages[p][1:8])[1] == s.meta[p][2] || (torn += 1)
        yield()
    end
    done[] = true
    @test fetch(w) > 0
    @test torn == 0
    mmsb_stop(st)
end

# mmsb_stop(st; checkpoint_path): a write acknowledged on another thread is in
# the checkpoint; a later one raises StateClosedError.
@testset "concurrency: mmsb_stop with a checkpoint keeps every acknowledged write" begin
    missing_writes = 0
    for trial in 1:30
        st = mmsb_start()
        p = create_page(st; size = 64).id
        last_ok = Threads.Atomic{Int}(0)
        go = Threads.Atomic{Bool}(false)
        w = Threads.@spawn begin
            b = zeros(UInt8, 64)
            k = 0
            while true
                k += 1
                b[1:8] .= reinterpret(UInt8, [UInt64(k)])
                try
                    update_page(st, p, b)
                    last_ok[] = k
                catch e
                    e isa StateClosedError || rethrow()
                    break
                end
                k == 500 && (go[] = true)
                k % 64 == 0 && yield()
            end
        end
        while !go[]
            yield()
        end
        path = tempname()
        mmsb_stop(st; checkpoint_path = path)
        wait(w)
        st2 = mmsb_start()
        load_checkpoint!(st2, path)
        k = Int(reinterpret(UInt64, read_page(st2, p)[1:8])[1])
        k == last_ok[] || (missing_writes += 1)
        mmsb_stop(st2)
        rm(path)
    end
    @test missing_writes == 0
end
