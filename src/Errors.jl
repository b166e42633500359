# The exception hierarchy (SPEC §12). Every message names the page, file or
# value at fault; messages from the native library are passed through.

"""
    MMSBError <: Exception

Abstract supertype of every error MMSB throws (besides `ArgumentError` and
`DimensionMismatch` for wrong argument values and sizes).
"""
abstract type MMSBError <: Exception end

for T in (:PageNotFoundError, :CycleError, :StaleDeltaError, :TLogCorruptError,
          :CheckpointError, :GPUUnavailableError, :StateClosedError, :MMSBIOError,
          :MMSBInternalError)
    @eval begin
        struct $T <: MMSBError
            msg::String
        end
        Base.showerror(io::IO, e::$T) = print(io, $(string(T)), ": ", e.msg)
    end
end

@doc "`PageNotFoundError(msg)`: no page with the given id exists in the state." PageNotFoundError
@doc "`CycleError(msg)`: the dependency edge would be a self-loop or close a cycle; the graph is unchanged." CycleError
@doc "`StaleDeltaError(msg)`: with `strict_epochs=true`, a delta's base epoch is older than its page's epoch." StaleDeltaError
@doc "`TLogCorruptError(msg)`: a transaction log is corrupt before its tail; the message names the file and offset." TLogCorruptError
@doc "`CheckpointError(msg)`: a checkpoint file is missing, truncated, corrupt or of another format version." CheckpointError
@doc "`GPUUnavailableError(msg)`: a GPU page was requested but GPUs are disabled or no CUDA device exists." GPUUnavailableError
@doc "`StateClosedError(msg)`: the state was stopped with `mmsb_stop`." StateClosedError
@doc "`MMSBIOError(msg)`: the operating system refused a log or checkpoint file operation." MMSBIOError
@doc "`MMSBInternalError(msg)`: a bug inside the native library was caught; the state is unchanged." MMSBInternalError

"""
    UndeclaredDependencyError(page_id, requested)

A recompute function for `page_id` read page `requested`, which is not one of
the parents it was registered with.
"""
struct UndeclaredDependencyError <: MMSBError
    page_id::UInt64
    requested::UInt64
end
Base.showerror(io::IO, e::UndeclaredDependencyError) =
    print(io, "UndeclaredDependencyError: the recompute of page ", e.page_id,
          " read page ", e.requested, ", which is not among its declared parents")

"""
    RecomputeError(page_id, cause)

The recompute function of `page_id` threw `cause` (or returned bytes of the
wrong type or size). Deltas applied before it stay applied; it and the pages
not yet recomputed in that cycle are stale and will be retried.
"""
struct RecomputeError <: MMSBError
    page_id::UInt64
    cause::Any
end
function Base.showerror(io::IO, e::RecomputeError)
    print(io, "RecomputeError: the recompute of page ", e.page_id, " failed: ")
    showerror(io, e.cause)
end

"""
    CallbackError(errors)

One or more event callbacks threw. Every event was still delivered to every
other callback; `errors` holds `(subscription, exception)` pairs in delivery order
(`subscription === nothing` for a failed write that a callback queued).
"""
struct CallbackError <: MMSBError
    errors::Vector{Any}
end
function Base.showerror(io::IO, e::CallbackError)
    print(io, "CallbackError: ", length(e.errors), " event callback(s) threw")
    for (sub, err) in e.errors
        if sub === nothing
            print(io, "\n  a write queued by a callback: ")
        else
            print(io, "\n  subscription ", sub.id, " (", sub.type, "): ")
        end
        showerror(io, err)
    end
end
