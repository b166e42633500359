//! The exported functions, in the order of `include/mmsb.h`. Each is one
//! [`boundary`] call: check pointers, then one locked call into the state.
//!
//! # Safety (all exports)
//! Pointers are NULL or valid for the lengths/counts passed with them, for
//! the duration of the call; handles are NULL or live (`mmsb_state_new`,
//! not yet freed). Rust keeps no caller memory after a call returns.

#![allow(clippy::missing_safety_doc)]

use super::types::*;
use super::*;
use crate::error::{Error, ErrorKind};
use crate::state::{Config, DeltaIn, State, WRITE_PROPAGATE, WRITE_SHARED};
use crate::tlog::Durability;

// ---- library -----------------------------------------------------------------

#[no_mangle]
pub extern "C" fn mmsb_abi_version() -> u32 {
    MMSB_ABI_VERSION
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_last_error_message(buf: *mut u8, cap: u64) -> u64 {
    copy_last_error(buf, cap)
}

#[no_mangle]
pub extern "C" fn mmsb_live_states() -> i64 {
    crate::state::live_states()
}

#[no_mangle]
pub extern "C" fn mmsb_gpu_available() -> i32 {
    std::panic::catch_unwind(crate::gpu::available).unwrap_or(false) as i32
}

// ---- state -------------------------------------------------------------------

fn config_from(c: &MmsbConfig) -> Result<Config> {
    if c.abi_version != MMSB_ABI_VERSION {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("config abi_version {} does not match the library's {MMSB_ABI_VERSION}", c.abi_version),
        ));
    }
    if c.reserved != 0 {
        return Err(Error::new(ErrorKind::Invalid, "config reserved field must be 0"));
    }
    let durability = match c.durability {
        DURABILITY_NONE => Durability::None,
        DURABILITY_BUFFERED => Durability::Buffered,
        DURABILITY_FSYNC => Durability::Fsync,
        d => return Err(Error::new(ErrorKind::Invalid, format!("durability {d} is not 0, 1 or 2"))),
    };
    let tlog_path = if c.tlog_path.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees tlog_path is valid for tlog_path_len bytes.
        Some(unsafe { path_arg(c.tlog_path, c.tlog_path_len) }?)
    };
    match (&tlog_path, durability) {
        (None, Durability::None) | (Some(_), Durability::Buffered | Durability::Fsync) => {}
        (Some(p), Durability::None) => {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("tlog_path {} given with durability none (use buffered or fsync)", p.display()),
            ))
        }
        (None, _) => return Err(Error::new(ErrorKind::Invalid, "durability buffered/fsync needs a tlog_path")),
    }
    if c.strict_epochs > 1 || c.enable_gpu > 1 || c.truncate > 1 {
        return Err(Error::new(ErrorKind::Invalid, "config flags must be 0 or 1"));
    }
    Ok(Config {
        strict_epochs: c.strict_epochs == 1,
        enable_gpu: c.enable_gpu == 1,
        durability,
        truncate: c.truncate == 1,
        gpu_threshold: c.gpu_threshold,
        tlog_path,
        threads: c.threads,
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_state_new(cfg: *const MmsbConfig, out_st: *mut *mut MmsbState, info: *mut MmsbRecoveryInfo) -> i32 {
    boundary(|| {
        // SAFETY: see the module contract.
        let c = unsafe { cfg.as_ref() }.ok_or_else(|| Error::new(ErrorKind::Null, "config is NULL"))?;
        let o = unsafe { out(out_st, "out") }?;
        let config = config_from(c)?;
        let (inner, rep) = crate::persist::open_inner(config)?;
        // SAFETY: info is NULL or valid for one write.
        if let Some(i) = unsafe { info.as_mut() } {
            *i = MmsbRecoveryInfo { records_recovered: rep.records, bytes_truncated: rep.bytes_truncated };
        }
        *o = Box::into_raw(State::boxed(inner));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_state_free(st: *mut MmsbState) {
    if st.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: st came from Box::into_raw in mmsb_state_new and the caller
        // frees it once.
        State::free(unsafe { Box::from_raw(st) });
    }));
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_state_hold(st: *mut MmsbState, on: u8) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.hold(on != 0)))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_state_close(st: *mut MmsbState) -> i32 {
    boundary(|| unsafe { state(st) }?.close())
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_state_reset(st: *mut MmsbState) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.reset()))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_next_ids(st: *mut MmsbState, next_page: *mut u64, next_delta: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let p = unsafe { out(next_page, "next_page") }?;
        let d = unsafe { out(next_delta, "next_delta") }?;
        (*p, *d) = s.call(|i| Ok(i.next_ids()))?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_stats(st: *mut MmsbState, o: *mut MmsbStats) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(o, "out") }?;
        *o = s.call(|i| Ok(i.stats()))?.into();
        Ok(())
    })
}

