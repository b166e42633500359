//! GPU tests: CPU reference == CUDA on random inputs when a device exists;
//! on a machine without one, the unavailable paths are checked instead.

#![cfg_attr(not(feature = "gpu"), allow(unused, unreachable_code))]

use super::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn bytes(&mut self, n: usize, alphabet: u64) -> Vec<u8> {
        (0..n).map(|_| self.below(alphabet) as u8).collect()
    }
}

fn skip() -> bool {
    if available() {
        return false;
    }
    println!("GPU not available: skipping ({})", unavailable_reason().unwrap_or_default());
    true
}

// ---- CPU reference -------------------------------------------------------

fn ref_dense(page: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    let mut n = 0;
    for i in 0..page.len() {
        if mask[i / 8] >> (i % 8) & 1 == 1 && page[i] != payload[i] {
            page[i] = payload[i];
            n += 1;
        }
    }
    n
}

fn ref_diff(page: &mut [u8], new: &[u8]) -> (u64, Vec<u8>) {
    let mut mask = vec![0u8; page.len().div_ceil(8)];
    let mut n = 0;
    for i in 0..page.len() {
        if page[i] != new[i] {
            mask[i / 8] |= 1 << (i % 8);
            page[i] = new[i];
            n += 1;
        }
    }
    (n, mask)
}

fn ref_sparse(page: &mut [u8], ranges: &[(u64, u64)], data: &[u8]) -> u64 {
    let (mut n, mut d) = (0, 0usize);
    for &(s, l) in ranges {
        for k in 0..l as usize {
            let i = s as usize + k;
            if page[i] != data[d] {
                page[i] = data[d];
                n += 1;
            }
            d += 1;
        }
    }
    n
}

fn random_ranges(rng: &mut Rng, size: usize, overlapping: bool) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if size == 0 {
        return out;
    }
    if overlapping {
        for _ in 0..rng.below(12) + 1 {
            let s = rng.below(size as u64);
            out.push((s, rng.below(size as u64 - s + 1)));
        }
    } else {
        let mut pos = 0u64;
        while pos < size as u64 {
            pos += rng.below(64.min(size as u64 / 4 + 2));
            if pos >= size as u64 { break; }
            let cap = if rng.below(4) == 0 { 4096 } else { 40 };
            let len = rng.below((size as u64 - pos).min(cap) + 1);
            out.push((pos, len));
            pos += len;
        }
    }
    out
}

fn read_all(p: &DevicePage) -> Vec<u8> {
    let mut v = vec![0u8; p.size()];
    p.read(&mut v).expect("read");
    v
}

// ---- tests ---------------------------------------------------------------

#[test]
fn unavailable_is_an_error_not_a_panic() {
    let r = DevicePage::new(4096);
    if available() {
        assert!(r.is_ok(), "available() but new failed: {:?}", r.err());
        assert!(unavailable_reason().is_none());
        return;
    }
    let e = r.expect_err("no GPU: new must fail");
    assert_eq!(e.kind, ErrorKind::GpuUnavailable);
    assert!(e.msg.contains("GPU unavailable"), "message: {}", e.msg);
    assert!(unavailable_reason().is_some());
    assert!(device_name().is_none());
    // Repeated calls stay cheap and consistent.
    assert!(!available());
    assert_eq!(DevicePage::new(0).err().map(|e| e.kind), Some(ErrorKind::GpuUnavailable));
}

