//! File logs: header, recovery scan, and the buffered writer.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::frame::{self, Bad, FRAME_HDR, MIN_LEN};
use super::{crc, Record, RecordRef, CYCLE_BEGIN, CYCLE_END, REC_CYCLE};
use crate::error::{Error, ErrorKind, Result};

pub const MAGIC: [u8; 8] = *b"MMSBTLOG";
pub const VERSION: u32 = 1;
/// magic(8) version(4) flags(4) reserved(4) crc(4)
pub const HEADER_LEN: u64 = 24;
/// Userspace buffer of a `Buffered` log.
pub const BUF_CAP: usize = 1 << 20;

pub fn io_err(path: &str, what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("transaction log {path}: {what}: {e}"))
}

pub fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let c = crc::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&c.to_le_bytes());
    h
}

fn check_header(b: &[u8], path: &str) -> Result<()> {
    let bad = |why: String| Error::new(ErrorKind::TLogCorrupt, format!("transaction log {path}: bad header: {why}"));
    if b.len() < HEADER_LEN as usize {
        return Err(bad(format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", b.len())));
    }
    if b[0..8] != MAGIC {
        return Err(bad("not an MMSB transaction log (wrong magic)".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if crc::crc32c(&b[0..20]) != u32_at(20) {
        return Err(bad("header CRC32C mismatch".into()));
    }
    if u32_at(8) != VERSION {
        return Err(bad(format!("unsupported format version {} (this build reads {VERSION})", u32_at(8))));
    }
    if u32_at(12) != 0 || u32_at(16) != 0 {
        return Err(bad(format!("unsupported flags {:#x}", u32_at(12))));
    }
    Ok(())
}

/// Result of scanning a whole log image.
pub struct Scan {
    pub offsets: Vec<u64>,
    pub records: Vec<Record>,
    /// Offset just past the last valid frame.
    pub end: u64,
    /// Everything after `end` is zero bytes (preallocated space, not a torn record).
    pub zero_tail: bool,
}

/// Is there a valid frame with a sequence number above `last_seq` anywhere
/// in `buf[from..]`? Used to tell a torn tail from corruption in the middle.
fn valid_frame_after(buf: &[u8], from: usize, last_seq: u64) -> bool {
    let max_seq = last_seq.saturating_add((buf.len() / FRAME_HDR) as u64 + 1);
    let mut p = from;
    while p + FRAME_HDR <= buf.len() {
        let b = &buf[p..];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let seq = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        if len >= MIN_LEN && (len as usize) <= b.len() - 8 && seq > last_seq && seq <= max_seq && frame::check(b, None).is_ok() {
            return true;
        }
        p += 1;
    }
    false
}

/// Validates the header and every frame of `buf` (the whole file).
/// A bad frame with no valid frame after it is a torn tail: `end` stops
/// before it. A bad frame followed by a valid one, a CRC-valid frame with
/// the wrong sequence number or an impossible field: `TLogCorrupt`.
pub fn scan(buf: &[u8], path: &str) -> Result<Scan> {
    check_header(buf, path)?;
    let mut off = HEADER_LEN as usize;
    let mut seq = 1u64;
    let mut offsets = Vec::new();
    let mut records = Vec::new();
    while off < buf.len() {
        match frame::check(&buf[off..], Some(seq)) {
            Ok((n, _)) => {
                let rec = frame::decode(&buf[off..off + n]).ok_or_else(|| frame::corrupt(path, off as u64, "short frame"))?;
                offsets.push(off as u64);
                records.push(rec);
                off += n;
                seq += 1;
            }
            Err(b @ (Bad::Short | Bad::Length(_) | Bad::Crc)) => {
                if valid_frame_after(buf, off + 1, seq - 1) {
                    return Err(frame::corrupt(path, off as u64, &format!("{} (valid records follow)", frame::describe(&b, seq))));
                }
                break; // torn tail
            }
            Err(b) => return Err(frame::corrupt(path, off as u64, &frame::describe(&b, seq))),
        }
    }
    let zero_tail = buf[off..].iter().all(|&b| b == 0);
    Ok(Scan { offsets, records, end: off as u64, zero_tail })
}

/// Index of the begin record of the last propagation cycle if it began and
/// did not end (a crash in its middle: its records, and the write that
/// started it, were never acknowledged); `None` if every cycle ended.
/// Brackets never nest and an end names the open begin; a cycle record that
/// breaks this, or has impossible fields, is `TLogCorrupt` at its offset.
fn unfinished_cycle(records: &[Record], offsets: &[u64], path: &str) -> Result<Option<usize>> {
    let mut open: Option<u64> = None;
    for (i, r) in records.iter().enumerate() {
        let h = &r.header;
        if h.kind != REC_CYCLE {
            continue;
        }
        let ok = match (h.encoding, open) {
            (CYCLE_BEGIN, None) => h.aux == h.seq,
            (CYCLE_END, Some(b)) => h.aux == b,
            _ => false,
        };
        if !ok {
            return Err(frame::corrupt(path, offsets[i], &format!("record {} marks a propagation cycle that cannot be (bound {}, aux {}, open cycle {:?})", h.seq, h.encoding, h.aux, open)));
        }
        open = if h.encoding == CYCLE_BEGIN { Some(h.seq) } else { None };
    }
    Ok(open.map(|b| (b - 1) as usize))
}

/// fsync the directory holding `path` (after creating or renaming a file in it).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Opens `path`, recovers it (or starts it empty) and returns the file,
/// the scan and the number of bytes cut off.
pub fn open_file(path: &Path, truncate: bool) -> Result<(File, Scan, u64)> {
    let p = path.display().to_string();
    let existed = path.exists();
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| io_err(&p, "open", e))?;
    // One open state per log file (in any process): two would interleave
    // their appends. The lock goes with the last handle to the file. (A file
    // system without locks is used unlocked.)
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::new(ErrorKind::Io, format!("transaction log {p}: in use by another open state (stop it first)")));
        }
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&p, "lock", e)),
    }
    let len = file.metadata().map_err(|e| io_err(&p, "stat", e))?.len();
    if truncate || len == 0 {
        file.set_len(0).map_err(|e| io_err(&p, "truncate", e))?;
        file.write_all_at(&header_bytes(), 0).map_err(|e| io_err(&p, "write header", e))?;
        file.sync_all().map_err(|e| io_err(&p, "sync", e))?;
        if !existed {
            sync_dir(path).map_err(|e| io_err(&p, "sync directory", e))?;
        }
        let scan = Scan { offsets: Vec::new(), records: Vec::new(), end: HEADER_LEN, zero_tail: true };
        return Ok((file, scan, 0));
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Error::new(ErrorKind::Io, format!("transaction log {p}: too large")))?];
    file.read_exact_at(&mut buf, 0).map_err(|e| io_err(&p, "read", e))?;
    let mut scan = scan(&buf, &p)?;
    drop(buf);
    let valid_end = scan.end;
    if let Some(k) = unfinished_cycle(&scan.records, &scan.offsets, &p)? {
        scan.end = scan.offsets[k];
        scan.offsets.truncate(k);
        scan.records.truncate(k);
    }
    if len > scan.end {
        file.set_len(scan.end).map_err(|e| io_err(&p, "cut torn tail", e))?;
        file.sync_all().map_err(|e| io_err(&p, "sync", e))?;
    }
    // zeros at a frame boundary are preallocated space (an Fsync log that was
    // not closed), not a torn record: cut, but not reported
    let torn = if scan.zero_tail { 0 } else { len - valid_end };
    let unfinished = valid_end - scan.end;
    Ok((file, scan, torn + unfinished))
}

