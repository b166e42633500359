//! The native state behind one `MmsbState` handle: pages, graph, recompute
//! registrations, propagation, events, stats, the log and the id
//! allocators, all behind one mutex (every export locks once).
//!
//! Every state change appends one log record *before* it becomes visible,
//! so a failed append changes nothing; `persist.rs` turns records back into
//! state (recovery, checkpoint suffixes, replay). Under `Fsync` durability the
//! caller waits for its last record after the mutex is released.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::delta::{self, ENC_DENSE, ENC_SPARSE};
use crate::diff;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::Graph;
use crate::ids::Ids;
use crate::lanes::{self, Lane, MAX_SHARDS};
use crate::page::{Page, PageCell, PageData, LOC_CPU, LOC_GPU};
use crate::propagate::{PropState, PropStep, Recompute, RC_CLOSURE, RC_NONE, RC_PASSTHROUGH};
use crate::tlog::{Durability, RecordHeader, RecordRef, SyncHandle, TLog};

pub const SOURCE_API: u8 = 0;
pub const SOURCE_PROPAGATION: u8 = 1;
pub const SOURCE_BATCH: u8 = 2;
pub const SOURCE_REPLAY: u8 = 3;

pub const EV_PAGE_CREATED: u64 = 1;
pub const EV_PAGE_DELETED: u64 = 2;
pub const EV_INVALIDATED: u64 = 3;
pub const EV_DELTA_APPLIED: u64 = 4;
pub const EV_PAGE_CHANGED: u64 = 5;

pub const REC_PAGE_CREATE: u8 = 1;
pub const REC_PAGE_DELETE: u8 = 2;
pub const REC_EDGE_ADD: u8 = 3;
pub const REC_EDGE_REMOVE: u8 = 4;
pub const REC_RECOMPUTE_SET: u8 = 5;
pub const REC_DELTA: u8 = 6;
/// A delta id (and clock tick) handed out by `delta_stamp`: logged so that
/// recovery restores the next delta id and the clock even if the delta is
/// never applied, or applied as a no-op (which logs nothing).
pub const REC_DELTA_STAMP: u8 = 7;
/// A checkpoint loaded into the state (`checkpoint_load`): the payload is the
/// checkpoint body; replaying it replaces the whole state by that snapshot.
pub const REC_SNAPSHOT: u8 = 8;
pub use crate::tlog::{CYCLE_BEGIN, CYCLE_END, PROP_FRESH, PROP_SIGNATURE, PROP_STALE, REC_CYCLE, REC_PROP_STATE};

pub const WRITE_PROPAGATE: u32 = 1;
pub const WRITE_PARALLEL: u32 = 2;
/// Handled at the boundary: do not wait for durability; the caller waits with `mmsb_tlog_sync`.
pub const WRITE_DEFER_SYNC: u32 = 4;
/// Handled at the boundary: the caller holds no lock of its own and may call
/// from several threads at once (`State::page_write_shared`).
pub const WRITE_SHARED: u32 = 8;

/// Edge kind given to edges that `recompute_set` adds.
pub const EDGE_KIND_DATA: u8 = 0;

/// Pages up to this size take a whole-page copy on write (cheaper than
/// walking the change runs).
const SMALL_PAGE: u64 = 4096;

/// Apply latency is sampled on one write in `SAMPLE_EVERY`.
pub(crate) const SAMPLE_EVERY: u64 = 64;

static LIVE_STATES: AtomicI64 = AtomicI64::new(0);

/// States created and not yet closed.
pub fn live_states() -> i64 {
    LIVE_STATES.load(Ordering::Relaxed)
}

#[derive(Clone, Debug)]
pub struct Config {
    pub strict_epochs: bool,
    pub enable_gpu: bool,
    pub durability: Durability,
    pub truncate: bool,
    pub gpu_threshold: u64,
    pub tlog_path: Option<PathBuf>,
    pub threads: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strict_epochs: false,
            enable_gpu: false,
            durability: Durability::None,
            truncate: false,
            gpu_threshold: 1 << 20,
            tlog_path: None,
            threads: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u64,
    pub page_id: u64,
    pub delta_id: u64,
    pub epoch: u64,
}

/// Counters (the derived ones — pages, bytes, log — are computed on read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pages: u64,
    pub page_bytes: u64,
    pub deltas_applied: u64,
    pub bytes_logged: u64,
    pub log_records: u64,
    pub recomputes_run: u64,
    pub recomputes_skipped: u64,
    pub recomputes_cutoff: u64,
    pub propagation_cycles: u64,
    pub propagation_ns: u64,
    pub apply_samples: u64,
    pub apply_ns: u64,
}

pub struct Slot {
    pub page: PageCell,
    pub rc: Recompute,
}