#[test]
fn gpu_wrong_lengths_are_dimension_errors() {
    if skip() { return; }
    let mut p = DevicePage::new(100).expect("alloc");
    let mut m = Vec::new();
    assert_eq!(p.write_diff(&[0; 99], &mut m).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.apply_dense(&[0; 12], &[0; 100]).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.apply_dense(&[0; 13], &[0; 101]).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.apply_sparse(&[(90, 11)], &[0; 11]).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.apply_sparse(&[(u64::MAX, 2)], &[0; 2]).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.apply_sparse(&[(0, 4)], &[0; 5]).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(p.read(&mut [0; 10]).unwrap_err().kind, ErrorKind::Dimension);
    let q = DevicePage::new(64).expect("alloc");
    assert_eq!(p.copy_from(&q, &mut m).unwrap_err().kind, ErrorKind::Dimension);
    assert_eq!(read_all(&p), vec![0u8; 100], "failed calls changed nothing");
}

#[test]
fn gpu_matches_cpu_reference_on_random_inputs() {
    if skip() { return; }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sizes = vec![0usize, 1, 7, 8, 31, 32, 33, 63, 64, 100, 255, 4096, 4097, 65_537, 1 << 20];
    for _ in 0..10 {
        sizes.push(rng.below(200_000) as usize + 1);
    }
    for &size in &sizes {
        let mut cpu = vec![0u8; size];
        let mut gpu = DevicePage::new(size).expect("alloc");
        assert_eq!(gpu.size(), size);
        assert_eq!(read_all(&gpu), cpu, "new page is zero-filled (size {size})");
        for round in 0..6 {
            let alphabet = if round % 2 == 0 { 3 } else { 256 };
            // dense
            let mut mask = rng.bytes(size.div_ceil(8), 256);
            if round == 1 { mask.iter_mut().for_each(|b| *b = 0xFF); }
            if round == 2 { mask.iter_mut().for_each(|b| *b &= 0x11); }
            let payload = rng.bytes(size, alphabet);
            let want = ref_dense(&mut cpu, &mask, &payload);
            assert_eq!(gpu.apply_dense(&mask, &payload).expect("dense"), want, "dense count, size {size}");
            assert_eq!(read_all(&gpu), cpu, "dense bytes, size {size}");
            // write_diff
            let mut new = cpu.clone();
            for _ in 0..rng.below(size as u64 / 3 + 2) {
                if size > 0 { new[rng.below(size as u64) as usize] = rng.below(alphabet) as u8; }
            }
            let (want, want_mask) = ref_diff(&mut cpu, &new);
            let mut got_mask = vec![0xAA; 3];
            assert_eq!(gpu.write_diff(&new, &mut got_mask).expect("diff"), want, "diff count, size {size}");
            assert_eq!(got_mask, want_mask, "diff mask, size {size}");
            assert_eq!(read_all(&gpu), cpu, "diff bytes, size {size}");
            // sparse, disjoint then overlapping
            for overlapping in [false, true] {
                let ranges = random_ranges(&mut rng, size, overlapping);
                let total: u64 = ranges.iter().map(|r| r.1).sum();
                let data = rng.bytes(total as usize, alphabet);
                let want = ref_sparse(&mut cpu, &ranges, &data);
                assert_eq!(gpu.apply_sparse(&ranges, &data).expect("sparse"), want, "sparse count, size {size}");
                assert_eq!(read_all(&gpu), cpu, "sparse bytes, size {size}, overlapping {overlapping}");
            }
            // copy_from (passthrough on the device)
            let mut src = DevicePage::new(size).expect("alloc");
            let src_bytes = rng.bytes(size, alphabet);
            src.write_diff(&src_bytes, &mut Vec::new()).expect("fill src");
            let (want, want_mask) = ref_diff(&mut cpu, &src_bytes);
            let mut got_mask = Vec::new();
            assert_eq!(gpu.copy_from(&src, &mut got_mask).expect("copy"), want, "copy count, size {size}");
            assert_eq!(got_mask, want_mask, "copy mask, size {size}");
            assert_eq!(read_all(&gpu), cpu, "copy bytes, size {size}");
            assert_eq!(read_all(&src), src_bytes, "copy leaves the source alone");
        }
    }
}

#[test]
fn gpu_sparse_aligned_fast_path_and_large_range() {
    if skip() { return; }
    let size = (1 << 20) + 48;
    let mut rng = Rng(42);
    let mut cpu = vec![0u8; size];
    let mut gpu = DevicePage::new(size).expect("alloc");
    // one big aligned range, one unaligned, one touching the end
    let ranges = vec![(0u64, 1 << 19), ((1 << 19) + 3, 1000), (size as u64 - 17, 17)];
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let data = rng.bytes(total as usize, 4);
    let want = ref_sparse(&mut cpu, &ranges, &data);
    assert_eq!(gpu.apply_sparse(&ranges, &data).expect("sparse"), want);
    assert_eq!(read_all(&gpu), cpu);
}

#[test]
fn gpu_pages_move_between_threads() {
    if skip() { return; }
    let mut p = DevicePage::new(1000).expect("alloc");
    let h = std::thread::spawn(move || {
        let mut m = Vec::new();
        let n = p.write_diff(&[7u8; 1000], &mut m).expect("diff");
        (n, read_all(&p))
    });
    let (n, bytes) = h.join().expect("thread");
    assert_eq!(n, 1000);
    assert_eq!(bytes, vec![7u8; 1000]);
}

/// The staging pipeline (no device needed): writing an upload region window
/// by window, for any chunk size, gives the concatenation of its segments and
/// leaves `Ready` bytes alone.
#[cfg(feature = "gpu")]
#[test]
fn staging_windows_reassemble_segments() {
    use super::staging::{fill_window, segs_len, Seg};
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    for _ in 0..300 {
        let nseg = rng.below(6) as usize + 1;
        let blobs: Vec<Vec<u8>> = (0..nseg).map(|_| {
            let cap = if rng.below(3) == 0 { 5000 } else { 40 };
            let n = rng.below(cap) as usize;
            rng.bytes(n, 255).into_iter().map(|b| b + 1).collect() // never 0
        }).collect();
        let kinds: Vec<u64> = (0..nseg).map(|_| rng.below(3)).collect();
        let segs: Vec<Seg<'_>> = blobs.iter().zip(&kinds).map(|(b, k)| match k {
            0 => Seg::Bytes(b),
            1 => Seg::Zero(b.len()),
            _ => Seg::Ready(b.len()),
        }).collect();
        let total = segs_len(&segs);
        // Expected: Bytes copied, Zero zeroed, Ready = what was there (0xEE).
        let mut want = Vec::with_capacity(total);
        for (b, k) in blobs.iter().zip(&kinds) {
            match k {
                0 => want.extend_from_slice(b),
                1 => want.extend(std::iter::repeat(0u8).take(b.len())),
                _ => want.extend(std::iter::repeat(0xEEu8).take(b.len())),
            }
        }
        assert_eq!(want.len(), total);
        for chunk in [1usize, 3, 32, 256, 4096, total.max(1), total + 7] {
            let mut buf = vec![0xEEu8; total + 5]; // staging buffer may be larger
            let mut lo = 0;
            for win in buf[..total].chunks_mut(chunk) {
                fill_window(&segs, lo, win);
                lo += win.len();
            }
            assert_eq!(&buf[..total], &want[..], "chunk {chunk}");
            assert!(buf[total..].iter().all(|&b| b == 0xEE), "nothing written past the region");
        }
    }
}

