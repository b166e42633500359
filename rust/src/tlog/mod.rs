//! The transaction log: every state change is one record, appended with a
//! dense sequence number starting at 1.
//!
//! Backends: memory (frames in chunks that never move, growing from 4 KiB
//! to 1 MiB, CRC field left zero; `memory.rs`), a buffered file (frames go
//! through a userspace buffer), and an fsync'd file (frames go to a writer
//! thread that group-commits them). All three use the same frame layout
//! (`frame.rs`, `docs/tlog_format.md`); only the file backends fill in and
//! check the CRC.

mod crc;
mod file;
mod frame;
mod memory;
mod sync;

pub use crc::crc32c;
pub use memory::{LaneLog, SharedPool};
pub use sync::SyncHandle;

/// Record kind of a propagation cycle's bounds in a file log
/// (`MMSB_REC_CYCLE`; the other kinds are in `state.rs`): `encoding` is
/// [`CYCLE_BEGIN`] or [`CYCLE_END`]. A begin's `aux` is its own seq (it
/// comes right before the write that starts the cycle); an end's `aux` is
/// its begin's seq. Opening a log cuts off a cycle that has a begin and no
/// end (see `file::open_file`).
pub const REC_CYCLE: u8 = 9;
pub const CYCLE_BEGIN: u8 = 1;
pub const CYCLE_END: u8 = 2;

/// Record kind of propagation bookkeeping that no delta implies
/// (`MMSB_REC_PROP_STATE`), so that a state rebuilt from the log skips and
/// retries exactly the recomputes the live one would: `encoding`
/// [`PROP_SIGNATURE`] (a recompute ran and changed nothing: payload = the
/// stored signature, u64 parent epochs), [`PROP_STALE`] (a failed cycle
/// left the page stale) or [`PROP_FRESH`] (a stale page without a
/// recompute was visited). A propagation delta implies its page's signature.
pub const REC_PROP_STATE: u8 = 10;
pub const PROP_SIGNATURE: u8 = 1;
pub const PROP_STALE: u8 = 2;
pub const PROP_FRESH: u8 = 3;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// How far an appended record is pushed before `append` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Memory only (no file).
    None,
    /// Written to the file through a userspace buffer, never synced.
    Buffered,
    /// Group-committed: `SyncHandle::wait_durable(seq)` returns once synced.
    Fsync,
}

/// Fixed fields of a record (see `MmsbLogRecord` in `include/mmsb.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub kind: u8,
    pub page_id: u64,
    pub aux: u64,
    pub delta_id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
    pub source: u8,
    pub encoding: u8,
    pub mask_len: u64,
}

/// A record to append: header (seq is ignored; the log assigns it, and
/// mask_len is taken from `mask.len()`) + payload parts, written as
/// mask ++ data without an intermediate Vec.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub header: RecordHeader,
    pub mask: &'a [u8],
    pub data: &'a [u8],
}

/// A decoded record; `payload` is mask ++ data (`header.mask_len` mask bytes first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: RecordHeader,
    pub payload: Vec<u8>,
}

/// What opening a file log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records recovered.
    pub records: u64,
    /// Bytes cut off the end of the file: a torn tail, and the records of a
    /// propagation cycle that began and did not end (0 if none).
    pub bytes_truncated: u64,
}

enum Backend {
    Memory(memory::MemLog),
    Buffered(file::BufferedFile),
    Fsync(sync::SyncFile),
}

