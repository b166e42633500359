//! The CUDA implementation behind `gpu` (feature `gpu`): one process-wide
//! context, one stream, NVRTC-compiled kernels and pinned staging buffers.
//! No cudarc type leaves this file.
//!
//! Synchronization points (SPEC T6.3): all work is queued on one stream in
//! order; the host waits on it only where a result must reach the host:
//! at the end of `write_diff`, `apply_dense`, `apply_sparse` and `copy_from`
//! (each returns a changed-byte count, and the first and last also a bitmap),
//! and in `read`. Allocation and zero-fill are queued without waiting.
//!
//! Uploads are pipelined (see [`upload`]): the host copies a payload into the
//! pinned staging buffer chunk by chunk and queues each chunk's DMA as soon as
//! it is written, so the copy of chunk k+1 overlaps the DMA of chunk k. Chunks
//! are disjoint regions of one buffer that is not written again before the
//! op's final sync, so no events are needed. Large uploads are copied by
//! several threads (`gpu/staging.rs`: the caller plus a persistent pool of
//! helpers, `MMSB_GPU_COPY_THREADS`); a chunk's DMA is queued once all of its
//! bytes are written.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    result, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};

#[cfg(test)]
use super::staging::fill_window;
use super::staging::{copy_threads, segs_len, stage, CopyPool, Seg, PARALLEL_MIN, UNIT};
use crate::error::{Error, ErrorKind, Result};

const KERNELS: &str = include_str!("kernels.cu");
const BLOCK: u32 = 256;
/// Alignment of every region inside the staging and scratch buffers.
const ALIGN: usize = 256;

/// Upload chunk size in bytes, 0 = automatic ([`chunk_len`]). Only the
/// benchmark changes it (to compare pipelining settings on the device).
static CHUNK_OVERRIDE: AtomicUsize = AtomicUsize::new(0);
/// Whether the upload staging buffer is write-combined. Default false: a
/// cacheable pinned buffer keeps a ~1 MiB payload in the CPU caches, so the
/// host copy runs at cache speed (write-combined stores go to DRAM through a
/// few fill buffers), and DMA reads snoop it. The benchmark compares both.
static UPLOAD_WC: AtomicBool = AtomicBool::new(false);

/// Benchmark knobs: write-combined upload buffer, and chunk size (0 = auto).
#[cfg(test)]
pub(super) fn set_upload_tuning(write_combined: bool, chunk: usize) {
    UPLOAD_WC.store(write_combined, Ordering::Relaxed);
    CHUNK_OVERRIDE.store(chunk, Ordering::Relaxed);
}

/// Chunk size of the upload pipeline for `total` bytes: about an eighth of the
/// upload, at least 256 KiB (each chunk costs one driver call, ~2 µs) and at
/// most 4 MiB (the last chunk's DMA is not overlapped), 256-byte aligned.
fn chunk_len(total: usize) -> usize {
    let o = CHUNK_OVERRIDE.load(Ordering::Relaxed);
    let c = if o > 0 { o } else { (total / 8).clamp(256 << 10, 4 << 20) };
    round_up(c.max(1), ALIGN)
}

pub(super) struct Gpu {
    ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    pub(super) dense: CudaFunction,
    pub(super) diff: CudaFunction,
    pub(super) sparse: CudaFunction,
    max_blocks: u32,
    pub(super) name: String,
    scratch: Mutex<Scratch>,
    /// Helper threads of the host staging copy (started on the first large upload).
    pub(super) copy: CopyPool,
}

/// Context-wide staging, grown on demand and reused: one op at a time holds
/// it, and every op that uses it ends with a stream sync, so a region is never
/// rewritten while a copy from it is in flight.
#[derive(Default)]
struct Scratch {
    up: Option<PinnedHostSlice<u8>>,   // host -> device
    up_wc: bool,                       // `up` was allocated write-combined
    down: Option<PinnedHostSlice<u8>>, // device -> host
    dev: Option<CudaSlice<u8>>,        // device side of both, count at offset 0
}

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();

pub(super) fn gpu() -> Result<&'static Gpu> {
    let r = GPU.get_or_init(|| match catch_unwind(AssertUnwindSafe(init)) {
        Ok(r) => r,
        Err(_) => Err("CUDA initialisation panicked (driver or NVRTC library unusable)".into()),
    });
    match r {
        Ok(g) => Ok(g),
        Err(m) => Err(Error::new(ErrorKind::GpuUnavailable, format!("GPU unavailable: {m}"))),
    }
}

