//! Log records and checkpoints back into state: recovery when a state opens
//! a log file, checkpoint write/load, rollback replay and replay to an epoch.
//!
//! `apply_record` is the one place that turns a record into a state change;
//! live operations log the same records, so replaying a log reproduces ids,
//! epochs, bytes, the graph, the next ids and the logical clock. Every
//! `delta_stamp` logs a `REC_DELTA_STAMP` record, so a delta stamped but
//! never applied (or applied as a no-op, which logs no delta) still moves
//! the next delta id and the clock on replay.
//! A checkpoint load is logged as one `REC_SNAPSHOT` record carrying the
//! checkpoint body; replaying it replaces the state by the snapshot, and
//! replay starts from the last such record (`snapshot_seq`).
//! Closure recomputes cannot be restored into a new state (Julia must
//! register them again): recovery, checkpoint load and `replay_to_epoch`
//! turn them into `NONE`, keeping their edges; `replay` (rollback of the same
//! state) keeps them.

use std::path::Path;

use crate::checkpoint::{self, SnapPage, Snapshot};
use crate::delta;
use crate::error::{Error, ErrorKind, Result};
use crate::propagate::{RC_CLOSURE, RC_NONE, RC_PASSTHROUGH};
use crate::state::*;
use crate::tlog::{Durability, Record, RecordHeader, RecordRef, RecoveryReport, TLog};

fn corrupt(seq: u64, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::TLogCorrupt, format!("log record {seq} cannot be replayed: {msg}"))
}

fn ckpt(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Checkpoint, format!("checkpoint cannot be restored: {msg}"))
}

/// Opens a state, recovering it from `cfg.tlog_path` if given.
pub fn open(cfg: Config) -> Result<(State, RecoveryReport)> {
    open_inner(cfg).map(|(i, r)| (State::from_inner(i), r))
}

/// [`open`], without the `State` around it (see `State::boxed`).
pub fn open_inner(cfg: Config) -> Result<(Inner, RecoveryReport)> {
    match cfg.tlog_path.clone() {
        None => {
            if cfg.durability != Durability::None {
                return Err(Error::new(ErrorKind::Invalid, "durability buffered/fsync needs a tlog_path"));
            }
            Ok((Inner::new(cfg, TLog::memory()), RecoveryReport::default()))
        }
        Some(p) => {
            let (log, recs, rep) = TLog::open(&p, cfg.durability, cfg.truncate)?;
            let mut inner = Inner::new(cfg, log);
            for r in &recs {
                inner.apply_record(r, false).map_err(|e| {
                    Error::new(ErrorKind::TLogCorrupt, format!("{}: {}", p.display(), e.msg))
                })?;
            }
            Ok((inner, rep))
        }
    }
}

