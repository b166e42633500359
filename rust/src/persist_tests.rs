//! Unit tests of logs, recovery, checkpoints and replay: a state rebuilt
//! from its log or a checkpoint is the live one (no FFI).

use crate::delta::ENC_DENSE;
use crate::error::{ErrorKind, Result};
use crate::page::LOC_CPU;
use crate::propagate::PropStep;
use crate::state::tests::*;
use crate::state::*;
use crate::tlog::{Durability, RecordHeader, TLog};

#[test]
fn log_replay_rebuilds_identical_state() {
    let mut s = st();
    workload(&mut s);
    let fp = fingerprint(&s);
    let mut r = st();
    for rec in s.log.records_from(1).unwrap() {
        r.apply_record(&rec, true).unwrap();
    }
    assert_eq!(fingerprint(&r), fp);
    // rollback to a prefix and back: prefix state, log cut
    let n = s.log.len();
    s.replay(n).unwrap();
    assert_eq!(fingerprint(&s), fp);
    s.replay(7).unwrap(); // creates, recompute, edge, a's first write, b's passthrough
    assert_eq!(s.log.len(), 7);
    assert_eq!(s.n_pages, 3);
    assert_eq!(s.slot(1).unwrap().page.epoch, 1);
    assert_eq!(s.slot(2).unwrap().page.epoch, 1);
    assert_eq!(s.next_ids(), (4, 3));
    assert_eq!(s.replay(8).unwrap_err().kind, ErrorKind::Invalid);
}

#[test]
fn replay_to_epoch_rebuilds_pages_at_epoch() {
    let mut s = st();
    workload(&mut s);
    let r = s.replay_to_epoch(3).unwrap();
    assert_eq!(r.slot(1).unwrap().page.epoch, 3);
    let mut v = vec![2u8; 64];
    v[2] = 200;
    assert_eq!(read(&r, 1), v);
    assert_eq!(r.slot(2).unwrap().page.epoch, 3);
    assert_eq!(r.next_ids(), s.next_ids());
    let full = s.replay_to_epoch(u64::MAX).unwrap();
    assert_eq!(fingerprint(&full), fingerprint(&s));
}

#[test]
fn checkpoint_roundtrip_then_log_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.ckpt");
    let mut s = st();
    workload(&mut s);
    s.checkpoint_write(&p).unwrap();
    let fp = fingerprint(&s);
    let mut r = st();
    r.checkpoint_load(&p).unwrap();
    assert_eq!(fingerprint(&r), fp);
    assert_eq!(r.page_info(2).unwrap().recompute, RC_PASSTHROUGH);
    assert_eq!(r.checkpoint_load(&p).unwrap_err().kind, ErrorKind::Invalid);
    // the restored passthrough still propagates
    r.page_write(1, &[9; 64], WRITE_PROPAGATE).unwrap();
    assert_eq!(read(&r, 2), vec![9; 64]);
    // the load is log record 1; replay within the restored state rolls back
    // to the checkpoint, and to before it (empty)
    assert_eq!(r.log.get(1).unwrap().header.kind, REC_SNAPSHOT);
    r.replay(1).unwrap();
    assert_eq!(fingerprint(&r), fp);
    r.replay(0).unwrap();
    assert_eq!((r.n_pages, r.log.len(), r.snapshot_seq), (0, 0, 0));
}

/// SPEC §8: a checkpoint loaded into a file-log state is logged, so that log
/// alone rebuilds the state on reopen (it used to fail: "page 1 not found").
#[test]
fn checkpoint_loaded_into_a_file_log_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.ckpt");
    let mut src = st();
    workload(&mut src);
    src.checkpoint_write(&ck).unwrap();
    let at_ckpt = full(&src);
    for durability in [Durability::Buffered, Durability::Fsync] {
        let path = dir.path().join(format!("{durability:?}.tlog"));
        let (state, _) = crate::persist::open(file_cfg(&path, durability, true)).unwrap();
        let live = state
            .call(|s| {
                // history before the load: the state is empty again, but its
                // log holds records (they are not replayed onto the snapshot)
                let x = s.page_create(8, LOC_CPU)?.id;
                s.page_write(x, &[1; 8], 0)?;
                s.page_delete(x, false)?;
                s.checkpoint_load(&ck)?;
                assert_eq!(full(s), at_ckpt);
                assert_eq!((s.log.len(), s.snapshot_seq), (4, 4));
                s.page_write(1, &[77; 64], WRITE_PROPAGATE)?;
                let n = s.page_create(16, LOC_CPU)?.id;
                s.page_write(n, &[5; 16], 0)?;
                s.edge_add(n, 3, 0)?;
                s.delta_stamp(n)?;
                Ok(full(s))
            })
            .unwrap();
        assert_eq!(read_state(&state, 2), vec![77; 64], "the restored passthrough propagates");
        drop(state);
        let (state, rep) = crate::persist::open(file_cfg(&path, durability, false)).unwrap();
        assert_eq!(rep.bytes_truncated, 0);
        state
            .call(|s| {
                assert_eq!(full(s), live, "{durability:?}");
                assert_eq!(s.snapshot_seq, 4);
                // rollback across the snapshot record: to it, before it
                s.replay(4)?;
                assert_eq!(full(s), at_ckpt);
                s.replay(3)?;
                assert_eq!((s.n_pages, s.snapshot_seq), (0, 0));
                Ok(())
            })
            .unwrap();
    }
}