/// Buffers reused by every write so the steady state allocates nothing.
#[derive(Default)]
pub struct Scratch {
    pub bitmap: Vec<u8>,
    pub mask: Vec<u8>,
    pub data: Vec<u8>,
    pub host: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageInfo {
    pub id: u64,
    pub size: u64,
    pub epoch: u64,
    pub location: u8,
    pub recompute: u8,
    pub stale: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOut {
    pub delta_id: u64,
    pub epoch: u64,
    pub pending_page: u64,
    pub prop_status: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
}

/// A caller-built delta (borrowed from the caller for one call).
#[derive(Clone, Copy, Debug)]
pub struct DeltaIn<'a> {
    pub id: u64,
    pub page_id: u64,
    pub base_epoch: u64,
    pub timestamp: u64,
    pub source: u8,
    pub encoding: u8,
    pub mask: &'a [u8],
    pub payload: &'a [u8],
}

impl DeltaIn<'_> {
    /// The log header of this delta applied on top of page epoch `base`.
    pub(crate) fn header(&self, base: u64) -> RecordHeader {
        RecordHeader {
            seq: 0,
            kind: REC_DELTA,
            page_id: self.page_id,
            aux: base + 1,
            delta_id: self.id,
            base_epoch: self.base_epoch,
            timestamp: self.timestamp,
            source: self.source,
            encoding: self.encoding,
            mask_len: self.mask.len() as u64,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOut {
    pub applied: u64,
    pub pending_page: u64,
    pub prop_status: i32,
}

pub struct Inner {
    pub cfg: Config,
    pub slots: Vec<Option<Slot>>,
    pub n_pages: u64,
    pub page_bytes: u64,
    pub graph: Graph,
    pub ids: Ids,
    pub log: TLog,
    pub sync: Option<Arc<SyncHandle>>,
    /// Highest log seq appended by the current call (0: none).
    pub wait_seq: u64,
    pub events_on: bool,
    pub events: VecDeque<Event>,
    pub stats: Stats,
    pub prop: PropState,
    pub scratch: Scratch,
    /// Seq of the last `REC_SNAPSHOT` record in the log (0: none): replay
    /// and `replay_to_epoch` start there instead of at record 1.
    pub snapshot_seq: u64,
    pub writes: u64,
    /// Open `hold(true)` calls (shared writes are refused while > 0).
    pub hold: u32,
    /// Pages whose recompute is a caller's closure: with none, every
    /// propagation cycle runs to its end natively.
    pub closures: usize,
}

pub(crate) fn not_found(id: u64) -> Error {
    Error::new(ErrorKind::PageNotFound, format!("page {id} not found"))
}

/// Diffs `new` against `page` in one pass and, if anything changed, logs a
/// delta (sparse or dense by density) and applies it; the epoch rises by
/// one. Returns `(delta id, log seq)`, or `None` when nothing changed.
/// Nothing changes on error (CPU pages).
/// `begin`: the write may start a propagation cycle in a file log; if it
/// changes anything, a `REC_CYCLE` begin record goes right before its delta
/// and its seq into `*begin` (see `Inner::log_begin`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_core(
    page: &mut Page,
    new: &[u8],
    source: u8,
    scratch: &mut Scratch,
    log: &mut TLog,
    ids: &Ids,
    begin: Option<&mut u64>,
) -> Result<Option<(u64, u64)>> {
    check_write_len(page, new)?;
    let (id, base) = (page.id, page.epoch);
    let did = ids.delta.peek();
    let ts = ids.clock.now() + 1;
    let mut header = RecordHeader {
        seq: 0,
        kind: REC_DELTA,
        page_id: id,
        aux: base + 1,
        delta_id: did,
        base_epoch: base,
        timestamp: ts,
        source,
        encoding: ENC_DENSE,
        mask_len: 0,
    };
    let seq = match &mut page.data {
        PageData::Cpu(buf) => {
            let sum = diff::diff_bitmap(buf, new, &mut scratch.bitmap);
            if sum.changed == 0 {
                return Ok(None);
            }
            let bm = &scratch.bitmap;
            let (sparse, mask_len, data_len) = record_shape(&sum, bm, new);
            header.encoding = if sparse { ENC_SPARSE } else { ENC_DENSE };
            header.mask_len = mask_len as u64;
            let seq = match begin {
                None if sparse => {
                    // Encoded straight into the log frame (no scratch copy).
                    log.append_with(header, mask_len, data_len, |m, d| fill_record(true, bm, new, m, d))?
                }
                None => log.append(&RecordRef { header, mask: bm, data: new })?,
                Some(b) => {
                    let (at, seq) = append_bracketed(log, |log| {
                        if sparse {
                            log.append_with(header, mask_len, data_len, |m, d| fill_record(true, bm, new, m, d))
                        } else {
                            log.append(&RecordRef { header, mask: bm, data: new })
                        }
                    })?;
                    *b = at;
                    seq
                }
            };
            apply_after_diff(buf, new, bm, &sum, sparse);
            seq
        }
        PageData::Gpu(dev) => {
            // The device diffs and applies in one step; the log follows.
            let changed = dev.write_diff(new, &mut scratch.bitmap)?;
            if changed == 0 {
                return Ok(None);
            }
            header.mask_len = scratch.bitmap.len() as u64;
            let rec = RecordRef { header, mask: &scratch.bitmap, data: new };
            match begin {
                None => log.append(&rec)?,
                Some(b) => {
                    let (at, seq) = append_bracketed(log, |log| log.append(&rec))?;
                    *b = at;
                    seq
                }
            }
        }
    };
    ids.delta.commit(did);
    ids.clock.observe(ts);
    page.epoch = base + 1;
    Ok(Some((did, seq)))
}

/// A `REC_CYCLE` record (`bound` = `CYCLE_BEGIN` or `CYCLE_END`).
pub(crate) fn cycle_record(bound: u8, aux: u64) -> RecordHeader {
    RecordHeader { kind: REC_CYCLE, aux, encoding: bound, ..RecordHeader::default() }
}

/// Appends a cycle begin record, then a write's delta (`append`); returns
/// both seqs. If the delta cannot be appended, an end record closes the
/// bracket again, or if that fails too the log takes no more records, so
/// the open bracket cannot swallow later ones. (Out of line: the unbracketed
/// appends in `write_core` and `route_core` stay as they were.)
#[inline(never)]
fn append_bracketed(log: &mut TLog, append: impl FnOnce(&mut TLog) -> Result<u64>) -> Result<(u64, u64)> {
    let at = log.append(&RecordRef { header: cycle_record(CYCLE_BEGIN, log.next_seq()), mask: &[], data: &[] })?;
    match append(log) {
        Ok(seq) => Ok((at, seq)),
        Err(e) => {
            if log.append(&RecordRef { header: cycle_record(CYCLE_END, at), mask: &[], data: &[] }).is_err() {
                log.poison(&e);
            }
            Err(e)
        }
    }
}

/// `Dimension` unless `new` has exactly the page's size.
pub(crate) fn check_write_len(page: &Page, new: &[u8]) -> Result<()> {
    if new.len() != page.size {
        return Err(Error::new(
            ErrorKind::Dimension,
            format!("write to page {}: {} bytes given, page size is {}", page.id, new.len(), page.size),
        ));
    }
    Ok(())
}

/// The delta record of a CPU write of `new` that `diff::diff_bitmap` summed
/// up as `sum` (bitmap `bm`): sparse ranges when few bytes changed, else the
/// dense bitmap and all of `new`. Returns (sparse, mask bytes, data bytes);
/// [`fill_record`] writes them.
#[inline]
pub(crate) fn record_shape(sum: &diff::DiffSummary, bm: &[u8], new: &[u8]) -> (bool, usize, usize) {
    if sum.prefer_sparse(new.len() as u64) {
        (true, sum.runs as usize * 16, sum.changed as usize)
    } else {
        (false, bm.len(), new.len())
    }
}

/// Writes the mask and data of the record [`record_shape`] sized.
#[inline]
pub(crate) fn fill_record(sparse: bool, bm: &[u8], new: &[u8], mask: &mut [u8], data: &mut [u8]) {
    if sparse {
        diff::encode_sparse_into(bm, new, mask, data);
    } else {
        mask.copy_from_slice(bm);
        data.copy_from_slice(new);
    }
}

/// Makes `buf` equal to `new` after `diff::diff_bitmap(buf, new, bm)`
/// returned `sum`: a whole copy, or for a sparse change to a large page only
/// the changed runs.
#[inline]
pub(crate) fn apply_after_diff(buf: &mut [u8], new: &[u8], bm: &[u8], sum: &diff::DiffSummary, sparse: bool) {
    let size = buf.len() as u64;
    if !sparse || size <= SMALL_PAGE || sum.changed * 4 >= size {
        buf.copy_from_slice(new);
    } else {
        diff::for_each_run(bm, buf.len(), |s, l| {
            if let (Some(d), Some(n)) = (buf.get_mut(s..s + l), new.get(s..s + l)) {
                d.copy_from_slice(n);
            }
        });
    }
}

impl Inner {
    pub fn new(cfg: Config, log: TLog) -> Inner {
        let sync = log.sync_handle();
        Inner {
            cfg,
            slots: Vec::new(),
            n_pages: 0,
            page_bytes: 0,
            graph: Graph::new(),
            ids: Ids::default(),
            log,
            sync,
            wait_seq: 0,
            events_on: false,
            events: VecDeque::new(),
            stats: Stats::default(),
            prop: PropState::default(),
            scratch: Scratch::default(),
            snapshot_seq: 0,
            writes: 0,
            hold: 0,
            closures: 0,
        }
    }

    /// Empties the in-memory state (not the log, config or events switch).
    pub(crate) fn clear_core(&mut self) {
        self.slots = Vec::new();
        self.closures = 0;
        self.n_pages = 0;
        self.page_bytes = 0;
        self.graph.clear();
        self.ids.reset();
        self.prop.clear();
        self.snapshot_seq = 0;
    }

    #[inline]
    pub fn slot(&self, id: u64) -> Result<&Slot> {
        match self.slots.get(id as usize) {
            Some(Some(s)) => Ok(s),
            _ => Err(not_found(id)),
        }
    }

    #[inline]
    pub fn slot_mut(&mut self, id: u64) -> Result<&mut Slot> {
        match self.slots.get_mut(id as usize) {
            Some(Some(s)) => Ok(s),
            _ => Err(not_found(id)),
        }
    }

    #[inline]
    pub(crate) fn event(&mut self, kind: u64, page_id: u64, delta_id: u64, epoch: u64) {
        if self.events_on {
            self.events.push_back(Event { kind, page_id, delta_id, epoch });
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, header: RecordHeader, mask: &[u8], data: &[u8]) -> Result<u64> {
        let seq = self.log.append(&RecordRef { header, mask, data })?;
        self.wait_seq = seq;
        Ok(seq)
    }

    fn header(kind: u8, page_id: u64, aux: u64, encoding: u8) -> RecordHeader {
        RecordHeader { kind, page_id, aux, encoding, ..RecordHeader::default() }
    }

    pub(crate) fn insert_page(&mut self, page: Page) {
        let i = page.id as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.graph.add_node(page.id);
        self.n_pages += 1;
        self.page_bytes += page.size as u64;
        self.slots[i] = Some(Slot { page: PageCell::new(page), rc: Recompute::default() });
    }

    /// Allocates a page (no log, no id).
    pub(crate) fn make_page(&self, id: u64, size: u64, location: u8, fallback_cpu: bool) -> Result<Page> {
        if size == 0 {
            return Err(Error::new(ErrorKind::Invalid, "page size must be at least 1 byte"));
        }
        let usize_size = usize::try_from(size)
            .map_err(|_| Error::new(ErrorKind::Invalid, format!("page size {size} does not fit in memory")))?;
        match location {
            LOC_CPU => Page::new_cpu(id, usize_size),
            LOC_GPU if size < self.cfg.gpu_threshold => Page::new_cpu(id, usize_size),
            LOC_GPU => {
                let r = if self.cfg.enable_gpu {
                    Page::new_gpu(id, usize_size)
                } else {
                    Err(Error::new(
                        ErrorKind::GpuUnavailable,
                        format!("GPU page of {size} bytes requested but the state was opened with enable_gpu=false"),
                    ))
                };
                match r {
                    Err(e) if fallback_cpu && e.kind == ErrorKind::GpuUnavailable => Page::new_cpu(id, usize_size),
                    r => r,
                }
            }
            l => Err(Error::new(ErrorKind::Invalid, format!("location {l} is neither 0 (cpu) nor 1 (gpu)"))),
        }
    }

    pub fn page_create(&mut self, size: u64, location: u8) -> Result<PageInfo> {
        self.check_idle("page_create")?;
        let id = self.ids.page.peek();
        let page = self.make_page(id, size, location, false)?;
        let loc = page.location();
        self.append(Self::header(REC_PAGE_CREATE, id, size, loc), &[], &[])?;
        self.ids.page.commit(id);
        self.insert_page(page);
        self.event(crate::state::EV_PAGE_CREATED, id, 0, 0);
        self.page_info(id)
    }

    /// Removes a page, its edges, and the recomputes that declared it.
    pub(crate) fn remove_page(&mut self, id: u64) -> Option<u64> {
        let slot = self.slots.get_mut(id as usize)?.take()?;
        self.closures -= (slot.rc.kind == RC_CLOSURE) as usize;
        let children: Vec<u64> = self.graph.children(id).iter().map(|c| c.0).collect();
        for c in children {
            if let Some(Some(s)) = self.slots.get_mut(c as usize) {
                if s.rc.parents.contains(&id) {
                    self.closures -= (s.rc.kind == RC_CLOSURE) as usize;
                    // (a stale mark stays: the page is still in the stale set)
                    s.rc = Recompute { queued: s.rc.queued, stale: s.rc.stale, ..Recompute::default() };
                }
            }
        }
        self.graph.remove_node(id);
        self.prop.stale.remove(&id);
        self.n_pages -= 1;
        self.page_bytes -= slot.page.size as u64;
        Some(slot.page.epoch)
    }

    pub fn page_delete(&mut self, id: u64, force: bool) -> Result<()> {
        self.slot(id)?;
        self.check_idle("page_delete")?;
        if !force && self.graph.has_dependents(id) {
            let kids: Vec<String> = self.graph.children(id).iter().map(|c| c.0.to_string()).collect();
            return Err(Error::new(
                ErrorKind::HasDependents,
                format!("page {id} has dependents ({}); delete them first or pass force", kids.join(", ")),
            ));
        }
        self.append(Self::header(REC_PAGE_DELETE, id, force as u64, 0), &[], &[])?;
        let epoch = self.remove_page(id).unwrap_or(0);
        self.event(EV_PAGE_DELETED, id, 0, epoch);
        Ok(())
    }

    pub fn page_info(&self, id: u64) -> Result<PageInfo> {
        let s = self.slot(id)?;
        Ok(PageInfo {
            id,
            size: s.page.size as u64,
            epoch: s.page.epoch,
            location: s.page.location(),
            recompute: s.rc.kind,
            stale: s.rc.stale,
        })
    }

    pub fn page_ids(&self) -> Vec<u64> {
        self.slots.iter().flatten().map(|s| s.page.id).collect()
    }

    pub fn page_read(&self, id: u64, dst: &mut [u8]) -> Result<()> {
        self.slot(id)?.page.read(dst)
    }

    fn check_flags(flags: u32, allowed: u32) -> Result<()> {
        if flags & !allowed != 0 {
            return Err(Error::new(ErrorKind::Invalid, format!("unknown write flags {flags:#x}")));
        }
        Ok(())
    }

    /// The main write: diff once, log, apply, events, propagate.
    pub fn page_write(&mut self, id: u64, bytes: &[u8], flags: u32) -> Result<WriteOut> {
        Self::check_flags(flags, WRITE_PROPAGATE)?;
        let propagate = flags & WRITE_PROPAGATE != 0;
        self.check_idle("page_write")?;
        self.writes = self.writes.wrapping_add(1);
        let t0 = (self.writes % SAMPLE_EVERY == 0).then(Instant::now);
        let bracket = propagate && self.brackets() && self.needs_cycle(id);
        let r = {
            let Inner { slots, scratch, log, ids, prop, .. } = self;
            let s = match slots.get_mut(id as usize) {
                Some(Some(s)) => s,
                _ => return Err(not_found(id)),
            };
            write_core(&mut s.page, bytes, SOURCE_API, scratch, log, ids, bracket.then_some(&mut prop.begin_seq))?
        };
        if let Some(t0) = t0 {
            self.stats.apply_samples += 1;
            self.stats.apply_ns += t0.elapsed().as_nanos() as u64;
        }
        self.finish_write(id, r, propagate)
    }

    fn finish_write(&mut self, id: u64, r: Option<(u64, u64)>, propagate: bool) -> Result<WriteOut> {
        let epoch = self.slot(id)?.page.epoch;
        let Some((did, seq)) = r else {
            return Ok(WriteOut { delta_id: 0, epoch, ..WriteOut::default() });
        };
        self.wait_seq = seq;
        self.stats.deltas_applied += 1;
        self.event(EV_DELTA_APPLIED, id, did, epoch);
        self.event(EV_PAGE_CHANGED, id, did, epoch);
        let mut out = WriteOut { delta_id: did, epoch, ..WriteOut::default() };
        if propagate && self.needs_cycle(id) {
            self.cycle_begin();
            self.enqueue_children(id);
            let step = self.prop_run()?;
            out.prop_status = step.status;
            out.pending_page = step.page_id;
        }
        Ok(out)
    }

    /// Hands out a delta id and a clock tick, logged first (REC_DELTA_STAMP)
    /// so that a log-only rebuild reaches the same next ids and clock.
    pub fn delta_stamp(&mut self, page_id: u64) -> Result<Stamp> {
        self.check_idle("delta_stamp")?;
        let base_epoch = self.slot(page_id)?.page.epoch;
        let id = self.ids.delta.peek();
        let timestamp = self.ids.clock.now() + 1;
        let header = RecordHeader { kind: REC_DELTA_STAMP, page_id, delta_id: id, base_epoch, timestamp, ..RecordHeader::default() };
        self.append(header, &[], &[])?;
        self.ids.delta.commit(id);
        self.ids.clock.observe(timestamp);
        Ok(Stamp { id, base_epoch, timestamp })
    }

    /// Checks a caller-built delta against the current state.
    pub fn validate_delta(&self, d: &DeltaIn) -> Result<()> {
        let s = self.slot(d.page_id)?;
        if d.id == 0 || d.id >= self.ids.delta.peek() {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("delta id {} for page {} was not issued by delta_stamp (next id {})", d.id, d.page_id, self.ids.delta.peek()),
            ));
        }
        if d.source > SOURCE_REPLAY {
            return Err(Error::new(ErrorKind::Invalid, format!("delta {}: unknown source {}", d.id, d.source)));
        }
        if d.source == SOURCE_PROPAGATION {
            // only a recompute's result is a propagation delta: replay takes
            // one as a recompute that ran (it stores the page's signature)
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("delta {}: source propagation is reserved for recompute results (use api or batch)", d.id),
            ));
        }
        delta::validate(d.encoding, d.mask, d.payload, s.page.size as u64, d.page_id)?;
        if self.cfg.strict_epochs && d.base_epoch < s.page.epoch {
            return Err(Error::new(
                ErrorKind::StaleDelta,
                format!("delta {} for page {} has base epoch {}, the page is at epoch {}", d.id, d.page_id, d.base_epoch, s.page.epoch),
            ));
        }
        Ok(())
    }

    /// Logs and applies one validated delta; `None` if it changed nothing.
    /// `bracket`: it may start a propagation cycle (see `write_core`).
    pub(crate) fn route_core(&mut self, d: &DeltaIn, bracket: bool) -> Result<Option<u64>> {
        let Inner { slots, log, prop, .. } = self;
        let s = match slots.get_mut(d.page_id as usize) {
            Some(Some(s)) => s,
            _ => return Err(not_found(d.page_id)),
        };
        let base = s.page.epoch;
        let header = d.header(base);
        let seq = if let Some(buf) = s.page.cpu_mut() {
            if !delta::changes_any(d.encoding, buf, d.mask, d.payload) {
                return Ok(None);
            }
            let seq = if bracket {
                let (at, seq) = append_bracketed(log, |log| log.append(&RecordRef { header, mask: d.mask, data: d.payload }))?;
                prop.begin_seq = at;
                seq
            } else {
                log.append(&RecordRef { header, mask: d.mask, data: d.payload })?
            };
            delta::apply(d.encoding, buf, d.mask, d.payload);
            seq
        } else {
            if s.page.apply(d.encoding, d.mask, d.payload)? == 0 {
                return Ok(None);
            }
            if bracket {
                let (at, seq) = append_bracketed(log, |log| log.append(&RecordRef { header, mask: d.mask, data: d.payload }))?;
                prop.begin_seq = at;
                seq
            } else {
                log.append(&RecordRef { header, mask: d.mask, data: d.payload })?
            }
        };
        s.page.epoch = base + 1;
        self.ids.clock.observe(d.timestamp);
        Ok(Some(seq))
    }

    pub fn delta_route(&mut self, d: &DeltaIn, flags: u32) -> Result<WriteOut> {
        Self::check_flags(flags, WRITE_PROPAGATE)?;
        let propagate = flags & WRITE_PROPAGATE != 0;
        self.check_idle("delta_route")?;
        self.validate_delta(d)?;
        self.writes = self.writes.wrapping_add(1);
        let t0 = (self.writes % SAMPLE_EVERY == 0).then(Instant::now);
        let bracket = propagate && self.brackets() && self.needs_cycle(d.page_id);
        let r = self.route_core(d, bracket)?;
        if let Some(t0) = t0 {
            self.stats.apply_samples += 1;
            self.stats.apply_ns += t0.elapsed().as_nanos() as u64;
        }
        self.finish_write(d.page_id, r.map(|seq| (d.id, seq)), propagate)
    }

    pub fn edge_add(&mut self, parent: u64, child: u64, kind: u8) -> Result<()> {
        self.check_idle("edge_add")?;
        self.slot(parent)?;
        self.slot(child)?;
        self.graph.check_edge(parent, child)?;
        if self.graph.has_edge(parent, child) {
            return Ok(());
        }
        self.append(Self::header(REC_EDGE_ADD, parent, child, kind), &[], &[])?;
        self.graph.add_edge(parent, child, kind)?;
        Ok(())
    }

    pub fn edge_remove(&mut self, parent: u64, child: u64) -> Result<()> {
        self.check_idle("edge_remove")?;
        self.slot(parent)?;
        let c = self.slot(child)?;
        if !self.graph.has_edge(parent, child) {
            return Ok(());
        }
        if c.rc.kind != RC_NONE && c.rc.parents.contains(&parent) {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("edge {parent} -> {child} is a declared recompute dependency of page {child}; change its recompute first"),
            ));
        }
        self.append(Self::header(REC_EDGE_REMOVE, parent, child, 0), &[], &[])?;
        self.graph.remove_edge(parent, child);
        Ok(())
    }

    /// Checks a recompute registration without changing anything.
    pub(crate) fn check_recompute(&mut self, child: u64, kind: u8, parents: &[u64]) -> Result<()> {
        let size = self.slot(child)?.page.size;
        if kind > RC_CLOSURE {
            return Err(Error::new(ErrorKind::Invalid, format!("recompute kind {kind} for page {child} is not 0, 1 or 2")));
        }
        if kind == RC_NONE {
            return Ok(());
        }
        for (i, &p) in parents.iter().enumerate() {
            let ps = self.slot(p)?.page.size;
            if parents[..i].contains(&p) {
                return Err(Error::new(ErrorKind::Invalid, format!("recompute of page {child}: parent {p} is listed twice")));
            }
            if kind == RC_PASSTHROUGH && ps != size {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("passthrough page {child} has size {size}, its parent {p} has size {ps}"),
                ));
            }
            self.graph.check_edge(p, child)?;
        }
        if kind == RC_PASSTHROUGH && parents.len() != 1 {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("passthrough page {child} needs exactly one parent, {} given", parents.len()),
            ));
        }
        Ok(())
    }

    /// Applies a checked registration: adds missing edges, resets the signature.
    pub(crate) fn do_recompute_set(&mut self, child: u64, kind: u8, parents: &[u64]) -> Result<()> {
        if kind != RC_NONE {
            for &p in parents {
                self.graph.add_edge(p, child, EDGE_KIND_DATA)?;
            }
        }
        let was = self.slot(child)?.rc.kind;
        self.closures = self.closures + (kind == RC_CLOSURE) as usize - (was == RC_CLOSURE) as usize;
        let s = self.slot_mut(child)?;
        s.rc.kind = kind;
        s.rc.parents.clear();
        if kind != RC_NONE {
            s.rc.parents.extend_from_slice(parents);
        }
        s.rc.sig.clear();
        s.rc.sig_set = false;
        Ok(())
    }

    pub fn recompute_set(&mut self, child: u64, kind: u8, parents: &[u64]) -> Result<()> {
        self.check_idle("recompute_set")?;
        self.check_recompute(child, kind, parents)?;
        let mut payload = std::mem::take(&mut self.scratch.data);
        payload.clear();
        if kind != RC_NONE {
            for p in parents {
                payload.extend_from_slice(&p.to_le_bytes());
            }
        }
        let r = self.append(Self::header(REC_RECOMPUTE_SET, child, kind as u64, 0), &[], &payload);
        self.scratch.data = payload;
        r?;
        self.do_recompute_set(child, kind, parents)
    }

    /// Declared recompute parents (graph parents without a recompute) with
    /// their current epochs.
    pub fn signature(&self, id: u64) -> Result<Vec<(u64, u64)>> {
        let s = self.slot(id)?;
        let ps: &[u64] = if s.rc.kind == RC_NONE { self.graph.parents(id) } else { &s.rc.parents };
        Ok(ps
            .iter()
            .map(|&p| (p, self.slots.get(p as usize).and_then(|x| x.as_ref()).map_or(0, |x| x.page.epoch)))
            .collect())
    }

    pub fn events_enable(&mut self, on: bool) {
        self.events_on = on;
        if !on {
            self.events.clear();
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            pages: self.n_pages,
            page_bytes: self.page_bytes,
            bytes_logged: self.log.bytes_logged(),
            log_records: self.log.len(),
            ..self.stats
        }
    }

    pub fn next_ids(&self) -> (u64, u64) {
        (self.ids.page.peek(), self.ids.delta.peek())
    }

    pub fn reset(&mut self) -> Result<()> {
        self.log.clear()?;
        self.clear_core();
        self.events_on = false;
        self.events.clear();
        self.stats = Stats::default();
        self.writes = 0;
        Ok(())
    }

    pub fn prop_status(&self) -> PropStep {
        PropStep { status: self.prop.pending.is_some() as i32, page_id: self.prop.pending.unwrap_or(0) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SharedRoute {
    /// Refused: `PROP_NEED_LOCK`.
    Caller,
    /// With the state held exclusively (a cycle runs; or a file log, a GPU page).
    Exclusive,
    /// One shard, the page's lock, a lane.
    Lane,
}

/// `WriteOut::prop_status` of a shared write that needs its caller to hold
/// the state (events to deliver, a propagation cycle to run, or a cycle in
/// progress): nothing was changed; write again the exclusive way.
pub const PROP_NEED_LOCK: i32 = 2;

/// `WriteOut::delta_id` of a shared write that changed its page: the id is
/// given when the record moves into the log (the next exclusive call).
pub const DELTA_ID_PENDING: u64 = u64::MAX;

#[repr(align(128))]
struct Shard(Mutex<Lane>);

/// One native state: `Inner` behind a lock split into shards (see
/// `lanes.rs`). Every export but the shared write runs with all shards
/// locked ([`State::call`]).
pub struct State {
    shards: Box<[Shard]>,
    /// Exclusive callers waiting for the shards (shared writers let them in).
    waiting: AtomicUsize,
    /// `None` once closed.
    /// Boxed: a closed state (kept until its handle is freed) is small.
    inner: UnsafeCell<Option<Box<Inner>>>,
}

// SAFETY: `inner` is reached mutably only through `Exclusive`, which holds
// every shard's mutex, so no other reference exists; `Shared` holds one shard
// and reaches `Inner` only immutably, changing nothing but atomics (ids) and
// pages under their own lock (`PageCell::lock`). Inner is Send.
unsafe impl Sync for State {}

thread_local! {
    /// The shard this thread tries first (assigned round-robin at first use).
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

fn relock<'a>(m: &'a Mutex<Lane>) -> MutexGuard<'a, Lane> {
    // A panic caught at the boundary may have poisoned the mutex; the state is
    // still memory-safe, so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops a closed state's contents (a file log flushed first). Its lanes are
/// reset by the caller: they let go of their chunks and of the log's pool.
fn retire(inner: Option<Box<Inner>>) -> Result<()> {
    let Some(mut i) = inner else { return Ok(()) };
    LIVE_STATES.fetch_sub(1, Ordering::Relaxed);
    i.log.flush()
}

pub(crate) fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the state was closed")
}

/// Every shard locked: the whole state, lanes drained into the log.
struct Exclusive<'a> {
    st: &'a State,
    lanes: [Option<MutexGuard<'a, Lane>>; MAX_SHARDS],
}

impl Exclusive<'_> {
    fn inner(&mut self) -> Option<&mut Inner> {
        // SAFETY: every shard is locked (see `unsafe impl Sync for State`).
        unsafe { &mut *self.st.inner.get() }.as_deref_mut()
    }
}

