//! TLog and checkpoint throughput: append (memory, buffered), acknowledged
//! fsync writes (1 and 8 threads, group commit; also whole state writes that
//! propagate to a passthrough child, 4 records each, and one writer whose
//! cycles pause for a closure page), recovery speed,
//! checkpoint write. Reports only; never fails on a number.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmsb::checkpoint::{self, SnapPage, Snapshot};
use mmsb::propagate::{RC_CLOSURE, RC_PASSTHROUGH};
use mmsb::state::{Config, WRITE_DEFER_SYNC, WRITE_PROPAGATE};
use mmsb::tlog::{crc32c, Durability, RecordHeader, RecordRef, TLog};

const MASK: usize = 128;
const DATA: usize = 1024;

fn delta_header(i: u64) -> RecordHeader {
    RecordHeader { kind: 6, page_id: 1 + i % 64, delta_id: i, base_epoch: i, timestamp: i, mask_len: MASK as u64, ..Default::default() }
}

fn append_n(log: &mut TLog, n: u64, mask: &[u8], data: &[u8]) {
    for i in 0..n {
        black_box(log.append(&RecordRef { header: delta_header(i), mask, data }).unwrap());
    }
}

fn bench_append(c: &mut Criterion) {
    let mask = vec![0xFFu8; MASK];
    let data: Vec<u8> = (0..DATA).map(|i| i as u8).collect();
    let mut g = c.benchmark_group("tlog_append_1KiB_dense");
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    g.bench_function("memory", |b| {
        let mut log = TLog::memory();
        b.iter_custom(|iters| {
            log.truncate_after(0).unwrap(); // keeps the buffer's capacity
            let t = Instant::now();
            append_n(&mut log, iters, &mask, &data);
            t.elapsed()
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffered.log");
    g.bench_function("buffered", |b| {
        b.iter_custom(|iters| {
            let (mut log, _, _) = TLog::open(&path, Durability::Buffered, true).unwrap();
            let t = Instant::now();
            append_n(&mut log, iters, &mask, &data);
            log.flush().unwrap();
            let e = t.elapsed();
            drop(log);
            e
        })
    });
    g.finish();
}

/// CRC32C alone (user time of every file-log append and of recovery):
/// a 1 KiB dense delta frame (64 + 128 + 1024 bytes CRC'd), and 256 KiB.
fn bench_crc(c: &mut Criterion) {
    let buf: Vec<u8> = (0..(256usize << 10)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut g = c.benchmark_group("crc32c");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    for n in [64usize, 1216, 256 << 10] {
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("{n}"), |b| b.iter(|| crc32c(black_box(&buf[..n]))));
    }
    g.finish();
}

fn fsync_writes(path: &std::path::Path, threads: u64, iters: u64, data: &[u8]) -> Duration {
    let (log, _, _) = TLog::open(path, Durability::Fsync, true).unwrap();
    let log = Arc::new(Mutex::new(log));
    let per = iters.div_ceil(threads);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let log = Arc::clone(&log);
            s.spawn(move || {
                for i in 0..per {
                    let (seq, h) = {
                        let mut l = log.lock().unwrap();
                        let seq = l.append(&RecordRef { header: delta_header(i), mask: &[], data }).unwrap();
                        (seq, l.sync_handle().unwrap())
                    };
                    h.wait_durable(seq).unwrap();
                }
            });
        }
    });
    t.elapsed()
}

/// `threads` writers, each on its own 64-byte page, through a state with an
/// fsync file log; with `propagate`, every page has a passthrough child, so a
/// write logs 4 records (bracket begin, delta, the child's delta, end).
fn fsync_state_writes(path: &std::path::Path, threads: u64, iters: u64, propagate: bool) -> Duration {
    let cfg = Config { tlog_path: Some(path.to_path_buf()), durability: Durability::Fsync, truncate: true, ..Config::default() };
    let (state, _) = mmsb::persist::open(cfg).unwrap();
    let pages: Vec<u64> = state
        .call(|s| {
            Ok((0..threads)
                .map(|_| {
                    let p = s.page_create(64, 0).unwrap().id;
                    if propagate {
                        let c = s.page_create(64, 0).unwrap().id;
                        s.recompute_set(c, RC_PASSTHROUGH, &[p]).unwrap();
                    }
                    p
                })
                .collect())
        })
        .unwrap();
    let per = iters.div_ceil(threads);
    let t = Instant::now();
    std::thread::scope(|s| {
        for &p in &pages {
            let state = &state;
            s.spawn(move || {
                for i in 0..per {
                    let bytes = [(i % 250) as u8 + 1; 64];
                    state.call_write(WRITE_PROPAGATE, |s, f| s.page_write(p, &bytes, f)).unwrap();
                }
            });
        }
    });
    t.elapsed()
}

/// One writer whose page has a closure child, driven as Julia drives it: the
/// write pauses the cycle, ~20 µs of "recompute", submit, run, then a wait
/// for the cycle's last record (5 records per write).
fn fsync_closure_writes(path: &std::path::Path, iters: u64) -> Duration {
    let cfg = Config { tlog_path: Some(path.to_path_buf()), durability: Durability::Fsync, truncate: true, ..Config::default() };
    let (state, _) = mmsb::persist::open(cfg).unwrap();
    let (p, c) = state
        .call(|s| {
            let (p, c) = (s.page_create(64, 0)?.id, s.page_create(64, 0)?.id);
            s.recompute_set(c, RC_CLOSURE, &[p])?;
            Ok((p, c))
        })
        .unwrap();
    let t = Instant::now();
    for i in 0..iters {
        let bytes = [(i % 250) as u8 + 1; 64];
        state.call_write(WRITE_PROPAGATE | WRITE_DEFER_SYNC, |s, f| s.page_write(p, &bytes, f)).unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_micros(20) {}
        state.call(|s| s.prop_submit(c, &bytes)).unwrap();
        state.call(|s| s.prop_run()).unwrap();
        state.sync_to(state.call(|s| Ok(s.log.len())).unwrap()).unwrap();
    }
    t.elapsed()
}

fn bench_fsync(c: &mut Criterion) {
    let data = vec![7u8; 256];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fsync.log");
    let mut g = c.benchmark_group("tlog_fsync_acked_writes");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 8] {
        g.bench_function(format!("{threads}_threads"), |b| b.iter_custom(|iters| fsync_writes(&path, threads, iters, &data)));
    }
    let spath = dir.path().join("state.log");
    g.bench_function("state_1_thread_closure_cycle", |b| b.iter_custom(|iters| fsync_closure_writes(&spath, iters)));
    for propagate in [false, true] {
        let name = if propagate { "state_8_threads_propagating" } else { "state_8_threads" };
        g.bench_function(name, |b| b.iter_custom(|iters| fsync_state_writes(&spath, 8, iters, propagate)));
    }
    g.finish();
}