fn derr(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Internal, format!("CUDA error in {what}: {e}"))
}

fn init() -> std::result::Result<Gpu, String> {
    if std::env::var_os("MMSB_DISABLE_GPU").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err("disabled by MMSB_DISABLE_GPU".into());
    }
    // SAFETY: only tries dlopen on the candidate library names; no CUDA call is made.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver library (libcuda.so) found".into());
    }
    let n = CudaContext::device_count().map_err(|e| format!("cuInit/cuDeviceGetCount failed: {e}"))?;
    if n < 1 {
        return Err("the CUDA driver reports no device".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot create a context on device 0: {e}"))?;
    // SAFETY: every allocation and every launch of this module goes to the one
    // stream created below, so stream order alone orders all uses; nothing is
    // allocated before this call.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().map_err(|e| format!("cannot create a stream: {e}"))?;
    // SAFETY: dlopen probe only.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("CUDA driver found but NVRTC (libnvrtc.so / libnvrtc.so.12) is not on the \
                    library path; add its folder to LD_LIBRARY_PATH"
            .into());
    }
    let (maj, min) = ctx.compute_capability().map_err(|e| format!("compute capability: {e}"))?;
    let with_arch = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{maj}{min}"), "-default-device".into()],
        ..Default::default()
    };
    let ptx = match cudarc::nvrtc::compile_ptx_with_opts(KERNELS, with_arch) {
        Ok(p) => p,
        // An NVRTC older than the device may not know its architecture: let
        // it pick its default and the driver JIT the PTX.
        Err(_) => cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| format!("NVRTC: {e}"))?,
    };
    let module = ctx.load_module(ptx).map_err(|e| format!("loading the kernels: {e}"))?;
    let f = |name: &str| module.load_function(name).map_err(|e| format!("kernel {name}: {e}"));
    let (dense, diff, sparse) = (f("mmsb_apply_dense")?, f("mmsb_diff_apply")?, f("mmsb_apply_sparse")?);
    let sms = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap_or(16)
        .max(1) as u32;
    let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
    Ok(Gpu {
        ctx,
        stream,
        _module: module,
        dense,
        diff,
        sparse,
        max_blocks: sms * 8,
        name,
        scratch: Mutex::new(Scratch::default()),
        copy: CopyPool::new(),
    })
}

pub(super) fn available() -> bool {
    gpu().is_ok()
}

pub(super) fn reason() -> Option<String> {
    gpu().err().map(|e| e.msg)
}

fn round_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// Padded device length of a page: whole 32-byte words, at least one.
fn padded(size: usize) -> usize {
    round_up(size.max(1), 32)
}

impl Gpu {
    pub(super) fn launch_cfg(&self, items: u64) -> LaunchConfig {
        let blocks = items.div_ceil(BLOCK as u64).clamp(1, self.max_blocks as u64) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| derr("bind context", e))
    }

    pub(super) fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| derr("stream synchronize", e))
    }

    pub(super) fn ptr(&self, s: &CudaSlice<u8>) -> u64 {
        let (p, _g) = s.device_ptr(&self.stream);
        p
    }

    /// On an error path, waits for queued copies before the staging buffers
    /// are released to the next op (they may still be reading them).
    fn settle<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            let _ = self.sync();
        }
        r
    }
}

/// Upload region of a dense delta on a page padded to `pad` bytes: the mask
/// words, a zero gap up to the payload's aligned offset (returned), the
/// payload, zero padding to `pad`.
fn dense_upload<'a>(mask: &'a [u8], payload: &'a [u8], pad: usize) -> (usize, [Seg<'a>; 4]) {
    let pay_off = round_up(pad / 8, ALIGN); // mask words: nwords * 4 bytes
    (pay_off, [Seg::Bytes(mask), Seg::Zero(pay_off - mask.len()), Seg::Bytes(payload), Seg::Zero(pad - payload.len())])
}