/// The log. `Send`; lives inside the state's mutex.
/// A frame reserved in a memory log (`TLog::reserve_frame`).
pub struct Reserved {
    loc: u64,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a reservation is a region of a log chunk that no other reservation
// overlaps and nothing else touches until it is indexed; it may be filled
// from another thread.
unsafe impl Send for Reserved {}

impl Reserved {
    /// Writes the frame: `h` (seq 0), then `mask`, then `data`, which must
    /// fill the reservation exactly.
    pub(crate) fn fill(&mut self, h: &RecordHeader, mask: &[u8], data: &[u8]) -> Result<()> {
        if frame::FRAME_HDR + mask.len() + data.len() != self.len {
            return Err(Error::new(ErrorKind::Internal, "reserved frame has another size"));
        }
        let mut hdr = [0u8; frame::FRAME_HDR];
        frame::write_header(&mut hdr, 0, h, mask.len(), data.len())?;
        // SAFETY: ptr..ptr+len is this reservation's own region of a live
        // chunk (see the Send impl), and `&mut self` makes this the only writer.
        let f = unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) };
        let (head, rest) = f.split_at_mut(frame::FRAME_HDR);
        head.copy_from_slice(&hdr);
        let (m, d) = rest.split_at_mut(mask.len());
        m.copy_from_slice(mask);
        d.copy_from_slice(data);
        Ok(())
    }
}

pub struct TLog {
    backend: Backend,
    /// offsets[i]: byte offset of the frame of seq i + 1: in the file, or
    /// (memory) the logical offset, the sum of the earlier frames' lengths;
    /// the memory log keeps its own (chunk, offset) index.
    offsets: Vec<u64>,
    /// Byte offset just past the last frame.
    end: u64,
    /// Offset of the first frame (memory: 0; file: the header length).
    start: u64,
    /// Payload buffer of `append_with` on file backends.
    tmp: Vec<u8>,
    /// Set by [`TLog::poison`]: every later append to the file fails.
    poisoned: Option<Error>,
}

impl TLog {
    /// An empty in-memory log.
    pub fn memory() -> TLog {
        TLog { backend: Backend::Memory(memory::MemLog::default()), offsets: Vec::new(), end: 0, start: 0, tmp: Vec::new(), poisoned: None }
    }

    /// Opens or creates a file log; validates every record. Torn tail: cut
    /// off, reported. Corruption before the tail: Err(TLogCorrupt) naming
    /// path and byte offset. `truncate`: start empty. Returns the recovered
    /// records in order.
    pub fn open(path: &Path, durability: Durability, truncate: bool) -> Result<(TLog, Vec<Record>, RecoveryReport)> {
        let p = path.display().to_string();
        if durability == Durability::None {
            return Err(Error::new(ErrorKind::Invalid, format!("transaction log {p}: durability None means an in-memory log, with no path")));
        }
        let (f, scan, cut) = file::open_file(path, truncate)?;
        let n = scan.offsets.len() as u64;
        let backend = match durability {
            Durability::Fsync => Backend::Fsync(sync::SyncFile::new(f, p, n, scan.end)?),
            _ => Backend::Buffered(file::BufferedFile::new(f, p, scan.end)),
        };
        let log = TLog { backend, offsets: scan.offsets, end: scan.end, start: file::HEADER_LEN, tmp: Vec::new(), poisoned: None };
        Ok((log, scan.records, RecoveryReport { records: n, bytes_truncated: cut }))
    }

    /// Appends `rec`, returning its sequence number.
    pub fn append(&mut self, rec: &RecordRef) -> Result<u64> {
        let seq = self.next_seq();
        match &mut self.backend {
            Backend::Memory(m) => {
                let n = m.append_with(seq, &rec.header, rec.mask.len(), rec.data.len(), |mk, d| {
                    mk.copy_from_slice(rec.mask);
                    d.copy_from_slice(rec.data);
                })?;
                self.offsets.push(self.end);
                self.end += n as u64;
            }
            Backend::Buffered(_) | Backend::Fsync(_) if self.poisoned.is_some() => {
                return Err(self.poisoned.clone().unwrap_or_else(|| Error::new(ErrorKind::Internal, "poisoned")));
            }
            Backend::Buffered(f) => {
                let n = f.append(seq, rec)?;
                self.offsets.push(self.end);
                self.end += n as u64;
            }
            Backend::Fsync(f) => {
                let n = f.append(seq, self.end, rec)?;
                self.offsets.push(self.end);
                self.end += n as u64;
            }
        }
        Ok(seq)
    }

