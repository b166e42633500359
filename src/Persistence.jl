# Checkpoints, replay, the log as data, and the determinism oracle.

"""
    checkpoint_log!(state, path)

Write a snapshot of the state (pages, epochs, next ids, graph, passthrough
registrations, log position) to `path` atomically: a temp file, synced, then
renamed. Closure recomputes are not included: register them again after
`load_checkpoint!`. Throws `MMSBIOError`, `StateClosedError`.
"""
function checkpoint_log!(st::MMSBState, path::AbstractString)
    with_state(h -> checkpoint_write(h, String(path)), st)
    return nothing
end

"""
    load_checkpoint!(state, path) -> state

Restore a checkpoint into an empty (fresh or `reset!`) state: pages, epochs,
graph, passthrough registrations and next ids, so ids continue exactly where
they would have. The restore itself is logged (a `:snapshot` record holding
the checkpoint), and every later change is logged after it, so the state's log
alone still rebuilds it (for a file log: `mmsb_start` with the same path).
Closure recomputes must be registered again.

Throws `CheckpointError` (missing, truncated, corrupt or foreign file),
`ArgumentError` (the state is not empty).
"""
function load_checkpoint!(st::MMSBState, path::AbstractString)
    with_state(st) do h
        checkpoint_load(h, String(path))
        empty!(st.recomputes)
    end
    return st
end

"""
    replay!(state; upto) -> state

Roll the state back to the log prefix that ends at sequence number `upto`:
pages, epochs, graph and next ids become what they were right after that
record, and later records are dropped from the log. Closure recomputes whose
registration is part of that prefix stay registered; the others are dropped.
"""
function replay!(st::MMSBState; upto::Integer)
    upto >= 0 || throw(ArgumentError("upto must be a log sequence number ≥ 0, got $upto"))
    with_state(st) do h
        replay_native(h, UInt64(upto))
        filter!(st.recomputes) do (id, r)
            info = page_info_or_nothing(h, id)
            info !== nothing && info.recompute == RECOMPUTE_CLOSURE && signature(h, id)[1] == r.parents
        end
    end
    return st
end

"""
    replay_to_epoch(state, epoch) -> MMSBState

A new in-memory state in which every page is as it was when its epoch was
`min(epoch, current epoch)`, rebuilt from the log. The original is untouched.
Stop the result with `mmsb_stop` when done.
"""
function replay_to_epoch(st::MMSBState, epoch::Integer)
    epoch >= 0 || throw(ArgumentError("epoch must be ≥ 0, got $epoch"))
    newh = with_state(h -> replay_to_epoch_native(h, UInt64(epoch)), st)
    return MMSBState(newh, MMSBConfig(strict_epochs = st.config.strict_epochs, enable_gpu = st.config.enable_gpu,
                                      gpu_threshold = st.config.gpu_threshold), CRecoveryInfo(0, 0))
end

"""
    TLogEntry

One log record: `seq`, `kind` (`:page_create`, `:page_delete`, `:edge_add`,
`:edge_remove`, `:recompute_set`, `:delta`, `:delta_stamp` — an id handed out by
`create_delta` —, `:snapshot` — a checkpoint loaded into the state —,
`:cycle` — in a file log, the
bounds of a propagation cycle and the write that started it, `encoding`
`:begin` or `:end`; recovery cuts off a cycle that has no end), `:prop_state`
— what a recompute's skip-or-run decision depends on that no delta records,
`encoding` `:signature` (it ran and changed nothing; `data` = its parents'
epochs), `:stale` (a failed cycle left the page stale) or `:fresh` —, `page_id`,
`aux` (size, child, recompute kind; for `:cycle`, the begin's seq), `delta_id`, `base_epoch`,
`timestamp`, `source`, `encoding` (`:dense`/`:sparse` for deltas), `mask`
and `data` bytes.
"""
struct TLogEntry
    seq::UInt64
    kind::Symbol
    page_id::UInt64
    aux::UInt64
    delta_id::UInt64
    base_epoch::UInt64
    timestamp::UInt64
    source::Symbol
    encoding::Symbol
    mask::Vector{UInt8}
    data::Vector{UInt8}
end

const RECORD_KINDS = (:page_create, :page_delete, :edge_add, :edge_remove, :recompute_set, :delta, :delta_stamp, :snapshot, :cycle,
                      :prop_state)
const PROP_STATES = (:signature, :stale, :fresh)
Base.show(io::IO, e::TLogEntry) = print(io, "TLogEntry(#", e.seq, " ", e.kind, " page=", e.page_id,
                                        e.kind === :delta ? string(" delta=", e.delta_id, " base=", e.base_epoch, " ", e.encoding) : "", ")")

"""
    tlog_entries(state) -> Vector{TLogEntry}

Every record of the state's log, in order.
"""
tlog_entries(st::MMSBState) = with_state(log_entries, st)

function log_entries(h::Handle)
    first_seq, next_seq = tlog_len(h)
    buf = Vector{UInt8}(undef, 4096)
    out = TLogEntry[]
    for seq in first_seq:(next_seq-1)
        hdr, payload = tlog_entry(h, seq, buf)
        kind = 1 <= hdr.kind <= length(RECORD_KINDS) ? RECORD_KINDS[hdr.kind] : Symbol("kind", hdr.kind)
        ml = Int(hdr.mask_len)
        enc = kind === :delta ? (hdr.encoding == ENC_DENSE ? :dense : :sparse) :
              kind === :cycle ? (hdr.encoding == 1 ? :begin : :end) :
              kind === :prop_state && 1 <= hdr.encoding <= 3 ? PROP_STATES[hdr.encoding] : :none
        push!(out, TLogEntry(hdr.seq, kind, hdr.page_id, hdr.aux, hdr.delta_id, hdr.base_epoch, hdr.timestamp,
                             source_symbol(hdr.source), enc, payload[1:ml], payload[ml+1:end]))
    end
    return out
end

"""
    canonical_snapshot(state)

A plain value, comparable with `==`, holding every page's bytes, epoch, size
and location, the graph, the passthrough registrations and the next ids: two
states with equal snapshots are indistinguishable. No wall-clock data.
"""
function canonical_snapshot(st::MMSBState)
    with_state_held(st) do h
        ids = page_ids(h)
        pages = Dict{UInt64,Vector{UInt8}}()
        meta = Dict{UInt64,Tuple{UInt64,UInt64,Symbol,Symbol}}()
        for id in ids
            i = page_info(h, id)
            buf = Vector{UInt8}(undef, i.size)
            page_read(h, id, buf)
            pages[id] = buf
            rc = i.recompute == RECOMPUTE_PASSTHROUGH ? :passthrough : i.recompute == RECOMPUTE_CLOSURE ? :closure : :none
            meta[id] = (i.size, i.epoch, location_symbol(i.location), rc)
        end
        edges = sort!([(e.parent, e.child, e.kind) for e in graph_edges(h)])
        next_page, next_delta = next_ids(h)
        (pages = pages, meta = meta, edges = edges, next_page_id = next_page, next_delta_id = next_delta)
    end
end