/// The threaded staging copy (no device needed): for random layouts, sizes,
/// chunk and unit sizes and thread counts, the staged bytes equal the
/// sequential result; chunks are handed on in order, back to back, each only
/// once all of its bytes are written; nothing past the region is touched.
#[cfg(feature = "gpu")]
#[test]
fn staging_threaded_copy_matches_sequential() {
    use super::staging::{fill_window, segs_len, stage, CopyPool, Seg};
    let pool = CopyPool::new();
    let mut rng = Rng(0x7EAD_ED00_0BAD_F00D);
    for iter in 0..250 {
        let nseg = rng.below(6) as usize + 1;
        let blobs: Vec<Vec<u8>> = (0..nseg).map(|_| {
            let cap = match rng.below(4) { 0 => 300_000, 1 => 20_000, 2 => 40, _ => 3000 };
            let n = rng.below(cap) as usize;
            rng.bytes(n, 255).into_iter().map(|b| b + 1).collect() // never 0
        }).collect();
        let kinds: Vec<u64> = (0..nseg).map(|_| rng.below(3)).collect();
        let segs: Vec<Seg<'_>> = blobs.iter().zip(&kinds).map(|(b, k)| match k {
            0 => Seg::Bytes(b),
            1 => Seg::Zero(b.len()),
            _ => Seg::Ready(b.len()),
        }).collect();
        let total = segs_len(&segs);
        // Sequential result: one window over the whole region.
        let mut want = vec![0xEEu8; total];
        fill_window(&segs, 0, &mut want);
        let threads = [1usize, 2, 3, 4, 8][iter % 5];
        let chunk = match rng.below(4) {
            0 => rng.below(64) as usize + 1,
            1 => rng.below(5000) as usize + 1,
            2 => 256 << 10,
            _ => total.max(1) + rng.below(10) as usize,
        };
        let unit = match rng.below(3) { 0 => rng.below(100) as usize + 1, 1 => 4096, _ => 32 << 10 };
        let mut buf = vec![0xEEu8; total + 5]; // staging buffer may be larger
        let mut next_lo = 0usize;
        stage(&pool, threads, &segs, &mut buf[..total], chunk, unit, |lo, win| {
            assert_eq!(lo, next_lo, "chunks in order, back to back");
            assert!(win.len() == chunk.min(total - lo) && !win.is_empty(), "chunk length");
            assert_eq!(win, &want[lo..lo + win.len()], "chunk complete when handed on");
            next_lo += win.len();
            Ok(())
        })
        .expect("stage");
        assert_eq!(next_lo, total, "every byte handed on ({threads} threads, chunk {chunk}, unit {unit})");
        assert_eq!(&buf[..total], &want[..], "{threads} threads, chunk {chunk}, unit {unit}");
        assert!(buf[total..].iter().all(|&b| b == 0xEE), "nothing written past the region");
    }
    // A failing hand-on stops the staging with its error; the pool stays usable.
    let data = vec![9u8; 1 << 20];
    let segs = [Seg::Bytes(&data)];
    for threads in [1usize, 4] {
        let mut buf = vec![0u8; 1 << 20];
        let mut calls = 0;
        let r = stage(&pool, threads, &segs, &mut buf, 64 << 10, 4096, |_, _| {
            calls += 1;
            if calls == 3 { Err(crate::error::Error::new(ErrorKind::Internal, "dma failed")) } else { Ok(()) }
        });
        assert_eq!(r.unwrap_err().kind, ErrorKind::Internal);
        assert_eq!(calls, 3);
        let mut buf = vec![0u8; 1 << 20];
        stage(&pool, threads, &segs, &mut buf, 64 << 10, 4096, |_, _| Ok(())).expect("stage after error");
        assert_eq!(buf, data);
    }
}