// ---- pages -------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_create(st: *mut MmsbState, size: u64, location: u8, o: *mut MmsbPageInfo) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(o, "out") }?;
        *o = s.call(|i| i.page_create(size, location))?.into();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_delete(st: *mut MmsbState, id: u64, force: u8) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.page_delete(id, force != 0)))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_info(st: *mut MmsbState, id: u64, o: *mut MmsbPageInfo) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(o, "out") }?;
        *o = s.call(|i| i.page_info(id))?.into();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_ids(st: *mut MmsbState, buf: *mut u64, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| unsafe { write_list(buf, cap, n, &i.page_ids()) })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_read(st: *mut MmsbState, id: u64, dst: *mut u8, len: u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        if dst.is_null() {
            return Err(Error::new(ErrorKind::Null, "dst is NULL"));
        }
        let d = unsafe { bytes_mut(dst, len, "dst") }?;
        s.call(|i| i.page_read(id, d))
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_write(
    st: *mut MmsbState,
    id: u64,
    src: *const u8,
    len: u64,
    flags: u32,
    o: *mut MmsbWriteResult,
) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        if src.is_null() {
            return Err(Error::new(ErrorKind::Null, "bytes is NULL"));
        }
        let b = unsafe { bytes(src, len, "bytes") }?;
        let o = unsafe { out(o, "out") }?;
        *o = if flags & WRITE_SHARED != 0 {
            if flags & !(WRITE_SHARED | WRITE_PROPAGATE) != 0 {
                return Err(Error::new(ErrorKind::Invalid, format!("write flags {flags:#x}: SHARED combines only with PROPAGATE")));
            }
            s.page_write_shared(id, b, flags & WRITE_PROPAGATE)?
        } else {
            s.call_write(flags, |i, flags| i.page_write(id, b, flags))?
        }
        .into();
        Ok(())
    })
}

// ---- deltas ------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_stamp(st: *mut MmsbState, page_id: u64, o: *mut MmsbDeltaStamp) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(o, "out") }?;
        let r = s.call(|i| i.delta_stamp(page_id))?;
        *o = MmsbDeltaStamp { id: r.id, base_epoch: r.base_epoch, timestamp: r.timestamp };
        Ok(())
    })
}

