//! Drives the C exports through raw pointers, as a C caller would.

use std::ptr::{null, null_mut};

use mmsb::ffi::*;

const OK: i32 = 0;
const E_NULL: i32 = -1;
const E_INVALID: i32 = -2;
const E_DIM: i32 = -3;
const E_NOT_FOUND: i32 = -4;
const E_CYCLE: i32 = -5;
const E_DEPENDENTS: i32 = -6;
const E_STALE: i32 = -7;
const E_CORRUPT: i32 = -8;
const E_CKPT: i32 = -9;
const E_GPU: i32 = -10;
const E_IO: i32 = -11;
const E_BUSY: i32 = -12;
const E_SMALL: i32 = -13;
const E_CLOSED: i32 = -14;
const SHARED: u32 = 8;
const PROPAGATE: u32 = 1;

fn cfg() -> MmsbConfig {
    MmsbConfig { enable_gpu: 0, ..Default::default() }
}

/// A file-log config; `p` (the path bytes) must outlive every use of it.
fn file_cfg(p: &[u8], durability: u8) -> MmsbConfig {
    MmsbConfig { durability, tlog_path: p.as_ptr(), tlog_path_len: p.len() as u64, ..cfg() }
}

fn open(c: &MmsbConfig) -> *mut MmsbState {
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(c, &mut st, null_mut()) }, OK, "{}", msg());
    st
}

fn msg() -> String {
    let mut b = [0u8; 512];
    let n = unsafe { mmsb_last_error_message(b.as_mut_ptr(), b.len() as u64) } as usize;
    String::from_utf8_lossy(&b[..n.min(512)]).into_owned()
}

fn create(st: *mut MmsbState, size: u64) -> u64 {
    let mut info = MmsbPageInfo::default();
    assert_eq!(unsafe { mmsb_page_create(st, size, 0, &mut info) }, OK, "{}", msg());
    info.id
}

fn write(st: *mut MmsbState, id: u64, b: &[u8], flags: u32) -> (i32, MmsbWriteResult) {
    let mut w = MmsbWriteResult::default();
    let rc = unsafe { mmsb_page_write(st, id, b.as_ptr(), b.len() as u64, flags, &mut w) };
    (rc, w)
}

fn read(st: *mut MmsbState, id: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    assert_eq!(unsafe { mmsb_page_read(st, id, v.as_mut_ptr(), n as u64) }, OK, "{}", msg());
    v
}

fn ids(st: *mut MmsbState) -> (u64, u64) {
    let (mut p, mut d) = (0, 0);
    assert_eq!(unsafe { mmsb_next_ids(st, &mut p, &mut d) }, OK);
    (p, d)
}

fn log_len(st: *mut MmsbState) -> u64 {
    let (mut f, mut n) = (0, 0);
    assert_eq!(unsafe { mmsb_tlog_len(st, &mut f, &mut n) }, OK);
    n
}

/// (next ids, log length) must not move across a failed call.
fn unchanged(st: *mut MmsbState, f: impl FnOnce() -> i32, want: i32) {
    let before = (ids(st), log_len(st));
    assert_eq!(f(), want, "{}", msg());
    assert!(!msg().is_empty(), "an error sets a message");
    assert_eq!((ids(st), log_len(st)), before);
}

#[test]
fn abi_and_null_handles() {
    assert_eq!(mmsb_abi_version(), MMSB_ABI_VERSION);
    assert!(mmsb_gpu_available() == 0 || mmsb_gpu_available() == 1);
    let mut w = MmsbWriteResult::default();
    assert_eq!(unsafe { mmsb_page_write(null_mut(), 1, [0u8].as_ptr(), 1, 0, &mut w) }, E_NULL);
    assert!(msg().contains("NULL"));
    assert_eq!(unsafe { mmsb_state_reset(null_mut()) }, E_NULL);
    assert_eq!(unsafe { mmsb_prop_run(null_mut(), null_mut()) }, E_NULL);
    unsafe { mmsb_state_free(null_mut()) };
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(null(), &mut st, null_mut()) }, E_NULL);
    assert_eq!(unsafe { mmsb_state_new(&cfg(), null_mut(), null_mut()) }, E_NULL);
    let mut c = cfg();
    c.abi_version = MMSB_ABI_VERSION + 1;
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, E_INVALID);
    let mut c = cfg();
    c.durability = 1; // buffered without a path
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, E_INVALID);
    assert!(st.is_null());
    // freed, then NULL: a clean error
    let live = mmsb_live_states();
    let mut s = open(&cfg());
    assert!(mmsb_live_states() >= live);
    unsafe { mmsb_state_free(s) };
    s = null_mut();
    assert_eq!(unsafe { mmsb_page_create(s, 8, 0, &mut MmsbPageInfo::default()) }, E_NULL);
}

