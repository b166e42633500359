//! Batch routing (T5.1, T5.2): validate every delta first (nothing is
//! applied if one is bad), order by (page, base epoch, delta id), apply,
//! then one propagation over every changed page.
//!
//! With `MMSB_WRITE_PARALLEL`, different pages are applied on scoped worker
//! threads; each worker computes its pages' bytes and per-delta change
//! counts and, for a memory log, writes the log frames of its deltas into
//! frames reserved beforehand in the fixed order (so copying the payloads
//! into the log is parallel too). Indexing the frames, epochs, stats and
//! events then run sequentially in the fixed order, so the result is bitwise
//! identical to the sequential path; a frame of a delta that changed nothing
//! is left unindexed (wasted space in the memory log). (If a log append
//! fails in that second phase — an I/O error on a file log — bytes already
//! applied stay applied and the error is returned.)

use crate::delta;
use crate::error::{Error, ErrorKind, Result};
use crate::state::*;
use crate::tlog::Reserved;

impl Inner {
    pub fn route_batch(&mut self, ds: &[DeltaIn], flags: u32) -> Result<BatchOut> {
        if flags & !(WRITE_PROPAGATE | WRITE_PARALLEL) != 0 {
            return Err(Error::new(ErrorKind::Invalid, format!("unknown batch flags {flags:#x}")));
        }
        let propagate = flags & WRITE_PROPAGATE != 0;
        self.check_idle("delta_route_batch")?;
        for d in ds {
            self.validate_delta(d)?;
        }
        let mut order: Vec<usize> = (0..ds.len()).collect();
        order.sort_by_key(|&i| (ds[i].page_id, ds[i].base_epoch, ds[i].id, i));
        // groups: (page id, start, end) over `order`
        let mut groups: Vec<(u64, usize, usize)> = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if g.0 == ds[i].page_id => g.2 = k + 1,
                _ => groups.push((ds[i].page_id, k, k + 1)),
            }
        }
        if self.cfg.strict_epochs {
            self.strict_check(ds, &order, &groups)?;
        }
        let parallel = flags & WRITE_PARALLEL != 0 && groups.len() > 1 && {
            let threads = self.worker_threads();
            threads > 1 && groups.iter().all(|g| self.slot(g.0).is_ok_and(|s| s.page.cpu().is_some()))
        };
        // a file log brackets the batch and its cycle (Inner::log_begin), and
        // any batch of several deltas, so that recovery gives all of it or
        // none; the begin goes right before the first delta that changes
        // something (a batch that changes nothing logs nothing)
        let bracket = self.brackets() && (ds.len() > 1 || propagate && groups.iter().any(|g| self.needs_cycle(g.0)));
        let r = self.apply_and_propagate(ds, &order, &groups, parallel, propagate, bracket);
        if self.prop.pending.is_none() {
            // nothing to propagate after all (also with a cycle that
            // prop_enqueue started and no prop_run has run yet), or an error
            // before the cycle: close the bracket (a cycle that ran closed it
            // already; one paused for a closure page closes it when it ends)
            let closed = self.log_end();
            if r.is_ok() {
                closed?;
            }
        }
        r
    }

    fn apply_and_propagate(
        &mut self,
        ds: &[DeltaIn],
        order: &[usize],
        groups: &[(u64, usize, usize)],
        parallel: bool,
        propagate: bool,
        bracket: bool,
    ) -> Result<BatchOut> {
        let mut out = BatchOut::default();
        let mut changed_pages: Vec<u64> = Vec::new();
        if parallel {
            let threads = self.worker_threads();
            // A memory log: frames reserved in order now, written by the
            // workers with the bytes; a file log: appended in phase 2.
            let mut frames = Vec::new();
            if self.log.is_memory() {
                frames.reserve(order.len());
                for &i in order {
                    let d = &ds[i];
                    frames.push(self.log.reserve_frame(REC_DELTA, d.mask.len(), d.payload.len())?);
                }
            }
            let counts = self.parallel_apply(ds, order, groups, threads, &mut frames)?;
            for (k, &i) in order.iter().enumerate() {
                if counts[k] > 0 {
                    match frames.get(k) {
                        Some(f) => {
                            self.wait_seq = self.log.index_reserved(f)?;
                            self.slot_mut(ds[i].page_id)?.page.epoch += 1;
                            self.ids.clock.observe(ds[i].timestamp);
                            self.after_applied(&ds[i]);
                        }
                        None => {
                            if bracket {
                                self.log_begin()?;
                            }
                            self.commit_applied(&ds[i])?
                        }
                    }
                    out.applied += 1;
                    if changed_pages.last() != Some(&ds[i].page_id) {
                        changed_pages.push(ds[i].page_id);
                    }
                }
            }
        } else {
            for &i in order {
                let d = &ds[i];
                if let Some(seq) = self.route_core(d, bracket && self.prop.begin_seq == 0)? {
                    self.wait_seq = seq;
                    self.after_applied(d);
                    out.applied += 1;
                    if changed_pages.last() != Some(&d.page_id) {
                        changed_pages.push(d.page_id);
                    }
                }
            }
        }
        if propagate && !changed_pages.is_empty() && changed_pages.iter().any(|&p| self.needs_cycle(p)) {
            self.cycle_begin();
            for &p in &changed_pages {
                self.enqueue_children(p);
            }
            let step = self.prop_run()?;
            out.prop_status = step.status;
            out.pending_page = step.page_id;
        }
        Ok(out)
    }

    /// `cfg.threads`, or (0) the machine's parallelism, looked up once per
    /// process: `available_parallelism` reads cgroup files on Linux (tens of
    /// µs), far more than a small batch costs.
    fn worker_threads(&self) -> usize {
        static AUTO: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        match self.cfg.threads {
            0 => *AUTO.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            t => t as usize,
        }
    }

    fn after_applied(&mut self, d: &DeltaIn) {
        let epoch = self.slot(d.page_id).map_or(0, |s| s.page.epoch);
        self.stats.deltas_applied += 1;
        self.event(EV_DELTA_APPLIED, d.page_id, d.id, epoch);
        self.event(EV_PAGE_CHANGED, d.page_id, d.id, epoch);
    }

    /// Phase 2 of a parallel batch: log a delta already applied to the bytes.
    fn commit_applied(&mut self, d: &DeltaIn) -> Result<()> {
        let base = self.slot(d.page_id)?.page.epoch;
        let header = d.header(base);
        self.append(header, d.mask, d.payload)?;
        self.slot_mut(d.page_id)?.page.epoch = base + 1;
        self.ids.clock.observe(d.timestamp);
        self.after_applied(d);
        Ok(())
    }

    /// Phase 1 of a parallel batch: apply each page's deltas on a worker;
    /// returns the changed-byte count of every delta, in `order` positions.
    /// With `frames` (one reservation per delta, in `order` positions, for a
    /// memory log) the worker also writes the log frame of each delta that
    /// changed its page, with the epoch it had before.
    fn parallel_apply(
        &mut self,
        ds: &[DeltaIn],
        order: &[usize],
        groups: &[(u64, usize, usize)],
        threads: usize,
        frames: &mut [Reserved],
    ) -> Result<Vec<u64>> {
        type Work<'a> = (&'a mut [u8], u64, &'a [usize], &'a mut [u64], &'a mut [Reserved]);
        let mut counts = vec![0u64; order.len()];
        let mut work: Vec<Work> = Vec::with_capacity(groups.len());
        let mut rest: &mut [u64] = &mut counts;
        let mut rest_f: &mut [Reserved] = frames;
        let mut gi = 0;
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(&(pid, a, b)) = groups.get(gi) else { break };
            if id as u64 != pid {
                continue;
            }
            let (c, r) = std::mem::take(&mut rest).split_at_mut(b - a);
            rest = r;
            let nf = (b - a).min(rest_f.len()); // 0 without frames (a file log)
            let (f, r) = std::mem::take(&mut rest_f).split_at_mut(nf);
            rest_f = r;
            if let Some(s) = slot.as_mut() {
                let page = &mut *s.page;
                let epoch = page.epoch;
                if let Some(buf) = page.cpu_mut() {
                    work.push((buf, epoch, &order[a..b], c, f));
                }
            }
            gi += 1;
        }
        // Workers pull pages from a shared queue; the calling thread works
        // too, so a failed spawn only means fewer workers.
        let queue = std::sync::Mutex::new(work.iter_mut());
        let failed = std::sync::Mutex::new(None);
        let run = || loop {
            let item = match queue.lock() {
                Ok(mut q) => q.next(),
                Err(p) => p.into_inner().next(),
            };
            let Some((buf, epoch, idxs, cs, fs)) = item else { break };
            let mut e = *epoch;
            for (k, &i) in idxs.iter().enumerate() {
                let d = &ds[i];
                cs[k] = delta::apply(d.encoding, buf, d.mask, d.payload);
                if cs[k] > 0 {
                    if let Some(f) = fs.get_mut(k) {
                        if let Err(err) = f.fill(&d.header(e), d.mask, d.payload) {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
                        }
                    }
                    e += 1;
                }
            }
        };
        let workers = threads.min(groups.len()).saturating_sub(1);
        std::thread::scope(|sc| {
            for _ in 0..workers {
                let _ = std::thread::Builder::new().spawn_scoped(sc, run);
            }
            run();
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }

    /// strict_epochs: within one page of a batch, a delta whose base epoch is
    /// older than the epoch reached by the earlier deltas is stale. Simulated
    /// on a copy so nothing is applied when one is.
    fn strict_check(&mut self, ds: &[DeltaIn], order: &[usize], groups: &[(u64, usize, usize)]) -> Result<()> {
        let mut host = std::mem::take(&mut self.scratch.host);
        let r = (|| {
            for &(pid, a, b) in groups {
                if b - a < 2 {
                    continue;
                }
                let s = self.slot(pid)?;
                host.resize(s.page.size, 0);
                s.page.read(&mut host)?;
                let mut e = s.page.epoch;
                for &i in &order[a..b] {
                    let d = &ds[i];
                    if d.base_epoch < e {
                        return Err(Error::new(
                            ErrorKind::StaleDelta,
                            format!("delta {} for page {pid} has base epoch {}, the batch brings the page to epoch {e} before it", d.id, d.base_epoch),
                        ));
                    }
                    if delta::apply(d.encoding, &mut host, d.mask, d.payload) > 0 {
                        e += 1;
                    }
                }
            }
            Ok(())
        })();
        self.scratch.host = host;
        r
    }
}