impl Inner {
    /// Applies one logged record (no logging, no events).
    pub(crate) fn apply_record(&mut self, rec: &Record, keep_closures: bool) -> Result<()> {
        let h = &rec.header;
        let seq = h.seq;
        match h.kind {
            REC_PAGE_CREATE => {
                if h.page_id == 0 || self.slot(h.page_id).is_ok() {
                    return Err(corrupt(seq, format!("page {} created twice", h.page_id)));
                }
                let page = self.make_page(h.page_id, h.aux, h.encoding, true).map_err(|e| corrupt(seq, e.msg))?;
                self.insert_page(page);
                self.ids.page.observe(h.page_id);
            }
            REC_PAGE_DELETE => {
                self.slot(h.page_id).map_err(|e| corrupt(seq, e.msg))?;
                self.remove_page(h.page_id);
            }
            REC_EDGE_ADD => {
                self.slot(h.page_id).and_then(|_| self.slot(h.aux)).map_err(|e| corrupt(seq, e.msg))?;
                self.graph.add_edge(h.page_id, h.aux, h.encoding).map_err(|e| corrupt(seq, e.msg))?;
            }
            REC_EDGE_REMOVE => {
                self.graph.remove_edge(h.page_id, h.aux);
            }
            REC_RECOMPUTE_SET => {
                if rec.payload.len() % 8 != 0 || h.aux > RC_CLOSURE as u64 {
                    return Err(corrupt(seq, "bad recompute registration"));
                }
                let kind = h.aux as u8;
                let parents: Vec<u64> = rec.payload.chunks_exact(8).map(|c| crate::diff::load64(c, 0)).collect();
                self.check_recompute(h.page_id, kind, &parents).map_err(|e| corrupt(seq, e.msg))?;
                self.do_recompute_set(h.page_id, kind, &parents).map_err(|e| corrupt(seq, e.msg))?;
                if kind == RC_CLOSURE && !keep_closures {
                    let s = self.slot_mut(h.page_id)?;
                    s.rc.kind = RC_NONE;
                    s.rc.parents.clear();
                    self.closures -= 1;
                }
            }
            REC_DELTA => {
                let ml = h.mask_len as usize;
                let (mask, data) = if ml <= rec.payload.len() {
                    rec.payload.split_at(ml)
                } else {
                    return Err(corrupt(seq, "mask longer than the payload"));
                };
                let s = self.slot_mut(h.page_id).map_err(|e| corrupt(seq, e.msg))?;
                delta::validate(h.encoding, mask, data, s.page.size as u64, h.page_id).map_err(|e| corrupt(seq, e.msg))?;
                s.page.apply(h.encoding, mask, data).map_err(|e| corrupt(seq, e.msg))?;
                s.page.epoch += 1;
                self.ids.delta.observe(h.delta_id);
                self.ids.clock.observe(h.timestamp);
                if h.source == SOURCE_PROPAGATION {
                    // a recompute ran: its signature is its parents' epochs now
                    self.store_signature(h.page_id, false);
                }
            }
            REC_PROP_STATE => {
                let s = self.slot_mut(h.page_id).map_err(|e| corrupt(seq, e.msg))?;
                match h.encoding {
                    PROP_SIGNATURE => {
                        // (a closure page comes back without its recompute: no signature)
                        if s.rc.kind != RC_NONE {
                            if rec.payload.len() != 8 * s.rc.parents.len() {
                                return Err(corrupt(seq, format!("signature of page {} does not match its recompute", h.page_id)));
                            }
                            s.rc.sig = rec.payload.chunks_exact(8).map(|c| crate::diff::load64(c, 0)).collect();
                            s.rc.sig_set = true;
                        }
                        self.set_stale(h.page_id, false);
                    }
                    PROP_STALE => {
                        self.set_stale(h.page_id, true);
                    }
                    PROP_FRESH => {
                        self.set_stale(h.page_id, false);
                    }
                    e => return Err(corrupt(seq, format!("propagation state record with encoding {e}"))),
                }
            }
            REC_DELTA_STAMP => {
                self.ids.delta.observe(h.delta_id);
                self.ids.clock.observe(h.timestamp);
            }
            REC_CYCLE => {
                // bounds of a propagation cycle: no state change (recovery
                // has already cut off a cycle that did not end)
                if h.encoding != CYCLE_BEGIN && h.encoding != CYCLE_END {
                    return Err(corrupt(seq, format!("cycle record with bound {}", h.encoding)));
                }
            }
            REC_SNAPSHOT => {
                // The whole state becomes the snapshot (closures dropped, as
                // on the live load).
                // encoding: the body's checkpoint format version (0 in logs written before version 2: 1)
                let version = u32::from(h.encoding).max(1);
                let snap = checkpoint::decode_body(&rec.payload, version, "snapshot record").map_err(|e| corrupt(seq, e.msg))?;
                let mut fresh = self.scratch_inner();
                fresh.restore(&snap, false).map_err(|e| corrupt(seq, e.msg))?;
                self.take_core(fresh);
                self.snapshot_seq = seq;
            }
            k => return Err(corrupt(seq, format!("unknown record kind {k}"))),
        }
        Ok(())
    }

