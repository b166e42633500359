//! `Fsync` file logs: group commit through a writer thread.
//!
//! Appenders (serialized by the state mutex) encode a frame into a recycled
//! buffer and send it, with its file offset, over a bounded crossbeam
//! channel. The writer blocks for one frame, drains everything else queued,
//! writes the batch with one positioned write, `fdatasync`s once and
//! publishes the last synced seq; waiters (outside the state mutex) sleep on
//! a condvar until their seq is covered. A sync wakes the threads whose
//! records it covered; most of them append again at once, so when it woke
//! several, the next batch waits (at most half a sync's time) until as many
//! records as the last batch had have arrived (a call may log several: a
//! propagating write logs its cycle's), instead of syncing whichever came
//! first alone and making the others wait a whole extra sync. The channel is bounded (backpressure:
//! memory stays bounded if the disk falls behind; an appender then blocks
//! only while the writer is busy and needs no lock the appender holds).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::file::io_err;
use super::{frame, RecordRef};
use crate::error::{Error, ErrorKind, Result};

/// Frames that may wait in the channel.
const QUEUE: usize = 4096;
/// Recycled frame buffers kept.
const POOL: usize = 256;
/// Largest batch written by one write before syncing.
const MAX_BATCH: usize = 16 << 20;
/// The writer extends the file by this many zero bytes at a time, so that
/// most `fdatasync`s overwrite allocated blocks and need no metadata commit
/// (on this disk that is ~0.2 ms instead of ~2.5 ms per sync).
const PREALLOC: u64 = 8 << 20;
/// Longest a batch waits for the writers the last sync woke.
const MAX_GRACE: Duration = Duration::from_millis(1);

#[derive(Default)]
struct SyncState {
    /// Every seq <= durable is on disk.
    durable: u64,
    /// Highest seq handed to the writer.
    sent: u64,
    /// Highest seq ever synced (not lowered by truncation).
    max_durable: u64,
    /// Bumped by every truncation.
    epoch: u64,
    /// The writer's first I/O error; the log is unusable after it.
    error: Option<Error>,
    /// File size the writer has preallocated up to (zeros past the log end).
    allocated: u64,
    /// The seq each thread blocked in `wait_durable` waits for.
    waiting: Vec<u64>,
}

/// Shared durability waiter (Send + Sync), used outside the state mutex.
pub struct SyncHandle {
    st: Mutex<SyncState>,
    cv: Condvar,
}

impl SyncHandle {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until record `seq` is on disk, or returns the writer's I/O
    /// error. A seq that was never appended gives `Invalid`; a record removed
    /// by `truncate_after`/`clear` counts as durable (those sync everything
    /// queued before cutting).
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut st = self.lock();
        let epoch = st.epoch;
        let mut registered = false;
        let res = loop {
            if seq <= st.durable {
                break Ok(());
            }
            if let Some(e) = &st.error {
                break Err(e.clone());
            }
            if seq > st.sent {
                if seq <= st.max_durable {
                    break Ok(());
                }
                break Err(Error::new(ErrorKind::Invalid, format!("log sequence number {seq} was never appended")));
            }
            if st.epoch != epoch {
                break Ok(());
            }
            if !registered {
                st.waiting.push(seq);
                registered = true;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        if registered {
            if let Some(i) = st.waiting.iter().position(|&s| s == seq) {
                st.waiting.swap_remove(i);
            }
        }
        res
    }

    /// Highest seq known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.lock().durable
    }

    /// Threads blocked in `wait_durable` now.
    pub fn waiters(&self) -> usize {
        self.lock().waiting.len()
    }

    fn fail(&self, e: Error) {
        let mut st = self.lock();
        if st.error.is_none() {
            st.error = Some(e);
        }
        drop(st);
        self.cv.notify_all();
    }
}

struct Msg {
    off: u64,
    seq: u64,
    bytes: Vec<u8>,
}

pub struct SyncFile {
    /// Used by the appender side for reads and truncation.
    pub file: File,
    pub path: String,
    tx: Option<Sender<Msg>>,
    pool: Receiver<Vec<u8>>,
    handle: Arc<SyncHandle>,
    thread: Option<JoinHandle<()>>,
    /// Offset just past the last queued frame.
    end: u64,
}

impl SyncFile {
    pub fn new(file: File, path: String, last_seq: u64, end: u64) -> Result<SyncFile> {
        let wfile = file.try_clone().map_err(|e| io_err(&path, "clone handle", e))?;
        let handle = Arc::new(SyncHandle {
            st: Mutex::new(SyncState { durable: last_seq, sent: last_seq, max_durable: last_seq, allocated: end, ..Default::default() }),
            cv: Condvar::new(),
        });
        let (tx, rx) = bounded::<Msg>(QUEUE);
        let (pool_tx, pool) = bounded::<Vec<u8>>(POOL);
        let h = Arc::clone(&handle);
        let wpath = path.clone();
        let thread = std::thread::Builder::new()
            .name("mmsb-tlog-writer".into())
            .spawn(move || writer(wfile, wpath, rx, pool_tx, h))
            .map_err(|e| io_err(&path, "spawn writer thread", e))?;
        Ok(SyncFile { file, path, tx: Some(tx), pool, handle, thread: Some(thread), end })
    }

    pub fn handle(&self) -> Arc<SyncHandle> {
        Arc::clone(&self.handle)
    }

