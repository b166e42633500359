//! The propagation cycle (ARCHITECTURE.md "Propagation").
//!
//! A cycle keeps a min-heap of `(height, page id)` and a per-page "queued in
//! generation g" stamp (bumping the generation clears every stamp at once),
//! so each reachable page is visited once, after all its parents. For a
//! visited page:
//! * no recompute: `PAGE_INVALIDATED` only (its children are not queued);
//! * signature (its declared parents' epochs) equal to the one stored at its
//!   last recompute, and not stale: skipped (`recomputes_skipped`);
//! * passthrough: the child is diffed against its parent natively; no change
//!   stores the signature (early cutoff, `recomputes_cutoff`), a change is a
//!   `:propagation` delta (logged, events) and queues the children;
//! * closure: the cycle pauses (`status 1`, the page) until the caller hands
//!   the bytes back (`prop_submit`) or gives up (`prop_fail`: the page and
//!   every queued page become stale and join the next cycle).
//!
//! The signature is stored at every recompute, including early cutoffs.
//! Every visited page records `PAGE_INVALIDATED` first, then
//! `DELTA_APPLIED`, `PAGE_CHANGED` if its bytes changed.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::page::PageData;
use crate::state::{
    Inner, Slot, CYCLE_BEGIN, CYCLE_END, EV_DELTA_APPLIED, EV_INVALIDATED, EV_PAGE_CHANGED, PROP_FRESH, PROP_SIGNATURE,
    PROP_STALE, REC_PROP_STATE, SOURCE_PROPAGATION,
};
use crate::tlog::RecordHeader;

pub const RC_NONE: u8 = 0;
pub const RC_PASSTHROUGH: u8 = 1;
pub const RC_CLOSURE: u8 = 2;

pub const ENQUEUE_CHILDREN: u8 = 0;
pub const ENQUEUE_SELF: u8 = 1;

/// A page's recompute registration and cycle bookkeeping.
#[derive(Default, Clone, Debug)]
pub struct Recompute {
    /// `RC_*`.
    pub kind: u8,
    /// Declared parents, in registration order.
    pub parents: Vec<u64>,
    /// Parent epochs at the last recompute (valid when `sig_set`).
    pub sig: Vec<u64>,
    pub sig_set: bool,
    /// A failed recompute left this page stale.
    pub stale: bool,
    /// Generation in which the page was last queued.
    pub queued: u32,
}

/// The scheduler state of one state's propagation.
#[derive(Default)]
pub struct PropState {
    pub heap: BinaryHeap<Reverse<(u64, u64)>>,
    pub gen: u32,
    /// The closure page the caller must compute.
    pub pending: Option<u64>,
    /// Parent epochs of the pending page when it was handed out.
    pub pending_sig: Vec<u64>,
    /// Ids of stale pages.
    pub stale: BTreeSet<u64>,
    /// A cycle started and has not ended.
    pub active: bool,
    /// Seq of the current cycle's `REC_CYCLE` begin record (file logs only;
    /// 0: none logged).
    pub begin_seq: u64,
}

impl PropState {
    pub fn clear(&mut self) {
        *self = PropState::default();
    }
}

/// Outcome of `prop_run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropStep {
    /// 0: the cycle finished; 1: `page_id` (a closure page) is pending.
    pub status: i32,
    pub page_id: u64,
}

fn two_mut(slots: &mut [Option<Slot>], a: u64, b: u64) -> Option<(&mut Slot, &Slot)> {
    let (a, b) = (a as usize, b as usize);
    if a == b || a >= slots.len() || b >= slots.len() {
        return None;
    }
    if a < b {
        let (x, y) = slots.split_at_mut(b);
        Some((x[a].as_mut()?, y[0].as_ref()?))
    } else {
        let (x, y) = slots.split_at_mut(a);
        Some((y[0].as_mut()?, x[b].as_ref()?))
    }
}