/// The pool under contention: several callers at once on the one pool (one
/// gets the helpers, the others copy alone), thread counts changing per call.
#[cfg(feature = "gpu")]
#[test]
fn staging_pool_shared_by_concurrent_callers() {
    use super::staging::{stage, CopyPool, Seg};
    let pool = CopyPool::new();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let pool = &pool;
            sc.spawn(move || {
                let mut rng = Rng(0x1234 + t);
                for _ in 0..40 {
                    let n = rng.below(400_000) as usize + 1;
                    let src = rng.bytes(n, 256);
                    let z = rng.below(300) as usize;
                    let segs = [Seg::Zero(z), Seg::Bytes(&src)];
                    let mut buf = vec![0xEEu8; z + n];
                    stage(pool, 1 + (t as usize * 3) % 9, &segs, &mut buf, 50_000, 8192, |_, _| Ok(()))
                        .expect("stage");
                    assert!(buf[..z].iter().all(|&b| b == 0));
                    assert_eq!(&buf[z..], &src[..]);
                }
            });
        }
    });
}

/// Every upload setting (write-combined or cacheable staging, tiny to whole
/// chunks, automatic chunks on a multi-MiB page, 1 to 8 copy threads) gives the CPU reference's
/// bytes and counts. The settings are process-wide; any of them is correct, so
/// tests running beside this one are unaffected.
#[cfg(feature = "gpu")]
#[test]
fn gpu_upload_pipeline_settings_match_cpu() {
    if skip() { return; }
    let mut rng = Rng(0x5151_7777_0000_0001);
    let settings = [(false, 256usize), (true, 4096), (false, 1 << 30), (true, 0), (false, 100_000), (false, 0)];
    for (i, (wc, chunk)) in settings.into_iter().enumerate() {
        super::cuda::set_upload_tuning(wc, chunk);
        // Host copy threads too (0 = default); sizes >= 256 KiB use them.
        super::staging::set_copy_threads([3, 1, 8, 2, 4, 0][i]);
        let sizes: &[usize] = if chunk == 0 && !wc { &[5 * (1 << 20) + 3, 4097] } else { &[1, 33, 4097, 300_001] };
        for &size in sizes {
            let mut cpu = vec![0u8; size];
            let mut gpu = DevicePage::new(size).expect("alloc");
            for round in 0..3 {
                let alphabet = if round == 0 { 3 } else { 256 };
                let mask = rng.bytes(size.div_ceil(8), 256);
                let payload = rng.bytes(size, alphabet);
                let want = ref_dense(&mut cpu, &mask, &payload);
                assert_eq!(gpu.apply_dense(&mask, &payload).expect("dense"), want, "dense {size} {wc} {chunk}");
                assert_eq!(read_all(&gpu), cpu, "dense bytes {size} {wc} {chunk}");
                let mut new = cpu.clone();
                for _ in 0..rng.below(size as u64 / 3 + 2) {
                    new[rng.below(size as u64) as usize] = rng.below(alphabet) as u8;
                }
                let (want, want_mask) = ref_diff(&mut cpu, &new);
                let mut got_mask = Vec::new();
                assert_eq!(gpu.write_diff(&new, &mut got_mask).expect("diff"), want, "diff {size} {wc} {chunk}");
                assert_eq!(got_mask, want_mask, "diff mask {size} {wc} {chunk}");
                let ranges = random_ranges(&mut rng, size, round == 2);
                let total: u64 = ranges.iter().map(|r| r.1).sum();
                let data = rng.bytes(total as usize, alphabet);
                let want = ref_sparse(&mut cpu, &ranges, &data);
                assert_eq!(gpu.apply_sparse(&ranges, &data).expect("sparse"), want, "sparse {size} {wc} {chunk}");
                assert_eq!(read_all(&gpu), cpu, "bytes {size} {wc} {chunk}");
            }
        }
    }
    super::cuda::set_upload_tuning(false, 0);
    super::staging::set_copy_threads(0);
}