#[test]
fn last_error_message_copies_and_reports_length() {
    let st = open(&cfg());
    assert_eq!(unsafe { mmsb_page_info(st, 42, &mut MmsbPageInfo::default()) }, E_NOT_FOUND);
    let full = unsafe { mmsb_last_error_message(null_mut(), 0) };
    assert!(full > 5);
    let mut b = [0u8; 4];
    assert_eq!(unsafe { mmsb_last_error_message(b.as_mut_ptr(), 4) }, full);
    assert!(msg().contains("42"));
    // a successful call clears it
    assert_eq!(unsafe { mmsb_stats(st, &mut MmsbStats::default()) }, OK);
    assert_eq!(unsafe { mmsb_last_error_message(null_mut(), 0) }, 0);
    unsafe { mmsb_state_free(st) };
}

#[test]
fn bad_arguments_change_nothing() {
    let st = open(&cfg());
    let a = create(st, 16);
    let b = create(st, 16);
    assert_eq!(unsafe { mmsb_edge_add(st, a, b, 0) }, OK);
    let buf = [1u8; 16];
    unchanged(st, || write(st, a, &buf[..15], 0).0, E_DIM);
    unchanged(st, || write(st, 99, &buf, 0).0, E_NOT_FOUND);
    unchanged(st, || unsafe { mmsb_page_write(st, a, null(), 16, 0, &mut MmsbWriteResult::default()) }, E_NULL);
    unchanged(st, || unsafe { mmsb_page_write(st, a, buf.as_ptr(), 16, 0, null_mut()) }, E_NULL);
    unchanged(st, || write(st, a, &buf, 0x40).0, E_INVALID);
    unchanged(st, || unsafe { mmsb_page_create(st, 0, 0, &mut MmsbPageInfo::default()) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_page_create(st, 8, 7, &mut MmsbPageInfo::default()) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_page_create(st, 1 << 62, 0, &mut MmsbPageInfo::default()) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_page_create(st, 2 << 20, 1, &mut MmsbPageInfo::default()) }, E_GPU);
    unchanged(st, || unsafe { mmsb_edge_add(st, b, a, 0) }, E_CYCLE);
    unchanged(st, || unsafe { mmsb_edge_add(st, a, a, 0) }, E_CYCLE);
    assert_eq!(unsafe { mmsb_edge_add(st, b, a, 0) }, E_CYCLE);
    assert!(msg().contains(&format!("{b} -> {a}")), "{}", msg());
    unchanged(st, || unsafe { mmsb_page_delete(st, a, 0) }, E_DEPENDENTS);
    unchanged(st, || unsafe { mmsb_page_read(st, a, [0u8; 3].as_mut_ptr(), 3) }, E_DIM);
    unchanged(st, || unsafe { mmsb_recompute_set(st, b, 1, null(), 1) }, E_NULL);
    unchanged(st, || unsafe { mmsb_recompute_set(st, b, 9, [a].as_ptr(), 1) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_prop_submit(st, b, buf.as_ptr(), 16, &mut 0) }, E_BUSY);
    unchanged(st, || unsafe { mmsb_prop_fail(st, b) }, E_BUSY);
    unchanged(st, || unsafe { mmsb_prop_enqueue(st, [a].as_ptr(), 1, 5) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_replay(st, 1000) }, E_INVALID);
    unchanged(st, || unsafe { mmsb_tlog_entry(st, 1000, &mut MmsbLogRecord::default(), null_mut(), 0, &mut 0) }, E_INVALID);
    // a :gpu request below the threshold lands on the CPU
    let mut info = MmsbPageInfo::default();
    assert_eq!(unsafe { mmsb_page_create(st, 64, 1, &mut info) }, OK);
    assert_eq!(info.location, 0);
    unsafe { mmsb_state_free(st) };
}

