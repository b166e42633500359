//! Writes to distinct pages from several threads at once (SPEC §7).
//!
//! The state's lock is split into shards (one per core, at most
//! [`MAX_SHARDS`]). An exclusive call (everything but the shared write)
//! locks every shard; a shared write (`State::page_write_shared`) locks one
//! shard, chosen per thread, and the page it writes (`PageCell::lock`). Two
//! threads writing different pages then share no lock, no counter and no
//! buffer.
//!
//! A shared write cannot append to the log (that would be one more lock),
//! so each shard has a [`Lane`]: frames of its writes, waiting for the next
//! exclusive call, which moves them into the log ([`drain`]) before it does
//! anything else. Delta ids and timestamps are given there too, in log
//! order: a shared counter taken by every write cost 20 ns per write on two
//! threads (a cache line bouncing between cores; README, issue 5), so ids are
//! not taken per write, nor per thread in ranges (T4.3), which would break
//! "ids rise along the log". The log keeps each lane's order (a thread always
//! writes through the same lane) and, for every page, its epoch order
//! (`MemLog::drain_lanes`), so it reads as if the writes had run one after
//! another in an order consistent with every thread's and every page's, and
//! replaying it rebuilds the state. Readers of the log and of pages are exclusive calls, so none ever
//! sees a write that is not in the log yet.

use std::time::Instant;

use crate::delta::{ENC_DENSE, ENC_SPARSE};
use crate::diff;
use crate::error::Result;
use crate::ids::Ids;
use crate::page::{Page, PageData};
use crate::state::{
    apply_after_diff, check_write_len, fill_record, record_shape, Stats, WriteOut, DELTA_ID_PENDING, REC_DELTA, SAMPLE_EVERY,
    SOURCE_API,
};
use crate::tlog::{LaneLog, RecordHeader, SharedPool, TLog};

/// Most shards a state has.
pub const MAX_SHARDS: usize = 8;

/// One shard's share of the state: frames of its shared writes not yet in
/// the log, the diff buffer, and counters.
pub struct Lane {
    log: LaneLog,
    bitmap: Vec<u8>,
    writes: u64,
    deltas_applied: u64,
    apply_samples: u64,
    apply_ns: u64,
}

impl Lane {
    /// A lane taking chunks from `pool` (a memory log's), or from the allocator.
    pub fn new(pool: Option<SharedPool>) -> Lane {
        Lane { log: LaneLog::new(pool), bitmap: Vec::new(), writes: 0, deltas_applied: 0, apply_samples: 0, apply_ns: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

/// Moves every lane's records into `log` (their delta ids and timestamps
/// are given here, from `ids`, in log order) and their counters into
/// `stats`. On error nothing is moved.
pub(crate) fn drain(lanes: &mut [&mut Lane], log: &mut TLog, ids: &Ids, stats: &mut Stats) -> Result<()> {
    let mut logs: Vec<&mut LaneLog> = lanes.iter_mut().map(|l| &mut l.log).collect();
    log.drain_lanes(&mut logs, |n| (ids.delta.take(n), ids.clock.tick_n(n)))?;
    for l in lanes.iter_mut() {
        stats.deltas_applied += std::mem::take(&mut l.deltas_applied);
        stats.apply_samples += std::mem::take(&mut l.apply_samples);
        stats.apply_ns += std::mem::take(&mut l.apply_ns);
    }
    Ok(())
}

/// The shared write of `new` to a CPU page (its lock held): diff, record in
/// `lane`, apply, bump the epoch. `None` for a GPU page (the caller takes
/// the exclusive path). Nothing changes on error.
pub(crate) fn write_cpu(page: &mut Page, new: &[u8], lane: &mut Lane) -> Result<Option<WriteOut>> {
    if matches!(page.data, PageData::Gpu(_)) {
        return Ok(None);
    }
    check_write_len(page, new)?;
    let (id, base) = (page.id, page.epoch);
    let PageData::Cpu(buf) = &mut page.data else { return Ok(None) };
    lane.writes = lane.writes.wrapping_add(1);
    let t0 = (lane.writes % SAMPLE_EVERY == 0).then(Instant::now);
    let sum = diff::diff_bitmap(buf, new, &mut lane.bitmap);
    if sum.changed == 0 {
        return Ok(Some(WriteOut { epoch: base, ..WriteOut::default() }));
    }
    let (sparse, mask_len, data_len) = record_shape(&sum, &lane.bitmap, new);
    lane.log.reserve(mask_len + data_len)?;
    // Delta id and timestamp are given when the record moves into the log.
    let header = RecordHeader {
        seq: 0,
        kind: REC_DELTA,
        page_id: id,
        aux: base + 1,
        delta_id: 0,
        base_epoch: base,
        timestamp: 0,
        source: SOURCE_API,
        encoding: if sparse { ENC_SPARSE } else { ENC_DENSE },
        mask_len: mask_len as u64,
    };
    let Lane { bitmap: bm, log: lane_log, .. } = lane;
    lane_log.push(&header, mask_len, data_len, |m, d| fill_record(sparse, bm, new, m, d))?;
    apply_after_diff(buf, new, bm, &sum, sparse);
    page.epoch = base + 1;
    lane.deltas_applied += 1;
    if let Some(t0) = t0 {
        lane.apply_samples += 1;
        lane.apply_ns += t0.elapsed().as_nanos() as u64;
    }
    Ok(Some(WriteOut { delta_id: DELTA_ID_PENDING, epoch: base + 1, ..WriteOut::default() }))
}