/// Pipelined upload of `segs` into device memory at `dev`, staged through
/// `host` (pinned, at least `segs_len(segs)` bytes, `Ready` parts already in
/// place). Each chunk is written, then its DMA queued; the caller holds the
/// scratch lock until its final stream sync, so no chunk is rewritten while
/// its copy is in flight. Uploads of at least `PARALLEL_MIN` bytes are copied
/// by `copy_threads()` threads (the caller and pool helpers, see
/// `staging::stage`); a chunk's DMA is queued once all of its bytes are written.
fn upload(g: &Gpu, host: &mut [u8], dev: u64, segs: &[Seg<'_>]) -> Result<()> {
    let total = segs_len(segs);
    let Some(host) = host.get_mut(..total) else {
        return Err(derr("upload", "staging buffer too small"));
    };
    let threads = if total >= PARALLEL_MIN { copy_threads() } else { 1 };
    let cu = g.stream.cu_stream();
    stage(&g.copy, threads, segs, host, chunk_len(total), UNIT, |lo, win| {
        // SAFETY: [dev+lo, dev+lo+win.len()) lies in the destination region
        // (caller sized it to `total`); `win` is pinned, completely written,
        // and, being a disjoint chunk, not written again before the caller's
        // stream sync.
        unsafe { result::memcpy_htod_async(dev + lo as u64, win, cu) }
            .map_err(|e| derr("host-to-device copy", e))
    })
}

impl Scratch {
    /// Makes the three buffers at least the given sizes (grown to powers of two).
    fn ensure(&mut self, g: &Gpu, up: usize, down: usize, dev: usize) -> Result<()> {
        fn grow(n: usize) -> usize {
            n.max(4096).next_power_of_two()
        }
        let wc = UPLOAD_WC.load(Ordering::Relaxed);
        if up > 0 && (self.up_wc != wc || self.up.as_ref().map_or(true, |b| b.len() < up)) {
            let n = grow(up.max(self.up.as_ref().map_or(0, |b| b.len())));
            self.up = None;
            let flags = if wc { sys::CU_MEMHOSTALLOC_WRITECOMBINED } else { 0 };
            // SAFETY: the host buffer is written before it is read (upload).
            let b = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(n, flags) };
            self.up = Some(b.map_err(|e| derr("pinned alloc", e))?);
            self.up_wc = wc;
        }
        if down > 0 && self.down.as_ref().map_or(true, |b| b.len() < down) {
            self.down = None;
            // SAFETY: only regions the device wrote (after a sync) are read.
            let b = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(grow(down), 0) };
            self.down = Some(b.map_err(|e| derr("pinned alloc", e))?);
        }
        if self.dev.as_ref().map_or(true, |b| b.len() < dev) {
            self.dev = None;
            // SAFETY: regions are written (upload or memset or kernel) before any read.
            let b = unsafe { g.stream.alloc::<u8>(grow(dev)) };
            self.dev = Some(b.map_err(|e| derr("device alloc", e))?);
        }
        Ok(())
    }
}

pub(super) struct Page {
    buf: CudaSlice<u8>,
    size: usize,
}

impl Drop for Page {
    fn drop(&mut self) {
        // The buffer is freed (stream-ordered) right after this; the context
        // must be current on whichever thread drops the page.
        if let Ok(g) = gpu() {
            let _ = g.bind();
        }
    }
}

impl Page {
    pub(super) fn new(size: usize) -> Result<Page> {
        let g = gpu()?;
        g.bind()?;
        let buf = g.stream.alloc_zeros::<u8>(padded(size)).map_err(|e| {
            derr(&format!("allocating a {size}-byte device page"), e)
        })?;
        Ok(Page { buf, size })
    }

    pub(super) fn size(&self) -> usize {
        self.size
    }

    pub(super) fn read(&self, dst: &mut [u8]) -> Result<()> {
        let g = gpu()?;
        g.bind()?;
        if self.size == 0 {
            return Ok(());
        }
        let p = g.ptr(&self.buf);
        // SAFETY: dst.len() == size <= buffer length (checked by the caller);
        // the stream is synchronized before dst is used.
        unsafe { result::memcpy_dtoh_async(dst, p, g.stream.cu_stream()) }
            .map_err(|e| derr("device-to-host copy", e))?;
        g.sync()
    }

    /// Writes `new` (len == size) and diffs it on the device.
    pub(super) fn write_diff(&mut self, new: &[u8], mask_out: &mut Vec<u8>) -> Result<u64> {
        let g = gpu()?;
        let pad = padded(self.size);
        let segs = [Seg::Bytes(new), Seg::Zero(pad - new.len())];
        self.diff_with(g, Some(&segs), None, mask_out)
    }

    pub(super) fn copy_from(&mut self, src: &Page, mask_out: &mut Vec<u8>) -> Result<u64> {
        let g = gpu()?;
        let sp = g.ptr(&src.buf);
        self.diff_with(g, None, Some(sp), mask_out)
    }