impl Inner {
    /// Starts a cycle if none is running: new generation, stale pages join.
    /// (A file log has its begin record already: see [`Inner::log_begin`].)
    pub(crate) fn cycle_begin(&mut self) {
        if self.prop.active {
            return;
        }
        self.prop.active = true;
        self.prop.gen = self.prop.gen.wrapping_add(1);
        if self.prop.gen == 0 {
            for s in self.slots.iter_mut().flatten() {
                s.rc.queued = 0;
            }
            self.prop.gen = 1;
        }
        if !self.prop.stale.is_empty() {
            let stale: Vec<u64> = self.prop.stale.iter().copied().collect();
            for id in stale {
                self.enqueue_page(id);
            }
        }
    }

    /// Whether a cycle started now gets a `REC_CYCLE` bracket: a file log
    /// brackets each propagation cycle, together with the write that started
    /// it, so that recovery can cut off a cycle a crash left unfinished (its
    /// write was never acknowledged) instead of leaving children behind their
    /// parents. No other operation's record can land inside a bracket (and
    /// be cut with it): a cycle without closure pages runs inside one call,
    /// and while one pauses for a closure page every other change is refused
    /// ([`Inner::check_idle`]). Writes log their begin record in
    /// `write_core`/`route_core`, right before the delta, once they know it
    /// changes something.
    #[inline]
    pub(crate) fn brackets(&self) -> bool {
        !self.log.is_memory()
    }

    /// Logs a begin record if cycles are bracketed and none is open.
    pub(crate) fn log_begin(&mut self) -> Result<()> {
        if self.brackets() && self.prop.begin_seq == 0 {
            self.prop.begin_seq = self.append(crate::state::cycle_record(CYCLE_BEGIN, self.log.next_seq()), &[], &[])?;
        }
        Ok(())
    }

