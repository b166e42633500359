//! GPU pages through the C ABI, as Julia uses them: device pages must end up
//! with the same bytes and epochs as CPU pages under the same writes, deltas
//! and passthrough recomputes. Without a usable device the tests say so and
//! check only that nothing panics. `gpu_end_to_end` also prints timings
//! (benchmark/gpu_check.sh collects them).

use std::ptr::null_mut;
use std::time::Instant;

use mmsb::ffi::*;

const OK: i32 = 0;
const LOC_CPU: u8 = 0;
const LOC_GPU: u8 = 1;

fn msg() -> String {
    let mut b = [0u8; 512];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { mmsb_last_error_message(b.as_mut_ptr(), b.len() as u64) } as usize;
    String::from_utf8_lossy(&b[..n.min(512)]).into_owned()
}

fn open(threshold: u64) -> *mut MmsbState {
    let c = MmsbConfig { gpu_threshold: threshold, ..Default::default() };
    let mut st = null_mut();
    // SAFETY: valid config and out pointer; a NULL info is allowed.
    assert_eq!(unsafe { mmsb_state_new(&c, &mut st, null_mut()) }, OK, "{}", msg());
    st
}

fn create(st: *mut MmsbState, size: u64, loc: u8) -> MmsbPageInfo {
    let mut info = MmsbPageInfo::default();
    // SAFETY: st is live, info is a valid out pointer.
    assert_eq!(unsafe { mmsb_page_create(st, size, loc, &mut info) }, OK, "{}", msg());
    info
}

fn write(st: *mut MmsbState, id: u64, b: &[u8]) -> MmsbWriteResult {
    write_flags(st, id, b, 1)
}

fn write_flags(st: *mut MmsbState, id: u64, b: &[u8], flags: u32) -> MmsbWriteResult {
    let mut w = MmsbWriteResult::default();
    // SAFETY: b is valid for its length.
    let rc = unsafe { mmsb_page_write(st, id, b.as_ptr(), b.len() as u64, flags, &mut w) };
    assert_eq!(rc, OK, "{}", msg());
    w
}

fn read(st: *mut MmsbState, id: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    // SAFETY: v is valid for n bytes.
    assert_eq!(unsafe { mmsb_page_read(st, id, v.as_mut_ptr(), n as u64) }, OK, "{}", msg());
    v
}

fn epoch(st: *mut MmsbState, id: u64) -> u64 {
    let mut info = MmsbPageInfo::default();
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { mmsb_page_info(st, id, &mut info) }, OK, "{}", msg());
    info.epoch
}

fn route(st: *mut MmsbState, page: u64, encoding: u8, mask: &[u8], payload: &[u8]) {
    let mut s = MmsbDeltaStamp::default();
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { mmsb_delta_stamp(st, page, &mut s) }, OK, "{}", msg());
    let d = MmsbDeltaDesc {
        id: s.id,
        page_id: page,
        base_epoch: s.base_epoch,
        timestamp: s.timestamp,
        source: 0,
        encoding,
        reserved: [0; 6],
        mask: mask.as_ptr(),
        mask_len: mask.len() as u64,
        payload: payload.as_ptr(),
        payload_len: payload.len() as u64,
    };
    let mut w = MmsbWriteResult::default();
    // SAFETY: the descriptor's pointers are valid for their lengths during the call.
    assert_eq!(unsafe { mmsb_delta_route(st, &d, 1, &mut w) }, OK, "{}", msg());
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn gpu() -> bool {
    let ok = mmsb_gpu_available() == 1;
    if !ok {
        eprintln!("GPU not available: skipping (checked only that nothing panics)");
    }
    ok
}

#[test]
fn gpu_requests_without_device_are_typed_errors() {
    if mmsb_gpu_available() == 1 {
        return;
    }
    let st = open(1);
    let mut info = MmsbPageInfo::default();
    // SAFETY: st is live, info is a valid out pointer.
    let rc = unsafe { mmsb_page_create(st, 1 << 20, LOC_GPU, &mut info) };
    assert_eq!(rc, -10, "{}", msg());
    // SAFETY: st came from mmsb_state_new.
    unsafe { mmsb_state_free(st) };
}

