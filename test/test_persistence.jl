# Persistence (SPEC §8): the log records every change, checkpoint and file-log
# round trips, replay!, replay_to_epoch, durability modes, truncate, bad
# checkpoints, corruption at every byte offset, and a SIGKILL crash test.
# Included from runtests.jl after `using MMSB, Test, Random` and log_decode.jl.

tper_exc(r) = r isa Test.Pass ? r.value : nothing

# Recovery of a torn tail logs a warning; hundreds of them would drown the output.
tper_quiet(f) = Base.CoreLogging.with_logger(f, Base.CoreLogging.NullLogger())

# A log entry as a comparable tuple (with or without its sequence number).
tper_tuple(e) = (e.seq, e.kind, e.page_id, e.aux, e.delta_id, e.base_epoch, e.timestamp, e.source,
                 e.encoding, e.mask, e.data)
tper_entries(st) = map(tper_tuple, tlog_entries(st))
tper_entries_noseq(st) = [t[2:end] for t in tper_entries(st)]
# A file log also holds the :cycle records bracketing each propagation cycle
# (memory logs do not): the records but for those and for sequence numbers.
tper_nocycle(ents) = [t[2:end] for t in ents if t[2] !== :cycle]
# Brackets well formed: begin names a record at or before it, end names its begin.
function tper_brackets_ok(ents)
    open = 0
    for t in ents
        t[2] === :cycle || continue
        if t[9] === :begin
            (open == 0 && 1 <= t[4] <= t[1]) || return false
            open = t[1]
        else
            t[4] == open || return false
            open = 0
        end
    end
    return open == 0
end
tper_lastseq(st) = (es = tlog_entries(st); isempty(es) ? 0 : Int(es[end].seq))

# Rebuild page bytes from log entries alone (decoding the documented encodings).
function tper_rebuild(entries)
    pg = Dict{UInt64,Vector{UInt8}}()
    for e in entries
        log_apply!(pg, e)
    end
    return pg
end

# One random step of a workload of logged operations (no closures, no delta
# that is stamped but changes nothing). Deterministic given the state and rng.
function tper_step!(st, rng)
    ids = [p.id for p in pages(st)]
    r = rand(rng)
    if length(ids) < 3 || r < 0.10
        create_page(st; size = rand(rng, (1, 3, 8, 16, 40)))
    elseif r < 0.14
        delete_page!(st, rand(rng, ids); force = true)
    elseif r < 0.24
        i, j = rand(rng, ids), rand(rng, ids)
        i == j || add_dependency!(st, min(i, j), max(i, j), rand(rng, (:data, :control)))
    elseif r < 0.28
        meta = canonical_snapshot(st).meta
        declared(p, c) = meta[c][4] === :passthrough && p in compute_signature(st, c).parent_ids
        removable = [(p, c) for (p, c, k) in dependencies(st) if !declared(p, c)]
        isempty(removable) || remove_dependency!(st, rand(rng, removable)...)
    elseif r < 0.34
        sizes = Dict(p.id => p.size for p in pages(st))
        pairs = [(i, j) for i in ids for j in ids if i < j && sizes[i] == sizes[j]]
        isempty(pairs) || ((i, j) = rand(rng, pairs); register_passthrough_recompute!(st, j, i))
    elseif r < 0.70
        p = rand(rng, ids)
        bytes = read_page(st, p)
        if rand(rng) < 0.9
            for _ in 1:rand(rng, 1:length(bytes))
                bytes[rand(rng, 1:length(bytes))] = rand(rng, UInt8)
            end
        end
        update_page(st, p, bytes)
    elseif r < 0.90
        route_delta!(st, tper_changing_delta(st, rand(rng, ids), rng))
    else
        ps = unique(rand(rng, ids, rand(rng, 1:3)))
        batch_route_deltas!(st, [tper_changing_delta(st, p, rng) for p in ps])
    end
    return nothing
end

# A ranged delta that certainly changes the page.
function tper_changing_delta(st, p, rng)
    cur = read_page(st, p)
    n = length(cur)
    a = rand(rng, 1:n)
    b = rand(rng, a:n)
    payload = rand(rng, UInt8, b - a + 1)
    k = rand(rng, 1:length(payload))
    payload[k] = cur[a+k-1] + rand(rng, 0x01:0xff)
    return create_delta(st, p, [a:b], payload)
end

