# Applying caller-built deltas: one at a time, or a batch with one
# propagation cycle (sequential or parallel, with identical results).

"""
    route_delta!(state, delta; propagate = true) -> Page

Apply `delta`. Only bytes that really change count: a delta that changes
nothing logs nothing and leaves the epoch alone. A delta whose base epoch is
older than the page's epoch is applied (last writer wins) unless the state has
`strict_epochs = true`, which raises `StaleDeltaError` and changes nothing.
With `propagate`, dependents are brought up to date.

Throws `PageNotFoundError`, `StaleDeltaError`, `DimensionMismatch` (the
page's size changed), `RecomputeError`, `StateClosedError`.
"""
function route_delta!(st::MMSBState, d::Delta; propagate::Bool = true)
    check_not_recomputing(st, "route_delta!")
    desc, bufs = native_delta(d)
    locked_write(h -> GC.@preserve(bufs, delta_route(h, desc, write_flags(st, propagate))),
                 QueuedRoute(d, propagate), st)
    return Page(st, d.page_id)
end

run_queued(st::MMSBState, q::QueuedUpdate) = update_page(st, q.id, q.data)
run_queued(st::MMSBState, q::QueuedRoute) = route_delta!(st, q.delta::Delta; propagate = q.propagate)
run_queued(st::MMSBState, q::QueuedBatch) =
    batch_route_deltas!(st, q.deltas; propagate = q.propagate, parallel = q.parallel)

"""
    batch_route_deltas!(state, deltas; propagate = true, parallel = state.config.parallel) -> Int

Apply many deltas, then run one propagation over every changed page. Deltas
are grouped by page (ascending id), and within a page applied by base epoch,
then delta id. All are validated before any is applied: on an error nothing
changes. With `parallel = true` pages are applied on native worker threads;
bytes, epochs, ids, log order and events are identical to the sequential
result. Returns the number of deltas that changed bytes.
"""
function batch_route_deltas!(st::MMSBState, deltas::AbstractVector; kw...)
    all(d -> d isa Delta, deltas) ||
        throw(ArgumentError("batch_route_deltas! needs a vector of Delta, got one with $(join(unique(typeof.(deltas)), ", "))"))
    return batch_route_deltas!(st, Delta[d for d in deltas]; kw...)
end
function batch_route_deltas!(st::MMSBState, deltas::AbstractVector{Delta}; propagate::Bool = true,
                             parallel::Bool = st.config.parallel)
    isopen(st) || throw_closed()
    check_not_recomputing(st, "batch_route_deltas!")
    descs = Vector{CDeltaDesc}(undef, length(deltas))
    keep = Vector{Any}(undef, length(deltas))
    for (i, d) in enumerate(deltas)
        descs[i], keep[i] = native_delta(d)
    end
    flags = write_flags(st, propagate) | (parallel ? WRITE_PARALLEL : UInt32(0))
    r = locked_write(h -> GC.@preserve(keep, delta_route_batch(h, descs, flags)),
                     QueuedBatch(deltas, propagate, parallel), st)
    return r === nothing ? 0 : Int(r.applied)
end