/// Benchmark (not a timed test): `cargo test --release --lib gpu::tests::gpu_bench -- --ignored --nocapture`.
/// Prints a table and one line `GPU_BENCH_JSON {...}`; writes the JSON to
/// `$MMSB_GPU_BENCH_JSON` when set.
#[cfg(feature = "gpu")]
#[test]
#[ignore]
fn gpu_bench() {
    if skip() { return; }
    use std::time::Instant;
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
    let mut rows: Vec<(String, f64, String)> = Vec::new(); // name, seconds, extra
    for (label, size) in [("alloc_1KiB", 1usize << 10), ("alloc_1MiB", 1 << 20)] {
        let t: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let p = DevicePage::new(size).expect("alloc");
                super::cuda::gpu().expect("gpu").sync().expect("sync"); // alloc + zero-fill done
                let e = t.elapsed().as_secs_f64();
                drop(p);
                e
            })
            .collect();
        rows.push((label.into(), median(t), String::new()));
    }
    let mut rng = Rng(7);
    let mib = 1usize << 20;
    for (label, size) in [("dense_delta_1MiB_end_to_end", mib), ("dense_delta_64MiB_end_to_end", 64 * mib)] {
        let mut p = DevicePage::new(size).expect("alloc");
        let mask = rng.bytes(size / 8, 256);
        let payload = rng.bytes(size, 256);
        let reps = if size > mib { 10 } else { 50 };
        let t: Vec<f64> = (0..reps + 2)
            .map(|_| {
                let t = Instant::now();
                p.apply_dense(&mask, &payload).expect("dense");
                t.elapsed().as_secs_f64()
            })
            .skip(2)
            .collect();
        let s = median(t);
        rows.push((label.into(), s, format!("{:.2} GB/s host payload", size as f64 * 1.125 / s / 1e9)));
    }
    // Host staging copy threads (the caller included) on the dense delta end
    // to end; the rows above use the default (MMSB_GPU_COPY_THREADS or
    // available_parallelism capped at 8).
    for size in [mib, 64 * mib] {
        let mut p = DevicePage::new(size).expect("alloc");
        let mask = rng.bytes(size / 8, 256);
        let payload = rng.bytes(size, 256);
        let reps = if size > mib { 10 } else { 50 };
        for threads in [1usize, 2, 4, 8] {
            super::staging::set_copy_threads(threads);
            let t: Vec<f64> = (0..reps + 2)
                .map(|_| {
                    let t = Instant::now();
                    p.apply_dense(&mask, &payload).expect("dense");
                    t.elapsed().as_secs_f64()
                })
                .skip(2)
                .collect();
            let s = median(t);
            rows.push((
                format!("dense_{}MiB_e2e_copy_threads_{threads}", size / mib),
                s,
                format!("{:.2} GB/s host payload", size as f64 * 1.125 / s / 1e9),
            ));
        }
        super::staging::set_copy_threads(0);
    }
    for (label, size) in [("write_diff_1MiB_end_to_end", mib), ("sparse_64MiB_one_range_end_to_end", 64 * mib)] {
        let mut p = DevicePage::new(size).expect("alloc");
        let data = rng.bytes(size, 256);
        // write_diff inputs prepared outside the timed region (one byte differs each time).
        let variants: Vec<Vec<u8>> = if label.starts_with("sparse") {
            Vec::new()
        } else {
            (0..8).map(|i| { let mut d = data.clone(); d[i] ^= 1; d }).collect()
        };
        let mut m = Vec::new();
        let t: Vec<f64> = (0..8)
            .map(|i| {
                let t = Instant::now();
                if label.starts_with("sparse") {
                    p.apply_sparse(&[(0, size as u64)], &data).expect("sparse");
                } else {
                    p.write_diff(&variants[i], &mut m).expect("diff");
                }
                t.elapsed().as_secs_f64()
            })
            .skip(2)
            .collect();
        rows.push((label.into(), median(t), String::new()));
    }
    // Upload settings on the 1 MiB dense delta (rows above use the defaults:
    // cacheable staging, automatic chunks), then the phases one at a time.
    {
        let size = mib;
        let mut p = DevicePage::new(size).expect("alloc");
        let mask = rng.bytes(size / 8, 256);
        let payload = rng.bytes(size, 256);
        for (wc, chunk, label) in [
            (false, 1usize << 30, "dense_1MiB_e2e_cached_one_chunk"),
            (false, 128 << 10, "dense_1MiB_e2e_cached_chunk_128KiB"),
            (false, 512 << 10, "dense_1MiB_e2e_cached_chunk_512KiB"),
            (true, 0, "dense_1MiB_e2e_wc_chunk_auto"),
            (true, 1 << 30, "dense_1MiB_e2e_wc_one_chunk"),
        ] {
            super::cuda::set_upload_tuning(wc, chunk);
            let t: Vec<f64> = (0..52)
                .map(|_| {
                    let t = Instant::now();
                    p.apply_dense(&mask, &payload).expect("dense");
                    t.elapsed().as_secs_f64()
                })
                .skip(2)
                .collect();
            let s = median(t);
            rows.push((label.into(), s, format!("{:.2} GB/s host payload", size as f64 * 1.125 / s / 1e9)));
        }
        super::cuda::set_upload_tuning(false, 0);
        rows.extend(super::cuda::bench_phases(size, 50).expect("phase bench"));
        rows.extend(super::cuda::bench_upload_timeline(size, 50).expect("upload timeline"));
    }
    let size = 64 * mib;
    let [dense, diff, sparse] = super::cuda::bench_kernels(size, 50).expect("kernel bench");
    let sz = size as f64;
    for (label, s, bytes) in [
        ("kernel_dense_apply_64MiB", dense, sz * 3.125),   // mask + payload + page read, page write
        ("kernel_diff_64MiB", diff, sz * 2.125),           // page + src read, bitmap write (no change after 1st)
        ("kernel_sparse_64MiB", sparse, sz * 2.0),         // page + data read (no change after 1st)
    ] {
        rows.push((label.into(), s, format!("{:.1} GB/s", bytes / s / 1e9)));
    }
    let dev = device_name().unwrap_or_default();
    println!("device: {dev}");
    println!("{:<36} {:>12}  {}", "benchmark", "median_us", "note");
    for (n, s, x) in &rows {
        println!("{:<36} {:>12.1}  {}", n, s * 1e6, x);
    }
    let items: Vec<String> = rows
        .iter()
        .map(|(n, s, x)| format!("{{\"name\":\"{n}\",\"seconds\":{s:e},\"note\":\"{x}\"}}"))
        .collect();
    let json = format!("{{\"device\":\"{}\",\"results\":[{}]}}", dev.replace('"', "'"), items.join(","));
    println!("GPU_BENCH_JSON {json}");
    if let Some(path) = std::env::var_os("MMSB_GPU_BENCH_JSON") {
        std::fs::write(path, &json).expect("write bench json");
    }
}
