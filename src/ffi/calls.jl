# Thin wrappers, one per export of include/mmsb.h. Each checks the status and
# throws the mapped exception; nothing else in the package says `ccall`.

const Handle = Ptr{Cvoid}

abi_version() = ccall((:mmsb_abi_version, libmmsb), UInt32, ())
live_states() = ccall((:mmsb_live_states, libmmsb), Int64, ())
gpu_available_native() = ccall((:mmsb_gpu_available, libmmsb), Int32, ()) == 1

function state_new(cfg::CConfig, path)
    out = Ref{Handle}(C_NULL)
    info = Ref{CRecoveryInfo}()
    GC.@preserve path begin
        check(ccall((:mmsb_state_new, libmmsb), Int32, (Ref{CConfig}, Ref{Handle}, Ref{CRecoveryInfo}), cfg, out, info))
    end
    return out[], info[]
end
state_free(h::Handle) = ccall((:mmsb_state_free, libmmsb), Cvoid, (Handle,), h)
state_close(h::Handle) = check(ccall((:mmsb_state_close, libmmsb), Int32, (Handle,), h))
state_hold(h::Handle, on::Bool) = check(ccall((:mmsb_state_hold, libmmsb), Int32, (Handle, UInt8), h, on))
state_reset(h::Handle) = check(ccall((:mmsb_state_reset, libmmsb), Int32, (Handle,), h))

function next_ids(h::Handle)
    p = Ref{UInt64}(0); d = Ref{UInt64}(0)
    check(ccall((:mmsb_next_ids, libmmsb), Int32, (Handle, Ref{UInt64}, Ref{UInt64}), h, p, d))
    return p[], d[]
end

function native_stats(h::Handle)
    out = Ref{CStats}()
    check(ccall((:mmsb_stats, libmmsb), Int32, (Handle, Ref{CStats}), h, out))
    return out[]
end

# ---- pages ------------------------------------------------------------------
function page_create(h::Handle, size::Integer, location::UInt8)
    out = Ref{CPageInfo}()
    check(ccall((:mmsb_page_create, libmmsb), Int32, (Handle, UInt64, UInt8, Ref{CPageInfo}), h, size, location, out))
    return out[]
end
page_delete(h::Handle, id::UInt64, force::Bool) =
    check(ccall((:mmsb_page_delete, libmmsb), Int32, (Handle, UInt64, UInt8), h, id, force))
function page_info(h::Handle, id::UInt64)
    out = Ref{CPageInfo}()
    check(ccall((:mmsb_page_info, libmmsb), Int32, (Handle, UInt64, Ref{CPageInfo}), h, id, out))
    return out[]
end
"Like `page_info` but returns `nothing` for a missing page instead of throwing."
function page_info_or_nothing(h::Handle, id::UInt64)
    out = Ref{CPageInfo}()
    rc = ccall((:mmsb_page_info, libmmsb), Int32, (Handle, UInt64, Ref{CPageInfo}), h, id, out)
    rc == -4 && return nothing
    check(rc)
    return out[]
end
page_read(h::Handle, id::UInt64, dst::Union{Vector{UInt8},Base.FastContiguousSubArray{UInt8}}) =
    check(ccall((:mmsb_page_read, libmmsb), Int32, (Handle, UInt64, Ptr{UInt8}, UInt64), h, id, dst, length(dst)))

@inline function page_write(h::Handle, id::UInt64, bytes, flags::UInt32)
    out = Ref{CWriteResult}()
    rc = GC.@preserve bytes ccall((:mmsb_page_write, libmmsb), Int32,
                                  (Handle, UInt64, Ptr{UInt8}, UInt64, UInt32, Ref{CWriteResult}),
                                  h, id, pointer(bytes), length(bytes), flags, out)
    check(rc)
    return out[]
end

# ---- deltas -------------------------------------------------------------------
function delta_stamp(h::Handle, page_id::UInt64)
    out = Ref{CDeltaStamp}()
    check(ccall((:mmsb_delta_stamp, libmmsb), Int32, (Handle, UInt64, Ref{CDeltaStamp}), h, page_id, out))
    return out[]
