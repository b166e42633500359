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
use crate::state::REC_DELTA;
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
fn chunk_for(pool: Option<&SharedPool>, k: usize, n: usize) -> Result<Box<[u8]>> {
    if let Some(c) = pool.and_then(|p| lock(p).take(n)) {
        return Ok(c);
    }
    let want = FIRST_CHUNK.checked_shl(k.min(16) as u32).unwrap_or(CHUNK).min(CHUNK).max(n);
    // Zero-initialised through the allocator (fresh pages from the OS are
    // not written twice), and an impossible size is an error, not an abort.
    crate::page::alloc_zeroed(want).map_err(|_| Error::new(ErrorKind::Io, format!("in-memory log: cannot allocate {want} bytes")))
}

/// `MemLog::cur` of a log whose next append starts a new chunk.
const NO_CHUNK: usize = usize::MAX;

pub struct MemLog {
    /// Chunks in use: appends go to `chunks[cur]`; chunks adopted from lanes
    /// hold frames in any order (`locs` says where each record is).
    chunks: Vec<Box<[u8]>>,
    /// [`NO_CHUNK`] when the next append needs a new chunk. Never an index
    /// past the end: a chunk adopted later would take that index.
    cur: usize,
    /// Bytes used in `chunks[cur]`.
    used: usize,
    pool: SharedPool,
    /// Where the frame of seq i + 1 starts.
    locs: Vec<u64>,
    /// Per page id: its epoch so far while lanes are drained (scratch).
    epochs: Vec<u64>,
    /// One per drain: its records are seqs `first_seq..first_seq + n`, with
    /// delta ids and timestamps counting up from `delta_id`, `timestamp`
    /// (their frames hold 0 there; `get` fills them in).
    runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    first_seq: u64,
    n: u64,
    delta_id: u64,
    timestamp: u64,
}

impl Default for MemLog {
    fn default() -> Self {
        MemLog {
            chunks: Vec::new(),
            cur: NO_CHUNK,
            used: 0,
            pool: SharedPool::default(),
            locs: Vec::new(),
            epochs: Vec::new(),
            runs: Vec::new(),
        }
    }
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
            let c = chunk_for(Some(&self.pool), self.chunks.len(), n)?;
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

    /// Room for one frame of `n` bytes that is filled later (by any thread)
    /// and indexed by [`MemLog::index_reserved`]; returns its location and a
    /// pointer to it, valid until the log is truncated or cleared. A
    /// reservation never indexed is wasted space, nothing else.
    pub fn reserve_unindexed(&mut self, n: usize) -> Result<(u64, *mut u8)> {
        self.room(n)?;
        let (ci, at) = (self.cur, self.used);
        let f = self
            .chunks
            .get_mut(ci)
            .and_then(|c| c.get_mut(at..at + n))
            .ok_or_else(|| Error::new(ErrorKind::Internal, "memory log chunk overflow"))?;
        self.used = at + n;
        Ok((((ci as u64) << OFF_BITS) | at as u64, f.as_mut_ptr()))
    }

    /// Makes the frame reserved at `loc` the next record.
    pub fn index_reserved(&mut self, loc: u64) {
        self.locs.push(loc);
    }