#[test]
fn list_calls_report_needed_capacity() {
    let st = open(&cfg());
    let a = create(st, 4);
    let b = create(st, 4);
    let c = create(st, 4);
    assert_eq!(unsafe { mmsb_edge_add(st, a, c, 0) }, OK);
    assert_eq!(unsafe { mmsb_edge_add(st, a, b, 2) }, OK);
    let mut n = 0u64;
    assert_eq!(unsafe { mmsb_page_ids(st, null_mut(), 0, &mut n) }, E_SMALL);
    assert_eq!(n, 3);
    let mut small = [0u64; 2];
    assert_eq!(unsafe { mmsb_page_children(st, a, small.as_mut_ptr(), 1, &mut n) }, E_SMALL);
    assert_eq!((n, small), (2, [0, 0]));
    assert_eq!(unsafe { mmsb_page_children(st, a, small.as_mut_ptr(), 2, &mut n) }, OK);
    assert_eq!(small, [b, c]);
    assert_eq!(unsafe { mmsb_page_ids(st, null_mut(), 3, &mut n) }, E_NULL);
    assert_eq!(unsafe { mmsb_page_ids(st, small.as_mut_ptr(), 2, null_mut()) }, E_NULL);
    let mut topo = [0u64; 3];
    assert_eq!(unsafe { mmsb_graph_topo(st, topo.as_mut_ptr(), 3, &mut n) }, OK);
    assert_eq!(topo, [a, b, c]);
    let mut e = [MmsbEdge::default(); 2];
    assert_eq!(unsafe { mmsb_graph_edges(st, e.as_mut_ptr(), 2, &mut n) }, OK);
    assert_eq!(e[0], MmsbEdge { parent: a, child: b, kind: 2 });
    assert_eq!(unsafe { mmsb_graph_descendants(st, 77, topo.as_mut_ptr(), 3, &mut n) }, E_NOT_FOUND);
    let mut p = [0u64; 1];
    assert_eq!(unsafe { mmsb_page_parents(st, c, p.as_mut_ptr(), 1, &mut n) }, OK);
    assert_eq!((n, p[0]), (1, a));
    unsafe { mmsb_state_free(st) };
}

