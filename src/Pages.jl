# Pages: create, delete, look up, read, write.

"""
    Page

A reference to a page of a state. Properties: `id::UInt64`, `size::Int`,
`location::Symbol` (`:cpu` or `:gpu`: where it really lives) and `epoch::UInt64`
(read from the state each time). A `Page` of a deleted page throws
`PageNotFoundError` when its properties are read.
"""
struct Page
    state::MMSBState
    id::UInt64
end

function Base.getproperty(p::Page, name::Symbol)
    name === :id && return getfield(p, :id)
    name === :state && return getfield(p, :state)
    id = getfield(p, :id)
    info = with_state(h -> page_info(h, id), getfield(p, :state))
    name === :size && return Int(info.size)
    name === :epoch && return info.epoch
    name === :location && return location_symbol(info.location)
    throw(ArgumentError("Page has no property $name (it has id, size, location, epoch)"))
end
Base.propertynames(::Page) = (:id, :size, :location, :epoch)
Base.:(==)(a::Page, b::Page) = getfield(a, :state) === getfield(b, :state) && getfield(a, :id) == getfield(b, :id)
Base.hash(p::Page, h::UInt) = hash(getfield(p, :id), hash(objectid(getfield(p, :state)), h))

location_symbol(l::UInt8) = l == LOC_GPU ? :gpu : :cpu

function location_code(location::Symbol)
    location === :cpu && return LOC_CPU
    location === :gpu && return LOC_GPU
    throw(ArgumentError("location must be :cpu or :gpu, got :$location"))
end

page_id(id::Integer) = 1 <= id <= typemax(UInt64) ? UInt64(id) :
    throw(ArgumentError("page ids are integers from 1 to 2^64 - 1, got $id"))
page_id(p::Page) = getfield(p, :id)
page_id(x) = throw(ArgumentError("a page id is an integer or a Page, got $(repr(x))::$(typeof(x))"))

"""
    create_page(state; size, location = :cpu) -> Page

Create a zero-filled page of `size ≥ 1` bytes. `location = :gpu` puts it in
device memory (if `size ≥ config.gpu_threshold`; smaller requests are placed
on the CPU, and `page.location` says so).

Throws `ArgumentError` (bad size or location), `GPUUnavailableError`,
`StateClosedError`.

```julia
p = create_page(state; size = 4096)
p.epoch == 0
```
"""
function create_page(st::MMSBState; size, location = :cpu)
    size isa Integer && 1 <= size <= typemax(UInt64) ||
        throw(ArgumentError("page size must be an integer from 1 to 2^64 - 1, got $(repr(size))"))
    location isa Symbol || throw(ArgumentError("location must be :cpu or :gpu, got $(repr(location))"))
    loc = location_code(location)
    info = with_state(st) do h
        i = page_create(h, size, loc)
        after_native_events!(st)
        i
    end
    return Page(st, info.id)
end

"""
    delete_page!(state, id; force = false)

Delete a page. Refuses with `ArgumentError` while other pages depend on it,
unless `force = true`, which also removes its edges. Throws
`PageNotFoundError` for a missing page.
"""
function delete_page!(st::MMSBState, id; force::Bool = false)
    pid = page_id(id)
    with_state(st) do h
        page_delete(h, pid, force)
        delete!(st.recomputes, pid)
        # a forced delete also drops the recomputes that declared the page
        filter!(kv -> !(pid in (kv.second::Recompute).parents), st.recomputes)
        after_native_events!(st)
    end
    return nothing
end

"""
    get_page(state, id) -> Union{Page, Nothing}

The page with this id, or `nothing` if there is none.
"""
function get_page(st::MMSBState, id::Integer)
    id >= 1 || return nothing
    info = with_state(h -> page_info_or_nothing(h, UInt64(id)), st)
    return info === nothing ? nothing : Page(st, UInt64(id))
end

"""
    pages(state) -> Vector{Page}

All pages, in ascending id order.
"""
pages(st::MMSBState) = [Page(st, id) for id in with_state(page_ids, st)]

"""
    page_epoch(state, id) -> UInt64

The page's content version: 0 at creation, +1 per applied delta that changed
at least one byte. Throws `PageNotFoundError`.
"""
function page_epoch(st::MMSBState, id)
    pid = page_id(id)
    return with_state(h -> page_info(h, pid), st).epoch
end

"""
    read_page(state, id) -> Vector{UInt8}

A copy of the page's bytes. Throws `PageNotFoundError`, `StateClosedError`.
"""
function read_page(st::MMSBState, id)
    pid = page_id(id)
    return with_state(st) do h
        dest = Vector{UInt8}(undef, page_info(h, pid).size)
        page_read(h, pid, dest)
        dest
    end
end
read_page(p::Page) = read_page(getfield(p, :state), getfield(p, :id))

"""
    read_page!(dest::Vector{UInt8}, state, id) -> dest

Fill `dest` (whose length must equal the page size, else `DimensionMismatch`)
with the page's bytes, without allocating.
"""
function read_page!(dest::Vector{UInt8}, st::MMSBState, id)
    pid = page_id(id)
    with_state(h -> page_read(h, pid, dest), st)
    return dest
end

"""
    update_page(state, id, bytes) -> Page

Write a whole page. The new bytes are diffed against the current ones once,
natively; if nothing changed, nothing happens (no delta, no log record, no
event, epoch unchanged). Otherwise a delta (`source = :api`) is applied, the
epoch is bumped, the change is logged, events are emitted and the change
propagates to dependent pages.

Safe to call from several threads at once. Writes to pages with no
dependents, on a state with no subscribers and an in-memory log, run
concurrently (one shard of the native lock and the page's own lock, not the
state's lock); under `:buffered` they take the native state exclusively but
not the state's lock; any other write takes the state's lock. The log keeps
each page's order and each thread's order; writes of different threads that
nothing ordered (no other call on the state between them) may be logged in
either order.

Throws `DimensionMismatch` (length ≠ page size), `PageNotFoundError`,
`StateClosedError`, `RecomputeError` (a dependent's recompute threw; this
write still happened).

```julia
update_page(state, p.id, fill(0x01, p.size))
```
"""
function update_page(st::MMSBState, id, bytes::AbstractVector{UInt8})
    pid = page_id(id)
    data = bytes isa Vector{UInt8} ? bytes : Vector{UInt8}(bytes)
    check_not_recomputing(st, "update_page")
    # Without the state's lock first: natively, a write that needs nothing of
    # Julia (no events, no propagation) runs beside other threads' writes; one
    # that does is refused unchanged (PROP_NEED_LOCK) and done under the lock.
    # `delivering` (callback writes are queued) and `:fsync` (the lock-free
    # wait for a sync) always take the lock.
    if !st.delivering && st.config.durability !== :fsync
        r = GC.@preserve st page_write(handle(st), pid, data, WRITE_PROPAGATE | WRITE_SHARED)
        r.prop_status == PROP_NEED_LOCK || return Page(st, pid)
    end
    locked_write(h -> page_write(h, pid, data, write_flags(st, true)), QueuedUpdate(pid, data), st)
    return Page(st, pid)
end
update_page(st::MMSBState, id, bytes::AbstractVector) =
    throw(ArgumentError("update_page needs a vector of UInt8, got $(typeof(bytes))"))
