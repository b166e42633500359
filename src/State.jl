# MMSBConfig, MMSBState (the handle wrapper), mmsb_start / mmsb_stop, reset!.

"""
    MMSBConfig(; strict_epochs=false, enable_gpu=true, gpu_threshold=1<<20,
               tlog_path=nothing, durability=nothing, truncate=false,
               parallel=false, threads=0)

Configuration of a state.

- `strict_epochs`: applying a delta whose base epoch is older than its page's
  epoch raises `StaleDeltaError` instead of "last writer wins".
- `enable_gpu`, `gpu_threshold`: `:gpu` pages live in device memory when
  enabled and a device exists; requests below `gpu_threshold` bytes are placed
  on the CPU.
- `tlog_path`: `nothing` keeps the transaction log in memory; a path makes it a
  file, recovered when the state starts (unless `truncate=true`).
- `durability`: `:none` (memory log; the default without a path),
  `:buffered` (the default with a path) or `:fsync` (a write returns after its
  record is on disk).
- `parallel`, `threads`: default for `batch_route_deltas!`, and its worker
  thread count (0: one per core).

Throws `ArgumentError` for inconsistent values.

```julia
cfg = MMSBConfig(tlog_path = "state.tlog", durability = :fsync)
```
"""
struct MMSBConfig
    strict_epochs::Bool
    enable_gpu::Bool
    gpu_threshold::Int
    tlog_path::Union{Nothing,String}
    durability::Symbol
    truncate::Bool
    parallel::Bool
    threads::Int
end

function MMSBConfig(; strict_epochs::Bool = false, enable_gpu::Bool = true,
                    gpu_threshold::Integer = 1 << 20, tlog_path = nothing,
                    durability = nothing, truncate::Bool = false,
                    parallel::Bool = false, threads::Integer = 0)
    gpu_threshold >= 0 || throw(ArgumentError("gpu_threshold must be ≥ 0, got $gpu_threshold"))
    threads >= 0 || throw(ArgumentError("threads must be ≥ 0, got $threads"))
    path = tlog_path === nothing ? nothing : String(tlog_path)
    path !== nothing && isempty(path) && throw(ArgumentError("tlog_path must not be empty (use nothing for an in-memory log)"))
    d = durability === nothing ? (path === nothing ? :none : :buffered) : Symbol(durability)
    d in (:none, :buffered, :fsync) ||
        throw(ArgumentError("durability must be :none, :buffered or :fsync, got :$d"))
    path === nothing && d !== :none &&
        throw(ArgumentError("durability :$d needs a tlog_path (the in-memory log has durability :none)"))
    path !== nothing && d === :none &&
        throw(ArgumentError("a file log (tlog_path=$(repr(path))) needs durability :buffered or :fsync"))
    return MMSBConfig(strict_epochs, enable_gpu, Int(gpu_threshold), path, d, truncate, parallel, Int(threads))
end

durability_code(d::Symbol) = d === :none ? 0x00 : d === :buffered ? 0x01 : 0x02

"""
    MMSBState

A running MMSB state: pages, graph, recomputes, subscriptions and the
transaction log, backed by a native handle. Create with [`mmsb_start`](@ref),
free with [`mmsb_stop`](@ref) (or let the GC do it). Safe to use from several
threads.
"""
mutable struct MMSBState
    handle::Ptr{Cvoid}
    config::MMSBConfig
    lock::ReentrantLock
    recomputes::Dict{UInt64,Any}          # page id => Julia recompute function
    subscriptions::Vector{Any}            # Vector{Subscription}, see EventSystem.jl
    batch::Any                            # the open EventBatch, or nothing
    events_on::Bool                       # native event recording enabled
    delivering::Bool                      # callbacks are running: writes are queued
    draining::Bool                        # the outermost delivery is running the queued writes
    recompute_task::Any                   # the task running a recompute function (its writes are refused), or nothing
    deferred::Vector{Any}                 # writes queued by callbacks (Queued* values)
    event_buf::Vector{CEvent}             # drain buffer, sized on first use
    recovery::NamedTuple{(:records, :bytes_truncated),Tuple{Int,Int}}
    syncing::Threads.Atomic{Int}          # writers waiting for an fsync outside the lock
    closed::Bool                          # mmsb_stop closed the native state (the handle is freed by the GC)
    function MMSBState(handle::Ptr{Cvoid}, config::MMSBConfig, info::CRecoveryInfo)
        st = new(handle, config, ReentrantLock(), Dict{UInt64,Any}(), Any[], nothing,
                 false, false, false, nothing, Any[], CEvent[],
                 (records = Int(info.records_recovered), bytes_truncated = Int(info.bytes_truncated)),
                 Threads.Atomic{Int}(0), false)
        finalizer(free_handle!, st)
        return st
    end
