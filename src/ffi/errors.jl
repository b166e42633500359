# Status codes of include/mmsb.h -> typed Julia exceptions, with the native
# message read right after the failed call, before anything can yield.

const ERR_BUFFER_TOO_SMALL = Int32(-13)

function last_error_message()
    buf = Vector{UInt8}(undef, 512)
    n = ccall((:mmsb_last_error_message, libmmsb), UInt64, (Ptr{UInt8}, UInt64), buf, length(buf))
    if n > length(buf)
        resize!(buf, n)
        n = ccall((:mmsb_last_error_message, libmmsb), UInt64, (Ptr{UInt8}, UInt64), buf, length(buf))
    end
    return String(resize!(buf, min(n, length(buf))))
end

function status_exception(rc::Integer, msg::String)
    rc == -1 && return ArgumentError(msg)
    rc == -2 && return ArgumentError(msg)
    rc == -3 && return DimensionMismatch(msg)
    rc == -4 && return PageNotFoundError(msg)
    rc == -5 && return CycleError(msg)
    rc == -6 && return ArgumentError(msg)
    rc == -7 && return StaleDeltaError(msg)
    rc == -8 && return TLogCorruptError(msg)
    rc == -9 && return CheckpointError(msg)
    rc == -10 && return GPUUnavailableError(msg)
    rc == -11 && return MMSBIOError(msg)
    rc == -12 && return ArgumentError(msg)
    rc == -13 && return ArgumentError(msg)
    rc == -14 && return StateClosedError("the MMSB state was stopped (mmsb_stop); start a new one with mmsb_start")
    return MMSBInternalError(string("status ", rc, ": ", msg))
end

@noinline throw_status(rc::Integer) = throw(status_exception(rc, last_error_message()))

@inline check(rc::Int32) = (rc == 0 ? nothing : throw_status(rc))
