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

use std::sync::{Arc, Mutex};

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

#[inline]
fn unpack(loc: u64) -> (usize, usize) {
    ((loc >> OFF_BITS) as usize, (loc & ((1u64 << OFF_BITS) - 1)) as usize)
}

/// Emptied chunks kept for reuse, shared by a memory log and the write
/// lanes of its state (a lane takes one when it needs a new chunk).
#[derive(Default)]
pub struct ChunkPool {
    spare: Vec<Box<[u8]>>,
    bytes: usize,
}

pub type SharedPool = Arc<Mutex<ChunkPool>>;

impl ChunkPool {
    fn put(&mut self, c: Box<[u8]>) {
        if c.len() <= CHUNK && self.bytes + c.len() <= KEEP_BYTES {
            self.bytes += c.len();
            self.spare.push(c);
        }
    }

    /// The most recently kept spare chunk of at least `n` bytes.
    fn take(&mut self, n: usize) -> Option<Box<[u8]>> {
        let i = self.spare.iter().rposition(|c| c.len() >= n)?;
        let c = self.spare.swap_remove(i);
        self.bytes -= c.len();
        Some(c)
    }
}

fn lock(pool: &SharedPool) -> std::sync::MutexGuard<'_, ChunkPool> {
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

/// A chunk for a frame of `n` bytes, the `k`-th of its log: a spare one, or
/// a new one of `FIRST_CHUNK << k` bytes (at most `CHUNK`, at least `n`).
fn chunk_for(pool: &SharedPool, k: usize, n: usize) -> Result<Box<[u8]>> {
    if let Some(c) = lock(pool).take(n) {
        return Ok(c);
    }
    let want = FIRST_CHUNK.checked_shl(k.min(16) as u32).unwrap_or(CHUNK).min(CHUNK).max(n);
    // Zero-initialised through the allocator (fresh pages from the OS are
    // not written twice), and an impossible size is an error, not an abort.
    crate::page::alloc_zeroed(want).map_err(|_| Error::new(ErrorKind::Io, format!("in-memory log: cannot allocate {want} bytes")))
}

#[derive(Default)]
pub struct MemLog {
    /// Chunks in use: appends go to `chunks[cur]`; chunks adopted from lanes
    /// hold frames in any order (`locs` says where each record is).
    chunks: Vec<Box<[u8]>>,
    cur: usize,
    /// Bytes used in `chunks[cur]`.
    used: usize,
    pool: SharedPool,
    /// Where the frame of seq i + 1 starts.
    locs: Vec<u64>,
}

impl MemLog {
    /// The pool this log recycles chunks into (for the state's lanes).
    pub fn pool(&self) -> SharedPool {
        self.pool.clone()
    }

    /// Makes the current chunk have room for `n` more bytes.
    fn room(&mut self, n: usize) -> Result<()> {
        let room = self.chunks.get(self.cur).map_or(0, |c| c.len() - self.used);
        if n > room {
            let c = chunk_for(&self.pool, self.chunks.len(), n)?;
            self.chunks.push(c);
            self.cur = self.chunks.len() - 1;
            self.used = 0;
        }
        Ok(())
    }