    /// Shared body of write_diff and copy_from: either uploads `up` (the new
    /// bytes, padded to whole words) or diffs against device pointer `dsrc`.
    /// Device scratch layout: count (8 bytes) ++ bitmap words, then the upload
    /// at `up_off`; one download of count ++ bitmap, one sync.
    fn diff_with(
        &mut self,
        g: &Gpu,
        up: Option<&[Seg<'_>]>,
        dsrc: Option<u64>,
        mask_out: &mut Vec<u8>,
    ) -> Result<u64> {
        g.bind()?;
        let mask_bytes = self.size.div_ceil(8);
        mask_out.clear();
        mask_out.resize(mask_bytes, 0);
        if self.size == 0 {
            return Ok(0);
        }
        let nwords = padded(self.size) / 32;
        let down_len = 8 + nwords * 4; // count ++ bitmap words
        let up_len = up.map_or(0, segs_len);
        let up_off = round_up(down_len, ALIGN);
        let mut guard = g.scratch.lock().map_err(|_| derr("scratch lock", "poisoned"))?;
        let s = &mut *guard;
        s.ensure(g, up_len, down_len, up_off + up_len)?;
        let r = (|| {
            let (Some(dev), Some(down)) = (s.dev.as_ref(), s.down.as_mut()) else {
                return Err(derr("scratch", "missing buffer"));
            };
            let base = g.ptr(dev);
            let cu = g.stream.cu_stream();
            // SAFETY: [base, base+8) lies in the scratch buffer (ensure above).
            unsafe { result::memset_d8_async(base, 0, 8, cu) }.map_err(|e| derr("memset", e))?;
            let src_ptr = match (up, dsrc) {
                (Some(segs), _) => {
                    let Some(upb) = s.up.as_mut() else { return Err(derr("scratch", "missing buffer")) };
                    let host = upb.as_mut_slice().map_err(|e| derr("pinned buffer", e))?;
                    // The region [up_off, up_off+up_len) lies in the scratch buffer.
                    upload(g, host, base + up_off as u64, segs)?;
                    base + up_off as u64
                }
                (None, Some(p)) => p,
                (None, None) => return Err(derr("diff", "no source")),
            };
            let page = g.ptr(&self.buf);
            let (count_ptr, mask_ptr, size) = (base, base + 8, self.size as u64);
            let cfg = g.launch_cfg(nwords as u64);
            let mut lb = g.stream.launch_builder(&g.diff);
            lb.arg(&page).arg(&src_ptr).arg(&mask_ptr).arg(&size).arg(&count_ptr);
            // SAFETY: argument types match mmsb_diff_apply; page and src hold
            // nwords*32 bytes, the mask region nwords*4 bytes, count 8 bytes.
            unsafe { lb.launch(cfg) }.map_err(|e| derr("diff kernel launch", e))?;
            let host = down.as_mut_slice().map_err(|e| derr("pinned buffer", e))?;
            // SAFETY: copies down_len bytes from the scratch buffer into the
            // pinned buffer, which is not touched until the sync below.
            unsafe { result::memcpy_dtoh_async(&mut host[..down_len], base, cu) }
                .map_err(|e| derr("device-to-host copy", e))?;
            g.sync()?; // sync: count and bitmap must reach the host
            mask_out.copy_from_slice(&host[8..8 + mask_bytes]);
            Ok(read_count(host))
        })();
        g.settle(r)
    }

    pub(super) fn apply_dense(&mut self, mask: &[u8], payload: &[u8]) -> Result<u64> {
        let g = gpu()?;
        g.bind()?;
        if self.size == 0 {
            return Ok(0);
        }
        let pad = padded(self.size);
        let (pay_off, segs) = dense_upload(mask, payload, pad);
        let up_len = segs_len(&segs); // pay_off + pad
        let mut guard = g.scratch.lock().map_err(|_| derr("scratch lock", "poisoned"))?;
        let s = &mut *guard;
        s.ensure(g, up_len, 8, ALIGN + up_len)?;
        let r = (|| {
            let (Some(dev), Some(upb), Some(down)) = (s.dev.as_ref(), s.up.as_mut(), s.down.as_mut()) else {
                return Err(derr("scratch", "missing buffer"));
            };
            let host = upb.as_mut_slice().map_err(|e| derr("pinned buffer", e))?;
            let base = g.ptr(dev);
            let cu = g.stream.cu_stream();
            // SAFETY: the count [base, base+8) lies inside the scratch buffer
            // (ensure above); it is zeroed while the host stages the payload.
            unsafe { result::memset_d8_async(base, 0, 8, cu) }.map_err(|e| derr("memset", e))?;
            // [base+ALIGN, base+ALIGN+up_len) lies in the scratch buffer.
            upload(g, host, base + ALIGN as u64, &segs)?;
            let page = g.ptr(&self.buf);
            let (mask_ptr, pay_ptr, size) = (base + ALIGN as u64, base + (ALIGN + pay_off) as u64, self.size as u64);
            let cfg = g.launch_cfg((pad / 32) as u64);
            let mut lb = g.stream.launch_builder(&g.dense);
            lb.arg(&page).arg(&mask_ptr).arg(&pay_ptr).arg(&size).arg(&base);
            // SAFETY: argument types match mmsb_apply_dense; all regions are padded
            // to whole 32-byte words as the kernel expects.
            unsafe { lb.launch(cfg) }.map_err(|e| derr("dense kernel launch", e))?;
            count_back(g, base, down)
        })();
        g.settle(r)
    }

    /// `ranges` are validated by the caller (inside the page, data length matches).
    pub(super) fn apply_sparse(&mut self, ranges: &[(u64, u64)], data: &[u8]) -> Result<u64> {
        let g = gpu()?;
        g.bind()?;
        let n = ranges.len();
        if n == 0 || data.is_empty() {
            return Ok(0);
        }
        let ranges_len = 16 * n;
        let offs_off = round_up(ranges_len, ALIGN);
        let data_off = round_up(offs_off + 8 * (n + 1), ALIGN);
        // Upload region: headers (written in place below), then the data.
        let segs = [Seg::Ready(data_off), Seg::Bytes(data)];
        let up_len = segs_len(&segs);
        let mut guard = g.scratch.lock().map_err(|_| derr("scratch lock", "poisoned"))?;
        let s = &mut *guard;
        s.ensure(g, up_len, 8, ALIGN + up_len)?;
        let r = (|| {
            let (Some(dev), Some(upb), Some(down)) = (s.dev.as_ref(), s.up.as_mut(), s.down.as_mut()) else {
                return Err(derr("scratch", "missing buffer"));
            };
            let host = upb.as_mut_slice().map_err(|e| derr("pinned buffer", e))?;
            let mut off = 0u64;
            for (i, &(st, len)) in ranges.iter().enumerate() {
                host[16 * i..16 * i + 8].copy_from_slice(&st.to_le_bytes());
                host[16 * i + 8..16 * i + 16].copy_from_slice(&len.to_le_bytes());
                host[offs_off + 8 * i..offs_off + 8 * i + 8].copy_from_slice(&off.to_le_bytes());
                off += len;
            }
            host[offs_off + 8 * n..offs_off + 8 * n + 8].copy_from_slice(&off.to_le_bytes());
            let base = g.ptr(dev);
            let up_base = base + ALIGN as u64;
            let cu = g.stream.cu_stream();
            // SAFETY: as in apply_dense.
            unsafe { result::memset_d8_async(base, 0, 8, cu) }.map_err(|e| derr("memset", e))?;
            upload(g, host, up_base, &segs)?;
            let page = g.ptr(&self.buf);
            let data_ptr = up_base + data_off as u64;
            // Ranges of one launch must not overlap: split where a range starts
            // before the end of an earlier one; launches run in stream order, so
            // later ranges win, as in a sequential CPU loop.
            let mut i0 = 0usize;
            while i0 < n {
                let mut i1 = i0;
                let mut end = 0u64;
                while i1 < n {
                    let (st, len) = ranges[i1];
                    if len > 0 && st < end {
                        break;
                    }
                    end = end.max(st + len);
                    i1 += 1;
                }
                let rp = up_base + (16 * i0) as u64;
                let op = up_base + (offs_off + 8 * i0) as u64;
                let nb = (i1 - i0) as u64;
                let total: u64 = ranges[i0..i1].iter().map(|r| r.1).sum();
                if total > 0 {
                    let cfg = g.launch_cfg(total.div_ceil(16));
                    let mut lb = g.stream.launch_builder(&g.sparse);
                    lb.arg(&page).arg(&rp).arg(&op).arg(&nb).arg(&data_ptr).arg(&base);
                    // SAFETY: argument types match mmsb_apply_sparse; ranges lie in
                    // the page and offsets in the data region (validated by caller).
                    unsafe { lb.launch(cfg) }.map_err(|e| derr("sparse kernel launch", e))?;
                }
                i0 = i1;
            }
            count_back(g, base, down)
        })();
        g.settle(r)
    }
}

fn read_count(host: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&host[..8]);
    u64::from_le_bytes(b)
}