#[test]
fn deltas_through_the_abi() {
    let mut c = cfg();
    c.strict_epochs = 1;
    let st = open(&c);
    let a = create(st, 10);
    let mut s1 = MmsbDeltaStamp::default();
    let mut s2 = MmsbDeltaStamp::default();
    assert_eq!(unsafe { mmsb_delta_stamp(st, a, &mut s1) }, OK);
    assert_eq!(unsafe { mmsb_delta_stamp(st, a, &mut s2) }, OK);
    assert_eq!((s1.id, s2.id), (1, 2));
    assert!(s2.timestamp > s1.timestamp);
    let ranges: Vec<u8> = [2u64, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let data = [7u8, 8, 9];
    let d = MmsbDeltaDesc {
        id: s1.id,
        page_id: a,
        base_epoch: 0,
        timestamp: s1.timestamp,
        source: 0,
        encoding: 1,
        reserved: [0; 6],
        mask: ranges.as_ptr(),
        mask_len: 16,
        payload: data.as_ptr(),
        payload_len: 3,
    };
    let mut w = MmsbWriteResult::default();
    assert_eq!(unsafe { mmsb_delta_route(st, &d, 1, &mut w) }, OK, "{}", msg());
    assert_eq!((w.delta_id, w.epoch), (1, 1));
    assert_eq!(read(st, a, 10), vec![0, 0, 7, 8, 9, 0, 0, 0, 0, 0]);
    let stale = MmsbDeltaDesc { id: s2.id, ..d };
    unchanged(st, || unsafe { mmsb_delta_route(st, &stale, 0, &mut w) }, E_STALE);
    let bad = MmsbDeltaDesc { payload_len: 2, ..d };
    unchanged(st, || unsafe { mmsb_delta_route(st, &bad, 0, &mut w) }, E_DIM);
    let nul = MmsbDeltaDesc { mask: null(), ..d };
    unchanged(st, || unsafe { mmsb_delta_route(st, &nul, 0, &mut w) }, E_NULL);
    let mut br = MmsbBatchResult::default();
    unchanged(st, || unsafe { mmsb_delta_route_batch(st, null(), 2, 0, &mut br) }, E_NULL);
    let fresh = MmsbDeltaDesc { base_epoch: 1, id: s2.id, ..d };
    let mut dense_mask = [0u8; 2];
    dense_mask[0] = 1;
    let pay = [5u8; 10];
    let other = MmsbDeltaDesc { encoding: 0, mask: dense_mask.as_ptr(), mask_len: 2, payload: pay.as_ptr(), payload_len: 10, ..fresh };
    assert_eq!(unsafe { mmsb_delta_route_batch(st, [fresh, other].as_ptr(), 2, 3, &mut br) }, OK, "{}", msg());
    assert_eq!(br.applied, 1); // `fresh` repeats bytes already there
    assert_eq!(read(st, a, 10)[0], 5);
    // the log holds both stamps (kind 7, no payload), then the delta with its payload
    let mut h = MmsbLogRecord::default();
    let mut n = 0;
    for (seq, s) in [(2, s1), (3, s2)] {
        assert_eq!(unsafe { mmsb_tlog_entry(st, seq, &mut h, null_mut(), 0, &mut n) }, OK);
        assert_eq!((h.kind, h.page_id, h.delta_id, h.timestamp, n), (7, a, s.id, s.timestamp, 0));
    }
    assert_eq!(unsafe { mmsb_tlog_entry(st, 4, &mut h, null_mut(), 0, &mut n) }, E_SMALL);
    assert_eq!(n, 19);
    let mut pl = vec![0u8; 19];
    assert_eq!(unsafe { mmsb_tlog_entry(st, 4, &mut h, pl.as_mut_ptr(), 19, &mut n) }, OK);
    assert_eq!((h.kind, h.page_id, h.delta_id, h.mask_len, h.encoding), (6, a, 1, 16, 1));
    assert_eq!(&pl[16..], &data);
    unsafe { mmsb_state_free(st) };
}

#[test]
fn closure_propagation_protocol_and_events() {
    let st = open(&cfg());
    let a = create(st, 8);
    let b = create(st, 8);
    let c = create(st, 8);
    assert_eq!(unsafe { mmsb_recompute_set(st, b, 2, [a].as_ptr(), 1) }, OK);
    assert_eq!(unsafe { mmsb_recompute_set(st, c, 1, [b].as_ptr(), 1) }, OK);
    assert_eq!(unsafe { mmsb_events_enable(st, 1) }, OK);
    let (rc, w) = write(st, a, &[1; 8], 1);
    assert_eq!((rc, w.prop_status, w.pending_page), (OK, 1, b));
    unchanged(st, || write(st, a, &[2; 8], 1).0, E_BUSY);
    let mut step = MmsbPropStep::default();
    unchanged(st, || unsafe { mmsb_prop_run(st, &mut step) }, E_BUSY);
    unchanged(st, || unsafe { mmsb_prop_submit(st, b, [3u8; 7].as_ptr(), 7, &mut 0) }, E_DIM);
    let mut did = 0;
    assert_eq!(unsafe { mmsb_prop_submit(st, b, [3u8; 8].as_ptr(), 8, &mut did) }, OK);
    assert_eq!(unsafe { mmsb_prop_run(st, &mut step) }, OK);
    assert_eq!(step.status, 0);
    assert_eq!(read(st, c, 8), vec![3; 8]);
    let mut ev = [MmsbEvent::default(); 16];
    let mut n = 0;
    assert_eq!(unsafe { mmsb_events_drain(st, ev.as_mut_ptr(), 16, &mut n) }, OK);
    let kinds: Vec<(u64, u64)> = ev[..n as usize].iter().map(|e| (e.kind, e.page_id)).collect();
    assert_eq!(kinds, vec![(4, a), (5, a), (3, b), (4, b), (5, b), (3, c), (4, c), (5, c)]);
    assert_eq!(ev[3].delta_id, did);
    let mut pids = [0u64; 1];
    let mut eps = [0u64; 1];
    assert_eq!(unsafe { mmsb_signature(st, b, pids.as_mut_ptr(), eps.as_mut_ptr(), 1, &mut n) }, OK);
    assert_eq!((pids[0], eps[0]), (a, 1));
    let mut s = MmsbStats::default();
    assert_eq!(unsafe { mmsb_stats(st, &mut s) }, OK);
    assert_eq!((s.pages, s.recomputes_run, s.propagation_cycles, s.deltas_applied), (3, 2, 1, 3));
    unsafe { mmsb_state_free(st) };
}

fn snapshot(st: *mut MmsbState) -> (Vec<(MmsbPageInfo, Vec<u8>)>, Vec<MmsbEdge>, (u64, u64)) {
    let mut n = 0u64;
    unsafe { mmsb_page_ids(st, null_mut(), 0, &mut n) };
    let mut ps = vec![0u64; n as usize];
    assert_eq!(unsafe { mmsb_page_ids(st, ps.as_mut_ptr(), n, &mut n) }, OK);
    let pages = ps
        .iter()
        .map(|&id| {
            let mut i = MmsbPageInfo::default();
            assert_eq!(unsafe { mmsb_page_info(st, id, &mut i) }, OK);
            i.recompute = 0; // closures come back as NONE after a restore
            (i, read(st, id, i.size as usize))
        })
        .collect();
    unsafe { mmsb_graph_edges(st, null_mut(), 0, &mut n) };
    let mut e = vec![MmsbEdge::default(); n as usize];
    assert_eq!(unsafe { mmsb_graph_edges(st, e.as_mut_ptr(), n, &mut n) }, OK);
    (pages, e, ids(st))
}

fn workload(st: *mut MmsbState) {
    let a = create(st, 256);
    let b = create(st, 256);
    let c = create(st, 64);
    assert_eq!(unsafe { mmsb_recompute_set(st, b, 1, [a].as_ptr(), 1) }, OK);
    assert_eq!(unsafe { mmsb_edge_add(st, b, c, 1) }, OK);
    for k in 0..20u8 {
        let mut v = vec![k; 256];
        v[k as usize * 3] = 255;
        assert_eq!(write(st, a, &v, 1).0, OK);
    }
    assert_eq!(write(st, c, &[9; 64], 0).0, OK);
    let d = create(st, 8);
    assert_eq!(unsafe { mmsb_page_delete(st, d, 0) }, OK);
}

#[test]
fn file_log_recovery_rebuilds_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.tlog");
    let p = path.to_str().unwrap().as_bytes().to_vec();
    let c = file_cfg(&p, 1);
    let st = open(&c);
    workload(st);
    let snap = snapshot(st);
    unsafe { mmsb_state_free(st) };
    let mut info = MmsbRecoveryInfo::default();
    let mut st2 = null_mut();
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st2, &mut info) }, OK, "{}", msg());
    assert!(info.records_recovered > 20);
    assert_eq!(snapshot(st2), snap);
    // checkpoint into a fresh memory state
    let ck = dir.path().join("s.ckpt");
    let ckb = ck.to_str().unwrap().as_bytes();
    assert_eq!(unsafe { mmsb_checkpoint_write(st2, ckb.as_ptr(), ckb.len() as u64) }, OK, "{}", msg());
    let st3 = open(&cfg());
    assert_eq!(unsafe { mmsb_checkpoint_load(st3, ckb.as_ptr(), ckb.len() as u64) }, OK, "{}", msg());
    assert_eq!(snapshot(st3), snap);
    unchanged(st3, || unsafe { mmsb_checkpoint_load(st3, ckb.as_ptr(), ckb.len() as u64) }, E_INVALID);
    // replay to an epoch: a new handle
    let mut st4 = null_mut();
    assert_eq!(unsafe { mmsb_replay_to_epoch(st2, 5, &mut st4) }, OK, "{}", msg());
    let mut i = MmsbPageInfo::default();
    assert_eq!(unsafe { mmsb_page_info(st4, 1, &mut i) }, OK);
    assert_eq!(i.epoch, 5);
    assert_eq!(read(st4, 1, 256)[0], 4);
    // rollback to the start, then reset
    assert_eq!(unsafe { mmsb_replay(st2, 0) }, OK);
    assert_eq!(ids(st2), (1, 1));
    assert_eq!(unsafe { mmsb_state_reset(st3) }, OK);
    assert_eq!((ids(st3), log_len(st3)), ((1, 1), 1));
    for s in [st2, st3, st4] {
        unsafe { mmsb_state_free(s) };
    }
}