/// One shard locked: `Inner` for reading, the shard's lane for writing.
struct Shared<'a> {
    st: &'a State,
    lane: MutexGuard<'a, Lane>,
}

impl Shared<'_> {
    /// The state, for reading only, for as long as the shard is held.
    fn parts(&mut self) -> Result<(&Inner, &mut Lane)> {
        // SAFETY: a shard is locked (and stays locked while the result, which
        // borrows `self`, lives), so no `Exclusive` (no &mut Inner) exists.
        let inner = unsafe { &*self.st.inner.get() }.as_deref().ok_or_else(closed)?;
        Ok((inner, &mut self.lane))
    }
}

/// Several threads read `Inner` at once on the shared path.
const _: () = {
    const fn sync<T: Sync>() {}
    sync::<Inner>();
};

/// Shells of freed states (`State::free`), reused by new ones (`State::boxed`).
/// A stopped state keeps its shell until its handle is freed (from Julia: by
/// the GC), and allocating one per state would scatter small long-lived
/// blocks among page and log memory (measured: creating a page then cost
/// twice as much).
#[allow(clippy::vec_box)] // handles are pointers to these boxes
static SHELLS: Mutex<Vec<Box<State>>> = Mutex::new(Vec::new());
/// Shells kept for reuse (a shell is ~600 bytes).
const KEEP_SHELLS: usize = 4096;

