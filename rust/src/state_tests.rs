//! Unit tests of the state, propagation, batches and shared writes (no FFI);
//! logs, recovery and replay are in `persist_tests.rs`.

use super::*;
pub(crate) use crate::propagate::{ENQUEUE_CHILDREN, ENQUEUE_SELF, RC_CLOSURE, RC_NONE, RC_PASSTHROUGH};

pub(crate) fn st() -> Inner {
    Inner::new(Config::default(), TLog::memory())
}

pub(crate) fn page(s: &mut Inner, size: u64) -> u64 {
    s.page_create(size, LOC_CPU).unwrap().id
}

pub(crate) fn read(s: &Inner, id: u64) -> Vec<u8> {
    let mut v = vec![0u8; s.slot(id).unwrap().page.size];
    s.page_read(id, &mut v).unwrap();
    v
}

pub(crate) fn evs(s: &mut Inner) -> Vec<(u64, u64)> {
    s.events.drain(..).map(|e| (e.kind, e.page_id)).collect()
}

#[test]
fn epochs_and_noop_writes() {
    let mut s = st();
    let a = page(&mut s, 100);
    assert_eq!(a, 1);
    let w = s.page_write(a, &[0u8; 100], 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (0, 0));
    assert_eq!(s.log.len(), 1); // create only
    let mut b = vec![0u8; 100];
    b[7] = 1;
    let w = s.page_write(a, &b, 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (1, 1));
    let w = s.page_write(a, &b, 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (0, 1));
    assert_eq!(s.next_ids(), (2, 2));
    assert_eq!(read(&s, a), b);
    assert_eq!(s.page_write(a, &[0u8; 5], 0).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(s.page_write(9, &[0u8; 5], 0).unwrap_err().kind, ErrorKind::PageNotFound);
    assert_eq!(s.log.len(), 2);
    // dense write (everything changes)
    let w = s.page_write(a, &[9u8; 100], 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (2, 2));
    assert_eq!(s.log.get(3).unwrap().header.encoding, ENC_DENSE);
    assert_eq!(s.log.get(2).unwrap().header.encoding, ENC_SPARSE);
}

#[test]
fn routed_deltas_and_strict_epochs() {
    let mut s = st();
    s.cfg.strict_epochs = true;
    let a = page(&mut s, 16);
    let st1 = s.delta_stamp(a).unwrap();
    let st2 = s.delta_stamp(a).unwrap();
    let mask = [0xFFu8, 0];
    let d1 = DeltaIn { id: st1.id, page_id: a, base_epoch: 0, timestamp: st1.timestamp, source: 0, encoding: ENC_DENSE, mask: &mask, payload: &[5u8; 16] };
    let w = s.delta_route(&d1, 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (st1.id, 1));
    // routed again: stale under strict_epochs; otherwise it changes nothing
    assert_eq!(s.delta_route(&d1, 0).unwrap_err().kind, ErrorKind::StaleDelta);
    s.cfg.strict_epochs = false;
    let w = s.delta_route(&d1, 0).unwrap();
    assert_eq!((w.delta_id, w.epoch), (0, 1));
    s.cfg.strict_epochs = true;
    let d2 = DeltaIn { id: st2.id, ..d1 };
    let n = s.log.len();
    assert_eq!(s.delta_route(&d2, 0).unwrap_err().kind, ErrorKind::StaleDelta);
    assert_eq!(s.log.len(), n);
    let bad = DeltaIn { id: 99, base_epoch: 1, ..d1 };
    assert_eq!(s.delta_route(&bad, 0).unwrap_err().kind, ErrorKind::Invalid);
}

pub(crate) fn chain_diamond() -> (Inner, [u64; 4]) {
    // a -> b, a -> c, b -> d, c -> d ; b, c passthrough of a; d closure of b, c
    let mut s = st();
    let a = page(&mut s, 8);
    let b = page(&mut s, 8);
    let c = page(&mut s, 8);
    let d = page(&mut s, 8);
    s.recompute_set(b, RC_PASSTHROUGH, &[a]).unwrap();
    s.recompute_set(c, RC_PASSTHROUGH, &[a]).unwrap();
    s.recompute_set(d, RC_CLOSURE, &[b, c]).unwrap();
    (s, [a, b, c, d])
}

#[test]
fn diamond_join_recomputed_once_with_events_in_order() {
    let (mut s, [a, b, c, d]) = chain_diamond();
    s.events_enable(true);
    let w = s.page_write(a, &[1u8; 8], WRITE_PROPAGATE).unwrap();
    assert_eq!((w.prop_status, w.pending_page), (1, d));
    assert_eq!(read(&s, b), vec![1u8; 8]);
    assert_eq!(read(&s, c), vec![1u8; 8]);
    // busy guard while d is pending
    assert_eq!(s.page_write(a, &[2u8; 8], WRITE_PROPAGATE).unwrap_err().kind, ErrorKind::Busy);
    assert_eq!(s.prop_run().unwrap_err().kind, ErrorKind::Busy);
    assert_eq!(s.prop_submit(b, &[0; 8]).unwrap_err().kind, ErrorKind::Busy);
    let did = s.prop_submit(d, &[2u8; 8]).unwrap();
    assert!(did > 0);
    assert_eq!(s.prop_run().unwrap(), PropStep { status: 0, page_id: 0 });
    assert_eq!(s.stats.recomputes_run, 3);
    assert_eq!(s.stats.propagation_cycles, 1);
    let e = evs(&mut s);
    assert_eq!(
        e,
        vec![
            (EV_DELTA_APPLIED, a),
            (EV_PAGE_CHANGED, a),
            (EV_INVALIDATED, b),
            (EV_DELTA_APPLIED, b),
            (EV_PAGE_CHANGED, b),
            (EV_INVALIDATED, c),
            (EV_DELTA_APPLIED, c),
            (EV_PAGE_CHANGED, c),
            (EV_INVALIDATED, d),
            (EV_DELTA_APPLIED, d),
            (EV_PAGE_CHANGED, d),
        ]
    );
    // signature unchanged -> skipped and counted
    s.prop_enqueue(&[d], ENQUEUE_SELF).unwrap();
    assert_eq!(s.prop_run().unwrap().status, 0);
    assert_eq!(s.stats.recomputes_skipped, 1);
}

#[test]
fn early_cutoff_stores_signature_and_stops() {
    let (mut s, [a, b, _c, d]) = chain_diamond();
    // d computes the same bytes it has: cutoff, signature stored
    let w = s.page_write(a, &[1u8; 8], WRITE_PROPAGATE).unwrap();
    assert_eq!(w.pending_page, d);
    assert_eq!(s.prop_submit(d, &[0u8; 8]).unwrap(), 0);
    s.prop_run().unwrap();
    assert_eq!(s.stats.recomputes_cutoff, 1);
    assert_eq!(s.slot(d).unwrap().page.epoch, 0);
    s.prop_enqueue(&[d], ENQUEUE_SELF).unwrap();
    assert_eq!(s.prop_run().unwrap().status, 0);
    assert_eq!(s.stats.recomputes_skipped, 1);
    // passthrough with unchanged parent bytes: b is cut off when revisited with a new signature
    let e = s.slot(a).unwrap().page.epoch;
    let mut x = vec![1u8; 8];
    x[0] = 3;
    s.page_write(a, &x, 0).unwrap();
    s.page_write(a, &[1u8; 8], 0).unwrap();
    assert_eq!(s.slot(a).unwrap().page.epoch, e + 2);
    s.prop_enqueue(&[b], ENQUEUE_SELF).unwrap();
    assert_eq!(s.prop_run().unwrap().status, 0);
    assert_eq!(s.stats.recomputes_cutoff, 2);
    assert_eq!(s.slot(b).unwrap().page.epoch, 1);
}

#[test]
fn failed_recompute_marks_stale_and_retries() {
    let mut s = st();
    let a = page(&mut s, 4);
    let b = page(&mut s, 4);
    let c = page(&mut s, 4);
    s.recompute_set(b, RC_CLOSURE, &[a]).unwrap();
    s.recompute_set(c, RC_PASSTHROUGH, &[b]).unwrap();
    let w = s.page_write(a, &[1; 4], WRITE_PROPAGATE).unwrap();
    assert_eq!(w.pending_page, b);
    s.prop_fail(b).unwrap();
    assert!(s.page_info(b).unwrap().stale);
    assert_eq!(s.prop_fail(b).unwrap_err().kind, ErrorKind::Busy);
    // the next cycle (any propagating write) retries b
    let z = page(&mut s, 4);
    let w = s.page_write(z, &[1; 4], WRITE_PROPAGATE).unwrap();
    assert_eq!(w.pending_page, b);
    s.prop_submit(b, &[7; 4]).unwrap();
    assert_eq!(s.prop_run().unwrap().status, 0);
    assert!(!s.page_info(b).unwrap().stale);
    assert_eq!(read(&s, c), vec![7; 4]);
}

#[test]
fn graph_errors_leave_state_unchanged() {
    let mut s = st();
    let a = page(&mut s, 4);
    let b = page(&mut s, 8);
    s.edge_add(a, b, 0).unwrap();
    let n = s.log.len();
    s.edge_add(a, b, 0).unwrap(); // no-op, not logged
    assert_eq!(s.log.len(), n);
    assert_eq!(s.edge_add(b, a, 0).unwrap_err().kind, ErrorKind::Cycle);
    assert_eq!(s.edge_add(a, a, 0).unwrap_err().kind, ErrorKind::Cycle);
    assert_eq!(s.recompute_set(b, RC_PASSTHROUGH, &[a]).unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(s.page_delete(a, false).unwrap_err().kind, ErrorKind::HasDependents);
    assert_eq!(s.log.len(), n);
    s.page_delete(a, true).unwrap();
    assert_eq!(s.graph.edge_count(), 0);
    assert_eq!(s.next_ids().0, 3);
}

#[test]
fn batch_sequential_equals_parallel() {
    let run = |flags: u32| {
        let mut s = st();
        s.cfg.threads = 3;
        s.events_enable(true);
        let ids: Vec<u64> = (0..6).map(|_| page(&mut s, 200)).collect();
        let mut stamps = Vec::new();
        for k in 0..24 {
            stamps.push(s.delta_stamp(ids[k % 6]).unwrap());
        }
        // Deltas 6..12 repeat 0..6 right after them on the same page: no-ops
        // (a parallel batch must not log them).
        let masks: Vec<Vec<u8>> =
            (0..24).map(|k| if (6..12).contains(&k) { k - 6 } else { k }).map(|k| (0..25).map(|j| ((k * 31 + j * 7) % 256) as u8).collect()).collect();
        let pays: Vec<Vec<u8>> =
            (0..24).map(|k| if (6..12).contains(&k) { k - 6 } else { k }).map(|k| (0..200).map(|j| ((k + j) % 5) as u8).collect()).collect();
        let ds: Vec<DeltaIn> = (0..24)
            .rev()
            .map(|k| DeltaIn {
                id: stamps[k].id,
                page_id: ids[k % 6],
                base_epoch: 0,
                timestamp: stamps[k].timestamp,
                source: SOURCE_BATCH,
                encoding: ENC_DENSE,
                mask: &masks[k],
                payload: &pays[k],
            })
            .collect();
        let out = s.route_batch(&ds, flags).unwrap();
        let bytes: Vec<Vec<u8>> = ids.iter().map(|&i| read(&s, i)).collect();
        let epochs: Vec<u64> = ids.iter().map(|&i| s.slot(i).unwrap().page.epoch).collect();
        let log: Vec<_> = s.log.records_from(1).unwrap();
        (out, bytes, epochs, log, s.events.clone())
    };
    let a = run(WRITE_PROPAGATE);
    let b = run(WRITE_PROPAGATE | WRITE_PARALLEL);
    assert!(a.0.applied > 0 && a.0.applied < 24, "{}", a.0.applied);
    assert_eq!(a, b);
}

#[test]
fn batch_validates_all_first() {
    let mut s = st();
    let a = page(&mut s, 8);
    let st1 = s.delta_stamp(a).unwrap();
    let good = DeltaIn { id: st1.id, page_id: a, base_epoch: 0, timestamp: 1, source: 2, encoding: ENC_DENSE, mask: &[0xFF], payload: &[1; 8] };
    let bad = DeltaIn { mask: &[0xFF, 0], ..good };
    let n = s.log.len();
    assert_eq!(s.route_batch(&[good, bad], 0).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(s.log.len(), n);
    assert_eq!(read(&s, a), vec![0; 8]);
    // strict: the second delta on the same base is stale once the first applies
    s.cfg.strict_epochs = true;
    let st2 = s.delta_stamp(a).unwrap();
    let second = DeltaIn { id: st2.id, payload: &[2; 8], ..good };
    assert_eq!(s.route_batch(&[good, second], 0).unwrap_err().kind, ErrorKind::StaleDelta);
    assert_eq!(read(&s, a), vec![0; 8]);
}

pub(crate) fn fingerprint(s: &Inner) -> (Vec<(u64, u64, Vec<u8>)>, Vec<(u64, u64, u8)>, (u64, u64)) {
    let pages = s.page_ids().into_iter().map(|i| (i, s.slot(i).unwrap().page.epoch, read(s, i))).collect();
    let mut e = Vec::new();
    s.graph.edges(&mut e);
    (pages, e, s.next_ids())
}

pub(crate) fn workload(s: &mut Inner) {
    let a = page(s, 64);
    let b = page(s, 64);
    let c = page(s, 32);
    s.recompute_set(b, RC_PASSTHROUGH, &[a]).unwrap();
    s.edge_add(a, c, 3).unwrap();
    for k in 0..10u8 {
        let mut v = vec![k; 64];
        v[k as usize] = 200;
        s.page_write(a, &v, WRITE_PROPAGATE).unwrap();
    }
    let d = page(s, 16);
    s.page_write(d, &[4; 16], 0).unwrap();
    s.page_delete(d, false).unwrap();
    s.edge_remove(a, c).unwrap();
}

pub(crate) fn file_cfg(path: &std::path::Path, durability: Durability, truncate: bool) -> Config {
    Config { tlog_path: Some(path.to_path_buf()), durability, truncate, ..Config::default() }
}

pub(crate) type Full = ((Vec<(u64, u64, Vec<u8>)>, Vec<(u64, u64, u8)>, (u64, u64)), u64, Vec<(u64, u8, Vec<u64>)>);

/// Pages, epochs, graph, next ids, clock and recompute registrations.
pub(crate) fn full(s: &Inner) -> Full {
    let rc = s.page_ids().into_iter().map(|i| (i, s.slot(i).unwrap().rc.kind, s.slot(i).unwrap().rc.parents.clone())).collect();
    (fingerprint(s), s.ids.clock.now(), rc)
}

pub(crate) fn read_state(state: &State, id: u64) -> Vec<u8> {
    state.call(|s| Ok(read(s, id))).unwrap()
}

#[test]
fn reset_restarts_ids() {
    let mut s = st();
    workload(&mut s);
    s.reset().unwrap();
    assert_eq!(s.next_ids(), (1, 1));
    assert_eq!(s.log.len(), 0);
    assert_eq!(s.n_pages, 0);
    assert_eq!(page(&mut s, 4), 1);
}

/// Shared writes (`page_write_shared`) from several threads, to their own
/// pages and to one page they all write, interleaved with exclusive calls
/// (reads, stats, a passthrough page): no lost update (every page's epoch is
/// its number of changing writes), unique delta ids in log order, and the
/// log alone rebuilds the live state.
#[test]
fn shared_writes_from_threads_log_and_replay() {
    let state = crate::persist::open(Config::default()).unwrap().0;
    let (threads, writes) = (4u64, 3000u64);
    let (common, own, pt) = state
        .call(|s| {
            let common = s.page_create(64, LOC_CPU)?.id;
            let own: Vec<u64> = (0..threads).map(|_| s.page_create(64, LOC_CPU).map(|p| p.id)).collect::<Result<_>>()?;
            let pt = s.page_create(64, LOC_CPU)?.id;
            s.recompute_set(pt, RC_PASSTHROUGH, &[own[0]])?;
            Ok((common, own, pt))
        })
        .unwrap();
    std::thread::scope(|sc| {
        for (t, &mine) in own.iter().enumerate() {
            let state = &state;
            sc.spawn(move || {
                let mut v = vec![0u8; 64];
                let mut w = vec![0u8; 64];
                for k in 1..=writes {
                    v[(8 + k % 56) as usize] = k as u8 ^ 0x5A;
                    v[..8].copy_from_slice(&k.to_le_bytes()); // always a change
                    // own[0] has a passthrough dependent: its writes run
                    // exclusively, with their cycle (no closures here)
                    let o = state.page_write_shared(mine, &v, WRITE_PROPAGATE).unwrap();
                    assert_eq!((o.prop_status, o.epoch), (0, k));
                    w[0] = t as u8;
                    w[1..9].copy_from_slice(&k.to_le_bytes());
                    let o = state.page_write_shared(common, &w, WRITE_PROPAGATE).unwrap();
                    assert!(o.delta_id > 0);
                    if k % 97 == 0 {
                        let (a, b) = state.call(|s| Ok((read(s, mine), s.stats()))).unwrap();
                        assert_eq!(a, v, "a read sees the thread's own last write");
                        assert!(b.deltas_applied > 0);
                    }
                }
            });
        }
    });
    state
        .call(|s| {
            let n = threads * writes;
            assert_eq!(s.slot(common)?.page.epoch, n, "no lost update on the shared page");
            for &p in &own {
                assert_eq!(s.slot(p)?.page.epoch, writes);
            }
            assert_eq!(read(s, pt), read(s, own[0]));
            assert_eq!(s.stats().deltas_applied, 2 * n + writes, "writes + passthrough recomputes");
            let recs = s.log.records_from(1)?;
            let ids: Vec<u64> = recs.iter().filter(|r| r.header.kind == REC_DELTA).map(|r| r.header.delta_id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "delta ids rise along the log");
            assert!(recs.iter().enumerate().all(|(i, r)| r.header.seq == i as u64 + 1));
            let mut r = st();
            for rec in &recs {
                r.apply_record(rec, true)?;
            }
            assert_eq!(fingerprint(&r), fingerprint(s));
            Ok(())
        })
        .unwrap();
}

/// A shared write refuses (changing nothing) what needs its caller, and
/// works on file logs and after a close only as documented.
#[test]
fn shared_write_refusals_file_logs_and_close() {
    let state = crate::persist::open(Config::default()).unwrap().0;
    let (a, b, c) = state.call(|s| Ok((page(s, 8), page(s, 8), page(s, 8)))).unwrap();
    state.call(|s| s.edge_add(a, b, 0)).unwrap();
    // no closure anywhere: a cycle runs natively, exclusively (b invalidated)
    let o = state.page_write_shared(a, &[9; 8], WRITE_PROPAGATE).unwrap();
    assert_eq!((o.prop_status, o.epoch), (0, 1));
    // a closure somewhere: a write that starts a cycle needs its caller
    state.call(|s| s.recompute_set(c, RC_CLOSURE, &[b])).unwrap();
    let before = state.call(|s| Ok((fingerprint(s), s.log.len()))).unwrap();
    assert_eq!(state.page_write_shared(a, &[1; 8], WRITE_PROPAGATE).unwrap().prop_status, PROP_NEED_LOCK);
    assert_eq!(state.call(|s| Ok(s.closures)).unwrap(), 1);
    state.call(|s| {
        s.events_enable(true);
        Ok(())
    })
    .unwrap();
    assert_eq!(state.page_write_shared(b, &[1; 8], 0).unwrap().prop_status, PROP_NEED_LOCK);
    assert_eq!(state.call(|s| Ok((fingerprint(s), s.log.len()))).unwrap(), before);
    state.call(|s| {
        s.events_enable(false);
        Ok(())
    })
    .unwrap();
    // without PROPAGATE a page with dependents is written in place
    assert_eq!(state.page_write_shared(a, &[2; 8], 0).unwrap().epoch, 2);
    // the closure count follows registrations and deletes
    state.call(|s| s.recompute_set(c, RC_NONE, &[])).unwrap();
    assert_eq!(state.call(|s| Ok(s.closures)).unwrap(), 0);
    state.call(|s| s.recompute_set(c, RC_CLOSURE, &[b])).unwrap();
    state.call(|s| s.page_delete(b, true)).unwrap();
    assert_eq!(state.call(|s| Ok(s.closures)).unwrap(), 0, "c's recompute named b");
    assert_eq!(state.page_write_shared(a, &[2; 7], 0).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(state.page_write_shared(99, &[2; 8], 0).unwrap_err().kind, ErrorKind::PageNotFound);
    state.close().unwrap();
    state.close().unwrap();
    assert_eq!(state.page_write_shared(a, &[3; 8], 0).unwrap_err().kind, ErrorKind::Closed);
    assert_eq!(state.call(|s| Ok(s.n_pages)).unwrap_err().kind, ErrorKind::Closed);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.tlog");
    let state = crate::persist::open(file_cfg(&path, Durability::Buffered, true)).unwrap().0;
    let a = state.call(|s| Ok(page(s, 8))).unwrap();
    let o = state.page_write_shared(a, &[9; 8], WRITE_PROPAGATE).unwrap();
    assert_eq!((o.prop_status, o.epoch), (0, 1));
    drop(state);
    let state = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).unwrap().0;
    assert_eq!(read_state(&state, a), vec![9; 8]);
}

/// `hold` makes shared writes refuse (changing nothing) until released;
/// holds nest; releasing without a hold is an error.
#[test]
fn hold_refuses_shared_writes() {
    let state = crate::persist::open(Config::default()).unwrap().0;
    let a = state.call(|s| Ok(page(s, 8))).unwrap();
    state.call(|s| s.hold(true)).unwrap();
    state.call(|s| s.hold(true)).unwrap();
    let before = state.call(|s| Ok((fingerprint(s), s.log.len()))).unwrap();
    assert_eq!(state.page_write_shared(a, &[1; 8], 0).unwrap().prop_status, PROP_NEED_LOCK);
    state.call(|s| s.hold(false)).unwrap();
    assert_eq!(state.page_write_shared(a, &[1; 8], WRITE_PROPAGATE).unwrap().prop_status, PROP_NEED_LOCK);
    assert_eq!(state.call(|s| Ok((fingerprint(s), s.log.len()))).unwrap(), before);
    // the holder's own exclusive writes go on
    assert_eq!(state.call(|s| s.page_write(a, &[2; 8], 0)).unwrap().epoch, 1);
    state.call(|s| s.hold(false)).unwrap();
    assert_eq!(state.call(|s| s.hold(false)).unwrap_err().kind, ErrorKind::Busy);
    assert_eq!(state.page_write_shared(a, &[3; 8], 0).unwrap().epoch, 2);
}

/// A thread's shared writes are logged in its own order, also while other
/// threads keep the shards busy with long writes (a thread never changes
/// lanes; it used to move to a free shard, and its later writes could then
/// be logged first). Needs more writer threads than shards to bite.
#[test]
fn one_thread_keeps_its_order_under_load() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let state = crate::persist::open(Config::default()).unwrap().0;
    let n = 5000usize;
    let big_size = 1usize << 20;
    let (mine, big) = state
        .call(|s| {
            let mine: Vec<u64> = (0..n).map(|_| page(s, 16)).collect();
            let big: Vec<u64> = (0..3).map(|_| page(s, big_size as u64)).collect();
            Ok((mine, big))
        })
        .unwrap();
    let stop = AtomicBool::new(false);
    let started = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for &b in &big {
            let (state, stop, started) = (&state, &stop, &started);
            sc.spawn(move || {
                let mut v = vec![0u8; big_size];
                let mut k = 0u8;
                while !stop.load(Relaxed) {
                    k = k.wrapping_add(1);
                    v.iter_mut().step_by(4096).for_each(|x| *x = k);
                    state.page_write_shared(b, &v, 0).unwrap();
                    started.fetch_add(1, Relaxed);
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            });
        }
        while started.load(Relaxed) < 3 {
            std::thread::yield_now();
        }
        let (state, mine) = (&state, &mine);
        sc.spawn(move || {
            for (k, &p) in mine.iter().enumerate() {
                state.page_write_shared(p, &[k as u8 | 1; 16], 0).unwrap();
                let t = std::time::Instant::now();
                while t.elapsed().as_micros() < 5 {
                    std::hint::spin_loop();
                }
            }
        })
        .join()
        .unwrap();
        stop.store(true, Relaxed);
    });
    state
        .call(|s| {
            let order: Vec<u64> = s
                .log
                .records_from(1)?
                .into_iter()
                .filter(|r| r.header.kind == REC_DELTA && r.header.page_id <= n as u64)
                .map(|r| r.header.page_id)
                .collect();
            assert_eq!(order, mine, "this thread's writes, in its order");
            Ok(())
        })
        .unwrap();
}

pub(crate) fn count_closures(s: &Inner) -> usize {
    s.page_ids().into_iter().filter(|&i| s.slot(i).unwrap().rc.kind == RC_CLOSURE).count()
}

/// `closures` (which lets a shared write run a cycle natively) always equals
/// the number of closure recomputes, through registrations, deletes, replay
/// and reset.
#[test]
fn closure_count_follows_every_change() {
    let mut s = st();
    let mut seed = 7u64;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..400 {
        let ids = s.page_ids();
        match rnd(5) {
            0 | 1 if ids.len() < 30 => {
                page(&mut s, 8);
            }
            2 if ids.len() >= 2 => {
                let (c, p) = (ids[rnd(ids.len() as u64) as usize], ids[rnd(ids.len() as u64) as usize]);
                let kind = [RC_NONE, RC_PASSTHROUGH, RC_CLOSURE][rnd(3) as usize];
                let _ = s.recompute_set(c, kind, if kind == RC_NONE { &[] } else { std::slice::from_ref(&p) });
            }
            3 if !ids.is_empty() => {
                let _ = s.page_delete(ids[rnd(ids.len() as u64) as usize], true);
            }
            _ => {
                let n = s.log.len();
                if n > 2 && step % 7 == 0 {
                    s.replay(n - 1).unwrap();
                }
            }
        }
        assert_eq!(s.closures, count_closures(&s), "step {step}");
    }
    assert!(s.closures > 0, "the walk registered closures");
    s.reset().unwrap();
    assert_eq!(s.closures, 0);
}