/// Downloads the 8-byte count at `base` and synchronizes (the one sync of an apply).
fn count_back(g: &Gpu, base: u64, down: &mut PinnedHostSlice<u8>) -> Result<u64> {
    let host = down.as_mut_slice().map_err(|e| derr("pinned buffer", e))?;
    // SAFETY: 8 bytes from the scratch buffer into the pinned buffer, read
    // only after the sync below.
    unsafe { result::memcpy_dtoh_async(&mut host[..8], base, g.stream.cu_stream()) }
        .map_err(|e| derr("device-to-host copy", e))?;
    g.sync()?; // sync: the count must reach the host
    Ok(read_count(host))
}

/// Kernel-only timings for the benchmark test: seconds per launch of the
/// dense, diff and sparse kernels on `size` bytes already on the device,
/// averaged over `reps` launches between two stream syncs.
#[cfg(test)]
pub(super) fn bench_kernels(size: usize, reps: u32) -> Result<[f64; 3]> {
    let g = gpu()?;
    g.bind()?;
    let pad = padded(size);
    let e = |e| derr("bench alloc", e);
    let page = g.stream.alloc_zeros::<u8>(pad).map_err(e)?;
    let other = g.stream.clone_htod(&vec![0x5au8; pad]).map_err(e)?;
    let mask = g.stream.clone_htod(&vec![0x55u8; pad / 8]).map_err(e)?;
    let cnt = g.stream.alloc_zeros::<u8>(8).map_err(e)?;
    let ranges: Vec<u64> = vec![0, size as u64];
    let offs: Vec<u64> = vec![0, size as u64];
    let r_dev = g.stream.clone_htod(&ranges).map_err(e)?;
    let o_dev = g.stream.clone_htod(&offs).map_err(e)?;
    let (pp, op, mp, cp) = (g.ptr(&page), g.ptr(&other), g.ptr(&mask), g.ptr(&cnt));
    let (rp, opp) = (r_dev.device_ptr(&g.stream).0, o_dev.device_ptr(&g.stream).0);
    let (sz, one) = (size as u64, 1u64);
    let mut out = [0f64; 3];
    for (which, slot) in out.iter_mut().enumerate() {
        let items = match which { 2 => (size as u64).div_ceil(16), _ => (pad / 32) as u64 };
        let cfg = g.launch_cfg(items);
        let run = |n: u32| -> Result<f64> {
            let t = std::time::Instant::now();
            for _ in 0..n {
                let mut lb = match which {
                    0 => g.stream.launch_builder(&g.dense),
                    1 => g.stream.launch_builder(&g.diff),
                    _ => g.stream.launch_builder(&g.sparse),
                };
                match which {
                    0 => lb.arg(&pp).arg(&mp).arg(&op).arg(&sz).arg(&cp),
                    1 => lb.arg(&pp).arg(&op).arg(&mp).arg(&sz).arg(&cp),
                    _ => lb.arg(&pp).arg(&rp).arg(&opp).arg(&one).arg(&op).arg(&cp),
                };
                // SAFETY: argument lists match the kernels; buffers hold `pad` bytes.
                unsafe { lb.launch(cfg) }.map_err(|e| derr("bench launch", e))?;
            }
            g.sync()?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(3)?; // warm-up
        *slot = run(reps)? / reps as f64;
    }
    Ok(out)
}

/// Per-phase timings of a dense delta on a `size`-byte page (benchmark only):
/// each phase run alone, `reps` times, median seconds. Rows: (name, seconds, note).
/// Host staging copy into cacheable / write-combined pinned memory and into
/// pageable memory; H2D of the whole upload from each; the kernel; the count
/// and bitmap downloads; an idle stream sync; the memset of the count.
#[cfg(test)]
pub(super) fn bench_phases(size: usize, reps: usize) -> Result<Vec<(String, f64, String)>> {
    use std::time::Instant;
    let g = gpu()?;
    g.bind()?;
    let e = |e| derr("bench alloc", e);
    let pad = padded(size);
    let mask_len = pad / 8;
    let mask = vec![0x55u8; size.div_ceil(8)];
    let payload = vec![0xa7u8; size];
    let (pay_off, segs) = dense_upload(&mask, &payload, pad);
    let up_len = segs_len(&segs);
    // SAFETY: written (fill_window) before any read.
    let mut cached = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(up_len, 0) }.map_err(e)?;
    // SAFETY: as above.
    let mut wc = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(up_len, sys::CU_MEMHOSTALLOC_WRITECOMBINED) }
        .map_err(e)?;
    // SAFETY: only written by the device before the host reads it after a sync.
    let mut down = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(8 + mask_len, 0) }.map_err(e)?;
    let mut pageable = vec![0u8; up_len];
    let dev = g.stream.alloc_zeros::<u8>(up_len).map_err(e)?;
    let page = g.stream.alloc_zeros::<u8>(pad).map_err(e)?;
    let cnt = g.stream.alloc_zeros::<u8>(8 + mask_len).map_err(e)?;
    let (dp, pp, cp) = (g.ptr(&dev), g.ptr(&page), g.ptr(&cnt));
    let cu = g.stream.cu_stream();
    g.sync()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed().as_secs_f64());
        }
        Ok(median(v))
    };
    let mut rows = Vec::new();
    let gbs = |bytes: usize, s: f64| format!("{:.2} GB/s", bytes as f64 / s / 1e9);
    let mib = size as f64 / (1u64 << 20) as f64;
    let tag = format!("{mib:.0}MiB");
    {
        let h = cached.as_mut_slice().map_err(|e| derr("pinned", e))?;
        let s = time(&mut || {
            fill_window(&segs, 0, &mut h[..up_len]);
            Ok(())
        })?;
        rows.push((format!("phase_{tag}_host_copy_pinned_cached"), s, gbs(up_len, s)));
    }
    {
        // The threaded staging copy alone (no DMA), as the pipeline runs it.
        let h = cached.as_mut_slice().map_err(|e| derr("pinned", e))?;
        for threads in [2usize, 4, 8] {
            let s = time(&mut || {
                stage(&g.copy, threads, &segs, &mut h[..up_len], chunk_len(up_len), UNIT, |_, _| Ok(()))
            })?;
            rows.push((format!("phase_{tag}_host_copy_pinned_cached_threads_{threads}"), s, gbs(up_len, s)));
        }
    }
    {
        let h = wc.as_mut_slice().map_err(|e| derr("pinned", e))?;
        let s = time(&mut || {
            fill_window(&segs, 0, &mut h[..up_len]);
            Ok(())
        })?;
        rows.push((format!("phase_{tag}_host_copy_pinned_wc"), s, gbs(up_len, s)));
    }
    {
        let s = time(&mut || {
            fill_window(&segs, 0, &mut pageable);
            Ok(())
        })?;
        rows.push((format!("phase_{tag}_host_copy_pageable"), s, gbs(up_len, s)));
    }
    for (name, src) in [
        ("h2d_pinned_cached", cached.as_slice().map_err(|e| derr("pinned", e))?),
        ("h2d_pinned_wc", wc.as_slice().map_err(|e| derr("pinned", e))?),
        ("h2d_pageable", &pageable[..]),
    ] {
        let s = time(&mut || {
            // SAFETY: up_len bytes into the up_len-byte device buffer; the
            // source outlives the sync that follows.
            unsafe { result::memcpy_htod_async(dp, &src[..up_len], cu) }.map_err(|e| derr("h2d", e))?;
            g.sync()
        })?;
        rows.push((format!("phase_{tag}_{name}_sync"), s, gbs(up_len, s)));
    }
    {
        let (mp, pay, sz) = (dp, dp + pay_off as u64, size as u64);
        let cfg = g.launch_cfg((pad / 32) as u64);
        let s = time(&mut || {
            let mut lb = g.stream.launch_builder(&g.dense);
            lb.arg(&pp).arg(&mp).arg(&pay).arg(&sz).arg(&cp);
            // SAFETY: argument types match mmsb_apply_dense; regions padded.
            unsafe { lb.launch(cfg) }.map_err(|e| derr("bench launch", e))?;
            g.sync()
        })?;
        rows.push((format!("phase_{tag}_kernel_dense_launch_sync"), s, String::new()));
    }
    let h = down.as_mut_slice().map_err(|e| derr("pinned", e))?;
    for (name, n) in [("d2h_count", 8usize), ("d2h_count_bitmap", 8 + mask_len)] {
        let s = time(&mut || {
            // SAFETY: n bytes from the (8+mask_len)-byte device buffer into the
            // pinned buffer, read by nobody before the sync.
            unsafe { result::memcpy_dtoh_async(&mut h[..n], cp, cu) }.map_err(|e| derr("d2h", e))?;
            g.sync()
        })?;
        rows.push((format!("phase_{tag}_{name}_sync"), s, format!("{n} bytes")));
    }
    let s = time(&mut || {
        // SAFETY: 8 bytes inside the count buffer.
        unsafe { result::memset_d8_async(cp, 0, 8, cu) }.map_err(|e| derr("memset", e))?;
        g.sync()
    })?;
    rows.push(("phase_memset8_sync".into(), s, String::new()));
    let s = time(&mut || g.sync())?;
    rows.push(("phase_idle_stream_sync".into(), s, String::new()));
    Ok(rows)
}