/// # Safety
/// `d`'s pointers are valid for their lengths.
unsafe fn delta_in<'a>(d: &MmsbDeltaDesc) -> Result<DeltaIn<'a>> {
    Ok(DeltaIn {
        id: d.id,
        page_id: d.page_id,
        base_epoch: d.base_epoch,
        timestamp: d.timestamp,
        source: d.source,
        encoding: d.encoding,
        // SAFETY: forwarded contract.
        mask: unsafe { bytes(d.mask, d.mask_len, "delta mask") }?,
        payload: unsafe { bytes(d.payload, d.payload_len, "delta payload") }?,
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_route(st: *mut MmsbState, d: *const MmsbDeltaDesc, flags: u32, o: *mut MmsbWriteResult) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let d = unsafe { d.as_ref() }.ok_or_else(|| Error::new(ErrorKind::Null, "delta is NULL"))?;
        let d = unsafe { delta_in(d) }?;
        let o = unsafe { out(o, "out") }?;
        *o = s.call_write(flags, |i, flags| i.delta_route(&d, flags))?.into();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_route_batch(
    st: *mut MmsbState,
    ds: *const MmsbDeltaDesc,
    n: u64,
    flags: u32,
    o: *mut MmsbBatchResult,
) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let descs = unsafe { items(ds, n, "deltas") }?;
        let o = unsafe { out(o, "out") }?;
        let ins = descs.iter().map(|d| unsafe { delta_in(d) }).collect::<Result<Vec<_>>>()?;
        *o = s.call_write(flags, |i, flags| i.route_batch(&ins, flags))?.into();
        Ok(())
    })
}

// ---- graph -------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_edge_add(st: *mut MmsbState, parent: u64, child: u64, kind: u8) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.edge_add(parent, child, kind)))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_edge_remove(st: *mut MmsbState, parent: u64, child: u64) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.edge_remove(parent, child)))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_children(st: *mut MmsbState, id: u64, buf: *mut u64, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            i.slot(id)?;
            let v: Vec<u64> = i.graph.children(id).iter().map(|c| c.0).collect();
            unsafe { write_list(buf, cap, n, &v) }
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_page_parents(st: *mut MmsbState, id: u64, buf: *mut u64, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            i.slot(id)?;
            unsafe { write_list(buf, cap, n, i.graph.parents(id)) }
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_graph_topo(st: *mut MmsbState, buf: *mut u64, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            let mut v = Vec::new();
            i.graph.topo(&mut v);
            unsafe { write_list(buf, cap, n, &v) }
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_graph_descendants(st: *mut MmsbState, id: u64, buf: *mut u64, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            i.slot(id)?;
            let mut v = Vec::new();
            i.graph.descendants(id, &mut v)?;
            unsafe { write_list(buf, cap, n, &v) }
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_graph_edges(st: *mut MmsbState, buf: *mut MmsbEdge, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            let mut e = Vec::new();
            i.graph.edges(&mut e);
            let v: Vec<MmsbEdge> = e.iter().map(|&(p, c, k)| MmsbEdge { parent: p, child: c, kind: k as u64 }).collect();
            unsafe { write_list(buf, cap, n, &v) }
        })
    })
}

// ---- recompute and propagation -------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_recompute_set(st: *mut MmsbState, child: u64, kind: u8, parents: *const u64, n: u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let ps = unsafe { items(parents, n, "parents") }?;
        s.call(|i| i.recompute_set(child, kind, ps))
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_signature(
    st: *mut MmsbState,
    id: u64,
    parent_ids: *mut u64,
    epochs: *mut u64,
    cap: u64,
    out_n: *mut u64,
) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, pbuf, cap) = unsafe { list_args(parent_ids, cap, out_n) }?;
        if cap > 0 && epochs.is_null() {
            return Err(Error::new(ErrorKind::Null, "epochs is NULL"));
        }
        let sig = s.call(|i| i.signature(id))?;
        let ps: Vec<u64> = sig.iter().map(|x| x.0).collect();
        let es: Vec<u64> = sig.iter().map(|x| x.1).collect();
        unsafe { write_list(pbuf, cap, n, &ps) }?;
        unsafe { write_list(epochs, cap, n, &es) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_prop_enqueue(st: *mut MmsbState, ids: *const u64, n: u64, mode: u8) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let v = unsafe { items(ids, n, "ids") }?;
        s.call(|i| i.prop_enqueue(v, mode))
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_prop_run(st: *mut MmsbState, o: *mut MmsbPropStep) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(o, "out") }?;
        let r = s.call(|i| i.prop_run())?;
        *o = MmsbPropStep { status: r.status, reserved: 0, page_id: r.page_id };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_prop_submit(
    st: *mut MmsbState,
    page_id: u64,
    src: *const u8,
    len: u64,
    out_delta_id: *mut u64,
) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        if src.is_null() {
            return Err(Error::new(ErrorKind::Null, "bytes is NULL"));
        }
        let b = unsafe { bytes(src, len, "bytes") }?;
        let o = unsafe { out(out_delta_id, "out_delta_id") }?;
        *o = s.call(|i| i.prop_submit(page_id, b))?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_prop_fail(st: *mut MmsbState, page_id: u64) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.prop_fail(page_id)))
}