    /// Moves every lane's records to the end of this log (as seqs
    /// `first_seq`, ...) and calls `on_frame(len)` for each. They get
    /// consecutive delta ids and timestamps in log order, from `(d, t) =
    /// stamp(n)` for all `n` of them. The order keeps each lane's order
    /// and, for every page, the order of its epochs (a record is taken only
    /// when its base epoch is the page's epoch so far); among lanes whose next
    /// record may go, the current lane goes on. Full lane chunks are adopted
    /// as they are (untouched: their ids are in `runs`); a lane's last chunk
    /// too when at least half used, else its frames are copied and the lane
    /// keeps the chunk. Nothing is moved on `Err`.
    pub fn drain_lanes(
        &mut self,
        lanes: &mut [&mut LaneLog],
        first_seq: u64,
        stamp: impl FnOnce(u64) -> (u64, u64),
        mut on_frame: impl FnMut(usize),
    ) -> Result<()> {
        let total: usize = lanes.iter().map(|l| l.recs.len()).sum();
        if total == 0 {
            return Ok(());
        }
        // Room for the copied frames first: after this nothing can fail.
        let copied: usize = lanes.iter().filter(|l| !l.adopt_last()).map(|l| l.used).sum();
        if copied > 0 {
            self.room(copied)?;
        }
        self.runs.try_reserve(1).map_err(|_| Error::new(ErrorKind::Io, "in-memory log: cannot allocate its index"))?;
        let (delta_id, timestamp) = stamp(total as u64);
        self.runs.push(Run { first_seq, n: total as u64, delta_id, timestamp });
        // Where each lane's frames go, as (a loc offset for frames in its
        // adopted chunks, how many chunks it had adopted, the loc of its copied
        // frames): its chunks but the last are adopted (the last too when at
        // least half used); a kept last chunk's frames are copied in one piece
        // into the current chunk.
        let mut shift: Vec<(u64, usize, u64)> = Vec::with_capacity(lanes.len());
        for l in lanes.iter_mut() {
            let n = if l.adopt_last() { l.chunks.len() } else { l.chunks.len() - 1 };
            shift.push(((self.chunks.len() as u64) << OFF_BITS, n, ((self.cur as u64) << OFF_BITS) + self.used as u64));
            self.chunks.extend(l.chunks.drain(..n));
            if let Some(c) = l.chunks.first().filter(|_| l.used > 0) {
                self.chunks[self.cur][self.used..self.used + l.used].copy_from_slice(&c[..l.used]);
                self.used += l.used;
            }
        }
        let place = |(b, u, c): (u64, usize, u64), r: &LaneRec| {
            let (ci, at) = unpack(r.loc);
            if ci < u {
                b + r.loc
            } else {
                c + at as u64
            }
        };
        // (Lane frames keep seq, delta id and timestamp 0: see `get`.)
        self.locs.reserve(total);
        // Two lanes may hold records of one page only if their page sets overlap.
        let busy: Vec<&&mut LaneLog> = lanes.iter().filter(|l| !l.recs.is_empty()).collect();
        let overlap = busy
            .iter()
            .enumerate()
            .any(|(i, a)| busy[i + 1..].iter().any(|b| a.pages.iter().zip(b.pages.iter()).any(|(x, y)| x & y != 0)));
        drop(busy);
        if !overlap {
            // Each page's records are all in one lane: lane after lane.
            for (i, l) in lanes.iter().enumerate() {
                self.locs.extend(l.recs.iter().map(|r| place(shift[i], r)));
                for r in &l.recs {
                    on_frame(r.len as usize);
                }
            }
        } else {
            // A record goes only when its base epoch is its page's epoch so
            // far; among lanes whose next record may go, the current goes on.
            let top = lanes.iter().flat_map(|l| l.recs.iter()).map(|r| r.page_id as usize).max().unwrap_or(0);
            if self.epochs.len() <= top {
                self.epochs.resize(top + 1, 0);
            }
            for r in lanes.iter().flat_map(|l| l.recs.iter()) {
                self.epochs[r.page_id as usize] = u64::MAX;
            }
            for r in lanes.iter().flat_map(|l| l.recs.iter()) {
                let e = &mut self.epochs[r.page_id as usize];
                *e = (*e).min(r.base);
            }
            let mut next = vec![0usize; lanes.len()];
            let mut at = 0usize;
            loop {
                let epochs = &self.epochs;
                let ready = |i: usize| lanes[i].recs.get(next[i]).is_some_and(|r| epochs[r.page_id as usize] == r.base);
                if !ready(at) {
                    match (0..lanes.len()).find(|&i| ready(i)) {
                        Some(i) => at = i,
                        // Cannot happen (the writes' real order is one such
                        // order); take any record rather than lose one.
                        None => match (0..lanes.len()).find(|&i| next[i] < lanes[i].recs.len()) {
                            Some(i) => at = i,
                            None => break,
                        },
                    }
                }
                let r = lanes[at].recs[next[at]];
                next[at] += 1;
                self.epochs[r.page_id as usize] = r.base + 1;
                self.locs.push(place(shift[at], &r));
                on_frame(r.len as usize);
            }
        }
        for l in lanes.iter_mut() {
            l.recs.clear();
            l.used = 0;
            l.pages = [0; 4];
        }
        Ok(())
    }

    /// The record with sequence number `seq` (1-based), `len` frame bytes.
    pub fn get(&self, seq: u64, len: usize, logical_off: u64) -> Result<Record> {
        let bad = || Error::new(ErrorKind::Internal, format!("memory log index out of range for record {seq}"));
        let loc = *self.locs.get((seq as usize).wrapping_sub(1)).ok_or_else(bad)?;
        let (ci, at) = unpack(loc);
        let f = self.chunks.get(ci).and_then(|c| c.get(at..at + len)).ok_or_else(bad)?;
        let mut r = frame::decode_unchecked_crc(f, seq, logical_off)?;
        if r.header.kind == REC_DELTA && r.header.delta_id == 0 {
            // a frame from a write lane: its ids are in the drain's run
            let run = self.runs[..self.runs.partition_point(|x| x.first_seq <= seq)].last().copied();
            let run = run.filter(|x| seq < x.first_seq + x.n).ok_or_else(bad)?;
            r.header.delta_id = run.delta_id + (seq - run.first_seq);
            r.header.timestamp = run.timestamp + (seq - run.first_seq);
        }
        Ok(r)
    }