@testset "persistence: the log records every change" begin
    st = mmsb_start()
    a = create_page(st; size = 16).id
    b = create_page(st; size = 16).id
    c = create_page(st; size = 8).id
    add_dependency!(st, a, c, :control)
    add_dependency!(st, a, c)                        # existing edge: nothing logged
    register_passthrough_recompute!(st, b, a)
    @test_throws CycleError add_dependency!(st, c, a)  # failed: nothing logged
    v = collect(UInt8, 1:16)
    update_page(st, a, v)
    update_page(st, a, v)                            # no-op: nothing logged
    dc = create_delta(st, c, [2:3], UInt8[9, 9])
    route_delta!(st, dc)
    remove_dependency!(st, a, c)
    delete_page!(st, c)
    d = create_page(st; size = 4).id
    register_recompute!((vw, p) -> read_page(vw, a)[1:4], st, d, [a])
    all_es = tlog_entries(st)
    @test [e.seq for e in all_es] == UInt64.(1:length(all_es))   # dense sequence numbers
    @test stats(st).log_records == length(all_es)
    # create_delta hands out an id: logged as a :delta_stamp record
    stamps = filter(e -> e.kind === :delta_stamp, all_es)
    @test length(stamps) == 1 && stamps[1].page_id == c && stamps[1].delta_id == dc.id
    es = filter(e -> e.kind !== :delta_stamp, all_es)
    @test [e.kind for e in es] == [:page_create, :page_create, :page_create, :edge_add, :recompute_set,
                                   :delta, :delta, :delta, :edge_remove, :page_delete, :page_create,
                                   :recompute_set]
    @test [e.page_id for e in es] == [a, b, c, a, b, a, b, c, a, c, d, d]
    @test es[1].aux == 16 && es[3].aux == 8 && es[11].aux == 4   # sizes
    @test es[4].aux == c && es[9].aux == c                         # edge children
    @test es[5].aux == 1 && es[5].data == collect(reinterpret(UInt8, [a]))  # passthrough of a
    @test es[12].aux == 2 && es[12].data == collect(reinterpret(UInt8, [a]))
    @test es[6].source === :api && es[7].source === :propagation
    @test es[6].base_epoch == 0 && es[7].base_epoch == 0
    @test es[8].delta_id == dc.id && es[8].base_epoch == dc.epoch
    @test allunique([e.delta_id for e in es if e.kind === :delta])
    @test all(e -> e.encoding in (:dense, :sparse), filter(e -> e.kind === :delta, es))
    # the log alone rebuilds the page bytes
    rebuilt = tper_rebuild(es)
    @test sort(collect(keys(rebuilt))) == [p.id for p in pages(st)]
    @test all(p -> rebuilt[p.id] == read_page(st, p.id), pages(st))
    mmsb_stop(st)
end

@testset "persistence: round trips (checkpoint, file log) and ids continue identically" begin
    dir = mktempdir()
    for seed in 1:4
        path = joinpath(dir, "rt$seed.tlog")
        ckpt = joinpath(dir, "rt$seed.ckpt")
        live = mmsb_start(MMSBConfig(tlog_path = path, truncate = true))
        twin = mmsb_start()                                   # the same steps, in memory
        rl, rt = MersenneTwister(seed), MersenneTwister(seed)
        for _ in 1:60
            tper_step!(live, rl); tper_step!(twin, rt)
        end
        @test canonical_snapshot(live) == canonical_snapshot(twin)
        checkpoint_log!(live, ckpt)
        snap_ckpt = canonical_snapshot(live)
        nlog_ckpt = length(tlog_entries(live))
        rc = copy(rl)
        after = Any[]                                         # snapshots after each later step
        for _ in 1:40
            tper_step!(live, rl); tper_step!(twin, rt)
            push!(after, canonical_snapshot(live))
        end
        snap = canonical_snapshot(live)
        ents = tper_entries(live)
        @test snap == canonical_snapshot(twin)
        @test tper_nocycle(ents) == tper_nocycle(tper_entries(twin))
        @test count(t -> t[2] === :cycle, ents) > 0 && tper_brackets_ok(ents)
        @test length(ents) > 80

        # restored from the checkpoint, then the same later steps
        r = mmsb_start()
        load_checkpoint!(r, ckpt)
        @test canonical_snapshot(r) == snap_ckpt
        nck = length(tper_entries(r))
        rseq = Int[]
        for _ in 1:40
            tper_step!(r, rc)
            push!(rseq, tper_lastseq(r))
        end
        @test canonical_snapshot(r) == snap
        # the same records (but for their sequence numbers) as the live log after the checkpoint
        @test tper_entries_noseq(r)[nck+1:end] == tper_nocycle(ents[nlog_ckpt+1:end])
        # rolling the restored state back replays from the checkpoint
        for j in (30, 11, 1)
            replay!(r; upto = rseq[j])
            @test canonical_snapshot(r) == after[j]
        end
        replay!(r; upto = nck)
        @test canonical_snapshot(r) == snap_ckpt
        mmsb_stop(r)

        # rebuilt by reopening the file log
        mmsb_stop(live)
        reopened = mmsb_start(MMSBConfig(tlog_path = path))
        @test reopened.recovery.records == length(ents)
        @test reopened.recovery.bytes_truncated == 0
        @test canonical_snapshot(reopened) == snap
        @test tper_entries(reopened) == ents
        # and ids continue identically
        ra, rb = MersenneTwister(1000 + seed), MersenneTwister(1000 + seed)
        for _ in 1:30
            tper_step!(reopened, ra); tper_step!(twin, rb)
        end
        @test canonical_snapshot(reopened) == canonical_snapshot(twin)
        @test tper_nocycle(tper_entries(reopened)) == tper_nocycle(tper_entries(twin))
        # a checkpoint written at stop restores the final state
        fin = canonical_snapshot(twin)
        ck2 = joinpath(dir, "stop$seed.ckpt")
        mmsb_stop(reopened; checkpoint_path = ck2)
        r2 = mmsb_start()
        load_checkpoint!(r2, ck2)
        @test canonical_snapshot(r2) == fin
        foreach(mmsb_stop, (r2, twin))
    end
