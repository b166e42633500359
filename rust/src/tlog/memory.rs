//! The in-memory log's storage: frames in chunks that never move.
//!
//! Appending never moves what is already logged (no realloc + copy of one
//! giant buffer): when a frame does not fit in the rest of the current chunk
//! a new chunk is started. Chunks grow from [`FIRST_CHUNK`] (so a small state
//! allocates little) by doubling to [`CHUNK`] (1 MiB) and stay there; a frame
//! larger than that gets a chunk of its own. Frames carry no CRC here
//! (memory cannot tear); file logs compute it. `clear`/`truncate` keep up to
//! [`KEEP_BYTES`] of emptied chunks, already faulted in, for reuse, so a
//! reset state does not pay the page faults again; the rest is freed.

use super::frame::{self, FRAME_HDR};
use super::{Record, RecordHeader};
use crate::error::{Error, ErrorKind, Result};

/// Largest regular chunk.
pub const CHUNK: usize = 1 << 20;
/// First chunk of an empty log.
pub const FIRST_CHUNK: usize = 4 << 10;
/// Bytes of emptied chunks kept for reuse after `clear`/`truncate` (bounds
/// the memory a reset state keeps).
pub const KEEP_BYTES: usize = 8 << 20;
/// Index entries kept (as capacity) after `clear`.
const KEEP_INDEX: usize = 1 << 16;

/// `loc` packs (chunk index << 40) | byte offset in the chunk.
const OFF_BITS: u32 = 40;

#[derive(Default)]
pub struct MemLog {
    /// Chunks in use, in append order; the last one is current.
    chunks: Vec<Box<[u8]>>,
    /// Bytes used in the current (last) chunk.
    used: usize,
    /// Emptied chunks ready for reuse (popped smallest first).
    spare: Vec<Box<[u8]>>,
    /// Bytes in `spare`.
    spare_bytes: usize,
    /// Where the frame of seq i + 1 starts.
    locs: Vec<u64>,
}

fn new_chunk(n: usize) -> Result<Box<[u8]>> {
    // Zero-initialised through the allocator (fresh pages from the OS are
    // not written twice), and an impossible size is an error, not an abort.
    crate::page::alloc_zeroed(n).map_err(|_| Error::new(ErrorKind::Io, format!("in-memory log: cannot allocate {n} bytes")))
}

impl MemLog {
    /// Reserves a frame of `n` bytes for the record with sequence number
    /// `locs.len() + 1`; returns it (contents unspecified). The frame is
    /// indexed at once: the caller must fill it completely before the log is
    /// read, and must not fail after this call.
    #[inline]
    fn reserve(&mut self, n: usize) -> Result<&mut [u8]> {
        let room = self.chunks.last().map_or(0, |c| c.len() - self.used);
        if n > room {
            let c = match self.spare.pop() {
                Some(c) if c.len() >= n => {
                    self.spare_bytes -= c.len();
                    c
                }
                other => {
                    if let Some(c) = other {
                        self.spare.push(c);
                    }
                    let want = FIRST_CHUNK.checked_shl(self.chunks.len().min(16) as u32).unwrap_or(CHUNK).min(CHUNK);
                    new_chunk(want.max(n))?
                }
            };
            self.chunks.push(c);
            self.used = 0;
        }
        let ci = self.chunks.len() - 1;
        let at = self.used;
        self.locs.push(((ci as u64) << OFF_BITS) | at as u64);
        self.used = at + n;
        let c = self.chunks.last_mut().ok_or_else(|| Error::new(ErrorKind::Internal, "memory log has no chunk"))?;
        c.get_mut(at..at + n).ok_or_else(|| Error::new(ErrorKind::Internal, "memory log chunk overflow"))
    }