    /// Reserves a frame of `n` bytes for the record with sequence number
    /// `locs.len() + 1`; returns it (contents unspecified). The frame is
    /// indexed at once: the caller must fill it completely before the log is
    /// read, and must not fail after this call.
    #[inline]
    fn reserve(&mut self, n: usize) -> Result<&mut [u8]> {
        self.room(n)?;
        let (ci, at) = (self.cur, self.used);
        let f = self
            .chunks
            .get_mut(ci)
            .and_then(|c| c.get_mut(at..at + n))
            .ok_or_else(|| Error::new(ErrorKind::Internal, "memory log chunk overflow"))?;
        self.locs.push(((ci as u64) << OFF_BITS) | at as u64);
        self.used = at + n;
        Ok(f)
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

    /// Moves every lane's records to the end of this log in delta-id order
    /// (each lane is in that order already), and calls `on_frame(len)` for
    /// each. Full lane chunks are adopted as they are (no copy); a lane's
    /// last chunk too when at least half used, else its frames are copied
    /// and the lane keeps the chunk. Nothing is moved on `Err`.
    pub fn drain_lanes(&mut self, lanes: &mut [&mut LaneLog], mut on_frame: impl FnMut(usize)) -> Result<()> {
        // Room for the copied frames first: after this nothing can fail.
        let copied: usize = lanes.iter().filter(|l| !l.adopt_last()).map(|l| l.used).sum();
        if copied > 0 {
            self.room(copied)?;
        }
        let mut base = Vec::with_capacity(lanes.len());
        let mut upto = Vec::with_capacity(lanes.len());
        for l in lanes.iter_mut() {
            let n = if l.adopt_last() { l.chunks.len() } else { l.chunks.len() - 1 };
            base.push(self.chunks.len());
            upto.push(n);
            self.chunks.extend(l.chunks.drain(..n));
        }
        let mut next = vec![0usize; lanes.len()];
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, l) in lanes.iter().enumerate() {
                if let Some(r) = l.recs.get(next[i]) {
                    if best.map_or(true, |(_, id)| r.delta_id < id) {
                        best = Some((i, r.delta_id));
                    }
                }
            }
            let Some((i, _)) = best else { break };
            let r = lanes[i].recs[next[i]];
            next[i] += 1;
            let (ci, at) = unpack(r.loc);
            let len = r.len as usize;
            // (Lane frames keep seq 0: `get` takes the seq from the index.)
            let loc = if ci < upto[i] {
                (((base[i] + ci) as u64) << OFF_BITS) | at as u64
            } else {
                // The lane kept this chunk (now its only one): copy the frame.
                let dst = &mut self.chunks[self.cur][self.used..self.used + len];
                dst.copy_from_slice(&lanes[i].chunks[ci - upto[i]][at..at + len]);
                let loc = ((self.cur as u64) << OFF_BITS) | self.used as u64;
                self.used += len;
                loc
            };
            self.locs.push(loc);
            on_frame(len);
        }
        for l in lanes.iter_mut() {
            l.recs.clear();
            l.used = 0;
        }
        Ok(())
    }

    /// The record with sequence number `seq` (1-based), `len` frame bytes.
    pub fn get(&self, seq: u64, len: usize, logical_off: u64) -> Result<Record> {
        let bad = || Error::new(ErrorKind::Internal, format!("memory log index out of range for record {seq}"));
        let loc = *self.locs.get((seq as usize).wrapping_sub(1)).ok_or_else(bad)?;
        let (ci, at) = unpack(loc);
        let f = self.chunks.get(ci).and_then(|c| c.get(at..at + len)).ok_or_else(bad)?;
        frame::decode_unchecked_crc(f, seq, logical_off)
    }

    /// Keeps the first `keep` records.
    pub fn truncate(&mut self, keep: usize) {
        if keep >= self.locs.len() {
            return;
        }
        self.locs.truncate(keep);
        // Chunks past the last one a kept record uses are freed; the rest is
        // treated as full (adopted chunks hold frames in any order).
        let needed = self.locs.iter().map(|&l| unpack(l).0 + 1).max().unwrap_or(0);
        let mut pool = lock(&self.pool);
        while self.chunks.len() > needed {
            if let Some(c) = self.chunks.pop() {
                pool.put(c);
            }
        }
        // The rest counts as full: the next append starts a new chunk.
        self.cur = self.chunks.len();
        self.used = 0;
    }

    /// Back to empty, keeping up to [`KEEP_BYTES`] of chunks for reuse.
    pub fn clear(&mut self) {
        let mut pool = lock(&self.pool);
        while let Some(c) = self.chunks.pop() {
            pool.put(c);
        }
        drop(pool);
        self.cur = 0;
        self.used = 0;
        self.locs.clear();
        self.locs.shrink_to(KEEP_INDEX);
    }
}

#[derive(Clone, Copy)]
struct LaneRec {
    delta_id: u64,
    loc: u64,
    len: u32,
}

/// Frames written by one shard's shared writes (sequence number 0), waiting
/// for [`MemLog::drain_lanes`].
pub struct LaneLog {
    chunks: Vec<Box<[u8]>>,
    /// Bytes used in the last chunk.
    used: usize,
    recs: Vec<LaneRec>,
    pool: SharedPool,
}

impl LaneLog {
    pub fn new(pool: SharedPool) -> LaneLog {
        LaneLog { chunks: Vec::new(), used: 0, recs: Vec::new(), pool }
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Whether a drain adopts the last chunk too (at least half used).
    fn adopt_last(&self) -> bool {
        self.chunks.last().map_or(true, |c| self.used * 2 >= c.len())
    }

    /// Makes room for one frame of `n` payload bytes, so that `push` cannot fail.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        let n = FRAME_HDR + n;
        let room = self.chunks.last().map_or(0, |c| c.len() - self.used);
        if n > room {
            // Lanes fill fast or not at all: full-size chunks (a drain keeps a
            // chunk less than half used, so little is wasted).
            let c = chunk_for(&self.pool, usize::MAX, n)?;
            self.chunks.push(c);
            self.used = 0;
        }
        self.recs
            .try_reserve(1)
            .map_err(|_| Error::new(ErrorKind::Io, "write lane: cannot allocate its index"))
    }