end


@testset "persistence: closure recomputes are registered again after a restore" begin
    dir = mktempdir()
    path = joinpath(dir, "closure.tlog")
    st = mmsb_start(MMSBConfig(tlog_path = path, truncate = true))
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    f = (v, p) -> read_page(v, a) .+ 0x01
    register_recompute!(f, st, b, [a])
    update_page(st, a, fill(0x03, 4))
    @test read_page(st, b) == fill(0x04, 4)
    snap = canonical_snapshot(st)
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))
    @test read_page(st, b) == fill(0x04, 4)          # bytes and edges survive
    @test (a, b, :data) in dependencies(st)
    register_recompute!(f, st, b, [a])               # the closure itself does not
    @test canonical_snapshot(st) == snap
    update_page(st, a, fill(0x07, 4))
    @test read_page(st, b) == fill(0x08, 4)
    mmsb_stop(st)
end

@testset "persistence: replay!(state; upto) rolls back" begin
    for seed in 1:3
        rng = MersenneTwister(20 + seed)
        st = mmsb_start()
        snaps = [canonical_snapshot(st)]
        seqs = [0]
        for _ in 1:80
            tper_step!(st, rng)
            push!(snaps, canonical_snapshot(st))
            push!(seqs, tper_lastseq(st))
        end
        ents = tper_entries(st)
        @test_throws ArgumentError replay!(st; upto = seqs[end] + 1)
        @test_throws ArgumentError replay!(st; upto = -1)
        @test canonical_snapshot(st) == snaps[end]
        replay!(st; upto = seqs[end])                    # a rebuild from the log alone
        @test canonical_snapshot(st) == snaps[end]
        for k in sort!(unique(rand(rng, 1:80, 5)); rev = true)
            replay!(st; upto = seqs[k])
            @test canonical_snapshot(st) == snaps[k]
            @test tper_lastseq(st) == seqs[k]
            @test tper_entries(st) == ents[1:seqs[k]]
        end
        # the rolled-back state goes on exactly like a state that never went further
        k = findfirst(s -> s == tper_lastseq(st), seqs)
        twin = mmsb_start()
        r0 = MersenneTwister(20 + seed)
        for _ in 1:k-1
            tper_step!(twin, r0)
        end
        @test canonical_snapshot(twin) == canonical_snapshot(st)
        ra, rb = MersenneTwister(7), MersenneTwister(7)
        for _ in 1:20
            tper_step!(st, ra); tper_step!(twin, rb)
        end
        @test canonical_snapshot(twin) == canonical_snapshot(st)
        @test tper_entries(twin) == tper_entries(st)
        replay!(st; upto = 0)
        @test canonical_snapshot(st) == snaps[1]
        @test isempty(pages(st)) && isempty(tlog_entries(st))
        @test create_page(st; size = 2).id == 1
        foreach(mmsb_stop, (st, twin))
    end
end

@testset "persistence: replay! of a file log, then reopen" begin
    dir = mktempdir()
    for d in (:buffered, :fsync)
        path = joinpath(dir, "replay_$d.tlog")
        st = mmsb_start(MMSBConfig(tlog_path = path, durability = d, truncate = true))
        rng = MersenneTwister(3)
        snaps = Any[]
        seqs = Int[]
        for _ in 1:50
            tper_step!(st, rng)
            push!(snaps, canonical_snapshot(st)); push!(seqs, tper_lastseq(st))
        end
        replay!(st; upto = seqs[20])
        @test canonical_snapshot(st) == snaps[20]
        tper_step!(st, MersenneTwister(9))                  # the log goes on from there
        after = canonical_snapshot(st)
        ents = tper_entries(st)
        mmsb_stop(st)
        st = mmsb_start(MMSBConfig(tlog_path = path))
        @test canonical_snapshot(st) == after
        @test tper_entries(st) == ents
        mmsb_stop(st)
    end
