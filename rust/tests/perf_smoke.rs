//! Per-op timings of the hot native paths (min over rounds, to filter noise
//! from a busy machine). Ignored by default; run with
//! `cargo test --release -p mmsb --test perf_smoke -- --ignored --nocapture`.
//! Reports only; asserts nothing about speed.

use mmsb::ffi::*;
use std::ptr::null_mut;
use std::time::Instant;

fn open() -> *mut MmsbState {
    let c = MmsbConfig { enable_gpu: 0, ..Default::default() };
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, 0);
    st
}

fn page(st: *mut MmsbState, n: u64) -> u64 {
    let mut i = MmsbPageInfo::default();
    assert_eq!(unsafe { mmsb_page_create(st, n, 0, &mut i) }, 0);
    i.id
}

fn per_op(label: &str, every: usize, hop: bool) {
    let mut best = f64::MAX;
    for _round in 0..60 {
        let st = open();
        let p = page(st, 1024);
        if hop {
            let c = page(st, 1024);
            assert_eq!(unsafe { mmsb_recompute_set(st, c, 1, [p].as_ptr(), 1) }, 0);
        }
        let a = vec![0u8; 1024];
        let mut b = a.clone();
        for i in (0..1024).step_by(every) {
            b[i] = 1 + (i % 200) as u8;
        }
        let mut w = MmsbWriteResult::default();
        let n = 3_000;
        let t = Instant::now();
        for k in 0..n {
            let src = if k & 1 == 0 { &a } else { &b };
            unsafe { mmsb_page_write(st, p, src.as_ptr(), 1024, 1, &mut w) };
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        unsafe { mmsb_state_free(st) };
    }
    println!("{label:<40} {best:>8.1} ns/op (min of 60 rounds x 3k)");
}

#[test]
#[ignore]
fn report_write_timings() {
    per_op("page_write 1 KiB, 1% changed (sparse)", 100, false);
    per_op("page_write 1 KiB, 100% changed (dense)", 1, false);
    per_op("page_write 1 KiB 1% + passthrough hop", 100, true);
    let st = open();
    let p = page(st, 1024);
    let a = vec![0u8; 1024];
    let mut w = MmsbWriteResult::default();
    let t = Instant::now();
    for _ in 0..100_000 {
        unsafe { mmsb_page_write(st, p, a.as_ptr(), 1024, 1, &mut w) };
    }
    println!("{:<40} {:>8.1} ns/op", "page_write 1 KiB no-op", t.elapsed().as_nanos() as f64 / 1e5);
    unsafe { mmsb_state_free(st) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A chain `p -> c1 -> ... -> c_len` of passthrough pages (1 KiB).
fn chain(st: *mut MmsbState, len: usize) -> u64 {
    let p = page(st, 1024);
    let mut prev = p;
    for _ in 0..len {
        let c = page(st, 1024);
        assert_eq!(unsafe { mmsb_recompute_set(st, c, 1, [prev].as_ptr(), 1) }, 0);
        prev = c;
    }
    p
}

/// Writes alternating buffers (`every`-th byte differs) after a reset, like
/// the Julia harness: median ns per write over `samples` samples of `n`.
fn shape_write(label: &str, size: usize, every: usize, hops: usize, n: usize, samples: usize) {
    let st = open();
    let a = vec![0u8; size];
    let mut b = a.clone();
    for i in (0..size).step_by(every) {
        b[i] = 1 + (i % 200) as u8;
    }
    let mut w = MmsbWriteResult::default();
    let mut ts = Vec::new();
    for _ in 0..samples {
        assert_eq!(unsafe { mmsb_state_reset(st) }, 0);
        let p = if hops == 0 { page(st, size as u64) } else { chain(st, hops) };
        let t = Instant::now();
        for k in 0..n {
            let src = if k & 1 == 0 { &b } else { &a };
            unsafe { mmsb_page_write(st, p, src.as_ptr(), size as u64, 1, &mut w) };
        }
        ts.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    unsafe { mmsb_state_free(st) };
    println!("{label:<40} {:>10.1} ns/op (median)", median(ts));
}

fn shape_batch(len: usize, nd: usize) {
    let st = open();
    let mut ts = Vec::new();
    for _ in 0..300 {
        assert_eq!(unsafe { mmsb_state_reset(st) }, 0);
        let p = chain(st, len - 1);
        let payloads: Vec<Vec<u8>> = (0..nd).map(|k| (0..1024).map(|i| (i * 7 + k * 13 + 1) as u8).collect()).collect();
        let mask = vec![0xFFu8; 128];
        let descs: Vec<MmsbDeltaDesc> = payloads
            .iter()
            .map(|pl| {
                let mut s = MmsbDeltaStamp::default();
                assert_eq!(unsafe { mmsb_delta_stamp(st, p, &mut s) }, 0);
                MmsbDeltaDesc {
                    id: s.id,
                    page_id: p,
                    base_epoch: s.base_epoch,
                    timestamp: s.timestamp,
                    source: 2,
                    encoding: 0,
                    reserved: [0; 6],
                    mask: mask.as_ptr(),
                    mask_len: 128,
                    payload: pl.as_ptr(),
                    payload_len: 1024,
                }
            })
            .collect();
        let mut o = MmsbBatchResult::default();
        let t = Instant::now();
        assert_eq!(unsafe { mmsb_delta_route_batch(st, descs.as_ptr(), nd as u64, 1, &mut o) }, 0);
        ts.push(t.elapsed().as_nanos() as f64);
    }
    unsafe { mmsb_state_free(st) };
    println!("{:<40} {:>10.1} ns (median)", format!("batch_{len}x{nd}"), median(ts));
}

/// The shapes of `benchmark/benchmarks.jl`, natively (reset between samples).
#[test]
#[ignore]
fn report_shapes() {
    shape_write("sparse 1 KiB, 1000 writes after reset", 1024, 100, 0, 1000, 200);
    shape_write("dense 1 KiB, 1000 writes after reset", 1024, 1, 0, 1000, 200);
    shape_write("sparse 1 KiB, 100k writes after reset", 1024, 100, 0, 100_000, 5);
    shape_write("dense 1 KiB, 100k writes after reset", 1024, 1, 0, 100_000, 5);
    shape_write("dense 256 KiB", 256 << 10, 1, 0, 20, 50);
    shape_write("single_hop (1% + 1 passthrough)", 1024, 100, 1, 1000, 100);
    shape_write("chain_10 (1% + 10 passthrough)", 1024, 100, 10, 200, 100);
    shape_batch(32, 4);
    shape_batch(128, 2);
    let mut ts = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let st = open();
        page(st, 1024);
        unsafe { mmsb_state_free(st) };
        ts.push(t.elapsed().as_nanos() as f64);
    }
    println!("{:<40} {:>10.1} ns (median)", "state_new + 1 KiB page + free", median(ts));
}

/// Only the propagation shapes of `benchmark/benchmarks.jl` (for profiling).
#[test]
#[ignore]
fn report_propagation_shapes() {
    shape_write("single_hop (1% + 1 passthrough)", 1024, 100, 1, 1000, 100);
    shape_write("chain_10 (1% + 10 passthrough)", 1024, 100, 10, 200, 100);
    for _ in 0..5 {
        shape_batch(32, 4);
    }
    shape_batch(128, 2);
}