    /// Logs the end record of an open bracket (no-op if none). If it cannot
    /// be written, the log takes no more records (`TLog::poison`): a record
    /// after an open bracket would be cut off with it at recovery.
    pub(crate) fn log_end(&mut self) -> Result<()> {
        let begin = std::mem::take(&mut self.prop.begin_seq);
        if begin != 0 {
            if let Err(e) = self.append(crate::state::cycle_record(CYCLE_END, begin), &[], &[]) {
                self.log.poison(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the cycle; a file log gets the `REC_CYCLE` end record (the last
    /// record a durable write waits for).
    fn cycle_end(&mut self) -> Result<()> {
        self.prop.active = false;
        self.prop.heap.clear();
        self.prop.pending = None;
        self.stats.propagation_cycles += 1;
        self.log_end()
    }

    #[inline]
    pub(crate) fn enqueue_page(&mut self, id: u64) {
        let gen = self.prop.gen;
        if let Some(Some(s)) = self.slots.get_mut(id as usize) {
            if s.rc.queued != gen {
                s.rc.queued = gen;
                self.prop.heap.push(Reverse((self.graph.height(id), id)));
            }
        }
    }

    #[inline]
    pub(crate) fn enqueue_children(&mut self, id: u64) {
        let gen = self.prop.gen;
        let Inner { graph, slots, prop, .. } = self;
        for &(c, _) in graph.children(id) {
            if let Some(Some(s)) = slots.get_mut(c as usize) {
                if s.rc.queued != gen {
                    s.rc.queued = gen;
                    prop.heap.push(Reverse((graph.height(c), c)));
                }
            }
        }
    }

    /// Whether a write to pages with these ids must run a cycle.
    #[inline]
    pub(crate) fn needs_cycle(&self, id: u64) -> bool {
        self.prop.active || !self.prop.stale.is_empty() || self.graph.has_dependents(id)
    }

    pub fn prop_enqueue(&mut self, ids: &[u64], mode: u8) -> Result<()> {
        self.check_idle("prop_enqueue")?;
        if mode != ENQUEUE_CHILDREN && mode != ENQUEUE_SELF {
            return Err(Error::new(ErrorKind::Invalid, format!("enqueue mode {mode} is neither 0 (children) nor 1 (self)")));
        }
        for &id in ids {
            self.slot(id)?;
        }
        self.cycle_begin();
        for &id in ids {
            if mode == ENQUEUE_SELF {
                self.enqueue_page(id);
            } else {
                self.enqueue_children(id);
            }
        }
        Ok(())
    }

    /// While a closure page is pending, only `prop_submit`, `prop_fail` and
    /// reads may run, and in a file log also until the `prop_run` that ends
    /// the cycle: its bracket stays open across those calls, and no other
    /// operation's record may land inside it (recovery would cut it off with
    /// an unfinished cycle), nor may a change meet a half-propagated state.
    #[inline]
    pub(crate) fn check_idle(&self, what: &str) -> Result<()> {
        if self.prop.pending.is_some() {
            return Err(self.busy(what));
        }
        if self.prop.begin_seq != 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{what}: a propagation cycle is in progress (finish it with prop_run first)"),
            ));
        }
        Ok(())
    }

    pub(crate) fn busy(&self, what: &str) -> Error {
        match self.prop.pending {
            Some(p) => Error::new(
                ErrorKind::Busy,
                format!("{what}: page {p} is pending in a propagation cycle (submit or fail it first)"),
            ),
            None => Error::new(ErrorKind::Busy, format!("{what}: no closure page is pending")),
        }
    }

    /// Runs the cycle until it ends or a closure page must be computed.
    pub fn prop_run(&mut self) -> Result<PropStep> {
        if self.prop.pending.is_some() {
            return Err(self.busy("prop_run"));
        }
        if !self.prop.active {
            return Ok(PropStep::default());
        }
        // a cycle started by prop_enqueue: bracketed from here (it runs to
        // its end in this call); one started by a write has its begin already
        self.log_begin()?;
        let t0 = Instant::now();
        let r = self.run_loop();
        self.stats.propagation_ns += t0.elapsed().as_nanos() as u64;
        if let Err(e) = &r {
            // A failed hop (log I/O): what was applied stays applied; the rest
            // is stale and retried by the next cycle.
            let _ = e;
            let _ = self.mark_queued_stale(None); // the hop's error is the one to report
            let _ = self.cycle_end();
        }
        r
    }

    /// Marks the queued pages (and `extra`) stale, each with a
    /// `PROP_STALE` record; all are marked even if a record fails (the first
    /// error is returned).
    fn mark_queued_stale(&mut self, extra: Option<u64>) -> Result<()> {
        let mut ids: Vec<u64> = self.prop.heap.drain().map(|Reverse((_, id))| id).collect();
        ids.extend(extra);
        let mut r = Ok(());
        for id in ids {
            if self.set_stale(id, true) {
                let logged = self.log_prop_state(id, PROP_STALE);
                if r.is_ok() {
                    r = logged;
                }
            }
        }
        r
    }

    /// Marks page `id` stale or not: its slot's flag and the stale set, kept
    /// in step. True if the set changed; a missing page changes nothing.
    pub(crate) fn set_stale(&mut self, id: u64, stale: bool) -> bool {
        let Some(Some(s)) = self.slots.get_mut(id as usize) else { return false };
        s.rc.stale = stale;
        if stale {
            self.prop.stale.insert(id)
        } else {
            self.prop.stale.remove(&id)
        }
    }

    /// Logs a `REC_PROP_STATE` record for page `id` (`PROP_SIGNATURE`: its
    /// stored signature as the payload).
    fn log_prop_state(&mut self, id: u64, what: u8) -> Result<()> {
        let mut payload = std::mem::take(&mut self.scratch.data);
        payload.clear();
        if what == PROP_SIGNATURE {
            if let Some(Some(s)) = self.slots.get(id as usize) {
                for e in &s.rc.sig {
                    payload.extend_from_slice(&e.to_le_bytes());
                }
            }
        }
        let header = RecordHeader { kind: REC_PROP_STATE, page_id: id, encoding: what, ..RecordHeader::default() };
        let r = self.append(header, &[], &payload);
        self.scratch.data = payload;
        r.map(|_| ())
    }

    fn parent_epoch(&self, p: u64) -> u64 {
        match self.slots.get(p as usize) {
            Some(Some(s)) => s.page.epoch,
            _ => 0,
        }
    }

    fn signature_same(&self, s: &Slot) -> bool {
        s.rc.sig_set
            && !s.rc.stale
            && s.rc.sig.len() == s.rc.parents.len()
            && s.rc.parents.iter().zip(&s.rc.sig).all(|(&p, &e)| self.parent_epoch(p) == e)
    }

    pub(crate) fn store_signature(&mut self, id: u64, from_pending: bool) {
        let Inner { slots, prop, .. } = self;
        if from_pending {
            if let Some(Some(s)) = slots.get_mut(id as usize) {
                std::mem::swap(&mut s.rc.sig, &mut prop.pending_sig);
                prop.pending_sig.clear();
            }
        } else {
            // In place, no allocation: read each parent's epoch, then write.
            let n = match slots.get(id as usize) {
                Some(Some(s)) => s.rc.parents.len(),
                _ => return,
            };
            for k in 0..n {
                let e = match slots.get(id as usize) {
                    Some(Some(s)) => match s.rc.parents.get(k).and_then(|&p| slots.get(p as usize)) {
                        Some(Some(ps)) => ps.page.epoch,
                        _ => 0,
                    },
                    _ => 0,
                };
                if let Some(Some(s)) = slots.get_mut(id as usize) {
                    if k == 0 {
                        s.rc.sig.clear();
                    }
                    s.rc.sig.push(e);
                }
            }
            if n == 0 {
                if let Some(Some(s)) = slots.get_mut(id as usize) {
                    s.rc.sig.clear();
                }
            }
        }
        if let Some(Some(s)) = slots.get_mut(id as usize) {
            s.rc.sig_set = true;
            s.rc.stale = false;
        }
        if !prop.stale.is_empty() {
            prop.stale.remove(&id);
        }
    }

    fn run_loop(&mut self) -> Result<PropStep> {
        while let Some(Reverse((_, x))) = self.prop.heap.pop() {
            let Some(Some(s)) = self.slots.get(x as usize) else { continue };
            let (kind, epoch) = (s.rc.kind, s.page.epoch);
            self.event(EV_INVALIDATED, x, 0, epoch);
            if kind == RC_NONE {
                if self.set_stale(x, false) {
                    self.log_prop_state(x, PROP_FRESH)?;
                }
                continue;
            }
            let same = match self.slots.get(x as usize) {
                Some(Some(s)) => self.signature_same(s),
                _ => false,
            };
            if same {
                self.stats.recomputes_skipped += 1;
                continue;
            }
            if kind == RC_CLOSURE {
                let mut sig = std::mem::take(&mut self.prop.pending_sig);
                sig.clear();
                if let Some(Some(s)) = self.slots.get(x as usize) {
                    for &p in &s.rc.parents {
                        sig.push(self.parent_epoch(p));
                    }
                }
                self.prop.pending_sig = sig;
                self.prop.pending = Some(x);
                return Ok(PropStep { status: 1, page_id: x });
            }
            // passthrough
            let changed = self.passthrough(x)?;
            self.stats.recomputes_run += 1;
            self.store_signature(x, false);
            match changed {
                Some((did, ep)) => {
                    self.event(EV_DELTA_APPLIED, x, did, ep);
                    self.event(EV_PAGE_CHANGED, x, did, ep);
                    self.enqueue_children(x);
                }
                None => {
                    self.stats.recomputes_cutoff += 1;
                    self.log_prop_state(x, PROP_SIGNATURE)?;
                }
            }
        }
        self.cycle_end()?;
        Ok(PropStep::default())
    }

    /// Child := copy of its one parent. Returns (delta id, new epoch) if the
    /// child changed.
    fn passthrough(&mut self, child: u64) -> Result<Option<(u64, u64)>> {
        let parent = match self.slots.get(child as usize) {
            Some(Some(s)) => s.rc.parents.first().copied(),
            _ => None,
        }
        .ok_or_else(|| Error::new(ErrorKind::Internal, format!("passthrough page {child} has no parent")))?;
        let Inner { slots, scratch, log, ids, stats, wait_seq, .. } = self;
        let (c, p) = two_mut(slots, child, parent).ok_or_else(|| {
            Error::new(ErrorKind::PageNotFound, format!("parent page {parent} of passthrough page {child} not found"))
        })?;
        if c.page.size != p.page.size {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("passthrough page {child} has size {}, its parent {parent} has size {}", c.page.size, p.page.size),
            ));
        }
        let r = match &p.page.data {
            PageData::Cpu(src) => crate::state::write_core(&mut c.page, src, SOURCE_PROPAGATION, scratch, log, ids, None)?,
            PageData::Gpu(_) => {
                let mut host = std::mem::take(&mut scratch.host);
                host.resize(p.page.size, 0);
                let r = p.page.read(&mut host).and_then(|_| {
                    crate::state::write_core(&mut c.page, &host, SOURCE_PROPAGATION, scratch, log, ids, None)
                });
                scratch.host = host;
                r?
            }
        };
        Ok(r.map(|(did, seq)| {
            *wait_seq = seq;
            stats.deltas_applied += 1;
            (did, c.page.epoch)
        }))
    }