end

@testset "persistence: a closure page after replay! keeps its bytes, no error" begin
    # docs/recompute_contract.md: after replay! closures are registered again;
    # until then the child keeps its bytes and only gets PAGE_INVALIDATED.
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    f = (v, p) -> read_page(v, a) .+ 0x01
    register_recompute!(f, st, b, [a])
    update_page(st, a, fill(0x01, 4))
    n = length(tlog_entries(st))
    update_page(st, a, fill(0x02, 4))
    replay!(st; upto = n)
    @test read_page(st, b) == fill(0x02, 4)
    err = try
        update_page(st, a, fill(0x05, 4))
        nothing
    catch e
        e
    end
    @test err === nothing
    @test read_page(st, a) == fill(0x05, 4)
    @test read_page(st, b) in (fill(0x02, 4), fill(0x06, 4))
    register_recompute!(f, st, b, [a])                      # registered again: recomputed
    update_page(st, a, fill(0x07, 4))
    @test read_page(st, b) == fill(0x08, 4)
    mmsb_stop(st)
end

@testset "persistence: a checkpoint loaded into a file-log state survives a reopen" begin
    # SPEC §8: the log alone rebuilds the state. Loading a checkpoint into a
    # state with a file log must either be recorded in that log or be refused.
    dir = mktempdir()
    src = mmsb_start()
    a = create_page(src; size = 4).id
    update_page(src, a, fill(0x01, 4))
    ck = joinpath(dir, "src.ckpt")
    checkpoint_log!(src, ck)
    mmsb_stop(src)
    path = joinpath(dir, "target.tlog")
    st = mmsb_start(MMSBConfig(tlog_path = path, truncate = true))
    loaded = try
        load_checkpoint!(st, ck)
        true
    catch e
        @test e isa ArgumentError                           # refused up front: fine
        false
    end
    if loaded
        update_page(st, a, fill(0x02, 4))
        create_page(st; size = 2)
        snap = canonical_snapshot(st)
        mmsb_stop(st)
        reopened = try
            mmsb_start(MMSBConfig(tlog_path = path))
        catch e
            e
        end
        @test reopened isa MMSBState
        if reopened isa MMSBState
            @test canonical_snapshot(reopened) == snap
            mmsb_stop(reopened)
        end
    end
end

@testset "persistence: replay_to_epoch" begin
    st = mmsb_start()
    a = create_page(st; size = 4).id
    b = create_page(st; size = 4).id
    c = create_page(st; size = 4).id
    register_passthrough_recompute!(st, c, b)
    hist_a = [zeros(UInt8, 4)]
    hist_b = [zeros(UInt8, 4)]
    for k in 1:5
        v = fill(UInt8(10k), 4); v[k%4+1] = UInt8(k)
        update_page(st, a, v); push!(hist_a, v)
        if k <= 2
            w = fill(UInt8(100 + k), 4)
            update_page(st, b, w); push!(hist_b, w)
        end
    end
    snap = canonical_snapshot(st)
    for e in 0:7
        r = replay_to_epoch(st, e)
        @test read_page(r, a) == hist_a[min(e, 5)+1]
        @test page_epoch(r, a) == min(e, 5)
        @test read_page(r, b) == hist_b[min(e, 2)+1]
        @test page_epoch(r, b) == min(e, 2)
        @test read_page(r, c) == hist_b[min(e, 2)+1]      # the passthrough copy's history
        @test page_epoch(r, c) == min(e, 2)
        mmsb_stop(r)
    end
    @test canonical_snapshot(st) == snap                   # the original is untouched
    @test_throws ArgumentError replay_to_epoch(st, -1)
    mmsb_stop(st)
    @test_throws StateClosedError replay_to_epoch(st, 1)
end

@testset "persistence: next ids survive a reopen after a delta that changed nothing" begin
    # SPEC §2: restoring a checkpoint and replaying the log yields the same next ids.
    dir = mktempdir()
    path = joinpath(dir, "stamp.tlog")
    st = mmsb_start(MMSBConfig(tlog_path = path, truncate = true))
    p = create_page(st; size = 4).id
    update_page(st, p, fill(0x01, 4))
    route_delta!(st, create_delta(st, p, [1:1], UInt8[0x01]))   # changes nothing
    create_delta(st, p, [2:2], UInt8[0x07])                     # never routed
    snap = canonical_snapshot(st)
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))
    @test canonical_snapshot(st).pages == snap.pages
    @test canonical_snapshot(st).next_delta_id == snap.next_delta_id
    @test canonical_snapshot(st) == snap
    mmsb_stop(st)