    /// Appends a record whose payload (`mask_len` mask bytes, then
    /// `data_len` data bytes) is written in place by `fill(mask, data)`: the
    /// memory log encodes straight into its chunk, with no intermediate
    /// buffer. `header.mask_len` is ignored. `fill` must write every byte.
    /// Returns the sequence number; on `Err` nothing was appended.
    #[inline]
    pub fn append_with(
        &mut self,
        header: RecordHeader,
        mask_len: usize,
        data_len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]),
    ) -> Result<u64> {
        let seq = self.next_seq();
        if let Backend::Memory(m) = &mut self.backend {
            let n = m.append_with(seq, &header, mask_len, data_len, fill)?;
            self.offsets.push(self.end);
            self.end += n as u64;
            return Ok(seq);
        }
        let mut tmp = std::mem::take(&mut self.tmp);
        tmp.clear();
        tmp.resize(mask_len + data_len, 0);
        let (m, d) = tmp.split_at_mut(mask_len);
        fill(m, d);
        let r = self.append(&RecordRef { header, mask: &tmp[..mask_len], data: &tmp[mask_len..] });
        self.tmp = tmp;
        r
    }

    /// Makes every later append to a file log fail with `e` (an I/O error
    /// naming the cause): used when a cycle's end record could not be
    /// written, since a record appended after an open cycle bracket would be
    /// cut off with it at the next recovery. Reopening the log recovers it.
    pub fn poison(&mut self, e: &Error) {
        if !self.is_memory() && self.poisoned.is_none() {
            let msg = format!("the log takes no more records after an earlier write failed ({}); reopen it to recover", e.msg);
            self.poisoned = Some(Error::new(ErrorKind::Io, msg));
        }
    }

    pub fn first_seq(&self) -> u64 {
        1
    }

    pub fn next_seq(&self) -> u64 {
        self.offsets.len() as u64 + 1
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Bytes of framed records currently in the log (header excluded).
    pub fn bytes_logged(&self) -> u64 {
        self.end - self.start
    }

    fn frame_range(&self, seq: u64) -> Result<(u64, u64)> {
        if seq == 0 || seq >= self.next_seq() {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("log sequence number {seq} is not in the log (records 1 to {})", self.len()),
            ));
        }
        let i = (seq - 1) as usize;
        let a = self.offsets[i];
        let b = self.offsets.get(i + 1).copied().unwrap_or(self.end);
        Ok((a, b))
    }

    /// The record with sequence number `seq`.
    pub fn get(&self, seq: u64) -> Result<Record> {
        let (a, b) = self.frame_range(seq)?;
        match &self.backend {
            Backend::Memory(m) => m.get(seq, (b - a) as usize, a),
            Backend::Buffered(f) => f.read(seq, a, b),
            Backend::Fsync(f) => {
                f.handle().wait_durable(seq)?;
                file::read_frame(&f.file, &f.path, seq, a, b)
            }
        }
    }

    /// Records `seq..next_seq()` in order (empty if `seq == next_seq()`).
    pub fn records_from(&self, seq: u64) -> Result<Vec<Record>> {
        let seq = seq.max(1);
        if seq > self.next_seq() {
            return Err(Error::new(ErrorKind::Invalid, format!("log sequence number {seq} is past the end ({})", self.next_seq())));
        }
        (seq..self.next_seq()).map(|s| self.get(s)).collect()
    }

    /// Keeps records `<= seq`.
    pub fn truncate_after(&mut self, seq: u64) -> Result<()> {
        if seq >= self.len() {
            return Ok(());
        }
        let cut = self.offsets[seq as usize];
        match &mut self.backend {
            Backend::Memory(m) => m.truncate(seq as usize),
            Backend::Buffered(f) => f.truncate(cut)?,
            Backend::Fsync(f) => f.truncate(cut, seq)?,
        }
        self.offsets.truncate(seq as usize);
        self.end = cut;
        Ok(())
    }

    /// Back to empty (memory: keeps a bounded number of chunks and index
    /// capacity for reuse; file: header only, synced).
    pub fn clear(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(m) => m.clear(),
            Backend::Buffered(f) => f.truncate(self.start)?,
            Backend::Fsync(f) => f.truncate(self.start, 0)?,
        }
        self.offsets.clear();
        self.offsets.shrink_to(1 << 16);
        self.end = self.start;
        self.poisoned = None; // no record, so no open bracket, is left
        Ok(())
    }

    /// Pushes buffered bytes to the OS (Fsync: waits until all is synced).
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Buffered(f) => f.flush(),
            Backend::Fsync(f) => f.barrier(),
        }
    }

    /// Some only under `Durability::Fsync`.
    /// Moves the lanes' records into this (memory) log, stamping each with
    /// consecutive (delta id, timestamp) from `stamp(n)` in log order (see
    /// `MemLog::drain_lanes`). Nothing is moved on `Err`.
    pub(crate) fn drain_lanes(&mut self, lanes: &mut [&mut LaneLog], stamp: impl FnOnce(u64) -> (u64, u64)) -> Result<()> {
        let first = self.next_seq();
        let TLog { backend, offsets, end, .. } = self;
        let Backend::Memory(m) = backend else {
            return Err(Error::new(ErrorKind::Internal, "write lanes hold records but the log is not in memory"));
        };
        offsets.reserve(lanes.iter().map(|l| l.len()).sum());
        m.drain_lanes(lanes, first, stamp, |len| {
            offsets.push(*end);
            *end += len as u64;
        })
    }

    /// Memory logs only: room for one frame of `len` bytes, to be filled with
    /// `Reserved::fill` (on any thread; sequence number 0, which `get`
    /// reads from the index) and then made the next record by
    /// `index_reserved`. A reservation never indexed is wasted space only.
    pub(crate) fn reserve_frame(&mut self, kind: u8, mask_len: usize, data_len: usize) -> Result<Reserved> {
        let Backend::Memory(m) = &mut self.backend else {
            return Err(Error::new(ErrorKind::Internal, "frames are reserved only in a memory log"));
        };
        // A frame `fill` would refuse is refused now, before anything changes.
        frame::write_header(&mut [0u8; frame::FRAME_HDR], 0, &RecordHeader { kind, ..RecordHeader::default() }, mask_len, data_len)?;
        let len = frame::FRAME_HDR + mask_len + data_len;
        let (loc, ptr) = m.reserve_unindexed(len)?;
        Ok(Reserved { loc, ptr, len })
    }

    /// Indexes a filled reservation as the next record; returns its seq.
    pub(crate) fn index_reserved(&mut self, r: &Reserved) -> Result<u64> {
        let Backend::Memory(m) = &mut self.backend else {
            return Err(Error::new(ErrorKind::Internal, "frames are reserved only in a memory log"));
        };
        m.index_reserved(r.loc);
        self.offsets.push(self.end);
        self.end += r.len as u64;
        Ok(self.offsets.len() as u64)
    }

    /// The chunk pool of a memory log (shared with the state's lanes).
    pub fn pool(&self) -> Option<SharedPool> {
        match &self.backend {
            Backend::Memory(m) => Some(m.pool()),
            _ => None,
        }
    }

    /// Whether this is the in-memory log (durability `None`).
    pub fn is_memory(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    /// Whether `path` names this log's file (same device and inode).
    pub fn is_file_at(&self, path: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let file = match &self.backend {
            Backend::Memory(_) => return false,
            Backend::Buffered(f) => &f.file,
            Backend::Fsync(f) => &f.file,
        };
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }

    pub fn sync_handle(&self) -> Option<Arc<SyncHandle>> {
        match &self.backend {
            Backend::Fsync(f) => Some(f.handle()),
            _ => None,
        }
    }

    /// Memory, Buffered or Fsync.
    pub fn durability(&self) -> Durability {
        match &self.backend {
            Backend::Memory(_) => Durability::None,
            Backend::Buffered(_) => Durability::Buffered,
            Backend::Fsync(_) => Durability::Fsync,
        }
    }
}

#[cfg(test)]
mod tests;