/// A torn snapshot record is cut off like any torn tail (the state before
/// the load is recovered); a damaged one followed by valid records, or a
/// CRC-valid record whose body does not parse, is `TLogCorrupt`.
#[test]
fn torn_and_corrupt_snapshot_records() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.ckpt");
    let mut src = st();
    workload(&mut src);
    src.checkpoint_write(&ck).unwrap();
    let path = dir.path().join("t.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Buffered, true)).unwrap();
    state.call(|s| s.checkpoint_load(&ck)).unwrap();
    drop(state);
    let one = std::fs::read(&path).unwrap();
    // torn: every cut inside the frame recovers an empty state
    for cut in [one.len() - 1, one.len() - 100, 24 + 10, 24 + 80] {
        std::fs::write(&path, &one[..cut]).unwrap();
        let (state, rep) = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).unwrap();
        assert_eq!(rep.bytes_truncated, (cut - 24) as u64, "cut {cut}");
        assert_eq!(state.call(|s| Ok((s.n_pages, s.log.len()))).unwrap(), (0, 0));
    }
    // a bit flip in the snapshot payload with a valid record after it
    std::fs::write(&path, &one).unwrap();
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).unwrap();
    state.call(|s| s.page_write(1, &[3; 64], 0).map(|_| ())).unwrap();
    drop(state);
    let mut two = std::fs::read(&path).unwrap();
    two[24 + 72 + 40] ^= 0x10;
    std::fs::write(&path, &two).unwrap();
    let e = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).err().unwrap();
    assert_eq!(e.kind, ErrorKind::TLogCorrupt, "{}", e.msg);
    // CRC-valid, but the body is not a snapshot
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Buffered, true)).unwrap();
    state
        .call(|s| s.append(RecordHeader { kind: REC_SNAPSHOT, ..RecordHeader::default() }, &[], &[1, 2, 3]).map(|_| ()))
        .unwrap();
    drop(state);
    let e = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).err().unwrap();
    assert_eq!(e.kind, ErrorKind::TLogCorrupt);
    assert!(e.msg.contains("log record 1 cannot be replayed") && e.msg.contains("snapshot record"), "{}", e.msg);
}

#[test]
fn replay_to_epoch_after_a_checkpoint_load() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.ckpt");
    let mut src = st();
    workload(&mut src);
    src.checkpoint_write(&ck).unwrap();
    let mut r = st();
    r.checkpoint_load(&ck).unwrap();
    let e1 = r.slot(1).unwrap().page.epoch;
    for k in 0..3u8 {
        r.page_write(1, &[100 + k; 64], WRITE_PROPAGATE).unwrap();
    }
    // newer than the checkpoint: pages as they were
    let x = r.replay_to_epoch(e1 + 1).unwrap();
    assert_eq!((x.slot(1).unwrap().page.epoch, read(&x, 1)), (e1 + 1, vec![100; 64]));
    assert_eq!(x.snapshot_seq, 1);
    assert_eq!(x.log.get(1).unwrap().header.kind, REC_SNAPSHOT);
    assert_eq!(fingerprint(&r.replay_to_epoch(u64::MAX).unwrap()), fingerprint(&r));
    // older than the checkpoint: Invalid, with the reason
    let e = r.replay_to_epoch(e1 - 1).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.msg.contains("predates the checkpoint"), "{}", e.msg);
}