end

@testset "persistence: durability modes" begin
    @test MMSBConfig().durability === :none
    @test MMSBConfig(tlog_path = "x.tlog").durability === :buffered
    @test_throws ArgumentError MMSBConfig(durability = :fsync)            # no file
    @test_throws ArgumentError MMSBConfig(durability = :buffered)
    @test_throws ArgumentError MMSBConfig(tlog_path = "x.tlog", durability = :none)
    @test_throws ArgumentError MMSBConfig(tlog_path = "x.tlog", durability = :sometimes)
    dir = mktempdir()
    st = mmsb_start(MMSBConfig(durability = :none))
    rng = MersenneTwister(5)
    for _ in 1:30
        tper_step!(st, rng)
    end
    @test length(tlog_entries(st)) > 20                  # the memory log
    mmsb_stop(st)
    for d in (:buffered, :fsync)
        path = joinpath(dir, "dur_$d.tlog")
        st = mmsb_start(MMSBConfig(tlog_path = path, durability = d, truncate = true))
        @test st.config.durability === d
        rng = MersenneTwister(6)
        for _ in 1:40
            tper_step!(st, rng)
        end
        if d === :fsync
            # every write is in the file when the call returns: its frame is
            # there, at the offset the frame sizes give, with its sequence number
            p = create_page(st; size = 64).id
            found = 0
            for k in 1:10
                update_page(st, p, fill(UInt8(k), 64))
                es = tlog_entries(st)
                stop = 24 + sum(e -> 72 + length(e.mask) + length(e.data), es)
                start = stop - (72 + length(es[end].mask) + length(es[end].data))
                img = read(path)
                found += length(img) >= stop && log_u64(img, start + 8) == es[end].seq &&
                         reinterpret(UInt32, img[start+1:start+4])[1] == stop - start - 8
            end
            @test found == 10
        end
        snap = canonical_snapshot(st)
        ents = tper_entries(st)
        mmsb_stop(st)
        st = mmsb_start(MMSBConfig(tlog_path = path, durability = d))
        @test canonical_snapshot(st) == snap
        @test tper_entries(st) == ents
        mmsb_stop(st)
    end
end

@testset "persistence: truncate = true starts empty" begin
    dir = mktempdir()
    path = joinpath(dir, "trunc.tlog")
    st = mmsb_start(MMSBConfig(tlog_path = path))
    p = create_page(st; size = 8).id
    update_page(st, p, fill(0x05, 8))
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))
    @test length(pages(st)) == 1
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path, truncate = true))
    @test isempty(pages(st)) && isempty(tlog_entries(st))
    @test canonical_snapshot(st) == canonical_snapshot(mmsb_start())
    @test create_page(st; size = 2).id == 1
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))       # the file was really emptied
    @test [q.size for q in pages(st)] == [2]
    # reset! empties a file log too
    reset!(st)
    mmsb_stop(st)
    st = mmsb_start(MMSBConfig(tlog_path = path))
    @test isempty(pages(st))
    mmsb_stop(st)
end

@testset "persistence: bad checkpoints raise CheckpointError" begin
    dir = mktempdir()
    st = mmsb_start()
    a = create_page(st; size = 32).id
    update_page(st, a, collect(UInt8, 1:32))
    good = joinpath(dir, "good.ckpt")
    checkpoint_log!(st, good)
    bytes = read(good)
    empty_snap = canonical_snapshot(mmsb_start())
    garbage = joinpath(dir, "garbage.ckpt")
    write(garbage, rand(MersenneTwister(3), UInt8, 200))
    truncated = joinpath(dir, "truncated.ckpt")
    write(truncated, bytes[1:end÷2])
    emptyf = joinpath(dir, "empty.ckpt")
    write(emptyf, UInt8[])
    alog = joinpath(dir, "a.tlog")                        # a log is not a checkpoint
    mmsb_stop(mmsb_start(MMSBConfig(tlog_path = alog, truncate = true)))
    for path in (joinpath(dir, "missing.ckpt"), garbage, truncated, emptyf, alog)
        r = mmsb_start()
        res = @test_throws CheckpointError load_checkpoint!(r, path)
        e = tper_exc(res)
        @test e isa CheckpointError && occursin(basename(path), sprint(showerror, e))
        @test canonical_snapshot(r) == empty_snap          # nothing changed
        load_checkpoint!(r, good)                           # and it is still usable
        @test read_page(r, a) == collect(UInt8, 1:32)
        mmsb_stop(r)
    end
    # only into an empty state
    @test_throws ArgumentError load_checkpoint!(st, good)
    mmsb_stop(st)
    @test_throws StateClosedError load_checkpoint!(st, good)