    /// A snapshot of the whole state (log flushed first).
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.log.flush()?;
        let mut pages = Vec::with_capacity(self.n_pages as usize);
        let mut signatures = Vec::new();
        for s in self.slots.iter().flatten() {
            pages.push(SnapPage {
                id: s.page.id,
                size: s.page.size as u64,
                epoch: s.page.epoch,
                location: s.page.location(),
                recompute: s.rc.kind,
                parents: s.rc.parents.clone(),
                bytes: s.page.to_vec()?,
            });
            if s.rc.sig_set && s.rc.sig.len() == s.rc.parents.len() {
                signatures.push((s.page.id, s.rc.parents.iter().copied().zip(s.rc.sig.iter().copied()).collect()));
            }
        }
        let mut edges = Vec::new();
        self.graph.edges(&mut edges);
        Ok(Snapshot {
            next_page_id: self.ids.page.peek(),
            next_delta_id: self.ids.delta.peek(),
            clock: self.ids.clock.now(),
            log_seq: self.log.next_seq() - 1,
            pages,
            edges,
            signatures,
            stale: self.prop.stale.iter().copied().collect(),
        })
    }

    pub fn checkpoint_write(&mut self, path: &Path) -> Result<()> {
        self.check_idle("checkpoint_write")?;
        if self.log.is_file_at(path) {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("checkpoint path {} is this state's own transaction log", path.display()),
            ));
        }
        let snap = self.snapshot()?;
        checkpoint::write(path, &snap)
    }

    /// Restores a snapshot into this (empty) core.
    fn restore(&mut self, snap: &Snapshot, keep_closures: bool) -> Result<()> {
        for p in &snap.pages {
            if p.id == 0 || self.slot(p.id).is_ok() {
                return Err(ckpt(format!("page {} appears twice", p.id)));
            }
            let mut page = self.make_page(p.id, p.size, p.location, true).map_err(|e| ckpt(e.msg))?;
            page.set_bytes(&p.bytes).map_err(|e| ckpt(e.msg))?;
            page.epoch = p.epoch;
            self.insert_page(page);
        }
        for &(p, c, k) in &snap.edges {
            if self.slot(p).is_err() || self.slot(c).is_err() {
                return Err(ckpt(format!("edge {p} -> {c} names a missing page")));
            }
            self.graph.add_edge(p, c, k).map_err(|e| ckpt(e.msg))?;
        }
        for p in &snap.pages {
            let kind = match p.recompute {
                RC_CLOSURE if !keep_closures => RC_NONE,
                k if k <= RC_CLOSURE => k,
                k => return Err(ckpt(format!("page {}: unknown recompute kind {k}", p.id))),
            };
            if kind == RC_NONE {
                continue;
            }
            self.check_recompute(p.id, kind, &p.parents).map_err(|e| ckpt(e.msg))?;
            self.do_recompute_set(p.id, kind, &p.parents).map_err(|e| ckpt(e.msg))?;
            if kind == RC_PASSTHROUGH && p.parents.len() != 1 {
                return Err(ckpt(format!("passthrough page {} needs one parent", p.id)));
            }
        }
        for (id, sig) in &snap.signatures {
            if let Ok(s) = self.slot_mut(*id) {
                if s.rc.kind != RC_NONE && sig.iter().map(|x| x.0).eq(s.rc.parents.iter().copied()) {
                    s.rc.sig = sig.iter().map(|x| x.1).collect();
                    s.rc.sig_set = true;
                }
            }
        }
        for &id in &snap.stale {
            self.slot(id).map_err(|_| ckpt(format!("stale page {id} is missing")))?;
            self.set_stale(id, true);
        }
        let max_id = snap.pages.iter().map(|p| p.id).max().unwrap_or(0);
        self.ids.page.set(snap.next_page_id.max(max_id + 1));
        self.ids.delta.set(snap.next_delta_id);
        self.ids.clock.set(snap.clock);
        Ok(())
    }

    /// Moves the pages, graph, ids of `fresh` into this state (keeps the log,
    /// config, events switch and stats).
    fn take_core(&mut self, fresh: Inner) {
        self.slots = fresh.slots;
        self.closures = fresh.closures;
        self.n_pages = fresh.n_pages;
        self.page_bytes = fresh.page_bytes;
        self.graph = fresh.graph;
        self.ids.page.set(fresh.ids.page.peek());
        self.ids.delta.set(fresh.ids.delta.peek());
        self.ids.clock.set(fresh.ids.clock.now());
        self.prop.clear();
        self.prop.stale = fresh.prop.stale; // (the slots carry their own marks)
    }

    fn scratch_inner(&self) -> Inner {
        Inner::new(self.cfg.clone(), TLog::memory())
    }

    /// Loads a checkpoint into this empty state and logs it as one
    /// `REC_SNAPSHOT` record (payload: the checkpoint body), so this state's
    /// log alone still rebuilds it. The records "after" the checkpoint are
    /// the ones appended after that record; records already in this log
    /// (the history that left the state empty) precede the load and are not
    /// replayed onto the snapshot (they belong to another history than the
    /// checkpoint's, whose `log_seq` numbers records of the log it was
    /// written from). Nothing changes on error.
    pub fn checkpoint_load(&mut self, path: &Path) -> Result<()> {
        if self.n_pages != 0 || self.prop.active {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("checkpoint {} can only be loaded into an empty state ({} pages present)", path.display(), self.n_pages),
            ));
        }
        let (snap, body, version) = checkpoint::read_with_body(path)?;
        let mut fresh = self.scratch_inner();
        fresh.restore(&snap, false).map_err(|e| {
            Error::new(ErrorKind::Checkpoint, format!("{}: {}", path.display(), e.msg))
        })?;
        // encoding: the body's format version
        let header = RecordHeader { kind: REC_SNAPSHOT, aux: snap.log_seq, encoding: version as u8, ..RecordHeader::default() };
        let seq = self.append(header, &[], &body).map_err(|e| {
            Error::new(e.kind, format!("checkpoint {} cannot be logged: {}", path.display(), e.msg))
        })?;
        self.take_core(fresh);
        self.snapshot_seq = seq;
        Ok(())
    }

    /// Rolls the state back to the log prefix ending at `upto` (0: empty);
    /// the log is cut there too. Starts from the last snapshot record at or
    /// before `upto` when there is one.
    pub fn replay(&mut self, upto: u64) -> Result<()> {
        self.check_idle("replay")?;
        let last = self.log.len();
        if upto > last {
            return Err(Error::new(ErrorKind::Invalid, format!("replay upto {upto}: the log holds records 1 to {last}")));
        }
        let start = if self.snapshot_seq > 0 && self.snapshot_seq <= upto { self.snapshot_seq } else { 1 };
        let mut fresh = self.scratch_inner();
        let mut open = 0; // a cycle bracket open at `upto`
        for seq in start..=upto {
            let r = self.log.get(seq)?;
            fresh.apply_record(&r, true)?;
            if r.header.kind == REC_CYCLE {
                open = if r.header.encoding == CYCLE_BEGIN { seq } else { 0 };
            }
        }
        self.log.truncate_after(upto)?;
        let snapshot_seq = fresh.snapshot_seq;
        self.take_core(fresh);
        self.snapshot_seq = snapshot_seq;
        if open != 0 {
            // rolled back into the middle of a cycle: close its bracket, or
            // reopening the log would cut off the state just replayed
            self.prop.begin_seq = open;
            self.log_end()?;
        }
        Ok(())
    }

    /// A new in-memory state with every page as of epoch `min(epoch, current)`.
    /// Starts at the last snapshot record (a loaded checkpoint); an epoch
    /// older than a page's epoch in that snapshot is `Invalid` (the history
    /// before the checkpoint is not in this log).
    pub fn replay_to_epoch(&self, epoch: u64) -> Result<Inner> {
        let cfg = Config { tlog_path: None, durability: Durability::None, truncate: false, ..self.cfg.clone() };
        let mut fresh = Inner::new(cfg, TLog::memory());
        let start = self.snapshot_seq.max(1);
        for seq in start..self.log.next_seq() {
            let r = self.log.get(seq)?;
            if r.header.kind == REC_CYCLE {
                continue; // the new state's log is in memory: no brackets
            }
            if r.header.kind == REC_DELTA {
                match fresh.slot(r.header.page_id) {
                    Ok(s) if s.page.epoch >= epoch => continue,
                    _ => {}
                }
            }
            fresh.apply_record(&r, false)?;
            if r.header.kind == REC_SNAPSHOT {
                if let Some(s) = fresh.slots.iter().flatten().find(|s| s.page.epoch > epoch) {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        format!(
                            "epoch {epoch} of page {} predates the checkpoint this state was loaded from (log record {seq}, page epoch {} there)",
                            s.page.id, s.page.epoch
                        ),
                    ));
                }
            }
            let ml = (r.header.mask_len as usize).min(r.payload.len());
            let (mask, data) = r.payload.split_at(ml);
            let fseq = fresh.log.append(&RecordRef { header: r.header, mask, data })?;
            if r.header.kind == REC_SNAPSHOT {
                fresh.snapshot_seq = fseq;
            }
        }
        fresh.ids.page.set(self.ids.page.peek());
        fresh.ids.delta.set(self.ids.delta.peek());
        fresh.ids.clock.set(self.ids.clock.now());
        fresh.events_on = false;
        Ok(fresh)
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