#[test]
fn corrupt_files_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    // checkpoint: garbage -> CHECKPOINT; missing directory -> IO or CHECKPOINT
    let g = dir.path().join("garbage.ckpt");
    std::fs::write(&g, b"not a checkpoint at all").unwrap();
    let gb = g.to_str().unwrap().as_bytes();
    let st = open(&cfg());
    unchanged(st, || unsafe { mmsb_checkpoint_load(st, gb.as_ptr(), gb.len() as u64) }, E_CKPT);
    unchanged(st, || unsafe { mmsb_checkpoint_load(st, null(), 4) }, E_NULL);
    unchanged(st, || unsafe { mmsb_checkpoint_load(st, [0xffu8, 0xfe].as_ptr(), 2) }, E_INVALID);
    unsafe { mmsb_state_free(st) };
    let bad = dir.path().join("no/such/dir/x.tlog");
    let bb = bad.to_str().unwrap().as_bytes();
    let c = file_cfg(&bb, 1);
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, E_IO, "{}", msg());
    // a log corrupted before its tail
    let path = dir.path().join("c.tlog");
    let p = path.to_str().unwrap().as_bytes().to_vec();
    let c = file_cfg(&p, 2);
    let st = open(&c);
    workload(st);
    unsafe { mmsb_state_free(st) };
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, E_CORRUPT);
    assert!(msg().contains("c.tlog"), "{}", msg());
    assert!(st.is_null());
}