    /// The caller's bytes for the pending closure page.
    pub fn prop_submit(&mut self, page: u64, bytes: &[u8]) -> Result<u64> {
        if self.prop.pending != Some(page) {
            return Err(match self.prop.pending {
                Some(p) => Error::new(ErrorKind::Busy, format!("prop_submit for page {page}, but page {p} is pending")),
                None => Error::new(ErrorKind::Busy, format!("prop_submit for page {page}: no page is pending")),
            });
        }
        let changed = {
            let Inner { slots, scratch, log, ids, .. } = self;
            let s = slots
                .get_mut(page as usize)
                .and_then(|s| s.as_mut())
                .ok_or_else(|| Error::new(ErrorKind::PageNotFound, format!("page {page} not found")))?;
            if bytes.len() != s.page.size {
                return Err(Error::new(
                    ErrorKind::Dimension,
                    format!("recompute of page {page} returned {} bytes, page size is {}", bytes.len(), s.page.size),
                ));
            }
            crate::state::write_core(&mut s.page, bytes, SOURCE_PROPAGATION, scratch, log, ids, None)?
        };
        self.prop.pending = None;
        self.stats.recomputes_run += 1;
        self.store_signature(page, true);
        match changed {
            Some((did, seq)) => {
                self.wait_seq = seq;
                self.stats.deltas_applied += 1;
                let ep = self.slot(page)?.page.epoch;
                self.event(EV_DELTA_APPLIED, page, did, ep);
                self.event(EV_PAGE_CHANGED, page, did, ep);
                self.enqueue_children(page);
                Ok(did)
            }
            None => {
                self.stats.recomputes_cutoff += 1;
                self.log_prop_state(page, PROP_SIGNATURE)?;
                Ok(0)
            }
        }
    }

    /// The caller's recompute of the pending page failed.
    pub fn prop_fail(&mut self, page: u64) -> Result<()> {
        if self.prop.pending != Some(page) {
            return Err(match self.prop.pending {
                Some(p) => Error::new(ErrorKind::Busy, format!("prop_fail for page {page}, but page {p} is pending")),
                None => Error::new(ErrorKind::Busy, format!("prop_fail for page {page}: no page is pending")),
            });
        }
        let marked = self.mark_queued_stale(Some(page));
        self.cycle_end()?;
        marked
    }
}