    /// Keeps the first `keep` records.
    pub fn truncate(&mut self, keep: usize) {
        if keep >= self.locs.len() {
            return;
        }
        self.locs.truncate(keep);
        let keep = keep as u64;
        self.runs.retain(|x| x.first_seq <= keep);
        if let Some(x) = self.runs.last_mut() {
            x.n = x.n.min(keep + 1 - x.first_seq);
        }
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
        self.cur = NO_CHUNK;
        self.used = 0;
    }

    /// Back to empty, keeping up to [`KEEP_BYTES`] of chunks for reuse.
    pub fn clear(&mut self) {
        let mut pool = lock(&self.pool);
        while let Some(c) = self.chunks.pop() {
            pool.put(c);
        }
        drop(pool);
        self.cur = NO_CHUNK;
        self.used = 0;
        self.locs.clear();
        self.locs.shrink_to(KEEP_INDEX);
        self.runs.clear();
    }
}

#[derive(Clone, Copy)]
struct LaneRec {
    page_id: u64,
    /// The page's epoch before this write.
    base: u64,
    loc: u64,
    len: u32,
}

/// Frames written by one shard's shared writes, waiting for
/// [`MemLog::drain_lanes`] (which gives them their delta id and timestamp;
/// their sequence number stays 0, see `get`).
pub struct LaneLog {
    chunks: Vec<Box<[u8]>>,
    /// Bytes used in the last chunk.
    used: usize,
    recs: Vec<LaneRec>,
    /// The pages of `recs`, as a 256-bit filter (bit `id % 256`).
    pages: [u64; 4],
    pool: Option<SharedPool>,
}

