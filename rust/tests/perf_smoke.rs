//! Per-op timings of the hot native paths (min over rounds, to filter noise
//! from a busy machine). Ignored by default; run with
//! `cargo test --release -p mmsb --test perf_smoke -- --ignored --nocapture`.
//! Reports only; asserts nothing about speed.

use mmsb::ffi::*;
use std::ptr::{null, null_mut};
use std::time::Instant;

fn open() -> *mut MmsbState {
    let c = MmsbConfig {
        abi_version: 1,
        strict_epochs: 0,
        enable_gpu: 0,
        durability: 0,
        truncate: 0,
        gpu_threshold: 1 << 20,
        tlog_path: null(),
        tlog_path_len: 0,
        threads: 0,
        reserved: 0,
    };
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