#[test]
fn gpu_pages_match_cpu_pages() {
    if !gpu() {
        return;
    }
    let st = open(1);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for &size in &[1u64, 31, 32, 33, 4096, 65_537, 1 << 20] {
        let g = create(st, size, LOC_GPU);
        let c = create(st, size, LOC_CPU);
        assert_eq!(g.location, LOC_GPU, "size {size}");
        assert_eq!(c.location, LOC_CPU);
        let n = size as usize;
        let mut data = vec![0u8; n];
        for step in 0..6 {
            // whole-page writes: a few bytes, or everything
            let k = if step % 3 == 2 { n } else { 1 + rng.below(20) as usize };
            for _ in 0..k {
                let i = rng.below(size) as usize;
                data[i] = rng.next() as u8;
            }
            // odd steps: MMSB_WRITE_SHARED (a GPU page takes the exclusive path)
            let flags = if step % 2 == 1 { 1 | 8 } else { 1 };
            let (wg, wc) = (write_flags(st, g.id, &data, flags), write_flags(st, c.id, &data, flags));
            assert_eq!((wg.epoch, wg.prop_status), (wc.epoch, wc.prop_status), "size {size} step {step}");
            // a no-op write changes nothing on either side
            assert_eq!(write(st, g.id, &data).delta_id, 0);
            // dense delta: random bitmap
            let mut mask = vec![0u8; n.div_ceil(8)];
            for b in mask.iter_mut() {
                *b = (rng.next() & rng.next()) as u8;
            }
            if n % 8 != 0 {
                let last = mask.len() - 1;
                mask[last] &= (1u8 << (n % 8)) - 1;
            }
            let payload: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            route(st, g.id, 0, &mask, &payload);
            route(st, c.id, 0, &mask, &payload);
            // sparse delta: a few ranges
            let mut pairs = Vec::new();
            let mut bytes = Vec::new();
            let mut at = 0u64;
            let mut nranges = 0;
            while at < size && nranges < 8 {
                let start = at + rng.below(size / 4 + 1);
                if start >= size {
                    break;
                }
                let len = 1 + rng.below((size - start).min(64));
                pairs.extend_from_slice(&start.to_le_bytes());
                pairs.extend_from_slice(&len.to_le_bytes());
                bytes.extend((0..len).map(|_| rng.next() as u8));
                at = start + len + 1;
                nranges += 1;
            }
            if !pairs.is_empty() {
                route(st, g.id, 1, &pairs, &bytes);
                route(st, c.id, 1, &pairs, &bytes);
            }
            let (rg, rc) = (read(st, g.id, n), read(st, c.id, n));
            assert!(rg == rc, "size {size} step {step}: device bytes differ from host bytes");
            assert_eq!(epoch(st, g.id), epoch(st, c.id), "size {size} step {step}");
            data = rc;
        }
        // passthrough between two device pages stays on the device and agrees
        let g2 = create(st, size, LOC_GPU);
        let parents = [g.id];
        // SAFETY: parents is valid for one element.
        assert_eq!(unsafe { mmsb_recompute_set(st, g2.id, 1, parents.as_ptr(), 1) }, OK, "{}", msg());
        let ids = [g2.id];
        let mut step = MmsbPropStep::default();
        // SAFETY: ids valid for one element, step a valid out pointer.
        unsafe {
            assert_eq!(mmsb_prop_enqueue(st, ids.as_ptr(), 1, 1), OK, "{}", msg());
            assert_eq!(mmsb_prop_run(st, &mut step), OK, "{}", msg());
        }
        assert_eq!(step.status, 0);
        assert!(read(st, g2.id, n) == read(st, g.id, n), "size {size}: passthrough on device");
        data[0] ^= 0xff;
        write(st, g.id, &data);
        assert!(read(st, g2.id, n) == data, "size {size}: passthrough after a write");
    }
    // SAFETY: st came from mmsb_state_new.
    unsafe { mmsb_state_free(st) };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// End-to-end timings through the C ABI (what a Julia update_page pays, minus the ccall).
#[test]
fn gpu_end_to_end() {
    if !gpu() {
        return;
    }
    let st = open(1);
    for &(name, size, changed, reps) in &[
        ("write_dense_1mb", 1usize << 20, 1usize << 20, 200),
        ("write_sparse_1mb_1pct", 1 << 20, (1 << 20) / 100, 200),
        ("write_dense_64mb", 64 << 20, 64 << 20, 10),
    ] {
        let p = create(st, size as u64, LOC_GPU);
        let a: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let mut b = a.clone();
        let stride = (size / changed).max(1);
        for i in (0..size).step_by(stride) {
            b[i] = !b[i];
        }
        write(st, p.id, &a);
        let mut times = Vec::new();
        for r in 0..reps {
            let t = Instant::now();
            let w = write(st, p.id, if r % 2 == 0 { &b } else { &a });
            times.push(t.elapsed().as_secs_f64() * 1e6);
            assert!(w.delta_id != 0);
        }
        let med = median(times.clone());
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("GPU_E2E {name} median_us={med:.1} min_us={min:.1} reps={reps} size={size}");
    }
    let t = Instant::now();
    let p = create(st, 1 << 20, LOC_GPU);
    println!("GPU_E2E alloc_1mb_us={:.1}", t.elapsed().as_secs_f64() * 1e6);
    let _ = read(st, p.id, 1 << 20);
    // SAFETY: st came from mmsb_state_new.
    unsafe { mmsb_state_free(st) };
}