/// Timeline of the pipelined upload of a `size`-byte dense delta (the
/// default copy threads and chunks, as `apply_dense` stages it): for each
/// chunk, when the host queued its DMA (host clock) and when the DMA
/// finished (an event after it, device clock), both in seconds since the
/// start; then when the staging ended and when the final sync returned.
/// Medians over `reps`. It shows whether the DMAs overlap the copy (chunk
/// k's DMA done before chunk k+1 is queued) or run one after another.
#[cfg(test)]
pub(super) fn bench_upload_timeline(size: usize, reps: usize) -> Result<Vec<(String, f64, String)>> {
    use std::time::Instant;
    let g = gpu()?;
    g.bind()?;
    let e = |e| derr("bench alloc", e);
    let pad = padded(size);
    let mask = vec![0x55u8; size.div_ceil(8)];
    let payload = vec![0xa7u8; size];
    let (_, segs) = dense_upload(&mask, &payload, pad);
    let up_len = segs_len(&segs);
    let chunk = chunk_len(up_len);
    let n_chunks = up_len.div_ceil(chunk);
    // SAFETY: written (staged) before any read.
    let mut host = unsafe { g.ctx.alloc_pinned_with_flags::<u8>(up_len, 0) }.map_err(e)?;
    let dev = g.stream.alloc_zeros::<u8>(up_len).map_err(e)?;
    let dp = g.ptr(&dev);
    let cu = g.stream.cu_stream();
    let timed = || g.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| derr("event", e));
    let start = timed()?;
    let done: Vec<_> = (0..n_chunks).map(|_| timed()).collect::<Result<_>>()?;
    let h = host.as_mut_slice().map_err(|e| derr("pinned", e))?;
    g.sync()?;
    // per rep: queued[k], dma_done[k], staged, synced
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); 2 * n_chunks + 2];
    for rep in 0..reps + 3 {
        let mut queued = vec![0f64; n_chunks];
        let t0 = Instant::now();
        start.record(&g.stream).map_err(|e| derr("event record", e))?;
        let mut k = 0usize;
        stage(&g.copy, copy_threads(), &segs, &mut h[..up_len], chunk, UNIT, |lo, win| {
            queued[k] = t0.elapsed().as_secs_f64();
            // SAFETY: the chunk lies in the up_len-byte device buffer; `win`
            // is pinned, written, and not written again before the sync below.
            unsafe { result::memcpy_htod_async(dp + lo as u64, win, cu) }.map_err(|e| derr("h2d", e))?;
            done[k].record(&g.stream).map_err(|e| derr("event record", e))?;
            k += 1;
            Ok(())
        })?;
        let staged = t0.elapsed().as_secs_f64();
        g.sync()?;
        let synced = t0.elapsed().as_secs_f64();
        if rep < 3 {
            continue; // warm-up
        }
        for (i, ev) in done.iter().enumerate() {
            samples[i].push(queued[i]);
            samples[n_chunks + i].push(start.elapsed_ms(ev).map_err(|e| derr("event time", e))? as f64 / 1e3);
        }
        samples[2 * n_chunks].push(staged);
        samples[2 * n_chunks + 1].push(synced);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let tag = format!("{}MiB", size >> 20);
    let note = format!("{n_chunks} chunks of {} KiB, {} copy threads", chunk >> 10, copy_threads());
    let mut rows = Vec::new();
    for i in 0..n_chunks {
        rows.push((format!("timeline_{tag}_chunk{i}_queued"), median(&mut samples[i]), note.clone()));
        rows.push((format!("timeline_{tag}_chunk{i}_dma_done"), median(&mut samples[n_chunks + i]), note.clone()));
    }
    rows.push((format!("timeline_{tag}_staging_done"), median(&mut samples[2 * n_chunks]), note.clone()));
    rows.push((format!("timeline_{tag}_synced"), median(&mut samples[2 * n_chunks + 1]), note));
    Ok(rows)
}