end

# The finalizer. `mmsb_stop` only closes the native state (frees its
# contents): a write that runs without the state's lock (`update_page`) may
# still hold the handle, and a closed native state answers it with
# StateClosedError. The handle itself goes when nothing can reach `st`.
function free_handle!(st::MMSBState)
    h = st.handle
    if h != C_NULL
        st.handle = C_NULL
        st.closed = true
        state_free(h)
    end
    return nothing
end

"""
    isopen(state::MMSBState) -> Bool

Whether the state has not been stopped.
"""
Base.isopen(st::MMSBState) = !st.closed

@noinline throw_closed() = throw(StateClosedError("the MMSB state was stopped (mmsb_stop); start a new one with mmsb_start"))

"The native handle of an open state; throws `StateClosedError` after `mmsb_stop`."
# Group commit under `:fsync`: writes are sent with WRITE_DEFER_SYNC while the
# state's lock is held; `last_seq_if_fsync` (still under the lock) names the
# last record, and `locked_write` waits for it once the lock is released, so
# concurrent writers share one sync.
@inline write_flags(st::MMSBState, propagate::Bool) =
    (propagate ? WRITE_PROPAGATE : UInt32(0)) | (st.config.durability === :fsync ? WRITE_DEFER_SYNC : UInt32(0))
@inline last_seq_if_fsync(st::MMSBState, h) = st.config.durability === :fsync ? tlog_len(h)[2] - 1 : UInt64(0)

# Writes made by event callbacks are queued (SPEC §6) and run after the
# current delivery; these say which write and copy what must not change.
struct QueuedUpdate
    id::UInt64
    data::Vector{UInt8}
end
struct QueuedRoute
    delta::Any        # Delta
    propagate::Bool
end
struct QueuedBatch
    deltas::Any       # AbstractVector{Delta}
    propagate::Bool
    parallel::Bool
end
queued_copy(q::QueuedUpdate) = QueuedUpdate(q.id, copy(q.data))
queued_copy(q::QueuedRoute) = q
queued_copy(q::QueuedBatch) = QueuedBatch(copy(q.deltas), q.propagate, q.parallel)

# The shared shape of every write: under the state's lock run `native(handle)`
# (a native write returning a result with `prop_status` and `pending_page`),
# drive its propagation cycle and deliver its events; under `:fsync` wait for
# durability after unlocking. From inside an event callback the write is
# queued as `queued` instead and `nothing` is returned.
@inline function locked_write(native::F, queued, st::MMSBState) where {F}
    seq = UInt64(0)
    h = C_NULL
    lock(st.lock)
    try
        if st.delivering
            handle(st)
            push!(st.deferred, queued_copy(queued))
            return nothing
        end
        h = handle(st)
        r = native(h)
        seq = last_seq_if_fsync(st, h)
        seq > 0 && Threads.atomic_add!(st.syncing, 1)   # mmsb_stop waits for it
        finish_write!(st, r.prop_status, r.pending_page)
        return r
    finally
        # the last record once the cycle is driven (closure results and the
        # cycle's end record come after the write's own), also when it threw
        seq > 0 && (seq = last_seq_if_fsync(st, h))
        unlock(st.lock)
        if seq > 0   # also when a recompute error is on its way out
            try
                tlog_sync(h, seq)
            finally
                Threads.atomic_sub!(st.syncing, 1)
            end
        end
    end
end

# Runs `f(handle)` with the state's lock held. `mmsb_stop` takes the same lock
# (and waits for writers still syncing), so no call can run on a freed handle.
@inline function with_state(f::F, st::MMSBState) where {F}
    lock(st.lock)
    try
        return f(handle(st))
    finally
        unlock(st.lock)
    end
end

# Like `with_state`, and `update_page` calls on other threads wait as well:
# the native side refuses their lock-free writes while held, and they retry
# under the lock. For reads that take several native calls and must see one
# state (`canonical_snapshot`, the checkpoint of `mmsb_stop`).
function with_state_held(f::F, st::MMSBState) where {F}
    with_state(st) do h
        state_hold(h, true)
        try
            return f(h)
        finally
            state_hold(h, false)
        end
    end
