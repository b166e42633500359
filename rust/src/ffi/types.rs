//! `#[repr(C)]` mirrors of the structs in `include/mmsb.h`.

use crate::state::{BatchOut, Event, PageInfo, Stats, WriteOut};

/// Opaque handle: a boxed [`crate::state::State`].
pub type MmsbState = crate::state::State;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmsbConfig {
    pub abi_version: u32,
    pub strict_epochs: u8,
    pub enable_gpu: u8,
    pub durability: u8,
    pub truncate: u8,
    pub gpu_threshold: u64,
    pub tlog_path: *const u8,
    pub tlog_path_len: u64,
    pub threads: u32,
    pub reserved: u32,
}

impl Default for MmsbConfig {
    /// An in-memory state with the documented defaults (GPU on, 1 MiB threshold).
    fn default() -> Self {
        MmsbConfig {
            abi_version: crate::ffi::MMSB_ABI_VERSION,
            strict_epochs: 0,
            enable_gpu: 1,
            durability: 0,
            truncate: 0,
            gpu_threshold: 1 << 20,
            tlog_path: std::ptr::null(),
            tlog_path_len: 0,
            threads: 0,
            reserved: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmsbRecoveryInfo {
    pub records_recovered: u64,
    pub bytes_truncated: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbPageInfo {
    pub id: u64,
    pub size: u64,
    pub epoch: u64,
    pub location: u8,
    pub recompute: u8,
    pub stale: u8,
    pub reserved: [u8; 5],
}

impl From<PageInfo> for MmsbPageInfo {
    fn from(p: PageInfo) -> Self {
        MmsbPageInfo {
            id: p.id,
            size: p.size,
            epoch: p.epoch,
            location: p.location,
            recompute: p.recompute,
            stale: p.stale as u8,
            reserved: [0; 5],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbWriteResult {
    pub delta_id: u64,
    pub epoch: u64,
    pub pending_page: u64,
    pub prop_status: i32,
    pub reserved: u32,
}

impl From<WriteOut> for MmsbWriteResult {
    fn from(w: WriteOut) -> Self {
        MmsbWriteResult { delta_id: w.delta_id, epoch: w.epoch, pending_page: w.pending_page, prop_status: w.prop_status, reserved: 0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmsbDeltaDesc {
    pub id: u64,
    pub page_id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
    pub source: u8,
    pub encoding: u8,
    pub reserved: [u8; 6],
    pub mask: *const u8,
    pub mask_len: u64,
    pub payload: *const u8,
    pub payload_len: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbDeltaStamp {
    pub id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbBatchResult {
    pub applied: u64,
    pub pending_page: u64,
    pub prop_status: i32,
    pub reserved: u32,
}

impl From<BatchOut> for MmsbBatchResult {
    fn from(b: BatchOut) -> Self {
        MmsbBatchResult { applied: b.applied, pending_page: b.pending_page, prop_status: b.prop_status, reserved: 0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbEdge {
    pub parent: u64,
    pub child: u64,
    pub kind: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbEvent {
    pub kind: u64,
    pub page_id: u64,
    pub delta_id: u64,
    pub epoch: u64,
}

impl From<Event> for MmsbEvent {
    fn from(e: Event) -> Self {
        MmsbEvent { kind: e.kind, page_id: e.page_id, delta_id: e.delta_id, epoch: e.epoch }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbPropStep {
    pub status: i32,
    pub reserved: u32,
    pub page_id: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbStats {
    pub pages: u64,
    pub page_bytes: u64,
    pub deltas_applied: u64,
    pub bytes_logged: u64,
    pub log_records: u64,
    pub recomputes_run: u64,
    pub recomputes_skipped: u64,
    pub recomputes_cutoff: u64,
    pub propagation_cycles: u64,
    pub propagation_ns: u64,
    pub apply_samples: u64,
    pub apply_ns: u64,
}

impl From<Stats> for MmsbStats {
    fn from(s: Stats) -> Self {
        MmsbStats {
            pages: s.pages,
            page_bytes: s.page_bytes,
            deltas_applied: s.deltas_applied,
            bytes_logged: s.bytes_logged,
            log_records: s.log_records,
            recomputes_run: s.recomputes_run,
            recomputes_skipped: s.recomputes_skipped,
            recomputes_cutoff: s.recomputes_cutoff,
            propagation_cycles: s.propagation_cycles,
            propagation_ns: s.propagation_ns,
            apply_samples: s.apply_samples,
            apply_ns: s.apply_ns,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmsbLogRecord {
    pub seq: u64,
    pub kind: u64,
    pub page_id: u64,
    pub aux: u64,
    pub delta_id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
    pub source: u64,
    pub encoding: u64,
    pub mask_len: u64,
    pub payload_len: u64,
}

// Layout checks against include/mmsb.h (64-bit targets).
const _: () = assert!(std::mem::size_of::<MmsbConfig>() == 40);
const _: () = assert!(std::mem::size_of::<MmsbPageInfo>() == 32);
const _: () = assert!(std::mem::size_of::<MmsbWriteResult>() == 32);
const _: () = assert!(std::mem::size_of::<MmsbDeltaDesc>() == 72);
const _: () = assert!(std::mem::size_of::<MmsbBatchResult>() == 24);
const _: () = assert!(std::mem::size_of::<MmsbPropStep>() == 16);
const _: () = assert!(std::mem::size_of::<MmsbStats>() == 96);
const _: () = assert!(std::mem::size_of::<MmsbLogRecord>() == 88);
