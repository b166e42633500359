# A bounded, thread-safe pool of reset in-memory states.

const POOL_CAPACITY = 16
const POOL = MMSBState[]
const POOL_LOCK = ReentrantLock()

poolable(c::MMSBConfig) = c.tlog_path === nothing

"""
    get_pooled_state!(config = MMSBConfig()) -> MMSBState

A state from the pool (already reset: indistinguishable from a fresh one), or
a fresh one if none fits. Only in-memory configurations are pooled.
"""
function get_pooled_state!(config::MMSBConfig = MMSBConfig())
    if poolable(config)
        st = lock(POOL_LOCK) do
            i = findlast(s -> s.config == config, POOL)
            i === nothing ? nothing : (s = POOL[i]; deleteat!(POOL, i); s)
        end
        st === nothing || return st
    end
    st = mmsb_start(config)
    return st
end

"""
    return_to_pool!(state)

Reset the state and keep it for a later `get_pooled_state!`; if the pool is
full (or the state has a file log) it is stopped instead. The caller must not
use `state` afterwards.
"""
function return_to_pool!(st::MMSBState)
    isopen(st) || return nothing
    if poolable(st.config)
        reset!(st)
        kept = lock(POOL_LOCK) do
            any(s -> s === st, POOL) && return true     # returned twice: kept once
            length(POOL) < POOL_CAPACITY && (push!(POOL, st); true)
        end
        kept === true && return nothing
    end
    mmsb_stop(st)
    return nothing
end