end

# Throws if the calling task is inside a recompute function of `st` (recomputes must not write).
@inline function check_not_recomputing(st::MMSBState, what)
    st.recompute_task === current_task() &&
        throw(ArgumentError("recompute functions must not write to the state ($what)"))
    return nothing
end

@inline function handle(st::MMSBState)
    st.closed && throw_closed()
    return st.handle
end

function native_config(cfg::MMSBConfig)
    path = cfg.tlog_path
    ptr = path === nothing ? Ptr{UInt8}(C_NULL) : pointer(path)
    len = path === nothing ? UInt64(0) : UInt64(sizeof(path))
    return CConfig(ABI_VERSION, cfg.strict_epochs, cfg.enable_gpu, durability_code(cfg.durability),
                   cfg.truncate, UInt64(cfg.gpu_threshold), ptr, len, UInt32(cfg.threads), 0)
end

"""
    mmsb_start(; config = MMSBConfig()) -> MMSBState
    mmsb_start(config::MMSBConfig) -> MMSBState

Start a state. With `config.tlog_path` naming an existing log, the state it
records is recovered (replayed) before this returns. A torn last record is cut
off, and so is a propagation cycle a crash left unfinished together with the
write that started it (neither was acknowledged), so that no derived page
lags its parents; both are reported with a warning (see `state.recovery`).

Throws `TLogCorruptError` (corruption before the tail), `MMSBIOError`,
`ArgumentError`.

```julia
state = mmsb_start()
page = create_page(state; size = 1024)
mmsb_stop(state)
```
"""
mmsb_start(; config::MMSBConfig = MMSBConfig()) = mmsb_start(config)
function mmsb_start(config::MMSBConfig)
    path = config.tlog_path
    h, info = GC.@preserve path state_new(native_config(config), path)
    st = MMSBState(h, config, info)
    if info.bytes_truncated > 0
        @warn "MMSB: unfinished records at the end of the log (a torn record, or a write whose propagation did not finish) were cut off during recovery" path = config.tlog_path bytes = Int(info.bytes_truncated) records_recovered = Int(info.records_recovered)
    end
    return st
end

"""
    mmsb_stop(state; checkpoint_path = nothing)

Free the state's native resources (pages, log buffers, device memory), after
writing a checkpoint to `checkpoint_path` if one is given. Stopping twice is a
no-op; any later use raises `StateClosedError`.
"""
function mmsb_stop(st::MMSBState; checkpoint_path = nothing)
    isopen(st) || return nothing
    lock(st.lock) do
        isopen(st) || return
        # Lock-free writes are refused from the checkpoint on (they wait for
        # the lock and then find the state closed): none is acknowledged and
        # then missing from the checkpoint. A failed checkpoint keeps the state open.
        if checkpoint_path !== nothing
            state_hold(st.handle, true)
            try
                checkpoint_log!(st, checkpoint_path)
            catch
                state_hold(st.handle, false)
                rethrow()
            end
        end
        while st.syncing[] > 0   # writers waiting for their fsync still use the handle
            yield()
        end
        try
            state_close(st.handle)   # waits for writes already running without the lock
        finally                      # closed even if flushing a file log failed
            st.closed = true
            empty!(st.recomputes)
            drop_subscriptions!(st)
            st.batch = nothing
        end
    end
    return nothing
end

"""
    reset!(state) -> state

Empty the state: pages, graph, recomputes, signatures, stale marks, event
subscriptions and buffers, the log (a file log is truncated to its header),
and restart page and delta ids at 1. See `docs/state_lifecycle.md`.
"""
function reset!(st::MMSBState)
    check_not_recomputing(st, "reset!")
    lock(st.lock) do
        state_reset(handle(st))
        empty!(st.recomputes)
        drop_subscriptions!(st)
        empty!(st.deferred)
        st.batch === nothing || empty!(st.batch.events)   # held events of the old state go too
        st.batch = nothing
        st.events_on = false
        st.delivering = false
        st.recompute_task = nothing
    end
    return st
end

"""
    live_native_states() -> Int

Number of native states created and not yet freed in this process (by
`mmsb_stop` or the GC). Useful to check for leaks.
"""
live_native_states() = Int(live_states())

"""
    gpu_available() -> Bool

Whether a CUDA device can be used for `:gpu` pages. Never throws, also on a
machine with no CUDA driver.
"""
gpu_available() = gpu_available_native()