end
function delta_route(h::Handle, d::CDeltaDesc, flags::UInt32)
    out = Ref{CWriteResult}()
    check(ccall((:mmsb_delta_route, libmmsb), Int32, (Handle, Ref{CDeltaDesc}, UInt32, Ref{CWriteResult}), h, d, flags, out))
    return out[]
end
function delta_route_batch(h::Handle, ds::Vector{CDeltaDesc}, flags::UInt32)
    out = Ref{CBatchResult}()
    check(ccall((:mmsb_delta_route_batch, libmmsb), Int32, (Handle, Ptr{CDeltaDesc}, UInt64, UInt32, Ref{CBatchResult}),
                h, ds, length(ds), flags, out))
    return out[]
end

# ---- graph ----------------------------------------------------------------------
edge_add(h::Handle, parent::UInt64, child::UInt64, kind::UInt8) =
    check(ccall((:mmsb_edge_add, libmmsb), Int32, (Handle, UInt64, UInt64, UInt8), h, parent, child, kind))
edge_remove(h::Handle, parent::UInt64, child::UInt64) =
    check(ccall((:mmsb_edge_remove, libmmsb), Int32, (Handle, UInt64, UInt64), h, parent, child))

# List calls: ask for the count, size the buffer, ask again.
function fetch_list(f, ::Type{T}, cap::Integer = 16) where {T}
    buf = Vector{T}(undef, cap)
    n = Ref{UInt64}(0)
    while true
        rc = f(buf, n)
        if rc == ERR_BUFFER_TOO_SMALL
            resize!(buf, n[])
            continue
        end
        check(rc)
        return resize!(buf, n[])
    end
end

page_ids(h::Handle) = fetch_list(UInt64, 1024) do buf, n
    ccall((:mmsb_page_ids, libmmsb), Int32, (Handle, Ptr{UInt64}, UInt64, Ref{UInt64}), h, buf, length(buf), n)
end
page_children(h::Handle, id::UInt64) = fetch_list(UInt64) do buf, n
    ccall((:mmsb_page_children, libmmsb), Int32, (Handle, UInt64, Ptr{UInt64}, UInt64, Ref{UInt64}), h, id, buf, length(buf), n)
end
page_parents(h::Handle, id::UInt64) = fetch_list(UInt64) do buf, n
    ccall((:mmsb_page_parents, libmmsb), Int32, (Handle, UInt64, Ptr{UInt64}, UInt64, Ref{UInt64}), h, id, buf, length(buf), n)
end
graph_topo(h::Handle) = fetch_list(UInt64, 1024) do buf, n
    ccall((:mmsb_graph_topo, libmmsb), Int32, (Handle, Ptr{UInt64}, UInt64, Ref{UInt64}), h, buf, length(buf), n)
end
graph_descendants(h::Handle, id::UInt64) = fetch_list(UInt64, 1024) do buf, n
    ccall((:mmsb_graph_descendants, libmmsb), Int32, (Handle, UInt64, Ptr{UInt64}, UInt64, Ref{UInt64}), h, id, buf, length(buf), n)
end
graph_edges(h::Handle) = fetch_list(CEdge, 64) do buf, n
    ccall((:mmsb_graph_edges, libmmsb), Int32, (Handle, Ptr{CEdge}, UInt64, Ref{UInt64}), h, buf, length(buf), n)
end

# ---- recompute and propagation -------------------------------------------------------
recompute_set(h::Handle, child::UInt64, kind::UInt8, parents::Vector{UInt64}) =
    check(ccall((:mmsb_recompute_set, libmmsb), Int32, (Handle, UInt64, UInt8, Ptr{UInt64}, UInt64),
                h, child, kind, parents, length(parents)))