end

# Builds a small :fsync file log, one record per step of `make_ops(st)`, then
# opens copies of it truncated at every byte offset and with a bit flipped at
# every byte offset. Returns the offsets that misbehaved and what is needed
# for further checks.
function tper_log_corruption(dir, name, make_ops)
    path = joinpath(dir, "$name.tlog")
    st = mmsb_start(MMSBConfig(tlog_path = path, durability = :fsync, truncate = true))
    hdr = 24                           # docs/tlog_format.md: header, then one frame per record
    snaps = [canonical_snapshot(st)]
    one_each = true
    for op in make_ops(st)
        n0 = length(tlog_entries(st))
        op()
        one_each &= length(tlog_entries(st)) == n0 + 1       # one record per step
        push!(snaps, canonical_snapshot(st))
    end
    kinds = [e.kind for e in tlog_entries(st)]
    ends = hdr .+ cumsum([72 + length(e.mask) + length(e.data) for e in tlog_entries(st)])
    mmsb_stop(st)
    img = read(path)
    n = length(ends)
    starts = [hdr; ends[1:end-1]]
    work = joinpath(dir, "$name.work.tlog")
    # opens the image; returns (:ok, records, truncated bytes, snapshot) or (:error, exception)
    function open_image(bytes)
        write(work, bytes)
        try
            s = tper_quiet(() -> mmsb_start(MMSBConfig(tlog_path = work)))
            out = (:ok, s.recovery.records, s.recovery.bytes_truncated, canonical_snapshot(s))
            mmsb_stop(s)
            return out
        catch e
            return (:error, e)
        end
    end
    # truncation at every offset: a clean prefix, or a typed error inside the header
    bad_trunc = Int[]
    for k in 0:length(img)-1
        res = open_image(img[1:k])
        m = count(<=(k), ends)
        ok = if k == 0
            res[1] === :ok && res[4] == snaps[1]
        elseif k < hdr
            (res[1] === :error && res[2] isa TLogCorruptError) || (res[1] === :ok && res[4] == snaps[1])
        else
            res[1] === :ok && res[2] == m && res[3] == k - (m == 0 ? hdr : ends[m]) && res[4] == snaps[m+1]
        end
        ok || push!(bad_trunc, k)
    end
    # a bit flip at every offset: corruption before the tail is TLogCorruptError,
    # damage to the last record is a torn tail (or an error), never wrong data
    bad_flip = Int[]
    silent = Int[]
    for k in 0:length(img)-1
        b = copy(img)
        b[k+1] ⊻= UInt8(1) << (k % 8)
        res = open_image(b)
        rec = findfirst(i -> starts[i] <= k < ends[i], 1:n)
        ok = if res[1] === :error
            res[2] isa TLogCorruptError
        elseif rec === nothing || rec < n
            false                                   # header or a record before the tail
        else
            res[2] == n - 1 && res[4] == snaps[n]
        end
        ok || push!(bad_flip, k)
        res[1] === :ok && !any(==(res[4]), snaps) && push!(silent, k)
    end
    return (; one_each, kinds, img, starts, ends, work, bad_trunc, bad_flip, silent)
end