    /// Appends a frame for `h` (seq `seq`), whose payload is `mask_len` mask
    /// bytes then `data_len` data bytes written by `fill(mask, data)`.
    /// Returns the frame length. On `Err` nothing was appended.
    #[inline]
    pub fn append_with(
        &mut self,
        seq: u64,
        h: &RecordHeader,
        mask_len: usize,
        data_len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]),
    ) -> Result<usize> {
        let mut hdr = [0u8; FRAME_HDR];
        frame::write_header(&mut hdr, seq, h, mask_len, data_len)?;
        let n = FRAME_HDR + mask_len + data_len;
        let f = self.reserve(n)?;
        let (head, payload) = f.split_at_mut(FRAME_HDR);
        head.copy_from_slice(&hdr);
        let (m, d) = payload.split_at_mut(mask_len);
        fill(m, d);
        Ok(n)
    }

    /// The record with sequence number `seq` (1-based), `len` frame bytes.
    pub fn get(&self, seq: u64, len: usize, logical_off: u64) -> Result<Record> {
        let bad = || Error::new(ErrorKind::Internal, format!("memory log index out of range for record {seq}"));
        let loc = *self.locs.get((seq as usize).wrapping_sub(1)).ok_or_else(bad)?;
        let (ci, at) = ((loc >> OFF_BITS) as usize, (loc & ((1u64 << OFF_BITS) - 1)) as usize);
        let f = self.chunks.get(ci).and_then(|c| c.get(at..at + len)).ok_or_else(bad)?;
        frame::decode_unchecked_crc(f, seq, logical_off)
    }

    fn recycle(&mut self, c: Box<[u8]>) {
        if c.len() <= CHUNK && self.spare_bytes + c.len() <= KEEP_BYTES {
            self.spare_bytes += c.len();
            self.spare.push(c);
        }
    }

    /// Keeps the first `keep` records.
    pub fn truncate(&mut self, keep: usize) {
        let Some(&loc) = self.locs.get(keep) else { return };
        let (ci, at) = ((loc >> OFF_BITS) as usize, (loc & ((1u64 << OFF_BITS) - 1)) as usize);
        self.locs.truncate(keep);
        if at == 0 {
            // the cut frame opened chunk ci: drop it too
            while self.chunks.len() > ci {
                if let Some(c) = self.chunks.pop() {
                    self.recycle(c);
                }
            }
            // treat the (now last) chunk as full: a later append starts a new one
            self.used = self.chunks.last().map_or(0, |c| c.len());
        } else {
            while self.chunks.len() > ci + 1 {
                if let Some(c) = self.chunks.pop() {
                    self.recycle(c);
                }
            }
            self.used = at;
        }
    }

    /// Back to empty, keeping up to [`KEEP_BYTES`] of chunks for reuse.
    pub fn clear(&mut self) {
        while let Some(c) = self.chunks.pop() {
            self.recycle(c);
        }
        self.used = 0;
        self.locs.clear();
        self.locs.shrink_to(KEEP_INDEX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> RecordHeader {
        RecordHeader { kind: 6, page_id: 1, ..RecordHeader::default() }
    }

    #[test]
    fn frames_never_straddle_chunks_and_big_frames_get_their_own() {
        let mut m = MemLog::default();
        let sizes = [100usize, CHUNK - 300, 500, CHUNK + 5, 10, 3 * CHUNK, 7];
        let mut lens = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            let n = m.append_with(i as u64 + 1, &h(), 0, s, |_, d| d.fill(i as u8 + 1)).unwrap();
            lens.push(n);
        }
        for (i, &s) in sizes.iter().enumerate() {
            let r = m.get(i as u64 + 1, lens[i], 0).unwrap();
            assert_eq!(r.payload.len(), s);
            assert!(r.payload.iter().all(|&b| b == i as u8 + 1));
        }
        m.truncate(4);
        assert!(m.get(5, lens[4], 0).is_err());
        let n = m.append_with(5, &h(), 2, 3, |a, d| {
            a.fill(9);
            d.fill(8)
        })
        .unwrap();
        let r = m.get(5, n, 0).unwrap();
        assert_eq!(r.payload, vec![9, 9, 8, 8, 8]);
        assert_eq!(m.get(4, lens[3], 0).unwrap().payload.len(), CHUNK + 5);
        m.truncate(1);
        m.truncate(0);
        assert!(m.chunks.is_empty());
        m.clear();
        assert!(m.spare_bytes <= KEEP_BYTES && !m.spare.is_empty());
        assert!(m.spare.iter().all(|c| c.len() <= CHUNK));
        assert_eq!(m.spare_bytes, m.spare.iter().map(|c| c.len()).sum::<usize>());
        // reuse after clear: smallest spare first, then bigger ones
        for i in 0..200u64 {
            m.append_with(i + 1, &h(), 0, 10_000, |_, d| d.fill(i as u8)).unwrap();
        }
        assert_eq!(m.get(200, FRAME_HDR + 10_000, 0).unwrap().payload[0], 199);
        assert!(m.get(1, lens[0], 0).is_err());
    }
}