/// SPEC §2/§8: recovering from the log alone gives the same next ids and
/// clock as the live state, even when stamped deltas were never applied,
/// were applied as no-ops, or a stamp is the last thing before a crash.
#[test]
fn recovery_keeps_next_ids_and_clock_after_unapplied_stamps() {
    for durability in [Durability::Buffered, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let cfg = Config { tlog_path: Some(path.clone()), durability, ..Config::default() };
        let live = {
            let (state, _) = crate::persist::open(cfg.clone()).unwrap();
            state
                .call(|s| {
                    let a = s.page_create(16, LOC_CPU)?.id;
                    let st1 = s.delta_stamp(a)?; // never applied
                    let st2 = s.delta_stamp(a)?; // applied, changes nothing
                    let d = DeltaIn { id: st2.id, page_id: a, base_epoch: st2.base_epoch, timestamp: st2.timestamp, source: 0, encoding: ENC_DENSE, mask: &[0xFF, 0], payload: &[0u8; 16] };
                    assert_eq!(s.delta_route(&d, 0)?.delta_id, 0); // a no-op: not logged as a delta
                    assert!(st1.id < st2.id);
                    s.page_write(a, &[3u8; 16], 0)?;
                    s.delta_stamp(a)?; // the last thing before the "crash"
                    Ok((s.next_ids(), s.ids.clock.now()))
                })
                .unwrap()
            // dropped without a checkpoint: only the log survives
        };
        let (state, _) = crate::persist::open(Config { truncate: false, ..cfg }).unwrap();
        let got = state.call(|s| Ok((s.next_ids(), s.ids.clock.now()))).unwrap();
        assert_eq!(got, live, "{durability:?}");
    }
    // rollback replay of the same (memory) state
    let mut s = st();
    let a = page(&mut s, 8);
    s.page_write(a, &[1u8; 8], 0).unwrap();
    s.delta_stamp(a).unwrap();
    let live = (s.next_ids(), s.ids.clock.now());
    let last = s.log.len();
    s.replay(last).unwrap();
    assert_eq!((s.next_ids(), s.ids.clock.now()), live);
}

/// A crash can stop a log anywhere, also between a write and the
/// propagation it started: for every prefix of a file log, recovery cuts off
/// an unfinished cycle together with the write that started it, so every
/// passthrough child equals its parent again, and what is left is exactly
/// the state after some number of whole operations.
#[test]
fn recovery_cuts_off_an_unfinished_propagation_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Buffered, true)).unwrap();
    // a -> b -> c (passthroughs), a -> d (no recompute: only invalidated)
    let mut after_op: Vec<(u64, Full)> = Vec::new();
    state
        .call(|s| {
            let ids: Vec<u64> = (0..4).map(|_| page(s, 32)).collect();
            s.recompute_set(ids[1], RC_PASSTHROUGH, &[ids[0]])?;
            s.recompute_set(ids[2], RC_PASSTHROUGH, &[ids[1]])?;
            s.edge_add(ids[0], ids[3], 0)?;
            after_op.push((s.log.len(), full(s)));
            for k in 1..=4u8 {
                s.page_write(ids[0], &[k; 32], WRITE_PROPAGATE)?;
                after_op.push((s.log.len(), full(s)));
            }
            // a batch and an explicit propagation are operations too
            s.page_write(ids[1], &[9; 32], 0)?;
            after_op.push((s.log.len(), full(s)));
            s.prop_enqueue(&[ids[2]], ENQUEUE_SELF)?;
            s.prop_run()?;
            after_op.push((s.log.len(), full(s)));
            let stamp = s.delta_stamp(ids[0])?;
            after_op.push((s.log.len(), full(s)));
            let d = DeltaIn { id: stamp.id, page_id: ids[0], base_epoch: stamp.base_epoch, timestamp: stamp.timestamp, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xFF; 4], payload: &[6; 32] };
            s.route_batch(std::slice::from_ref(&d), WRITE_PROPAGATE)?;
            after_op.push((s.log.len(), full(s)));
            // a batch of several deltas without propagation is one operation too
            let s1 = s.delta_stamp(ids[3])?;
            after_op.push((s.log.len(), full(s)));
            let s2 = s.delta_stamp(ids[0])?;
            let d1 = DeltaIn { id: s1.id, page_id: ids[3], base_epoch: s1.base_epoch, timestamp: s1.timestamp, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xFF; 4], payload: &[7; 32] };
            let d2 = DeltaIn { id: s2.id, page_id: ids[0], base_epoch: s2.base_epoch, timestamp: s2.timestamp, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xFF; 4], payload: &[8; 32] };
            after_op.push((s.log.len(), full(s)));
            assert_eq!(s.route_batch(&[d1, d2], 0)?.applied, 2);
            after_op.push((s.log.len(), full(s)));
            // a cycle that pauses for a closure page (c -> e) spans calls
            let e = page(s, 32);
            after_op.push((s.log.len(), full(s)));
            s.recompute_set(e, RC_CLOSURE, &[ids[2]])?;
            after_op.push((s.log.len(), full(s)));
            let w = s.page_write(ids[0], &[5; 32], WRITE_PROPAGATE)?;
            assert_eq!((w.prop_status, w.pending_page), (1, e));
            s.prop_submit(e, &[8; 32])?;
            assert_eq!(s.prop_run()?.status, 0);
            after_op.push((s.log.len(), full(s)));
            Ok(())
        })
        .unwrap();
    drop(state);
    // recovery brings closure pages back as plain pages (SPEC §8)
    let plain = |mut f: Full| {
        for r in &mut f.2 {
            if r.1 == RC_CLOSURE {
                *r = (r.0, RC_NONE, Vec::new());
            }
        }
        f
    };
    let image = std::fs::read(&path).unwrap();
    let (log, recs, _) = TLog::open(&path, Durability::Buffered, false).unwrap();
    let n_cycles = recs.iter().filter(|r| r.header.kind == REC_CYCLE && r.header.encoding == CYCLE_BEGIN).count();
    assert_eq!(n_cycles, 8, "5 writes, the explicit propagation and the two batches");
    let ends: Vec<u64> = (1..=log.len()).map(|q| if q == log.len() { image.len() as u64 } else { file_offset(&recs, q + 1) }).collect();
    drop(log);
    let crash = dir.path().join("crash.tlog");
    for (q, &end) in ends.iter().enumerate() {
        let kept = q as u64 + 1;
        // cut right after record `kept`, and (a torn next record) halfway into the next one
        let torn = ends.get(q + 1).map(|&next| end + (next - end) / 2);
        for (cut, is_torn) in std::iter::once((end, false)).chain(torn.map(|t| (t, true))) {
            std::fs::write(&crash, &image[..cut as usize]).unwrap();
            let (state, rep) = crate::persist::open(file_cfg(&crash, Durability::Buffered, false)).unwrap();
            let got = state.call(|s| Ok((s.log.len(), full(s)))).unwrap();
            // past the setup: the state after the last whole operation in the prefix
            if let Some((want_len, want)) = after_op.iter().rev().find(|(len, _)| *len <= kept) {
                assert_eq!(got, (*want_len, plain(want.clone())), "prefix of {kept} records (torn: {is_torn})");
            }
            assert!(got.0 <= kept);
            assert_eq!(rep.records, got.0);
            assert_eq!(rep.bytes_truncated > 0, got.0 < kept || is_torn, "prefix of {kept} records: a cut is reported");
            drop(state);
            // the cut is on disk: reopening changes nothing more
            let (_, rep) = crate::persist::open(file_cfg(&crash, Durability::Buffered, false)).unwrap();
            assert_eq!((rep.records, rep.bytes_truncated), (got.0, 0));
        }
    }
}

