# Recompute registration and the Julia half of a propagation cycle: the
# native scheduler (rust/src/propagate.rs) visits pages in topological order,
# runs passthroughs itself, and hands each closure page whose signature
# changed back here.

"""
    RecomputeView

What a recompute function sees: `read_page(view, id)` and
`read_page!(dest, view, id)` for its declared parents only; reading any other
page raises `UndeclaredDependencyError`.
"""
struct RecomputeView
    state::MMSBState
    page_id::UInt64
    parents::Vector{UInt64}
end

# A registered closure recompute. The view and page handed to `f` are built
# (and boxed: fields typed Any) once, at registration, so calling `f` through
# dynamic dispatch allocates nothing of its own.
struct Recompute
    f::Any
    parents::Vector{UInt64}
    view::Any     # RecomputeView
    page::Any     # Page
end
Recompute(f, st::MMSBState, id::UInt64, parents::Vector{UInt64}) =
    Recompute(f, parents, RecomputeView(st, id, parents), Page(st, id))

@inline function check_declared(v::RecomputeView, id::UInt64)
    id in v.parents || throw(UndeclaredDependencyError(v.page_id, id))
    return id
end
read_page(v::RecomputeView, id) = read_page(v.state, check_declared(v, page_id(id)))
read_page!(dest::Vector{UInt8}, v::RecomputeView, id) = read_page!(dest, v.state, check_declared(v, page_id(id)))

"""
    register_recompute!(f, state, child, parents)

Make `child` a derived page: whenever one of `parents` changes, `f(view,
child_page)` is called and must return the child's new bytes (a
`Vector{UInt8}` of the child's size). `f` may read only `parents`, through
`view`, and must not write. Missing edges `parent -> child` are added (all or
none: `CycleError` leaves the graph unchanged). Registration does not run
`f`; call `recompute_page!` to compute the child now. Closure recomputes are
not saved in logs or checkpoints: register them again after a restore.

```julia
register_recompute!(state, c.id, [a.id, b.id]) do view, page
    read_page(view, a.id) .+ read_page(view, b.id)
end
```
"""
function register_recompute!(f, st::MMSBState, child, parents)
    cid = page_id(child)
    pids = UInt64[page_id(p) for p in parents]
    with_state(st) do h
        recompute_set(h, cid, RECOMPUTE_CLOSURE, pids)
        st.recomputes[cid] = Recompute(f, st, cid, pids)
    end
    return nothing
end

"""
    register_passthrough_recompute!(state, child, parent)

Make `child` a copy of `parent` (same size, else `ArgumentError`), kept up to
date natively without calling Julia. It is data: it is logged and survives
checkpoint and restore.
"""
function register_passthrough_recompute!(st::MMSBState, child, parent)
    cid = page_id(child)
    with_state(st) do h
        recompute_set(h, cid, RECOMPUTE_PASSTHROUGH, UInt64[page_id(parent)])
        delete!(st.recomputes, cid)
    end
    return nothing
end

"""
    RecomputeSignature

The parent ids of a derived page with their epochs. A page whose signature
equals the one of its last recompute is not recomputed.
"""
struct RecomputeSignature
    parent_ids::Vector{UInt64}
    parent_epochs::Vector{UInt64}
end
Base.:(==)(a::RecomputeSignature, b::RecomputeSignature) = a.parent_ids == b.parent_ids && a.parent_epochs == b.parent_epochs

"""
    compute_signature(state, id) -> RecomputeSignature

The current signature of a page: its declared recompute parents (for a page
without a recompute, its graph parents) and their epochs.
"""
function compute_signature(st::MMSBState, id)
    pid = page_id(id)
    ids, eps = with_state(h -> signature(h, pid), st)
    return RecomputeSignature(ids, eps)
end

"""
    propagate_change!(state, ids)

Propagate as if the pages `ids` had just changed: every page reachable from
them is visited once, in topological order (see SPEC §5). Throws
`RecomputeError` after the cycle if a recompute function threw.
"""
function propagate_change!(st::MMSBState, ids)
    pids = UInt64[page_id(i) for i in ids]
    run_cycle!(st, pids, ENQUEUE_CHILDREN)
end

"""
    recompute_page!(state, id)

Bring one derived page up to date: recompute it unless its signature is
unchanged (a page left stale by a failed recompute is always recomputed),
and propagate a change to its dependents.
"""
recompute_page!(st::MMSBState, id) = run_cycle!(st, UInt64[page_id(id)], ENQUEUE_SELF)

function run_cycle!(st::MMSBState, pids::Vector{UInt64}, mode::UInt8)
    with_state(st) do h
        prop_enqueue(h, pids, mode)
        step = prop_run(h)
        finish_write!(st, step.status, step.page_id)
    end
    return nothing
end

# After a native write or cycle step: run the pending closure pages, deliver
# events, then throw the recompute error, if any. Called with st.lock held.
@inline function finish_write!(st::MMSBState, status::Int32, pending::UInt64)
    err = status == 1 ? drive_cycle!(st, pending) : nothing
    err === nothing && (st.events_on && after_native_events!(st); return nothing)
    deliver_then_throw(st, err)
end

# A recompute failed: deliver the cycle's events, then throw its
# RecomputeError even if callbacks threw (their errors are logged instead:
# the stale page is what the caller must hear about).
@noinline function deliver_then_throw(st::MMSBState, err)
    try
        st.events_on && after_native_events!(st)
    catch e
        @warn "event callbacks threw while delivering the events of a failed propagation cycle" exception = e
    end
    throw(err)
end

@noinline function drive_cycle!(st::MMSBState, pending::UInt64)
    h = handle(st)
    while true
        bytes = run_recompute(st, pending)
        if !(bytes isa Vector{UInt8})
            prop_fail(h, pending)
            return RecomputeError(pending, bytes)
        end
        try
            prop_submit(h, pending, bytes)
        catch e
            # end the cycle either way, so that nothing stays pending
            try
                prop_fail(h, pending)
            catch
            end
            e isa DimensionMismatch || rethrow()
            return RecomputeError(pending, e)
        end
        step = prop_run(h)
        step.status == 0 && return nothing
        pending = step.page_id
    end
end

# The bytes computed for `id`, or the exception that says why there are none.
function run_recompute(st::MMSBState, id::UInt64)
    r = get(st.recomputes, id, nothing)::Union{Nothing,Recompute}
    r === nothing && return ArgumentError("page $id has a closure recompute in the native state but no Julia function; register it again (closures are not restored from logs or checkpoints)")
    st.recompute_task = current_task()
    out = try
        call_recompute(r.f, r.view, r.page)
    catch e
        e
    finally
        st.recompute_task = nothing
    end
    out isa Exception && return out
    out isa Vector{UInt8} && return out
    out isa AbstractVector{UInt8} && return Vector{UInt8}(out)
    return ArgumentError("the recompute of page $id returned a $(typeof(out)), not a vector of UInt8")
end

# Function barrier: one dynamic dispatch per recompute.
call_recompute(f, view, page) = f(view, page)