#[test]
fn fsync_writes_from_threads_do_not_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.tlog");
    let p = path.to_str().unwrap().as_bytes().to_vec();
    let c = file_cfg(&p, 2);
    let st = open(&c);
    let pages: Vec<u64> = (0..4).map(|_| create(st, 32)).collect();
    let addr = st as usize;
    std::thread::scope(|s| {
        for &pg in &pages {
            s.spawn(move || {
                for k in 1..=25u8 {
                    let (rc, _) = write(addr as *mut MmsbState, pg, &[k; 32], 0);
                    assert_eq!(rc, OK);
                }
            });
        }
    });
    for &pg in &pages {
        let mut i = MmsbPageInfo::default();
        assert_eq!(unsafe { mmsb_page_info(st, pg, &mut i) }, OK);
        assert_eq!(i.epoch, 25);
    }
    let snap = snapshot(st);
    unsafe { mmsb_state_free(st) };
    let st = open(&c);
    assert_eq!(snapshot(st), snap);
    unsafe { mmsb_state_free(st) };
}

#[test]
fn deferred_sync_then_tlog_sync_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.tlog");
    let p = path.to_str().unwrap().as_bytes().to_vec();
    let c = file_cfg(&p, 2);
    let st = open(&c);
    let pg = create(st, 16);
    let (rc, w) = write(st, pg, &[7; 16], 1 | 4); // PROPAGATE | DEFER_SYNC
    assert_eq!(rc, OK, "{}", msg());
    assert_eq!(w.epoch, 1);
    let last = log_len(st) - 1;
    assert_eq!(unsafe { mmsb_tlog_sync(st, last) }, OK, "{}", msg());
    assert_eq!(unsafe { mmsb_tlog_sync(null_mut(), last) }, E_NULL);
    // an unknown flag bit is still refused, with or without DEFER_SYNC
    let (rc, _) = write(st, pg, &[8; 16], 4 | 64);
    assert_eq!(rc, E_INVALID);
    let snap = snapshot(st);
    unsafe { mmsb_state_free(st) };
    let st = open(&c);
    assert_eq!(snapshot(st), snap);
    // memory logs: tlog_sync returns at once
    let m = open(&cfg());
    assert_eq!(unsafe { mmsb_tlog_sync(m, 12345) }, OK);
    unsafe { mmsb_state_free(m) };
    unsafe { mmsb_state_free(st) };
}