impl LaneLog {
    pub fn new(pool: Option<SharedPool>) -> LaneLog {
        LaneLog { chunks: Vec::new(), used: 0, recs: Vec::new(), pages: [0; 4], pool }
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.recs.len()
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
            // Lanes fill fast or not at all: full-size chunks only (a drain
            // keeps a chunk less than half used, so little is wasted), so a
            // lane goes to the shared pool once per CHUNK bytes.
            let c = chunk_for(self.pool.as_ref(), usize::MAX, n.max(CHUNK))?;
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
        self.pages[(h.page_id >> 6) as usize & 3] |= 1 << (h.page_id & 63);
        self.recs.push(LaneRec { page_id: h.page_id, base: h.base_epoch, loc: ((ci as u64) << OFF_BITS) | at as u64, len: n as u32 });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> RecordHeader {
        RecordHeader { kind: 6, page_id: 1, delta_id: 1, ..RecordHeader::default() }
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

    /// A lane frame for page `page` at base epoch `base`, payload `n` bytes of `fill`.
    fn lane_push(l: &mut LaneLog, page: u64, base: u64, n: usize, fill: u8) {
        l.reserve(n).unwrap();
        let h = RecordHeader { kind: 6, page_id: page, base_epoch: base, aux: base + 1, ..RecordHeader::default() };
        l.push(&h, 0, n, |_, d| d.fill(fill)).unwrap();
    }

    /// Lanes drain with dense seqs and consecutive delta ids, in an order
    /// that keeps each lane's order and every page's epoch order, whether
    /// their chunks are adopted (large) or copied (small), between ordinary
    /// appends; a truncate inside drained records keeps exactly the prefix.
    #[test]
    fn lanes_drain_in_page_epoch_order() {
        let mut m = MemLog::default();
        let mut lens: Vec<usize> = Vec::new();
        let mut plain = 0usize;
        let mut seq = 1u64;
        let append_plain = |m: &mut MemLog, lens: &mut Vec<usize>, seq: &mut u64| {
            lens.push(m.append_with(*seq, &h(), 0, 40, |_, d| d.fill(0xEE)).unwrap());
            *seq += 1;
        };
        append_plain(&mut m, &mut lens, &mut seq);
        plain += 1;
        let mut epochs = [0u64; 4]; // pages 1..=3 (index 0 unused)
        let mut next_id = 1u64;
        // (lane, page, base, fill) of every lane record, in "real" order
        let mut written: Vec<(usize, u64, u64, u8)> = Vec::new();
        for round in 0..6u64 {
            let mut lanes = [LaneLog::new(Some(m.pool())), LaneLog::new(Some(m.pool()))];
            let count = if round % 3 == 0 { 5 } else { 3000 };
            let first = written.len();
            for k in 0..count as u64 {
                // lane by a pattern; pages shared by both lanes
                let lane = ((k / 7 + round) % 2) as usize;
                let page = 1 + (k * 5 + round) % 3;
                let base = epochs[page as usize];
                epochs[page as usize] += 1;
                let fill = (k % 200) as u8;
                lane_push(&mut lanes[lane], page, base, 10 + (k as usize * 37) % 300, fill);
                written.push((lane, page, base, fill));
            }
            let [a, b] = &mut lanes;
            let mut got = Vec::new();
            let id0 = next_id;
            m.drain_lanes(
                &mut [a, b],
                seq,
                |n| {
                    next_id += n;
                    (next_id - n, 1001 + next_id - n)
                },
                |len| got.push(len),
            )
            .unwrap();
            assert!(lanes.iter().all(|l| l.is_empty()));
            assert_eq!(got.len(), count);
            // check this round's records: page epochs in order, each lane in order
            let mut seen_base = [None::<u64>; 4];
            let mut lane_pos = [first; 2];
            for (j, &len) in got.iter().enumerate() {
                let s = seq + j as u64;
                let r = m.get(s, len, 0).unwrap();
                assert_eq!((r.header.seq, r.header.delta_id, r.header.timestamp), (s, id0 + j as u64, 1001 + id0 + j as u64));
                let p = r.header.page_id as usize;
                if let Some(b) = seen_base[p] {
                    assert_eq!(r.header.base_epoch, b + 1, "page {p} epochs in order");
                }
                seen_base[p] = Some(r.header.base_epoch);
                // the record is the next one of some lane
                let lane = (0..2)
                    .find(|&l| {
                        let w = written[first..].iter().enumerate().skip(lane_pos[l] - first).find(|(_, x)| x.0 == l);
                        w.is_some_and(|(_, x)| x.1 as usize == p && x.2 == r.header.base_epoch)
                    })
                    .expect("a lane's next record");
                let i = written[first..].iter().enumerate().skip(lane_pos[lane] - first).find(|(_, x)| x.0 == lane).unwrap().0;
                lane_pos[lane] = first + i + 1;
                assert!(r.payload.iter().all(|&x| x == written[first + i].3));
            }
            seq += count as u64;
            lens.extend(got);
            append_plain(&mut m, &mut lens, &mut seq);
            plain += 1;
        }
        assert_eq!(lens.len(), written.len() + plain);
        let all = lens.len();
        for (i, &len) in lens.iter().enumerate() {
            assert_eq!(m.get(i as u64 + 1, len, 0).unwrap().header.seq, i as u64 + 1);
        }
        let keep = all / 2;
        m.truncate(keep);
        for (i, &len) in lens.iter().enumerate().take(keep) {
            assert_eq!(m.get(i as u64 + 1, len, 0).unwrap().header.seq, i as u64 + 1);
        }
        assert!(m.get(keep as u64 + 1, lens[keep], 0).is_err());
        let n = m.append_with(keep as u64 + 1, &h(), 0, 5, |_, d| d.fill(0xAB)).unwrap();
        assert_eq!(m.get(keep as u64 + 1, n, 0).unwrap().payload, vec![0xAB; 5]);
    }

    /// After `truncate` or `clear` the log has no current chunk; a drain
    /// that adopts a lane's (more than half full) chunks must not make the
    /// next append land on top of them (found by test/test_concurrency.jl).
    #[test]
    fn appends_after_truncate_or_clear_do_not_overwrite_adopted_chunks() {
        for cut in [true, false] {
            let mut m = MemLog::default();
            let mut lens = Vec::new();
            for s in 1..=6u64 {
                lens.push(m.append_with(s, &h(), 0, 40, |_, d| d.fill(s as u8)).unwrap());
            }
            if cut {
                m.truncate(5);
                lens.truncate(5);
            } else {
                m.clear();
                lens.clear();
            }
            let mut lane = LaneLog::new(Some(m.pool()));
            for k in 0..3000u64 {
                lane_push(&mut lane, 1, k, 200, (k % 250) as u8);
            }
            assert!(lane.adopt_last(), "the test needs the adopting path");
            let first = lens.len() as u64 + 1;
            m.drain_lanes(&mut [&mut lane], first, |n| (100, n), |len| lens.push(len)).unwrap();
            let s = lens.len() as u64 + 1;
            lens.push(m.append_with(s, &h(), 0, 40, |_, d| d.fill(0xEE)).unwrap());
            for (i, &len) in lens.iter().enumerate() {
                let seq = i as u64 + 1;
                let r = m.get(seq, len, 0).unwrap();
                let want = if seq == s {
                    0xEE
                } else if seq >= first {
                    assert_eq!(r.header.delta_id, 100 + seq - first);
                    ((seq - first) % 250) as u8
                } else {
                    seq as u8
                };
                assert!(r.payload.iter().all(|&x| x == want), "record {seq} (cut {cut})");
            }
        }
    }
}
