# Observability: stats and one-line show methods.

"""
    stats(state) -> NamedTuple

Counters of the state: `pages`, `page_bytes`, `deltas_applied`,
`bytes_logged`, `log_records`, `recomputes_run`, `recomputes_skipped` (by an
unchanged signature), `recomputes_cutoff` (ran, bytes unchanged: early
cutoff), `propagation_cycles`, `propagation_ns` (total time inside cycles),
`apply_ns_mean` (mean latency of sampled delta applications, ns).
"""
function stats(st::MMSBState)
    s = with_state(native_stats, st)
    return (pages = Int(s.pages), page_bytes = Int(s.page_bytes), deltas_applied = Int(s.deltas_applied),
            bytes_logged = Int(s.bytes_logged), log_records = Int(s.log_records),
            recomputes_run = Int(s.recomputes_run), recomputes_skipped = Int(s.recomputes_skipped),
            recomputes_cutoff = Int(s.recomputes_cutoff), propagation_cycles = Int(s.propagation_cycles),
            propagation_ns = Int(s.propagation_ns),
            apply_ns_mean = s.apply_samples == 0 ? 0.0 : s.apply_ns / s.apply_samples)
end

function Base.show(io::IO, st::MMSBState)
    s = lock(() -> isopen(st) ? native_stats(st.handle) : nothing, st.lock)
    if s === nothing
        print(io, "MMSBState(closed)")
        return
    end
    log = st.config.tlog_path === nothing ? "memory log" : string("log ", st.config.tlog_path, " (", st.config.durability, ")")
    print(io, "MMSBState(", s.pages, " pages, ", s.page_bytes, " bytes, ", s.deltas_applied, " deltas, ", log, ")")
end

function Base.show(io::IO, p::Page)
    st = getfield(p, :state)
    id = getfield(p, :id)
    info = lock(() -> isopen(st) ? page_info_or_nothing(st.handle, id) : nothing, st.lock)
    if info === nothing
        print(io, "Page(id=", id, isopen(st) ? ", deleted)" : ", state closed)")
    else
        print(io, "Page(id=", id, ", size=", info.size, ", ", location_symbol(info.location), ", epoch=", info.epoch, ")")
    end
end

Base.show(io::IO, s::RecomputeSignature) =
    print(io, "RecomputeSignature(", join(("$(i)@$(e)" for (i, e) in zip(s.parent_ids, s.parent_epochs)), ", "), ")")