    /// Queues the frame of `rec` at file offset `off`; returns its length.
    pub fn append(&mut self, seq: u64, off: u64, rec: &RecordRef) -> Result<usize> {
        if let Some(e) = &self.handle.lock().error {
            return Err(e.clone());
        }
        let mut bytes = self.pool.try_recv().unwrap_or_default();
        bytes.clear();
        let n = frame::encode_into(&mut bytes, seq, rec)?;
        let tx = self.tx.as_ref().ok_or_else(|| Error::new(ErrorKind::Internal, "log writer already stopped"))?;
        tx.send(Msg { off, seq, bytes })
            .map_err(|_| Error::new(ErrorKind::Io, format!("transaction log {}: writer thread has stopped", self.path)))?;
        self.handle.lock().sent = seq;
        self.end = off + n as u64;
        Ok(n)
    }

    /// Waits until everything queued is on disk.
    pub fn barrier(&self) -> Result<()> {
        let sent = self.handle.lock().sent;
        self.handle.wait_durable(sent)
    }

    /// Syncs what is queued, cuts the file at `cut` (keeping records <= seq), syncs.
    pub fn truncate(&mut self, cut: u64, seq: u64) -> Result<()> {
        self.barrier()?;
        self.file.set_len(cut).map_err(|e| io_err(&self.path, "truncate", e))?;
        self.file.sync_all().map_err(|e| io_err(&self.path, "sync", e))?;
        self.end = cut;
        let mut st = self.handle.lock();
        st.durable = seq;
        st.sent = seq;
        st.epoch += 1;
        st.allocated = cut;
        drop(st);
        self.handle.cv.notify_all();
        Ok(())
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        drop(self.tx.take()); // the writer drains the queue, syncs, and exits
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                self.handle.fail(Error::new(ErrorKind::Internal, format!("transaction log {}: writer thread panicked", self.path)));
            }
        }
        let st = self.handle.lock();
        let lost = st.durable < st.sent && st.error.is_none();
        let clean = st.error.is_none() && !lost;
        drop(st);
        if clean {
            // drop the zero preallocation so a closed log ends at its last frame
            let _ = self.file.set_len(self.end).and_then(|_| self.file.sync_all());
        }
        if lost {
            self.handle.fail(Error::new(ErrorKind::Io, format!("transaction log {}: closed before all records were synced", self.path)));
        }
        self.handle.cv.notify_all();
    }
}

fn writer(file: File, path: String, rx: Receiver<Msg>, pool: Sender<Vec<u8>>, h: Arc<SyncHandle>) {
    let mut batch: Vec<u8> = Vec::new();
    let mut next: Option<Msg> = None;
    let recycle = |mut b: Vec<u8>| {
        if b.capacity() <= (1 << 20) {
            b.clear();
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = pool.try_send(b) {}
        }
    };
    // records expected in the next batch (as many as the last one had, if it
    // woke several threads), and how long to wait for them after the first
    let mut expect = 1usize;
    let mut grace = Duration::ZERO;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return, // sender dropped and queue empty
            },
        };
        let deadline = Instant::now() + grace;
        let start = first.off;
        let mut last = first.seq;
        let mut count = 1usize;
        batch.clear();
        batch.extend_from_slice(&first.bytes);
        recycle(first.bytes);
        while batch.len() < MAX_BATCH {
            let got = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) if count < expect => rx.recv_deadline(deadline).ok(),
                Err(_) => None,
            };
            match got {
                Some(m) if m.off == start + batch.len() as u64 => {
                    batch.extend_from_slice(&m.bytes);
                    last = m.seq;
                    count += 1;
                    recycle(m.bytes);
                }
                Some(m) => {
                    next = Some(m);
                    break;
                }
                None => break,
            }
        }
        let allocated = {
            let st = h.lock();
            if st.error.is_some() {
                continue; // keep draining so appenders never block; nothing more is written
            }
            st.allocated
        };
        let need = start + batch.len() as u64;
        if need > allocated {
            let upto = need + PREALLOC;
            match preallocate(&file, allocated.max(start), upto) {
                Ok(()) => h.lock().allocated = upto,
                Err(e) => {
                    h.fail(io_err(&path, "preallocate", e));
                    continue;
                }
            }
        }
        let t_sync = Instant::now();
        let res = file
            .write_all_at(&batch, start)
            .map_err(|e| io_err(&path, "write", e))
            .and_then(|_| file.sync_data().map_err(|e| io_err(&path, "fdatasync", e)));
        match res {
            Ok(()) => {
                grace = (t_sync.elapsed() / 2).min(MAX_GRACE);
                let mut st = h.lock();
                if last > st.durable {
                    st.durable = last;
                }
                st.max_durable = st.max_durable.max(last);
                // Several writers woken: expect as many records as this batch
                // had (a propagating write logs its cycle's records too, so
                // one per writer would cut the next batch short). One: take
                // what is queued (a single writer is never held back).
                let woken = st.waiting.iter().filter(|&&s| s <= last).count();
                expect = if woken > 1 { count.max(woken) } else { 1 };
                drop(st);
                h.cv.notify_all();
            }
            Err(e) => h.fail(e),
        }
        if batch.capacity() > MAX_BATCH * 2 {
            batch = Vec::new();
        }
    }
}

/// Writes zeros over `[from, to)` so the blocks are allocated and written.
fn preallocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