impl State {
    pub fn from_inner(inner: Inner) -> State {
        LIVE_STATES.fetch_add(1, Ordering::Relaxed);
        // Looked up once per process: it reads cgroup files on Linux (tens of µs).
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let n = (*CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))).clamp(1, MAX_SHARDS);
        let pool = inner.log.pool();
        State {
            shards: (0..n).map(|_| Shard(Mutex::new(Lane::new(pool.clone())))).collect(),
            waiting: AtomicUsize::new(0),
            inner: UnsafeCell::new(Some(Box::new(inner))),
        }
    }

    /// A boxed state around `inner`, in a recycled shell when one is free.
    pub fn boxed(inner: Inner) -> Box<State> {
        let shell = SHELLS.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(mut b) = shell else { return Box::new(State::from_inner(inner)) };
        LIVE_STATES.fetch_add(1, Ordering::Relaxed);
        let pool = inner.log.pool();
        for s in b.shards.iter_mut() {
            *s.0.get_mut().unwrap_or_else(|e| e.into_inner()) = Lane::new(pool.clone());
        }
        *b.waiting.get_mut() = 0;
        *b.inner.get_mut() = Some(Box::new(inner));
        b
    }

    /// Frees a boxed state (closing it first if needed), keeping its shell
    /// for reuse. The caller guarantees nothing uses it any more.
    pub fn free(mut b: Box<State>) {
        b.close_owned();
        let mut shells = SHELLS.lock().unwrap_or_else(|e| e.into_inner());
        if shells.len() < KEEP_SHELLS {
            shells.push(b);
        }
    }

    /// `close` when no other reference exists (no locking).
    fn close_owned(&mut self) {
        let _ = retire(self.inner.get_mut().take());
        for s in self.shards.iter_mut() {
            *s.0.get_mut().unwrap_or_else(|e| e.into_inner()) = Lane::new(None);
        }
    }

    /// Locks every shard (in order, so exclusive callers cannot deadlock)
    /// and moves the lanes' records into the log.
    fn exclusive(&self) -> Result<Exclusive<'_>> {
        let lanes = self.lock_all();
        let mut x = Exclusive { st: self, lanes };
        if x.lanes.iter().flatten().any(|l| !l.is_empty()) {
            // SAFETY: every shard is locked; `lanes` is a separate borrow.
            if let Some(inner) = unsafe { &mut *self.inner.get() }.as_deref_mut() {
                let mut ls: Vec<&mut Lane> = x.lanes.iter_mut().flatten().map(|g| &mut **g).collect();
                lanes::drain(&mut ls, &mut inner.log, &inner.ids, &mut inner.stats)?;
            }
        }
        Ok(x)
    }

    /// Locks one shard: this thread's, or any free one (which becomes its
    /// own), or else waits for its own.
    /// Locks this thread's shard. A thread always writes through the same
    /// shard, so its writes stay in one lane, in its own order. Waits first
    /// while an exclusive call is waiting for the shards (else writers that
    /// relock at once could keep it out).
    fn shared(&self) -> Shared<'_> {
        let home = HOME.with(|h| {
            if h.get() == usize::MAX {
                h.set(NEXT_HOME.fetch_add(1, Ordering::Relaxed));
            }
            h.get()
        });
        while self.waiting.load(Ordering::Relaxed) > 0 {
            std::thread::yield_now();
        }
        Shared { st: self, lane: relock(&self.shards[home % self.shards.len()].0) }
    }

    /// Every shard, locked in order (so exclusive callers cannot deadlock).
    fn lock_all(&self) -> [Option<MutexGuard<'_, Lane>>; MAX_SHARDS] {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let mut lanes: [Option<MutexGuard<'_, Lane>>; MAX_SHARDS] = Default::default();
        for (g, s) in lanes.iter_mut().zip(self.shards.iter()) {
            *g = Some(relock(&s.0));
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        lanes
    }

    /// Runs `f` with the state held exclusively; under `Fsync` durability,
    /// then waits (locks released) until the last record `f` appended is on
    /// disk, unless `f` left a cycle paused for a closure page: its records
    /// survive a crash only with the cycle's end record, so the call that
    /// ends the cycle waits instead.
    pub fn call<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        self.call_then_sync(true, f)
    }

    /// Like [`State::call`]; a write with `WRITE_DEFER_SYNC` skips the wait so
    /// that the caller can release its own locks first and then wait with
    /// [`State::sync_to`] (group commit across callers).
    pub fn call_write<T>(&self, flags: u32, f: impl FnOnce(&mut Inner, u32) -> Result<T>) -> Result<T> {
        self.call_then_sync(flags & WRITE_DEFER_SYNC == 0, |i| f(i, flags & !WRITE_DEFER_SYNC))
    }

    /// Waits until log record `seq` is durable (returns at once unless the
    /// log is `Fsync`).
    pub fn sync_to(&self, seq: u64) -> Result<()> {
        let h = self.call(|i| Ok(i.sync.clone()))?;
        match h {
            Some(h) if seq > 0 => h.wait_durable(seq),
            _ => Ok(()),
        }
    }

    fn call_then_sync<T>(&self, wait: bool, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        let mut x = self.exclusive()?;
        let g = x.inner().ok_or_else(closed)?;
        g.wait_seq = 0;
        let r = f(g);
        let seq = g.wait_seq;
        let h = if wait && seq > 0 && g.prop.begin_seq == 0 { g.sync.clone() } else { None };
        drop(x);
        if let Some(h) = h {
            h.wait_durable(seq)?;
        }
        r
    }

    /// A write that may run on several threads at once (`WRITE_SHARED`).
    /// Under one shard and the page's own lock when it can (a CPU page in a
    /// memory log, nothing to propagate or deliver); exclusively for a file
    /// log, a GPU page, or a propagation cycle when the state has no closure
    /// recomputes (the cycle then ends natively). When the write needs its
    /// caller (events recorded, a hold, a cycle in progress or one that may
    /// reach a closure) it changes nothing and returns
    /// `prop_status = PROP_NEED_LOCK`.
    pub fn page_write_shared(&self, id: u64, bytes: &[u8], flags: u32) -> Result<WriteOut> {
        let propagate = flags & WRITE_PROPAGATE != 0;
        let need_lock = WriteOut { prop_status: PROP_NEED_LOCK, ..WriteOut::default() };
        {
            let mut sh = self.shared();
            let (inner, lane) = sh.parts()?;
            let slot = inner.slot(id)?;
            match inner.shared_route(id, propagate) {
                SharedRoute::Caller => return Ok(need_lock),
                SharedRoute::Lane if inner.log.is_memory() => {
                    let mut page = slot.page.lock();
                    if let Some(out) = lanes::write_cpu(&mut page, bytes, lane)? {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
        self.call(|i| match i.shared_route(id, propagate) {
            SharedRoute::Caller => Ok(need_lock),
            _ => i.page_write(id, bytes, flags),
        })
    }

    /// Frees everything but the handle itself: pages, graph, the log (a file
    /// log flushed first). Waits for calls in progress; every later call
    /// fails with `ErrorKind::Closed`. Closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        // A drain error is moot here: the log is dropped next.
        let lanes = self.lock_all();
        let mut x = Exclusive { st: self, lanes };
        // SAFETY: every shard is locked.
        let r = retire(unsafe { &mut *x.st.inner.get() }.take());
        for l in x.lanes.iter_mut().flatten() {
            **l = Lane::new(None);
        }
        r
    }
}

impl Inner {
    /// How a shared write to `id` can go: it needs its caller for events to
    /// deliver, a cycle in progress, a `hold`, or a cycle to run that may
    /// reach a caller's closure; a cycle of native recomputes only runs
    /// exclusively; anything else goes through a lane.
    fn shared_route(&self, id: u64, propagate: bool) -> SharedRoute {
        if self.events_on || self.hold > 0 || self.prop.pending.is_some() {
            SharedRoute::Caller
        } else if propagate && self.needs_cycle(id) {
            if self.closures == 0 {
                SharedRoute::Exclusive
            } else {
                SharedRoute::Caller
            }
        } else {
            SharedRoute::Lane
        }
    }

    /// `hold(true)` makes shared writes answer `PROP_NEED_LOCK` until the
    /// matching `hold(false)`: a caller that reads the state in several
    /// calls under its own lock (a snapshot, a checkpoint before a stop) sees
    /// no shared write land in between. Holds nest.
    pub fn hold(&mut self, on: bool) -> Result<()> {
        if on {
            self.hold += 1;
        } else if self.hold == 0 {
            return Err(Error::new(ErrorKind::Busy, "state_hold(false) without a hold"));
        } else {
            self.hold -= 1;
        }
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.close_owned();
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(crate) mod tests;