@testset "persistence: corruption at every byte offset" begin
    dir = mktempdir()
    r = tper_log_corruption(dir, "small", st -> [
        () -> create_page(st; size = 8),
        () -> create_page(st; size = 8),
        () -> update_page(st, 1, collect(UInt8, 1:8)),                   # dense
        () -> update_page(st, 1, UInt8[1, 2, 3, 99, 5, 6, 7, 8]),         # sparse
        () -> create_page(st; size = 4),
        () -> add_dependency!(st, 1, 3),
        () -> register_passthrough_recompute!(st, 2, 1),
        () -> update_page(st, 3, UInt8[4, 3, 2, 1]),
        () -> remove_dependency!(st, 1, 3),
        () -> delete_page!(st, 3),
    ])
    @test r.one_each
    @test length(r.img) == r.ends[end]
    @test isempty(r.bad_trunc)
    @test isempty(r.silent)                 # never wrong data
    @test isempty(r.bad_flip)
    img, starts, ends, work = r.img, r.starts, r.ends, r.work
    # the error names the offset
    b = copy(img); b[starts[2]+20] ⊻= 0x01
    write(work, b)
    res = @test_throws TLogCorruptError mmsb_start(MMSBConfig(tlog_path = work))
    e = tper_exc(res)
    @test e isa TLogCorruptError && occursin(string(starts[2]), sprint(showerror, e))
    # a torn tail is reported
    write(work, img[1:end-3])
    s = @test_logs (:warn, r"torn") match_mode = :any mmsb_start(MMSBConfig(tlog_path = work))
    @test s.recovery.bytes_truncated == ends[end] - 3 - ends[end-1]
    mmsb_stop(s)

    # a log that starts with a restored checkpoint and holds delta stamps
    src = mmsb_start()
    p = create_page(src; size = 8).id
    q = create_page(src; size = 8).id
    register_passthrough_recompute!(src, q, p)
    update_page(src, p, collect(UInt8, 21:28))
    ck0 = joinpath(dir, "base.ckpt")
    checkpoint_log!(src, ck0)
    mmsb_stop(src)
    dref = Ref{Any}(nothing)
    r = tper_log_corruption(dir, "restored", st -> [
        () -> load_checkpoint!(st, ck0),
        () -> (dref[] = create_delta(st, p, [3:4], UInt8[0xaa, 0xbb])),   # a stamp
        () -> route_delta!(st, dref[]; propagate = false),
        () -> create_page(st; size = 2),
    ])
    @test r.one_each
    @test :snapshot in r.kinds && :delta_stamp in r.kinds
    @test isempty(r.bad_trunc)
    @test isempty(r.silent)
    @test isempty(r.bad_flip)

    # a small checkpoint: every truncation and every bit flip is a CheckpointError
    ck = joinpath(dir, "small.ckpt")
    st = mmsb_start()
    p = create_page(st; size = 8).id
    q = create_page(st; size = 8).id
    register_passthrough_recompute!(st, q, p)
    update_page(st, p, collect(UInt8, 11:18))
    checkpoint_log!(st, ck)
    full = canonical_snapshot(st)
    mmsb_stop(st)
    cimg = read(ck)
    empty_snap = canonical_snapshot(mmsb_start())
    cwork = joinpath(dir, "work.ckpt")
    function load_image(bytes)
        write(cwork, bytes)
        s = mmsb_start()
        try
            load_checkpoint!(s, cwork)
            return (:ok, canonical_snapshot(s))
        catch e
            return (:error, e, canonical_snapshot(s))
        finally
            mmsb_stop(s)
        end
    end
    bad_ck = Int[]
    for k in 0:length(cimg)-1
        res = load_image(cimg[1:k])
        (res[1] === :error && res[2] isa CheckpointError && res[3] == empty_snap) || push!(bad_ck, k)
    end
    @test isempty(bad_ck)
    bad_ckflip = Int[]
    for k in 0:length(cimg)-1
        b = copy(cimg)
        b[k+1] ⊻= UInt8(1) << (k % 8)
        res = load_image(b)
        ok = res[1] === :ok ? res[2] == full : (res[2] isa CheckpointError && res[3] == empty_snap)
        ok || push!(bad_ckflip, k)
    end
    @test isempty(bad_ckflip)
    @test load_image(cimg) == (:ok, full)
end

@testset "persistence: SIGKILL crash under :fsync loses no acknowledged write" begin
    kills = parse(Int, get(ENV, "MMSB_CRASH_KILLS", "20"))
    dir = mktempdir()
    path = joinpath(dir, "crash.tlog")
    writer = joinpath(@__DIR__, "crash_writer.jl")
    # The same Julia with the same flags; the environment (library paths set by
    # deps/julia, the depot, the load path) is inherited.
    project = dirname(@__DIR__)
    cmd = `$(Base.julia_cmd()) --startup-file=no --project=$project $writer $path`
    rng = MersenneTwister(77)
    maxack = UInt64(0)                    # the last acknowledged value
    hi = UInt64(0)                        # the highest value any child may have written
    problems = String[]
    done = 0
    total_acks = 0
    for k in 1:kills
        errf = joinpath(dir, "stderr_$k.txt")
        proc = open(pipeline(cmd; stderr = errf), "r")
        watchdog = Timer(_ -> process_running(proc) && kill(proc, 9), 120)
        line = readline(proc)
        if !startswith(line, "READY ")
            kill(proc, 9); close(watchdog)
            push!(problems, "child $k did not start: $(repr(line)) $(isfile(errf) ? read(errf, String) : "")")
            break
        end
        v1, v2, v3 = parse.(UInt64, split(line)[2:4])
        # every acknowledged write survived, nothing that was never sent appeared,
        # and the passthrough copy and the closure page follow their parent (a
        # write whose propagation a kill cut short is cut off with it)
        maxack <= v1 <= hi || push!(problems, "child $k recovered $v1, last acknowledged $maxack, highest sent $hi")
        v2 == v1 || push!(problems, "child $k recovered copy $v2, page $v1, acknowledged $maxack")
        v3 == 3v1 || push!(problems, "child $k recovered closure page $v3, page $v1 (want 3×), acknowledged $maxack")
        sleep(0.05 + 0.3 * rand(rng))
        kill(proc, 9)
        out = read(proc, String)
        wait(proc)
        close(watchdog)
        lines = split(out, '\n')[1:end-1]            # the last piece may be torn
        acks = [parse(UInt64, split(l)[2]) for l in lines if startswith(l, "ACK ") && length(split(l)) == 2]
        if !isempty(acks)
            acks == collect(v1+1:v1+length(acks)) || push!(problems, "child $k acknowledged $(acks[1])…$(acks[end]) after $v1")
            maxack = acks[end]
            total_acks += length(acks)
        end
        hi = (isempty(acks) ? v1 : acks[end]) + 1
        done += 1
    end
    @test isempty(problems)
    isempty(problems) || foreach(println, problems)
    @test done == kills
    @test total_acks > 0
    st = tper_quiet(() -> mmsb_start(MMSBConfig(tlog_path = path)))
    val(id) = reinterpret(UInt64, read_page(st, id))[1]
    v = val(1)
    @test maxack <= v <= hi
    @test val(2) == v
    @test val(3) == 3v
    # the log is a prefix of what was sent: page 1 took the values 1, 2, ..., v
    # in order, and its copy and the closure page followed each of them
    pg = Dict{UInt64,Vector{UInt8}}()
    vals = Dict(UInt64(1) => UInt64[], UInt64(2) => UInt64[], UInt64(3) => UInt64[])
    for e in tlog_entries(st)
        log_apply!(pg, e)
        e.kind === :delta && push!(vals[e.page_id], reinterpret(UInt64, pg[e.page_id])[1])
    end
    @test vals[1] == collect(UInt64(1):v)
    @test vals[2] == vals[1]
    @test vals[3] == 3 .* vals[1]
    mmsb_stop(st)
