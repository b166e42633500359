//! Diff and apply kernels by page size (1 KiB, 64 KiB, 256 KiB), dense and
//! sparse deltas. Reports throughput in bytes of page processed.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mmsb::{delta, diff};
use std::time::Duration;

fn data(n: usize, every: usize) -> (Vec<u8>, Vec<u8>) {
    let old: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
    let mut new = old.clone();
    for i in (0..n).step_by(every) {
        new[i] ^= 0x5a;
    }
    (old, new)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernels");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(800)).sample_size(20);
    for &n in &[1usize << 10, 64 << 10, 256 << 10] {
        g.throughput(Throughput::Bytes(n as u64));
        for (label, every) in [("sparse1pct", 100usize), ("dense50pct", 2)] {
            let (old, new) = data(n, every);
            let mut bm = Vec::new();
            g.bench_with_input(BenchmarkId::new(format!("diff/{label}"), n), &n, |b, _| {
                b.iter(|| diff::diff_bitmap(black_box(&old), black_box(&new), &mut bm))
            });
            let mut bm = Vec::new();
            diff::diff_bitmap(&old, &new, &mut bm);
            let mut dst = old.clone();
            g.bench_with_input(BenchmarkId::new(format!("apply_dense/{label}"), n), &n, |b, _| {
                b.iter(|| {
                    dst.copy_from_slice(&old);
                    delta::apply_dense(black_box(&mut dst), &bm, &new)
                })
            });
            let (sm, sd) = delta::dense_to_sparse(n, &bm, &new);
            g.bench_with_input(BenchmarkId::new(format!("apply_sparse/{label}"), n), &n, |b, _| {
                b.iter(|| {
                    dst.copy_from_slice(&old);
                    delta::apply_sparse(black_box(&mut dst), &sm, &sd)
                })
            });
        }
        // reference point: the memcpy that every apply iteration above pays
        let old = vec![1u8; n];
        let mut dst = vec![0u8; n];
        g.bench_with_input(BenchmarkId::new("memcpy_baseline", n), &n, |b, _| b.iter(|| dst.copy_from_slice(black_box(&old))));
    }
    g.finish();
}

criterion_group!(kernels, benches);
criterion_main!(kernels);