function signature(h::Handle, id::UInt64)
    ids = Vector{UInt64}(undef, 8); eps = Vector{UInt64}(undef, 8)
    n = Ref{UInt64}(0)
    while true
        rc = ccall((:mmsb_signature, libmmsb), Int32, (Handle, UInt64, Ptr{UInt64}, Ptr{UInt64}, UInt64, Ref{UInt64}),
                   h, id, ids, eps, length(ids), n)
        if rc == ERR_BUFFER_TOO_SMALL
            resize!(ids, n[]); resize!(eps, n[])
            continue
        end
        check(rc)
        return resize!(ids, n[]), resize!(eps, n[])
    end
end

prop_enqueue(h::Handle, ids::Vector{UInt64}, mode::UInt8) =
    check(ccall((:mmsb_prop_enqueue, libmmsb), Int32, (Handle, Ptr{UInt64}, UInt64, UInt8), h, ids, length(ids), mode))
function prop_run(h::Handle)
    out = Ref{CPropStep}()
    check(ccall((:mmsb_prop_run, libmmsb), Int32, (Handle, Ref{CPropStep}), h, out))
    return out[]
end
function prop_submit(h::Handle, id::UInt64, bytes::Vector{UInt8})
    out = Ref{UInt64}(0)
    check(ccall((:mmsb_prop_submit, libmmsb), Int32, (Handle, UInt64, Ptr{UInt8}, UInt64, Ref{UInt64}),
                h, id, bytes, length(bytes), out))
    return out[]
end
prop_fail(h::Handle, id::UInt64) = check(ccall((:mmsb_prop_fail, libmmsb), Int32, (Handle, UInt64), h, id))

# ---- events ----------------------------------------------------------------------------
events_enable(h::Handle, on::Bool) = check(ccall((:mmsb_events_enable, libmmsb), Int32, (Handle, UInt8), h, on))
function events_drain!(h::Handle, buf::Vector{CEvent})
    n = Ref{UInt64}(0)
    check(ccall((:mmsb_events_drain, libmmsb), Int32, (Handle, Ptr{CEvent}, UInt64, Ref{UInt64}), h, buf, length(buf), n))
    return Int(n[])
end

# ---- log, checkpoint, replay ----------------------------------------------------------
function tlog_len(h::Handle)
    a = Ref{UInt64}(0); b = Ref{UInt64}(0)
    check(ccall((:mmsb_tlog_len, libmmsb), Int32, (Handle, Ref{UInt64}, Ref{UInt64}), h, a, b))
    return a[], b[]
end
tlog_sync(h::Handle, seq::UInt64) = check(ccall((:mmsb_tlog_sync, libmmsb), Int32, (Handle, UInt64), h, seq))

function tlog_entry(h::Handle, seq::UInt64, buf::Vector{UInt8})
    hdr = Ref{CLogRecord}()
    n = Ref{UInt64}(0)
    while true
        rc = ccall((:mmsb_tlog_entry, libmmsb), Int32, (Handle, UInt64, Ref{CLogRecord}, Ptr{UInt8}, UInt64, Ref{UInt64}),
                   h, seq, hdr, buf, length(buf), n)
        if rc == ERR_BUFFER_TOO_SMALL
            resize!(buf, n[])
            continue
        end
        check(rc)
        return hdr[], copy(resize!(buf, n[]))
    end
end
checkpoint_write(h::Handle, path::String) =
    check(ccall((:mmsb_checkpoint_write, libmmsb), Int32, (Handle, Ptr{UInt8}, UInt64), h, path, sizeof(path)))
checkpoint_load(h::Handle, path::String) =
    check(ccall((:mmsb_checkpoint_load, libmmsb), Int32, (Handle, Ptr{UInt8}, UInt64), h, path, sizeof(path)))
replay_native(h::Handle, upto::UInt64) = check(ccall((:mmsb_replay, libmmsb), Int32, (Handle, UInt64), h, upto))
function replay_to_epoch_native(h::Handle, e::UInt64)
    out = Ref{Handle}(C_NULL)
    check(ccall((:mmsb_replay_to_epoch, libmmsb), Int32, (Handle, UInt64, Ref{Handle}), h, e, out))
    return out[]
end
