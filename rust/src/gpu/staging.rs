//! Host side of the upload pipeline, independent of CUDA (tested without a
//! device): an upload region described as segments, written into the pinned
//! staging buffer chunk by chunk, by the calling thread alone or together with
//! a small persistent pool of copy threads; each chunk is handed on (its DMA
//! queued) as soon as all of its bytes are written.
//!
//! Why threads: on the H100 machine one core copies ~12 GB/s into pinned
//! memory (cacheable, write-combined and pageable alike), so a 1 MiB dense
//! delta spent ~98 µs in the host copy against ~31 µs of DMA. Several cores
//! together copy faster than the DMA drains, which leaves the DMA as the bound.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;

/// One piece of an upload region, laid out back to back from offset 0.
pub(super) enum Seg<'a> {
    /// Bytes copied from the caller's (pageable) memory.
    Bytes(&'a [u8]),
    /// Zero bytes (padding).
    Zero(usize),
    /// Bytes already written into the staging buffer (headers).
    Ready(usize),
}

impl Seg<'_> {
    fn len(&self) -> usize {
        match self {
            Seg::Bytes(b) => b.len(),
            Seg::Zero(n) | Seg::Ready(n) => *n,
        }
    }
}

/// Writes bytes `[lo, lo + dst.len())` of the concatenation of `segs` into
/// `dst`, leaving `Ready` bytes as they are. Pure; tested without a device.
pub(super) fn fill_window(segs: &[Seg<'_>], lo: usize, dst: &mut [u8]) {
    let hi = lo + dst.len();
    let mut s0 = 0usize;
    for seg in segs {
        let s1 = s0 + seg.len();
        let (a, b) = (s0.max(lo), s1.min(hi));
        if a < b {
            let d = &mut dst[a - lo..b - lo];
            match seg {
                Seg::Bytes(src) => d.copy_from_slice(&src[a - s0..b - s0]),
                Seg::Zero(_) => d.fill(0),
                Seg::Ready(_) => {}
            }
        }
        if s1 >= hi {
            break;
        }
        s0 = s1;
    }
}

/// Total length of an upload region.
pub(super) fn segs_len(segs: &[Seg<'_>]) -> usize {
    segs.iter().map(Seg::len).sum()
}

// ---- copy thread count ------------------------------------------------------

/// Uploads smaller than this are staged by the calling thread alone: waking
/// helpers costs a few µs, more than they save on a few hundred KiB.
pub(super) const PARALLEL_MIN: usize = 256 << 10;
/// Work unit of the threaded copy (a chunk is split into units of this size):
/// ~3 µs of copying for one core, small enough to balance 8 threads on 1 MiB.
pub(super) const UNIT: usize = 32 << 10;
/// Default cap on the copy threads (the caller included).
const MAX_DEFAULT_THREADS: usize = 8;
/// Hard cap, also for `MMSB_GPU_COPY_THREADS`.
const MAX_THREADS: usize = 64;
/// After a job a helper polls for the next one this long before it sleeps:
/// uploads tend to come back to back, and waking a sleeping thread costs more
/// than a short spin (OpenMP runtimes spin far longer by default).
const SPIN: Duration = Duration::from_micros(100);

/// Threads (the caller included) used for large uploads; 0 = not decided yet.
static COPY_THREADS: AtomicUsize = AtomicUsize::new(0);

/// `MMSB_GPU_COPY_THREADS` when set to a positive number (1 = the caller
/// alone), else `available_parallelism()` capped at 8.
fn default_copy_threads() -> usize {
    let env = std::env::var("MMSB_GPU_COPY_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok());
    match env {
        Some(n) if n > 0 => n.min(MAX_THREADS),
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_DEFAULT_THREADS),
    }
}

/// Threads (the caller included) that stage a large upload.
pub(super) fn copy_threads() -> usize {
    match COPY_THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = default_copy_threads();
            COPY_THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Benchmark knob: copy threads for large uploads (0 = back to the default).
#[cfg(test)]
pub(super) fn set_copy_threads(n: usize) {
    COPY_THREADS.store(n.min(MAX_THREADS), Ordering::Relaxed);
}

// ---- persistent pool --------------------------------------------------------

/// The job a caller shares with the helpers, its lifetime erased (see `run`).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn() + Sync + 'static));
// SAFETY: the pointee is `Sync` (called through `&` from several threads),
// and `CopyPool::run` keeps it alive until no helper can touch it any more.
unsafe impl Send for JobPtr {}

#[derive(Default)]
struct State {
    gen: u64,
    job: Option<JobPtr>,
    /// Helpers the current job may take, helpers that joined it, helpers still in it.
    limit: usize,
    joined: usize,
    running: usize,
    sleepers: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Mirror of `state.gen` that spinning helpers poll without the lock.
    gen: AtomicU64,
    wake: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parked helper threads, woken per job; started on demand and kept for the
/// life of the process (one pool per GPU context).
#[derive(Default)]
pub(super) struct CopyPool {
    shared: Arc<Shared>,
    spawned: Mutex<usize>,
    /// Held by the caller whose job is published: one job at a time.
    owner: Mutex<()>,
}

impl CopyPool {
    pub(super) fn new() -> CopyPool {
        CopyPool::default()
    }

    /// Starts helpers until there are `n` (fewer if the OS refuses); returns how many exist.
    fn ensure(&self, n: usize) -> usize {
        let mut have = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
        while *have < n {
            let sh = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("mmsb-gpu-copy".into())
                .spawn(move || helper(sh));
            if spawned.is_err() {
                break;
            }
            *have += 1;
        }
        *have
    }

    /// Runs `job` on up to `helpers` pool threads while the caller runs `main`;
    /// returns `main`'s result once no helper is inside `job` any more (also
    /// when `main` unwinds). `job` must return promptly once `main` is done
    /// with the shared work (helpers may join late and must find none left),
    /// and `main` must be able to finish the work alone: helpers may come
    /// late or not at all (while another caller owns the pool, `main` runs
    /// without any; uploads are serialised by the scratch lock anyway).
    pub(super) fn run<R>(&self, helpers: usize, job: &(dyn Fn() + Sync), main: impl FnOnce() -> R) -> R {
        if helpers == 0 {
            return main();
        }
        let _owner = match self.owner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return main(),
        };
        let helpers = self.ensure(helpers).min(helpers);
        if helpers == 0 {
            return main();
        }
        let raw: *const (dyn Fn() + Sync + '_) = job;
        // SAFETY: only the lifetime is erased. The pointer is published below
        // and withdrawn by `Retract` (run on return and on unwind), which waits
        // until every helper that took it has left `job`; no helper can take
        // it afterwards, so it is never used beyond the borrow of `job`.
        let ptr = unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(raw)
        };
        {
            let mut st = self.shared.lock();
            st.gen += 1;
            st.job = Some(JobPtr(ptr));
            st.limit = helpers;
            st.joined = 0;
            self.shared.gen.store(st.gen, Ordering::Release);
            if st.sleepers > 0 {
                self.shared.wake.notify_all();
            }
        }
        let _retract = Retract(&self.shared);
        main()
    }
}

/// Withdraws the published job and waits for the helpers inside it.
struct Retract<'a>(&'a Shared);

impl Drop for Retract<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.job = None;
        while st.running > 0 {
            st = self.0.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn helper(sh: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let t = Instant::now();
        let mut spins = 0u32;
        while sh.gen.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && t.elapsed() > SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let mut st = sh.lock();
        while st.gen == seen {
            st.sleepers += 1;
            st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            st.sleepers -= 1;
        }
        seen = st.gen;
        let Some(job) = st.job else { continue };
        if st.joined >= st.limit {
            continue;
        }
        st.joined += 1;
        st.running += 1;
        drop(st);
        // SAFETY: `job` was published by `CopyPool::run`, whose `Retract`
        // waits for `running` to drop to zero before the job's borrow ends;
        // this helper counted itself in `running` under the lock while the job
        // was still published.
        let f = unsafe { &*job.0 };
        // A panicking job must not kill the helper with `running` counted.
        let _ = catch_unwind(AssertUnwindSafe(f));
        let mut st = sh.lock();
        st.running -= 1;
        if st.running == 0 {
            sh.done.notify_all();
        }
    }
}

// ---- staging ----------------------------------------------------------------

/// Raw base of the staging region, shared by the copying threads; each writes
/// only the units it claimed, which are disjoint.
#[derive(Clone, Copy)]
struct Base(*mut u8);
// SAFETY: dereferenced only in `stage`, on disjoint ranges (see the SAFETY
// notes there), while the borrowed staging buffer is alive.
unsafe impl Send for Base {}
// SAFETY: as above.
unsafe impl Sync for Base {}

impl Base {
    /// (A method, so closures capture the whole `Sync` wrapper, not the raw field.)
    fn at(self, off: usize) -> *mut u8 {
        self.0.wrapping_add(off)
    }
}

/// Writes the concatenation of `segs` into `host` (exactly `segs_len(segs)`
/// bytes) in chunks of `chunk` bytes and calls `on_chunk(lo, bytes)` for each
/// chunk, in order, once all of its bytes are written (it queues the chunk's
/// DMA). With `threads > 1` the pool's helpers copy too: every chunk is split
/// into units of `unit` bytes, claimed in order by whoever is free, and the
/// caller hands chunks on as they complete between its own units. A failing
/// `on_chunk` stops the staging (no further units are claimed) and its error
/// is returned once no helper writes any more.
pub(super) fn stage(
    pool: &CopyPool,
    threads: usize,
    segs: &[Seg<'_>],
    host: &mut [u8],
    chunk: usize,
    unit: usize,
    mut on_chunk: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let total = host.len();
    // A chunk is at most the whole region: units are counted per chunk, so a
    // larger one would only add empty units for the threads to claim.
    let chunk = chunk.clamp(1, total.max(1));
    if threads <= 1 || total <= unit {
        let mut lo = 0usize;
        for win in host.chunks_mut(chunk) {
            fill_window(segs, lo, win);
            on_chunk(lo, win)?;
            lo += win.len();
        }
        return Ok(());
    }
    let unit = unit.clamp(1, chunk);
    let n_chunks = total.div_ceil(chunk);
    let per_chunk = chunk.div_ceil(unit); // units per chunk (the last chunk's may be empty)
    let n_units = n_chunks * per_chunk;
    let next = AtomicUsize::new(0);
    let done: Vec<AtomicUsize> = (0..n_chunks).map(|_| AtomicUsize::new(0)).collect();
    let base = Base(host.as_mut_ptr());
    // Claims units until none is left; true when it copied at least one.
    let work = |max: usize| {
        for _ in 0..max {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= n_units {
                return false;
            }
            let c = u / per_chunk;
            let lo = c * chunk + (u % per_chunk) * unit;
            let hi = (lo + unit).min((c + 1) * chunk).min(total);
            if lo < hi {
                // SAFETY: [lo, hi) lies in `host` (hi <= total) and belongs to
                // unit `u` alone; each unit is claimed once (fetch_add), and
                // nobody reads the chunk before its `done` count is complete.
                let dst = unsafe { std::slice::from_raw_parts_mut(base.at(lo), hi - lo) };
                fill_window(segs, lo, dst);
            }
            // Release: the unit's bytes are visible to whoever sees the count.
            done[c].fetch_add(1, Ordering::Release);
        }
        true
    };
    let job = || {
        work(usize::MAX);
    };
    pool.run(threads - 1, &job, || {
        let mut c = 0usize;
        while c < n_chunks {
            if done[c].load(Ordering::Acquire) == per_chunk {
                let lo = c * chunk;
                let hi = (lo + chunk).min(total);
                // SAFETY: every unit of chunk c is written (count complete,
                // acquired above) and no thread writes it again; other threads
                // write only other chunks' units, disjoint from [lo, hi).
                let bytes = unsafe { std::slice::from_raw_parts(base.at(lo) as *const u8, hi - lo) };
                if let Err(e) = on_chunk(lo, bytes) {
                    next.store(n_units, Ordering::Relaxed); // no more units
                    return Err(e);
                }
                c += 1;
            } else if !work(1) {
                std::hint::spin_loop(); // the rest is being copied by helpers
            }
        }
        Ok(())
    })
}