end

@testset "persistence: rebuilt states skip and retry what the live one does" begin
    # Each scenario returns a write whose outcome depends on propagation
    # bookkeeping no delta records: a stored signature (a skip) or a stale
    # mark (a retry). A reopened log, replay!, replay_to_epoch and a
    # checkpoint must give the live state's result.
    scenarios = [
        # c was copied from a, then written directly; b -> c is a control edge
        st -> begin
            a, b, c = (create_page(st; size = 4).id for _ in 1:3)
            register_passthrough_recompute!(st, c, a)
            add_dependency!(st, b, c, :control)
            update_page(st, a, fill(0x02, 4))
            update_page(st, c, fill(0x03, 4))
            update_page(st, a, fill(0x03, 4))      # c's recompute changes nothing
            update_page(st, c, fill(0x04, 4))
            (b, fill(0x05, 4))                      # c is skipped: stays 4
        end,
        # a failing recompute leaves p stale; the next cycle retries it
        st -> begin
            a, x, p, u, v = (create_page(st; size = 4).id for _ in 1:5)
            register_recompute!((view, page) -> error("boom"), st, x, [a])
            register_passthrough_recompute!(st, p, a)
            register_passthrough_recompute!(st, v, u)
            @test_throws RecomputeError update_page(st, a, fill(0x07, 4))
            delete_page!(st, x)
            (u, fill(0x01, 4))                      # p is retried: becomes 7
        end,
    ]
    for (k, scenario) in enumerate(scenarios)
        mktempdir() do dir
            path = joinpath(dir, "live.tlog")
            live = mmsb_start(MMSBConfig(tlog_path = path, durability = :fsync))
            id, bytes = scenario(live)
            ck = joinpath(dir, "c.ckpt")
            checkpoint_log!(live, ck)
            copies = [joinpath(dir, "copy$i.tlog") for i in 1:2]
            foreach(c -> cp(path, c), copies)
            replayed = tper_quiet(() -> mmsb_start(MMSBConfig(tlog_path = copies[2])))
            replay!(replayed; upto = length(tlog_entries(replayed)))
            loaded = mmsb_start()
            load_checkpoint!(loaded, ck)
            rebuilt = [("replay_to_epoch", replay_to_epoch(live, typemax(UInt64))),
                       ("reopened", tper_quiet(() -> mmsb_start(MMSBConfig(tlog_path = copies[1])))),
                       ("replay!", replayed), ("checkpoint", loaded)]
            before = canonical_snapshot(live)
            update_page(live, id, bytes)
            want = canonical_snapshot(live)
            for (how, s) in rebuilt
                @test (k, how, canonical_snapshot(s) == before) == (k, how, true)
                update_page(s, id, bytes)
                @test (k, how, canonical_snapshot(s) == want) == (k, how, true)
                mmsb_stop(s)
            end
            mmsb_stop(live)
        end
    end
end
