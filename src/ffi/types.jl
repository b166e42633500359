# C structs of include/mmsb.h, field for field (C layout, no implicit padding).

struct CConfig
    abi_version::UInt32
    strict_epochs::UInt8
    enable_gpu::UInt8
    durability::UInt8
    truncate::UInt8
    gpu_threshold::UInt64
    tlog_path::Ptr{UInt8}
    tlog_path_len::UInt64
    threads::UInt32
    reserved::UInt32
end

struct CRecoveryInfo
    records_recovered::UInt64
    bytes_truncated::UInt64
end

struct CPageInfo
    id::UInt64
    size::UInt64
    epoch::UInt64
    location::UInt8
    recompute::UInt8
    stale::UInt8
    r1::UInt8
    r2::UInt32
end

struct CWriteResult
    delta_id::UInt64
    epoch::UInt64
    pending_page::UInt64
    prop_status::Int32
    reserved::UInt32
end

struct CDeltaDesc
    id::UInt64
    page_id::UInt64
    base_epoch::UInt64
    timestamp::UInt64
    source::UInt8
    encoding::UInt8
    r1::UInt16
    r2::UInt32
    mask::Ptr{UInt8}
    mask_len::UInt64
    payload::Ptr{UInt8}
    payload_len::UInt64
end

struct CDeltaStamp
    id::UInt64
    base_epoch::UInt64
    timestamp::UInt64
end

struct CBatchResult
    applied::UInt64
    pending_page::UInt64
    prop_status::Int32
    reserved::UInt32
end

struct CEdge
    parent::UInt64
    child::UInt64
    kind::UInt64
end

struct CEvent
    kind::UInt64
    page_id::UInt64
    delta_id::UInt64
    epoch::UInt64
end

struct CPropStep
    status::Int32
    reserved::UInt32
    page_id::UInt64
end

struct CStats
    pages::UInt64
    page_bytes::UInt64
    deltas_applied::UInt64
    bytes_logged::UInt64
    log_records::UInt64
    recomputes_run::UInt64
    recomputes_skipped::UInt64
    recomputes_cutoff::UInt64
    propagation_cycles::UInt64
    propagation_ns::UInt64
    apply_samples::UInt64
    apply_ns::UInt64
end

struct CLogRecord
    seq::UInt64
    kind::UInt64
    page_id::UInt64
    aux::UInt64
    delta_id::UInt64
    base_epoch::UInt64
    timestamp::UInt64
    source::UInt64
    encoding::UInt64
    mask_len::UInt64
    payload_len::UInt64
end

const LOC_CPU = 0x00
const LOC_GPU = 0x01
const ENC_DENSE = 0x00
const ENC_SPARSE = 0x01
const WRITE_PROPAGATE = UInt32(1)
const WRITE_PARALLEL = UInt32(2)
const WRITE_DEFER_SYNC = UInt32(4)
const WRITE_SHARED = UInt32(8)
const PROP_NEED_LOCK = Int32(2)
const RECOMPUTE_NONE = 0x00
const RECOMPUTE_PASSTHROUGH = 0x01
const RECOMPUTE_CLOSURE = 0x02
const ENQUEUE_CHILDREN = 0x00
const ENQUEUE_SELF = 0x01
