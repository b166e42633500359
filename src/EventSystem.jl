# Events: per-state subscriptions, ordered delivery, batching. The native
# library records events (only while a subscription or a batch exists) in
# the order of SPEC §6; this file delivers them.

"""
    EventType

`PAGE_CREATED`, `PAGE_DELETED`, `PAGE_INVALIDATED`, `DELTA_APPLIED`, `PAGE_CHANGED`.
"""
@enum EventType::UInt8 PAGE_CREATED = 1 PAGE_DELETED = 2 PAGE_INVALIDATED = 3 DELTA_APPLIED = 4 PAGE_CHANGED = 5

"""
    Event

One event: `type::EventType`, `page_id`, `delta_id` and `epoch` (`UInt64`; 0
where one does not apply).
"""
struct Event
    type::EventType
    page_id::UInt64
    delta_id::UInt64
    epoch::UInt64
end
Base.show(io::IO, e::Event) = print(io, "Event(", e.type, ", page=", e.page_id, ", delta=", e.delta_id, ", epoch=", e.epoch, ")")

"""
    Subscription

Returned by [`subscribe!`](@ref); pass it to [`unsubscribe!`](@ref).
"""
mutable struct Subscription
    state::MMSBState
    id::Int
    type::EventType
    callback::Any
    active::Bool
end
Base.show(io::IO, s::Subscription) = print(io, "Subscription(", s.id, ", ", s.type, s.active ? "" : ", inactive", ")")

"""
    EventBatch

Events held back by [`collect_events!`](@ref) until [`flush_events!`](@ref).
"""
mutable struct EventBatch
    state::MMSBState
    events::Vector{Event}
end
Base.show(io::IO, b::EventBatch) = print(io, "EventBatch(", length(b.events), " events)")

const SUBSCRIPTION_IDS = Threads.Atomic{Int}(0)

"""
    subscribe!(callback, state, type::EventType) -> Subscription

Call `callback(event)` for every event of `type`, in the order of SPEC §6
(within a propagation cycle: pages in topological order, by epoch, and
`PAGE_INVALIDATED → DELTA_APPLIED → PAGE_CHANGED` for one page and delta).
Callbacks run after the cycle that produced the event. A callback that throws
does not stop the others; the errors are thrown together as a
`CallbackError` after delivery. A callback may write to the state: its write
runs after the current delivery.

```julia
sub = subscribe!(state, PAGE_CHANGED) do ev
    println("page ", ev.page_id, " is now at epoch ", ev.epoch)
end
```
"""
function subscribe!(callback, st::MMSBState, type::EventType)
    sub = Subscription(st, Threads.atomic_add!(SUBSCRIPTION_IDS, 1) + 1, type, callback, true)
    with_state(st) do h
        push!(st.subscriptions, sub)
        update_event_recording!(st, h)
    end
    return sub
end

"""
    unsubscribe!(sub::Subscription)

Stop delivering events to `sub`. Unsubscribing twice is a no-op.
"""
function unsubscribe!(sub::Subscription)
    st = sub.state
    sub.active || return nothing
    lock(st.lock) do
        sub.active = false
        filter!(s -> s !== sub, st.subscriptions)
        isopen(st) && update_event_recording!(st, st.handle)
    end
    return nothing
end

# `reset!`, `mmsb_stop`: every subscription ends, also for a delivery in
# progress (it skips inactive ones).
function drop_subscriptions!(st::MMSBState)
    for sub in st.subscriptions
        (sub::Subscription).active = false
    end
    empty!(st.subscriptions)
end

subscribe!(callback, st::MMSBState, type) =
    throw(ArgumentError("event type must be an EventType ($(join(instances(EventType), ", "))), got $(repr(type))"))

function update_event_recording!(st::MMSBState, h)
    on = !isempty(st.subscriptions) || st.batch !== nothing
    if on != st.events_on
        events_enable(h, on)
        st.events_on = on
    end
end

"""
    collect_events!(state) -> EventBatch

Hold back every event from now on in a batch, until `flush_events!(state,
batch)` delivers them, in order. Throws `ArgumentError` if a batch is already open.
"""
function collect_events!(st::MMSBState)
    with_state(st) do h
        st.batch === nothing || throw(ArgumentError("an event batch is already being collected for this state"))
        st.batch = EventBatch(st, Event[])
        update_event_recording!(st, h)
        st.batch
    end
end

"""
    flush_events!(state, batch)

Close `batch` and deliver its events to the subscribers, in order.
"""
function flush_events!(st::MMSBState, batch::EventBatch)
    batch.state === st || throw(ArgumentError("this EventBatch belongs to another state"))
    lock(st.lock) do
        if st.batch === batch
            isopen(st) && drain_native_events!(st)
            st.batch = nothing
            isopen(st) && update_event_recording!(st, st.handle)
        end
        events = copy(batch.events)
        empty!(batch.events)
        deliver!(st, events)
    end
    return nothing
end

"""
    with_event_batch(f, state)

Run `f()` while collecting events, then deliver them in order (also when `f`
throws: then `f`'s exception is rethrown, and callback errors are logged as a
warning instead of replacing it).
"""
function with_event_batch(f, st::MMSBState)
    batch = collect_events!(st)
    r = try
        f()
    catch
        # deliver anyway, but `f`'s own exception is the one to throw
        try
            flush_events!(st, batch)
        catch e
            @warn "with_event_batch: event callbacks threw while delivering after an error in f" exception = e
        end
        rethrow()
    end
    flush_events!(st, batch)
    return r
end

# Move native event records into Julia events; into the open batch, or out.
function drain_native_events!(st::MMSBState, out::Vector{Event} = st.batch === nothing ? Event[] : st.batch.events)
    h = handle(st)
    buf = st.event_buf
    isempty(buf) && resize!(buf, 256)
    while true
        n = events_drain!(h, buf)
        for i in 1:n
            c = buf[i]
            push!(out, Event(EventType(c.kind), c.page_id, c.delta_id, c.epoch))
        end
        n < length(buf) && break
    end
    return out
end

# Called with st.lock held after every native call that may record events.
function after_native_events!(st::MMSBState)
    st.events_on || return nothing
    events = drain_native_events!(st)
    st.batch === nothing && deliver!(st, events)
    return nothing
end

function deliver!(st::MMSBState, events::Vector{Event})
    isempty(events) && isempty(st.deferred) && return nothing
    errors = Any[]
    outer = !st.delivering
    st.delivering = true
    # the subscribers as of now: a callback that (un)subscribes does not
    # disturb this delivery (an unsubscribed one is skipped: `active`)
    subs = isempty(events) ? st.subscriptions : copy(st.subscriptions)
    try
        for ev in events, sub in subs
            sub = sub::Subscription
            (sub.active && sub.type == ev.type) || continue
            try
                sub.callback(ev)
            catch e
                push!(errors, (sub, e))
            end
        end
    finally
        outer && (st.delivering = false)
    end
    if outer && !st.draining
        # Writes queued by callbacks run now, each as its own cycle, in order;
        # the deliveries they cause queue further writes here (a loop, not a
        # recursion: a long chain of callback writes needs no stack).
        st.draining = true
        try
            while !isempty(st.deferred) && isopen(st)
                q = popfirst!(st.deferred)
                try
                    run_queued(st, q)
                catch e
                    push!(errors, (nothing, e))
                end
            end
        finally
            st.draining = false
        end
    end
    isempty(errors) || throw(CallbackError(errors))
    return nothing
end