/// MMSB_WRITE_SHARED from several threads through the C ABI, a refused
/// shared write (MMSB_PROP_NEED_LOCK, nothing changed), bad flag mixes, and
/// mmsb_state_close while other threads write: they get MMSB_ERR_CLOSED.
#[test]
fn shared_writes_and_close() {
    let st = open(&cfg());
    let pages: Vec<u64> = (0..3).map(|_| create(st, 32)).collect();
    let l0 = log_len(st);
    let stp = st as usize;
    std::thread::scope(|sc| {
        for &p in &pages {
            sc.spawn(move || {
                let st = stp as *mut MmsbState;
                for k in 1..=500u64 {
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&k.to_le_bytes());
                    let (rc, w) = write(st, p, &b, SHARED | PROPAGATE);
                    assert_eq!((rc, w.prop_status, w.epoch), (OK, 0, k), "{}", msg());
                }
            });
        }
    });
    assert_eq!(log_len(st), l0 + 3 * 500);
    let child = create(st, 32);
    assert_eq!(unsafe { mmsb_edge_add(st, pages[0], child, 0) }, OK);
    // a cycle and no closure in the state: done natively
    let (rc, w) = write(st, pages[0], &[5u8; 32], SHARED | PROPAGATE);
    assert_eq!((rc, w.prop_status, w.epoch), (OK, 0, 501), "{}", msg());
    // with a closure recompute somewhere, a write that starts a cycle is refused
    let other = create(st, 32);
    assert_eq!(unsafe { mmsb_recompute_set(st, other, 2, [child].as_ptr(), 1) }, OK, "{}", msg());
    let before = (ids(st), log_len(st), read(st, pages[0], 32));
    let (rc, w) = write(st, pages[0], &[7u8; 32], SHARED | PROPAGATE);
    assert_eq!((rc, w.prop_status, w.delta_id), (OK, 2, 0));
    assert_eq!((ids(st), log_len(st), read(st, pages[0], 32)), before);
    assert_eq!(write(st, pages[0], &[7u8; 32], SHARED | 4).0, E_INVALID);

    // Close while writers run: each write either lands or fails CLOSED.
    let barrier = std::sync::Barrier::new(4);
    let started = &barrier;
    std::thread::scope(|sc| {
        for &p in &pages[1..] {
            sc.spawn(move || {
                let st = stp as *mut MmsbState;
                started.wait();
                let mut k = 0u64;
                loop {
                    k += 1;
                    let mut b = [1u8; 32];
                    b[..8].copy_from_slice(&k.to_le_bytes());
                    match write(st, p, &b, SHARED | PROPAGATE).0 {
                        OK => continue,
                        E_CLOSED => break,
                        rc => panic!("{rc}: {}", msg()),
                    }
                }
            });
        }
        sc.spawn(move || {
            started.wait();
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert_eq!(unsafe { mmsb_state_close(stp as *mut MmsbState) }, OK);
        });
        started.wait();
    });
    assert_eq!(unsafe { mmsb_state_close(st) }, OK, "closing twice is a no-op");
    assert_eq!(unsafe { mmsb_page_read(st, pages[0], [0u8; 32].as_mut_ptr(), 32) }, E_CLOSED);
    assert!(msg().contains("closed"), "{}", msg());
    unsafe { mmsb_state_free(st) };
}

/// Freed states' shells are reused by new states: a new state is empty even
/// when the freed one had shared writes waiting in its lanes.
#[test]
fn a_new_state_in_a_reused_shell_is_fresh() {
    for _ in 0..50 {
        let st = open(&cfg());
        let p = create(st, 16);
        for k in 1..=20u8 {
            assert_eq!(write(st, p, &[k; 16], SHARED | PROPAGATE).0, OK);
        }
        // SAFETY: st came from mmsb_state_new; freed once, not used after.
        unsafe { mmsb_state_free(st) };
        let st = open(&cfg());
        assert_eq!((ids(st), log_len(st)), ((1, 1), 1), "a fresh state: no pages, ids at 1, empty log");
        let q = create(st, 16);
        assert_eq!(write(st, q, &[9; 16], SHARED | PROPAGATE).1.epoch, 1);
        assert_eq!(read(st, q, 16), vec![9; 16]);
        assert_eq!(log_len(st), 3);
        // SAFETY: as above.
        unsafe { mmsb_state_free(st) };
    }
}
