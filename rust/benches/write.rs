//! End-to-end native writes through the C ABI: `mmsb_page_write` on a 1 KiB
//! page (1% changed -> sparse delta, 100% changed -> dense), and a write
//! followed by one passthrough hop.

use criterion::{criterion_group, criterion_main, Criterion};
use mmsb::ffi::*;
use std::ptr::null_mut;
use std::time::Duration;

fn open() -> *mut MmsbState {
    let c = MmsbConfig { enable_gpu: 0, ..Default::default() };
    let mut st = null_mut();
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, 0);
    st
}

fn page(st: *mut MmsbState) -> u64 {
    let mut i = MmsbPageInfo::default();
    assert_eq!(unsafe { mmsb_page_create(st, 1024, 0, &mut i) }, 0);
    i.id
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_1k");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(30);
    let mut w = MmsbWriteResult::default();
    // Two alternating buffers so every write changes bytes. The in-memory
    // log grows; reset every 200k writes to bound memory (outside timing is
    // not possible with iter, so resets are amortised and rare).
    for (name, every) in [("sparse_1pct", 100usize), ("dense_all", 1)] {
        let st = open();
        let id = page(st);
        let a = vec![0u8; 1024];
        let mut b = a.clone();
        for i in (0..1024).step_by(every) {
            b[i] = 1 + (i % 200) as u8;
        }
        let mut k = 0u64;
        g.bench_function(name, |bn| {
            bn.iter(|| {
                k += 1;
                let src = if k & 1 == 0 { &a } else { &b };
                unsafe { mmsb_page_write(st, id, src.as_ptr(), 1024, 1, &mut w) }
            })
        });
        unsafe { mmsb_state_free(st) };
    }
    {
        let st = open();
        let p = page(st);
        let ch = page(st);
        assert_eq!(unsafe { mmsb_recompute_set(st, ch, 1, [p].as_ptr(), 1) }, 0);
        let a = vec![0u8; 1024];
        let mut b = a.clone();
        for i in (0..1024).step_by(100) {
            b[i] = 7;
        }
        let mut k = 0u64;
        g.bench_function("sparse_1pct_plus_passthrough_hop", |bn| {
            bn.iter(|| {
                k += 1;
                let src = if k & 1 == 0 { &a } else { &b };
                unsafe { mmsb_page_write(st, p, src.as_ptr(), 1024, 1, &mut w) }
            })
        });
        unsafe { mmsb_state_free(st) };
    }
    {
        let st = open();
        let id = page(st);
        let a = vec![0u8; 1024];
        g.bench_function("noop_write", |bn| bn.iter(|| unsafe { mmsb_page_write(st, id, a.as_ptr(), 1024, 1, &mut w) }));
        unsafe { mmsb_state_free(st) };
    }
    g.finish();
}

criterion_group!(write, benches);
criterion_main!(write);