    /// Appends the frame of `h` (room made by `reserve`).
    pub fn push(&mut self, h: &RecordHeader, mask_len: usize, data_len: usize, fill: impl FnOnce(&mut [u8], &mut [u8])) -> Result<()> {
        let mut hdr = [0u8; FRAME_HDR];
        frame::write_header(&mut hdr, 0, h, mask_len, data_len)?;
        let n = FRAME_HDR + mask_len + data_len;
        let ci = self.chunks.len().wrapping_sub(1);
        let at = self.used;
        let f = self
            .chunks
            .last_mut()
            .and_then(|c| c.get_mut(at..at + n))
            .ok_or_else(|| Error::new(ErrorKind::Internal, "write lane overflow (no reserve)"))?;
        let (head, payload) = f.split_at_mut(FRAME_HDR);
        head.copy_from_slice(&hdr);
        let (m, d) = payload.split_at_mut(mask_len);
        fill(m, d);
        self.used = at + n;
        self.recs.push(LaneRec { delta_id: h.delta_id, loc: ((ci as u64) << OFF_BITS) | at as u64, len: n as u32 });
        Ok(())
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
        {
            let p = lock(&m.pool);
            assert!(p.bytes <= KEEP_BYTES && !p.spare.is_empty());
            assert!(p.spare.iter().all(|c| c.len() <= CHUNK));
            assert_eq!(p.bytes, p.spare.iter().map(|c| c.len()).sum::<usize>());
        }
        // reuse after clear: smallest spare first, then bigger ones
        for i in 0..200u64 {
            m.append_with(i + 1, &h(), 0, 10_000, |_, d| d.fill(i as u8)).unwrap();
        }
        assert_eq!(m.get(200, FRAME_HDR + 10_000, 0).unwrap().payload[0], 199);
        assert!(m.get(1, lens[0], 0).is_err());
    }

    fn lane_push(l: &mut LaneLog, id: u64, n: usize) {
        l.reserve(n).unwrap();
        let h = RecordHeader { kind: 6, page_id: id % 3 + 1, delta_id: id, ..RecordHeader::default() };
        l.push(&h, 0, n, |_, d| d.fill(id as u8)).unwrap();
    }

    /// Lanes drain in delta-id order with dense seqs, whether their chunks
    /// are adopted (large) or copied (small), between ordinary appends; a
    /// truncate inside drained records keeps exactly the prefix.
    #[test]
    fn lanes_drain_in_delta_id_order() {
        let mut m = MemLog::default();
        let mut lens: Vec<usize> = Vec::new();
        let mut want: Vec<(u64, usize)> = Vec::new(); // (fill byte, payload len) by seq
        let mut seq = 1u64;
        let plain = |m: &mut MemLog, lens: &mut Vec<usize>, want: &mut Vec<(u64, usize)>, seq: &mut u64| {
            let n = m.append_with(*seq, &h(), 0, 40, |_, d| d.fill(0xEE)).unwrap();
            lens.push(n);
            want.push((0xEE, 40));
            *seq += 1;
        };
        plain(&mut m, &mut lens, &mut want, &mut seq);
        let mut next_id = 1u64;
        for round in 0..6 {
            let mut a = LaneLog::new(m.pool());
            let mut b = LaneLog::new(m.pool());
            // Round 0 and 3: a few small frames (copied); others: many (adopted chunks).
            let count = if round % 3 == 0 { 5 } else { 3000 };
            let mut order = Vec::new();
            for k in 0..count {
                let id = next_id;
                next_id += 1;
                let size = 10 + (k * 37) % 300;
                if (k / 7 + round) % 2 == 0 { lane_push(&mut a, id, size) } else { lane_push(&mut b, id, size) }
                order.push((id, size));
            }
            let mut got = Vec::new();
            m.drain_lanes(&mut [&mut a, &mut b], |len| got.push(len)).unwrap();
            assert!(a.is_empty() && b.is_empty());
            for (id, size) in order {
                want.push((id, size));
                lens.push(FRAME_HDR + size);
                seq += 1;
            }
            assert_eq!(got.len(), count);
            plain(&mut m, &mut lens, &mut want, &mut seq);
        }
        let check = |m: &MemLog, upto: usize| {
            for (i, &(fill, size)) in want.iter().enumerate().take(upto) {
                let r = m.get(i as u64 + 1, lens[i], 0).unwrap();
                assert_eq!(r.header.seq, i as u64 + 1);
                assert_eq!(r.payload.len(), size);
                assert!(r.payload.iter().all(|&x| x == fill as u8), "record {}", i + 1);
                if fill != 0xEE {
                    assert_eq!(r.header.delta_id, fill);
                }
            }
        };
        check(&m, want.len());
        let keep = want.len() / 2;
        m.truncate(keep);
        check(&m, keep);
        assert!(m.get(keep as u64 + 1, lens[keep], 0).is_err());
        let n = m.append_with(keep as u64 + 1, &h(), 0, 5, |_, d| d.fill(0xAB)).unwrap();
        assert_eq!(m.get(keep as u64 + 1, n, 0).unwrap().payload, vec![0xAB; 5]);
        check(&m, keep);
    }
}