fn bench_recovery(c: &mut Criterion) {
    let mask = vec![0xFFu8; MASK];
    let data: Vec<u8> = (0..DATA).map(|i| i as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recover.log");
    {
        let (mut log, _, _) = TLog::open(&path, Durability::Buffered, true).unwrap();
        append_n(&mut log, 32_000, &mask, &data); // ~37 MB
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let mut g = c.benchmark_group("tlog_recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("open_{}MB", bytes >> 20), |b| {
        b.iter(|| {
            let (_, recs, rep) = TLog::open(&path, Durability::Buffered, false).unwrap();
            assert_eq!(rep.records, 32_000);
            black_box(recs)
        })
    });
    g.finish();
}

fn bench_checkpoint(c: &mut Criterion) {
    let snap = Snapshot {
        next_page_id: 101,
        pages: (1..=100u64)
            .map(|id| SnapPage { id, size: 1024, epoch: id, bytes: vec![id as u8; 1024], ..Default::default() })
            .collect(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.ckpt");
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(300));
    g.bench_function("write_100x1KiB_synced", |b| b.iter(|| checkpoint::write(&path, &snap).unwrap()));
    g.bench_function("read_100x1KiB", |b| b.iter(|| black_box(checkpoint::read(&path).unwrap())));
    g.finish();
}

criterion_group!(benches, bench_crc, bench_append, bench_fsync, bench_recovery, bench_checkpoint);
criterion_main!(benches);