/// File offset of record `seq` of a log holding `recs`: the 24-byte file
/// header, then a 72-byte frame header + payload per record before it
/// (docs/tlog_format.md).
fn file_offset(recs: &[crate::tlog::Record], seq: u64) -> u64 {
    24 + recs[..(seq - 1) as usize].iter().map(|r| 72 + r.payload.len() as u64).sum::<u64>()
}

/// The file image a crash would leave now, opened as a fresh state.
fn crash_image(path: &std::path::Path) -> (State, crate::tlog::RecoveryReport) {
    let crash = path.with_extension("crash");
    std::fs::write(&crash, std::fs::read(path).unwrap()).unwrap();
    crate::persist::open(file_cfg(&crash, Durability::Buffered, false)).unwrap()
}

/// Brackets never swallow another operation's records (review findings):
/// rolling back into the middle of a cycle closes its bracket; while a
/// cycle pauses for a closure page every other change is refused, so its
/// bracket holds only the cycle; `prop_enqueue` opens no bracket (its
/// `prop_run` does), so a write between them survives.
#[test]
fn brackets_never_swallow_other_operations() {
    let dir = tempfile::tempdir().unwrap();
    // replay into a bracket, then an unrelated write, a clean close, a reopen
    let path = dir.path().join("replay.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Buffered, true)).unwrap();
    let x = state
        .call(|s| {
            let a = page(s, 8);
            let b = page(s, 8);
            s.recompute_set(b, RC_PASSTHROUGH, &[a])?;
            let x = page(s, 8);
            s.page_write(a, &[1; 8], WRITE_PROPAGATE)?;
            let delta = (1..=s.log.len()).find(|&q| s.log.get(q).unwrap().header.kind == REC_DELTA).unwrap();
            assert_eq!(s.log.get(delta - 1)?.header.kind, REC_CYCLE, "the write's delta is inside its bracket");
            s.replay(delta)?;
            assert_eq!((read(s, a), read(s, b)), (vec![1; 8], vec![0; 8]), "rolled back into the middle of the cycle");
            s.page_write(x, &[7; 8], 0)?;
            Ok(x)
        })
        .unwrap();
    let live = state.call(|s| Ok(full(s))).unwrap();
    drop(state);
    let (state, rep) = crate::persist::open(file_cfg(&path, Durability::Buffered, false)).unwrap();
    assert_eq!(rep.bytes_truncated, 0);
    assert_eq!(state.call(|s| Ok(full(s))).unwrap(), live);
    assert_eq!(read_state(&state, x), vec![7; 8]);
    drop(state);

    // a closure pending: the bracket stays open across calls, every other
    // change is refused (nothing logged), a crash now cuts the whole cycle
    // with its write; once it ends, all of it survives
    let path = dir.path().join("closure.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
    let (a, b, x) = state
        .call(|s| {
            let a = page(s, 8);
            let b = page(s, 8);
            s.recompute_set(b, RC_CLOSURE, &[a])?;
            let x = page(s, 8);
            Ok((a, b, x))
        })
        .unwrap();
    let before = state.call(|s| Ok((fingerprint(s), s.ids.clock.now()))).unwrap();
    let w = state.call(|s| s.page_write(a, &[1; 8], WRITE_PROPAGATE)).unwrap();
    assert_eq!((w.prop_status, w.pending_page), (1, b));
    let n = state.call(|s| Ok(s.log.len())).unwrap();
    let d = DeltaIn { id: 99, page_id: x, base_epoch: 0, timestamp: 99, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xFF], payload: &[7; 8] };
    let ckpt = dir.path().join("mid.ckpt");
    let refused: Vec<(&str, Result<()>)> = state
        .call(|s| {
            Ok(vec![
                ("page_create", s.page_create(8, 0).map(|_| ())),
                ("page_delete", s.page_delete(x, true)),
                ("page_write", s.page_write(x, &[7; 8], 0).map(|_| ())),
                ("delta_stamp", s.delta_stamp(x).map(|_| ())),
                ("delta_route", s.delta_route(&d, 0).map(|_| ())),
                ("route_batch", s.route_batch(std::slice::from_ref(&d), 0).map(|_| ())),
                ("edge_add", s.edge_add(a, x, 0)),
                ("edge_remove", s.edge_remove(a, b)),
                ("recompute_set", s.recompute_set(x, RC_PASSTHROUGH, &[a])),
                ("prop_enqueue", s.prop_enqueue(&[a], ENQUEUE_CHILDREN)),
                ("checkpoint_write", s.checkpoint_write(&ckpt)),
                ("replay", s.replay(1)),
            ])
        })
        .unwrap();
    for (what, r) in refused {
        assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::Busy), "{what} while a closure page is pending");
    }
    assert!(!ckpt.exists());
    let shared = state.page_write_shared(x, &[7; 8], 0).unwrap();
    assert_eq!(shared.prop_status, PROP_NEED_LOCK);
    assert_eq!(state.call(|s| Ok(s.log.len())).unwrap(), n, "nothing logged while pending");
    assert_eq!(read_state(&state, x), vec![0; 8]);
    state.sync_to(n).unwrap(); // the open bracket is on disk (the write itself did not wait for it)
    let (crashed, rep) = crash_image(&path);
    assert!(rep.bytes_truncated > 0);
    // (closures come back as plain pages: compare pages, graph, ids, clock)
    assert_eq!(crashed.call(|s| Ok((fingerprint(s), s.ids.clock.now()))).unwrap(), before, "the unfinished cycle and its write are cut");
    drop(crashed);
    state.call(|s| s.prop_submit(b, &[2; 8]).map(|_| ())).unwrap();
    assert_eq!(state.call(|s| s.prop_run()).unwrap().status, 0);
    let (crashed, rep) = crash_image(&path);
    assert_eq!(rep.bytes_truncated, 0, "the ended cycle is on disk (fsync: the call that ended it waited)");
    assert_eq!((read_state(&crashed, a), read_state(&crashed, b)), (vec![1; 8], vec![2; 8]));
    drop((state, crashed));

    // prop_enqueue, a write, a crash before prop_run; then prop_run brackets
    let path = dir.path().join("enqueue.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
    let (a, b, x) = state
        .call(|s| {
            let a = page(s, 8);
            let x = page(s, 8);
            s.page_write(a, &[1; 8], 0)?;
            let b = page(s, 8);
            s.recompute_set(b, RC_PASSTHROUGH, &[a])?;
            s.prop_enqueue(&[a], ENQUEUE_CHILDREN)?;
            Ok((a, b, x))
        })
        .unwrap();
    state.call(|s| s.page_write(x, &[7; 8], 0)).unwrap();
    state.sync_to(state.call(|s| Ok(s.log.len())).unwrap()).unwrap();
    let (crashed, _) = crash_image(&path);
    assert_eq!(read_state(&crashed, x), vec![7; 8]);
    drop(crashed);
    state.call(|s| s.prop_run().map(|_| ())).unwrap();
    let kinds = state.call(|s| Ok((1..=s.log.len()).map(|q| s.log.get(q).unwrap().header).collect::<Vec<_>>())).unwrap();
    let n = kinds.len();
    assert_eq!((kinds[n - 3].kind, kinds[n - 2].page_id, kinds[n - 1].kind), (REC_CYCLE, b, REC_CYCLE));
    assert_eq!(read_state(&state, b), read_state(&state, a));
}