/// Reads the frame at `[a, b)` from the file and decodes it.
pub fn read_frame(file: &File, path: &str, seq: u64, a: u64, b: u64) -> Result<Record> {
    let n = usize::try_from(b - a).map_err(|_| Error::new(ErrorKind::Internal, "frame too large"))?;
    let mut f = vec![0u8; n];
    file.read_exact_at(&mut f, a).map_err(|e| io_err(path, "read", e))?;
    frame::decode_checked(&f, seq, path, a)
}

/// A `Buffered` file log: frames collect in `buf` and go to the file
/// (positioned writes at `flushed`) when it fills, on `flush` and on drop.
pub struct BufferedFile {
    pub file: File,
    pub path: String,
    buf: Vec<u8>,
    /// File offset where `buf` starts (everything before it is written).
    flushed: u64,
}

impl BufferedFile {
    pub fn new(file: File, path: String, end: u64) -> Self {
        BufferedFile { file, path, buf: Vec::with_capacity(BUF_CAP), flushed: end }
    }

    pub fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.flushed).map_err(|e| io_err(&self.path, "write", e))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends the frame; returns its length. On error nothing was added.
    #[inline]
    pub fn append(&mut self, seq: u64, rec: &RecordRef) -> Result<usize> {
        let n = frame::frame_len(rec);
        if self.buf.len() + n > BUF_CAP {
            self.flush()?;
        }
        if n > BUF_CAP {
            let hdr = frame::encode_header(seq, rec)?;
            let at = self.flushed;
            let w = |bytes: &[u8], off: u64| self.file.write_all_at(bytes, off).map_err(|e| io_err(&self.path, "write", e));
            w(&hdr, at)?;
            w(rec.mask, at + FRAME_HDR as u64)?;
            w(rec.data, at + (FRAME_HDR + rec.mask.len()) as u64)?;
            self.flushed += n as u64;
            return Ok(n);
        }
        frame::encode_into(&mut self.buf, seq, rec)
    }

    pub fn read(&self, seq: u64, a: u64, b: u64) -> Result<Record> {
        if a >= self.flushed {
            let lo = (a - self.flushed) as usize;
            let hi = (b - self.flushed) as usize;
            let f = self.buf.get(lo..hi).ok_or_else(|| Error::new(ErrorKind::Internal, "log buffer index out of range"))?;
            return frame::decode_checked(f, seq, &self.path, a);
        }
        read_frame(&self.file, &self.path, seq, a, b)
    }

    /// Cuts the file (and buffer) at `cut` and syncs.
    pub fn truncate(&mut self, cut: u64) -> Result<()> {
        self.flush()?;
        self.file.set_len(cut).map_err(|e| io_err(&self.path, "truncate", e))?;
        self.file.sync_all().map_err(|e| io_err(&self.path, "sync", e))?;
        self.flushed = cut;
        Ok(())
    }
}

impl Drop for BufferedFile {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