// ---- events ------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_events_enable(st: *mut MmsbState, on: u8) -> i32 {
    boundary(|| {
        unsafe { state(st) }?.call(|i| {
            i.events_enable(on != 0);
            Ok(())
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_events_drain(st: *mut MmsbState, buf: *mut MmsbEvent, cap: u64, out_n: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let (n, buf, cap) = unsafe { list_args(buf, cap, out_n) }?;
        s.call(|i| {
            let k = (i.events.len() as u64).min(cap) as usize;
            for (j, e) in i.events.drain(..k).enumerate() {
                // SAFETY: buf is non-NULL when cap > 0 and valid for cap >= k events.
                unsafe { buf.add(j).write(e.into()) };
            }
            *n = k as u64;
            Ok(())
        })
    })
}

// ---- log, checkpoint, replay -----------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn mmsb_tlog_len(st: *mut MmsbState, first_seq: *mut u64, next_seq: *mut u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let f = unsafe { out(first_seq, "first_seq") }?;
        let n = unsafe { out(next_seq, "next_seq") }?;
        (*f, *n) = s.call(|i| Ok((i.log.first_seq(), i.log.next_seq())))?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_tlog_sync(st: *mut MmsbState, seq: u64) -> i32 {
    boundary(|| unsafe { state(st) }?.sync_to(seq))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_tlog_entry(
    st: *mut MmsbState,
    seq: u64,
    hdr: *mut MmsbLogRecord,
    payload: *mut u8,
    cap: u64,
    out_len: *mut u64,
) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let h = unsafe { out(hdr, "hdr") }?;
        let (n, buf, cap) = unsafe { list_args(payload, cap, out_len) }?;
        let r = s.call(|i| i.log.get(seq))?;
        let rh = r.header;
        *h = MmsbLogRecord {
            seq: rh.seq,
            kind: rh.kind as u64,
            page_id: rh.page_id,
            aux: rh.aux,
            delta_id: rh.delta_id,
            base_epoch: rh.base_epoch,
            timestamp: rh.timestamp,
            source: rh.source as u64,
            encoding: rh.encoding as u64,
            mask_len: rh.mask_len,
            payload_len: r.payload.len() as u64,
        };
        unsafe { write_list(buf, cap, n, &r.payload) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_checkpoint_write(st: *mut MmsbState, path: *const u8, path_len: u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let p = unsafe { path_arg(path, path_len) }?;
        s.call(|i| i.checkpoint_write(&p))
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_checkpoint_load(st: *mut MmsbState, path: *const u8, path_len: u64) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let p = unsafe { path_arg(path, path_len) }?;
        s.call(|i| i.checkpoint_load(&p))
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_replay(st: *mut MmsbState, upto_seq: u64) -> i32 {
    boundary(|| unsafe { state(st) }?.call(|i| i.replay(upto_seq)))
}

#[no_mangle]
pub unsafe extern "C" fn mmsb_replay_to_epoch(st: *mut MmsbState, epoch: u64, out_st: *mut *mut MmsbState) -> i32 {
    boundary(|| {
        let s = unsafe { state(st) }?;
        let o = unsafe { out(out_st, "out") }?;
        let inner = s.call(|i| i.replay_to_epoch(epoch))?;
        *o = Box::into_raw(Box::new(State::from_inner(inner)));
        Ok(())
    })
}