/// One open state per log file (review finding: two states appending to one
/// file lost acknowledged writes at the next open), and a checkpoint never
/// replaces the state's own log.
#[test]
fn a_log_file_belongs_to_one_open_state() {
    let dir = tempfile::tempdir().unwrap();
    for dur in [Durability::Buffered, Durability::Fsync] {
        let path = dir.path().join(format!("one-{dur:?}.tlog"));
        let (state, _) = crate::persist::open(file_cfg(&path, dur, true)).unwrap();
        let a = state.call(|s| Ok(page(s, 4))).unwrap();
        state.call(|s| s.page_write(a, &[1; 4], 0)).unwrap();
        for truncate in [false, true] {
            let e = crate::persist::open(file_cfg(&path, dur, truncate)).err().expect("second open refused");
            assert_eq!(e.kind, ErrorKind::Io, "{dur:?} truncate={truncate}: {}", e.msg);
            assert!(e.msg.contains("in use"), "{}", e.msg);
        }
        let e = state.call(|s| s.checkpoint_write(&path)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{}", e.msg);
        state.call(|s| s.page_write(a, &[2; 4], 0)).unwrap();
        drop(state);
        let (state, rep) = crate::persist::open(file_cfg(&path, dur, false)).unwrap();
        assert_eq!(rep.bytes_truncated, 0);
        assert_eq!(read_state(&state, a), vec![2; 4], "the log is whole and reopens once closed");
    }
}

/// Review findings on bracketed closure cycles: between `prop_submit` and the
/// `prop_run` that ends the cycle no page is pending, but the bracket is
/// still open, so other changes are refused until the cycle ends; and a
/// propagating batch that changes nothing while a `prop_enqueue`d cycle
/// waits for its `prop_run` leaves no bracket open. In both cases writes
/// that follow are never cut at recovery and the log reopens.
#[test]
fn a_bracket_is_open_only_while_its_cycle_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("submit.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
    let (a, b, c, x) = state
        .call(|s| {
            let a = page(s, 8);
            let b = page(s, 8);
            s.recompute_set(b, RC_CLOSURE, &[a])?;
            let c = page(s, 8);
            s.recompute_set(c, RC_CLOSURE, &[b])?;
            Ok((a, b, c, page(s, 8)))
        })
        .unwrap();
    assert_eq!(state.call(|s| s.page_write(a, &[1; 8], WRITE_PROPAGATE)).unwrap().pending_page, b);
    state.call(|s| s.prop_submit(b, &[2; 8]).map(|_| ())).unwrap();
    for flags in [0, WRITE_PROPAGATE] {
        let e = state.call(|s| s.page_write(x, &[7; 8], flags)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy, "between prop_submit and prop_run: {}", e.msg);
    }
    assert_eq!(state.call(|s| s.delta_stamp(x)).unwrap_err().kind, ErrorKind::Busy);
    assert_eq!(state.call(|s| s.prop_run()).unwrap(), PropStep { status: 1, page_id: c });
    state.call(|s| s.prop_submit(c, &[3; 8]).map(|_| ())).unwrap();
    assert_eq!(state.call(|s| s.prop_run()).unwrap().status, 0);
    state.call(|s| s.page_write(x, &[7; 8], 0)).unwrap();
    drop(state);
    let (state, rep) = crate::persist::open(file_cfg(&path, Durability::Fsync, false)).unwrap();
    assert_eq!(rep.bytes_truncated, 0);
    assert_eq!([read_state(&state, b), read_state(&state, c), read_state(&state, x)], [[2; 8], [3; 8], [7; 8]].map(Vec::from));
    drop(state);

    let path = dir.path().join("enqueue.tlog");
    let (state, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
    let (a, b, x) = state
        .call(|s| {
            let a = page(s, 8);
            let b = page(s, 8);
            s.recompute_set(b, RC_PASSTHROUGH, &[a])?;
            let x = page(s, 8);
            s.page_write(a, &[4; 8], 0)?;
            s.prop_enqueue(&[a], ENQUEUE_CHILDREN)?;
            let stamp = s.delta_stamp(a)?;
            let d = DeltaIn { id: stamp.id, page_id: a, base_epoch: stamp.base_epoch, timestamp: stamp.timestamp, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xFF], payload: &[4; 8] };
            assert_eq!(s.route_batch(std::slice::from_ref(&d), WRITE_PROPAGATE)?.applied, 0);
            assert_eq!(s.prop.begin_seq, 0, "no bracket left open");
            Ok((a, b, x))
        })
        .unwrap();
    state.call(|s| s.page_write(x, &[7; 8], 0)).unwrap();
    state.sync_to(state.call(|s| Ok(s.log.len())).unwrap()).unwrap();
    let (crashed, _) = crash_image(&path);
    assert_eq!(read_state(&crashed, x), vec![7; 8], "an acknowledged write survives");
    drop(crashed);
    state.call(|s| s.page_write(a, &[5; 8], WRITE_PROPAGATE).map(|_| ())).unwrap();
    drop(state);
    let (state, rep) = crate::persist::open(file_cfg(&path, Durability::Fsync, false)).unwrap();
    assert_eq!(rep.bytes_truncated, 0);
    assert_eq!((read_state(&state, a), read_state(&state, b)), (vec![5; 8], vec![5; 8]));
}

/// The live file-log state at `path`, rebuilt four ways: a copy of its log
/// reopened, another copy reopened and replayed to its end, `replay_to_epoch`,
/// and a checkpoint written and loaded (files named after `tag` in `dir`).
fn rebuilds(dir: &std::path::Path, tag: &str, path: &std::path::Path, live: &State) -> Vec<(&'static str, Inner)> {
    live.sync_to(live.call(|s| Ok(s.log.len())).unwrap()).unwrap();
    let ck = dir.join(format!("{tag}.ckpt"));
    live.call(|s| s.checkpoint_write(&ck)).unwrap(); // (flushes the log)
    let copies = [dir.join(format!("{tag}.copy1")), dir.join(format!("{tag}.copy2"))];
    for c in &copies {
        std::fs::copy(path, c).unwrap();
    }
    let (reopened, _) = crate::persist::open_inner(file_cfg(&copies[0], Durability::Buffered, false)).unwrap();
    let (mut replayed, _) = crate::persist::open_inner(file_cfg(&copies[1], Durability::Buffered, false)).unwrap();
    let n = replayed.log.len();
    replayed.replay(n).unwrap();
    let mut loaded = st();
    loaded.checkpoint_load(&ck).unwrap();
    vec![
        ("reopened", reopened),
        ("replayed", replayed),
        ("replay_to_epoch", live.call(|s| s.replay_to_epoch(u64::MAX)).unwrap()),
        ("checkpoint", loaded),
    ]
}

/// SPEC §8: a state rebuilt from its log or a checkpoint is the live state,
/// also in what it will skip and retry (review findings: signatures of
/// recomputes that changed nothing, and stale marks of a failed cycle, were
/// lost, so the next call diverged). Each scenario is rebuilt by reopening
/// a copy of the file log, by `replay` of that copy, by `replay_to_epoch`
/// and by a checkpoint; then the same call runs on all of them.
#[test]
fn rebuilt_states_skip_and_retry_what_the_live_one_does() {
    let dir = tempfile::tempdir().unwrap();
    type Setup = fn(&mut Inner) -> (u64, [u8; 4]);
    let scenarios: [(&str, Setup); 3] = [
        ("signature of a recompute that changed bytes", |s| {
            let (a, b, c) = (page(s, 4), page(s, 4), page(s, 4));
            s.recompute_set(c, RC_PASSTHROUGH, &[a]).unwrap();
            s.edge_add(b, c, 1).unwrap();
            s.page_write(a, &[1; 4], WRITE_PROPAGATE).unwrap();
            s.page_write(c, &[9; 4], WRITE_PROPAGATE).unwrap();
            (b, [5; 4]) // c's signature is unchanged: skipped, stays 9
        }),
        ("signature of a recompute that changed nothing", |s| {
            let (a, b, c) = (page(s, 4), page(s, 4), page(s, 4));
            s.recompute_set(c, RC_PASSTHROUGH, &[a]).unwrap();
            s.edge_add(b, c, 1).unwrap();
            s.page_write(a, &[2; 4], WRITE_PROPAGATE).unwrap();
            s.page_write(c, &[3; 4], WRITE_PROPAGATE).unwrap();
            s.page_write(a, &[3; 4], WRITE_PROPAGATE).unwrap(); // c recomputed: no change
            s.page_write(c, &[4; 4], WRITE_PROPAGATE).unwrap();
            (b, [5; 4])
        }),
        ("stale pages of a failed cycle", |s| {
            let (a, x, p, u, v) = (page(s, 4), page(s, 4), page(s, 4), page(s, 4), page(s, 4));
            s.recompute_set(x, RC_CLOSURE, &[a]).unwrap();
            s.recompute_set(p, RC_PASSTHROUGH, &[a]).unwrap();
            s.recompute_set(v, RC_PASSTHROUGH, &[u]).unwrap();
            assert_eq!(s.page_write(a, &[7; 4], WRITE_PROPAGATE).unwrap().pending_page, x);
            s.prop_fail(x).unwrap(); // x and p (queued after it) are stale
            s.page_delete(x, false).unwrap();
            (u, [1; 4]) // the next cycle retries p: p = 7
        }),
    ];
    for (k, (what, setup)) in scenarios.iter().enumerate() {
        let path = dir.path().join(format!("live{k}.tlog"));
        let (live, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
        let (id, bytes) = live.call(|s| Ok(setup(s))).unwrap();
        let rebuilt = rebuilds(dir.path(), &format!("{k}"), &path, &live);
        live.call(|s| s.page_write(id, &bytes, WRITE_PROPAGATE).map(|_| ())).unwrap();
        let want = live.call(|s| Ok((fingerprint(s), s.ids.clock.now()))).unwrap();
        for (how, mut s) in rebuilt {
            s.page_write(id, &bytes, WRITE_PROPAGATE).unwrap();
            assert_eq!((fingerprint(&s), s.ids.clock.now()), want, "{what}: {how}");
        }
    }
}

/// A routed delta cannot claim to be a recompute's result (review finding:
/// replay stores a signature for every `:propagation` delta, so a routed
/// one made rebuilt states skip a recompute the live one ran).
#[test]
fn routed_deltas_cannot_pose_as_recompute_results() {
    let mut s = st();
    let a = page(&mut s, 4);
    let stamp = s.delta_stamp(a).unwrap();
    let d = DeltaIn { id: stamp.id, page_id: a, base_epoch: 0, timestamp: stamp.timestamp, source: SOURCE_PROPAGATION, encoding: ENC_DENSE, mask: &[0xF], payload: &[9; 4] };
    let n = s.log.len();
    assert_eq!(s.delta_route(&d, 0).unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(s.route_batch(std::slice::from_ref(&d), 0).unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!((read(&s, a), s.log.len()), (vec![0; 4], n));
}

/// A page whose declared parent is force-deleted keeps its stale mark (flag
/// and stale set agree), so every rebuild reports what the live state does
/// (review finding: the flag was cleared while the page stayed in the set).
#[test]
fn a_stale_mark_survives_a_force_deleted_parent_and_every_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.tlog");
    let (live, _) = crate::persist::open(file_cfg(&path, Durability::Fsync, true)).unwrap();
    let c = live
        .call(|s| {
            let (q, y, c) = (page(s, 4), page(s, 4), page(s, 4));
            s.recompute_set(y, RC_CLOSURE, &[q])?;
            s.recompute_set(c, RC_PASSTHROUGH, &[q])?;
            assert_eq!(s.page_write(q, &[1; 4], WRITE_PROPAGATE)?.pending_page, y);
            s.prop_fail(y)?; // y and c stale
            s.page_delete(q, true)?; // their recomputes go with q
            let (a, x) = (page(s, 4), page(s, 4));
            s.recompute_set(x, RC_CLOSURE, &[a])?;
            s.edge_add(x, c, 1)?; // c comes after x in the next cycle
            assert_eq!(s.page_write(a, &[2; 4], WRITE_PROPAGATE)?.pending_page, x);
            s.prop_fail(x)?; // c still stale
            s.page_delete(x, true)?;
            Ok(c)
        })
        .unwrap();
    let stale = |s: &Inner| (s.page_info(c).unwrap().stale, s.prop.stale.contains(&c));
    assert_eq!(live.call(|s| Ok(stale(s))).unwrap(), (true, true));
    for (how, s) in rebuilds(dir.path(), "stale", &path, &live) {
        assert_eq!(stale(&s), (true, true), "{how}");
    }
}

/// A batch that changes nothing logs nothing, bracket included (review
/// finding: every batch of several deltas logged an empty begin/end pair).
#[test]
fn a_batch_that_changes_nothing_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = crate::persist::open(file_cfg(&dir.path().join("b.tlog"), Durability::Buffered, true)).unwrap();
    state
        .call(|s| {
            let (a, b) = (page(s, 4), page(s, 4));
            s.recompute_set(b, RC_PASSTHROUGH, &[a])?;
            for flags in [0, WRITE_PROPAGATE, WRITE_PROPAGATE | WRITE_PARALLEL] {
                let (s1, s2) = (s.delta_stamp(a)?, s.delta_stamp(b)?);
                let d = |st: Stamp, p: u64| DeltaIn { id: st.id, page_id: p, base_epoch: st.base_epoch, timestamp: st.timestamp, source: SOURCE_API, encoding: ENC_DENSE, mask: &[0xF], payload: &[0; 4] };
                let n = s.log.len();
                assert_eq!(s.route_batch(&[d(s1, a), d(s2, b)], flags)?.applied, 0);
                assert_eq!(s.log.len(), n, "flags {flags}");
            }
            Ok(())
        })
        .unwrap();
}
