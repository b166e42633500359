/*
 * mmsb.h — C ABI of the MMSB native library (libmmsb).
 *
 * This header is the contract between the Rust cdylib (rust/src/ffi/) and its
 * callers (the Julia package in src/ffi/, or C programs). Conventions:
 *
 *  - Every function that can fail returns int32_t: MMSB_OK (0) or a negative
 *    MMSB_ERR_* code. On failure, nothing visible changed (no page bytes, no
 *    epoch, no log record, no event, no id consumed) — except after an I/O
 *    error on the log in the middle of a batch or a propagation cycle, which
 *    keeps what it applied before the error — and a message naming
 *    the bad page / file / value can be read with mmsb_last_error_message()
 *    on the same thread, before the next MMSB call on that thread.
 *  - Handles are opaque; mmsb_state_free() is NULL-safe and the only way to
 *    free one. Rust keeps no caller memory after a call returns.
 *  - "List" calls take (buf, cap, out_n): *out_n is always set to the full
 *    count; if cap < count, nothing is written and MMSB_ERR_BUFFER_TOO_SMALL
 *    is returned, so callers can size a buffer and call again.
 *  - Strings (paths) are UTF-8 bytes plus a length, not NUL-terminated.
 *  - All integers are little-endian host integers; ids start at 1; 0 means
 *    "none".
 *  - A state may be used from several threads. Every call holds the whole
 *    state (all shards of its lock), except mmsb_page_write with
 *    MMSB_WRITE_SHARED, which writes a page beside other threads' shared
 *    writes (see there).
 */
#ifndef MMSB_H
#define MMSB_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMSB_ABI_VERSION 2

/* ---- status codes --------------------------------------------------------- */
#define MMSB_OK                      0
#define MMSB_ERR_NULL               -1  /* a required pointer was NULL            */
#define MMSB_ERR_INVALID            -2  /* bad argument value (ArgumentError)     */
#define MMSB_ERR_DIMENSION          -3  /* wrong length (DimensionMismatch)       */
#define MMSB_ERR_PAGE_NOT_FOUND     -4
#define MMSB_ERR_CYCLE              -5  /* edge would close a cycle / self loop   */
#define MMSB_ERR_HAS_DEPENDENTS     -6  /* delete of a page others depend on      */
#define MMSB_ERR_STALE_DELTA        -7  /* strict_epochs and base < page epoch    */
#define MMSB_ERR_TLOG_CORRUPT       -8  /* message names file and byte offset     */
#define MMSB_ERR_CHECKPOINT         -9  /* unreadable / invalid checkpoint        */
#define MMSB_ERR_GPU_UNAVAILABLE   -10
#define MMSB_ERR_IO                -11  /* OS error on a log / checkpoint file    */
#define MMSB_ERR_BUSY              -12  /* propagation protocol misuse            */
#define MMSB_ERR_BUFFER_TOO_SMALL  -13  /* list call: *out_n holds the needed cap */
#define MMSB_ERR_CLOSED            -14  /* the state was closed (mmsb_state_close) */
#define MMSB_ERR_INTERNAL          -99  /* a bug (caught panic); state unchanged  */

/* ---- enums (stored in the integer fields below) --------------------------- */
#define MMSB_LOC_CPU 0
#define MMSB_LOC_GPU 1

#define MMSB_DURABILITY_NONE     0  /* memory log (no tlog_path)              */
#define MMSB_DURABILITY_BUFFERED 1  /* written to the file, not synced         */
#define MMSB_DURABILITY_FSYNC    2  /* a write returns after its record synced */

#define MMSB_SOURCE_API         0
#define MMSB_SOURCE_PROPAGATION 1
#define MMSB_SOURCE_BATCH       2
#define MMSB_SOURCE_REPLAY      3

#define MMSB_ENC_DENSE  0  /* mask: bitmap, LSB-first, ceil(size/8) bytes; payload: size bytes */
#define MMSB_ENC_SPARSE 1  /* mask: (u64 start, u64 len) pairs, sorted, disjoint, non-empty;
                              payload: the masked bytes, concatenated               */

#define MMSB_RECOMPUTE_NONE        0
#define MMSB_RECOMPUTE_PASSTHROUGH 1  /* child := copy of its one parent, run natively */
#define MMSB_RECOMPUTE_CLOSURE     2  /* the caller computes (see mmsb_prop_run)        */

#define MMSB_EVENT_PAGE_CREATED     1
#define MMSB_EVENT_PAGE_DELETED     2
#define MMSB_EVENT_PAGE_INVALIDATED 3
#define MMSB_EVENT_DELTA_APPLIED    4
#define MMSB_EVENT_PAGE_CHANGED     5

#define MMSB_REC_PAGE_CREATE   1  /* page_id, aux = size, encoding = location        */
#define MMSB_REC_PAGE_DELETE   2  /* page_id                                         */
#define MMSB_REC_EDGE_ADD      3  /* page_id = parent, aux = child, encoding = kind  */
#define MMSB_REC_EDGE_REMOVE   4  /* page_id = parent, aux = child                   */
#define MMSB_REC_RECOMPUTE_SET 5  /* page_id = child, aux = kind, payload = u64 parents */
#define MMSB_REC_DELTA         6  /* all header fields; payload = mask ++ data (see mask_len) */
#define MMSB_REC_DELTA_STAMP   7  /* page_id, delta_id, base_epoch, timestamp: an id handed out
                                     by mmsb_delta_stamp (restores next ids and the clock) */
#define MMSB_REC_SNAPSHOT      8  /* aux = the checkpoint's log_seq; encoding = its format version
                                     (0 before version 2: 1); payload = checkpoint body:
                                     mmsb_checkpoint_load; replay replaces the whole state */
#define MMSB_REC_CYCLE         9  /* file logs only:
                                     encoding = 1 begin / 2 end of a propagation cycle together
                                     with the write that started it (a cycle paused for a
                                     closure page ends in a later call: see mmsb_prop_run);
                                     aux = its own seq (begin) / its begin's seq (end).
                                     Opening a log cuts off a bracket that has no end. */
#define MMSB_REC_PROP_STATE   10  /* page_id; encoding = 1 signature (a recompute ran and changed
                                     nothing; payload = u64 parent epochs), 2 stale (a failed
                                     cycle left the page stale), 3 fresh (a stale page without a
                                     recompute was visited): so that a rebuilt state skips and
                                     retries what the live one would */

#define MMSB_WRITE_PROPAGATE 1u   /* flags: run propagation after applying            */
#define MMSB_WRITE_PARALLEL  2u   /* flags (batch only): apply pages on worker threads */
#define MMSB_WRITE_DEFER_SYNC 4u  /* flags: under FSYNC, return without waiting for the
                                     records to be durable; wait with mmsb_tlog_sync     */
#define MMSB_WRITE_SHARED    8u   /* flags (mmsb_page_write only, with PROPAGATE or 0):
                                     the caller holds no lock; see mmsb_page_write       */

#define MMSB_PROP_NEED_LOCK 2     /* prop_status of a refused MMSB_WRITE_SHARED write   */
#define MMSB_DELTA_ID_PENDING UINT64_MAX  /* delta_id of a SHARED write that changed its
                                     page: the id is given when its record moves into
                                     the log (the next call that is not a SHARED write) */

#define MMSB_PROP_ENQUEUE_CHILDREN 0  /* the given pages changed: visit their children */
#define MMSB_PROP_ENQUEUE_SELF     1  /* visit the given pages themselves              */

/* ---- structs (C layout, no implicit padding) ------------------------------ */
typedef struct MmsbState MmsbState;

typedef struct {
    uint32_t abi_version;     /* must be MMSB_ABI_VERSION                        */
    uint8_t  strict_epochs;   /* 1: stale deltas raise MMSB_ERR_STALE_DELTA       */
    uint8_t  enable_gpu;
    uint8_t  durability;      /* MMSB_DURABILITY_*; NONE requires no tlog_path    */
    uint8_t  truncate;        /* 1: start empty even if tlog_path holds a log     */
    uint64_t gpu_threshold;   /* :gpu requests below this many bytes go to CPU    */
    const uint8_t *tlog_path; /* NULL: in-memory log                              */
    uint64_t tlog_path_len;
    uint32_t threads;         /* worker threads for parallel batches; 0 = auto    */
    uint32_t reserved;        /* 0                                                */
} MmsbConfig;

typedef struct {
    uint64_t records_recovered; /* log records replayed while opening            */
    uint64_t bytes_truncated;   /* cut off while opening: a torn tail and an unfinished
                                   propagation cycle (MMSB_REC_CYCLE); 0 if none  */
} MmsbRecoveryInfo;

typedef struct {
    uint64_t id;
    uint64_t size;
    uint64_t epoch;
    uint8_t  location;        /* MMSB_LOC_*                                       */
    uint8_t  recompute;       /* MMSB_RECOMPUTE_*                                 */
    uint8_t  stale;           /* 1: a failed recompute left it stale              */
    uint8_t  reserved[5];
} MmsbPageInfo;

typedef struct {
    uint64_t delta_id;        /* 0: nothing changed, nothing logged               */
    uint64_t epoch;           /* page epoch after the call                        */
    uint64_t pending_page;    /* prop_status == 1: the closure page to compute    */
    int32_t  prop_status;     /* 0: propagation done (or not asked); 1: pending   */
    uint32_t reserved;
} MmsbWriteResult;

typedef struct {
    uint64_t id;              /* from mmsb_delta_stamp                            */
    uint64_t page_id;
    uint64_t base_epoch;
    uint64_t timestamp;
    uint8_t  source;          /* MMSB_SOURCE_* but PROPAGATION (recompute results) */
    uint8_t  encoding;        /* MMSB_ENC_*                                       */
    uint8_t  reserved[6];
    const uint8_t *mask;
    uint64_t mask_len;
    const uint8_t *payload;
    uint64_t payload_len;
} MmsbDeltaDesc;

typedef struct {
    uint64_t id;              /* newly allocated delta id                         */
    uint64_t base_epoch;      /* the page's epoch now                             */
    uint64_t timestamp;       /* logical clock (never wall-clock)                 */
} MmsbDeltaStamp;

typedef struct {
    uint64_t applied;         /* deltas that changed bytes (and were logged)      */
    uint64_t pending_page;
    int32_t  prop_status;
    uint32_t reserved;
} MmsbBatchResult;

typedef struct { uint64_t parent, child, kind; } MmsbEdge;

typedef struct { uint64_t kind, page_id, delta_id, epoch; } MmsbEvent;

typedef struct {
    int32_t  status;          /* 0: cycle finished; 1: closure page pending       */
    uint32_t reserved;
    uint64_t page_id;         /* the pending page                                 */
} MmsbPropStep;

typedef struct {
    uint64_t pages;
    uint64_t page_bytes;
    uint64_t deltas_applied;
    uint64_t bytes_logged;
    uint64_t log_records;
    uint64_t recomputes_run;
    uint64_t recomputes_skipped;  /* skipped: signature unchanged               */
    uint64_t recomputes_cutoff;   /* ran, bytes unchanged: early cutoff         */
    uint64_t propagation_cycles;
    uint64_t propagation_ns;      /* total wall time inside propagation cycles  */
    uint64_t apply_samples;       /* sampled delta applications                 */
    uint64_t apply_ns;            /* total wall time of the sampled ones        */
} MmsbStats;

typedef struct {
    uint64_t seq;             /* 1-based, dense                                   */
    uint64_t kind;            /* MMSB_REC_*                                       */
    uint64_t page_id;
    uint64_t aux;
    uint64_t delta_id;
    uint64_t base_epoch;
    uint64_t timestamp;
    uint64_t source;
    uint64_t encoding;
    uint64_t mask_len;        /* DELTA: payload starts with mask_len mask bytes   */
    uint64_t payload_len;
} MmsbLogRecord;

/* ---- library ---------------------------------------------------------------- */
uint32_t mmsb_abi_version(void);
/* Copies min(cap, len) bytes of this thread's last error message; returns len. */
uint64_t mmsb_last_error_message(uint8_t *buf, uint64_t cap);
int64_t  mmsb_live_states(void);          /* states created and not yet closed  */
int32_t  mmsb_gpu_available(void);        /* 1 if a CUDA device can be used; never panics */

/* ---- state -------------------------------------------------------------------- */
/* Opens (and, with tlog_path, recovers) a state. info may be NULL. */
int32_t mmsb_state_new(const MmsbConfig *cfg, MmsbState **out, MmsbRecoveryInfo *info);
void    mmsb_state_free(MmsbState *st);   /* NULL-safe; frees pages, log, device memory */
/* Frees what the state holds (pages, graph, log: a file log is flushed first)
   but not the handle: it waits for calls in progress, and every later call
   returns MMSB_ERR_CLOSED until mmsb_state_free. Closing twice is a no-op.
   Lets a caller stop a state that other threads may still be calling. */
int32_t mmsb_state_close(MmsbState *st);
/* on = 1: until the matching on = 0, every MMSB_WRITE_SHARED write answers
   MMSB_PROP_NEED_LOCK (so a caller that reads the state in several calls
   under a lock of its own, which its writers also take when refused, sees no
   write land in between). Holds nest; on = 0 without a hold: MMSB_ERR_BUSY. */
int32_t mmsb_state_hold(MmsbState *st, uint8_t on);
/* Empties pages, graph, recomputes, signatures, events, log (a file log is
   truncated to its header) and restarts ids at 1. */
int32_t mmsb_state_reset(MmsbState *st);
int32_t mmsb_next_ids(MmsbState *st, uint64_t *next_page, uint64_t *next_delta);
int32_t mmsb_stats(MmsbState *st, MmsbStats *out);

/* ---- pages ---------------------------------------------------------------------- */
int32_t mmsb_page_create(MmsbState *st, uint64_t size, uint8_t location, MmsbPageInfo *out);
int32_t mmsb_page_delete(MmsbState *st, uint64_t id, uint8_t force);
int32_t mmsb_page_info(MmsbState *st, uint64_t id, MmsbPageInfo *out);
int32_t mmsb_page_ids(MmsbState *st, uint64_t *buf, uint64_t cap, uint64_t *out_n);
int32_t mmsb_page_read(MmsbState *st, uint64_t id, uint8_t *dst, uint64_t len);
/* Diff once, then (if anything changed) build a delta (dense or sparse by
   density), apply, bump epoch, log, record events, and with
   MMSB_WRITE_PROPAGATE run propagation (see mmsb_prop_run for prop_status).
   With MMSB_WRITE_SHARED, writes to different pages from different threads
   run at once: the write of a CPU page to a memory log holds one shard of
   the state's lock and the page's own lock (its record waits in the shard's
   lane until the next other call moves it into the log, in delta-id order).
   Other shared writes (a file log, a GPU page, or with PROPAGATE dependents
   or stale pages in a state with no closure recompute) run with the whole
   state held, like a write without SHARED. A write that would need its
   caller — events being recorded, a hold, a propagation cycle in progress,
   or (with PROPAGATE) a cycle that may reach a closure page — changes
   nothing and sets prop_status = MMSB_PROP_NEED_LOCK. */
int32_t mmsb_page_write(MmsbState *st, uint64_t id, const uint8_t *bytes, uint64_t len,
                        uint32_t flags, MmsbWriteResult *out);

/* ---- deltas --------------------------------------------------------------------- */
int32_t mmsb_delta_stamp(MmsbState *st, uint64_t page_id, MmsbDeltaStamp *out);
/* Applies one caller-built delta. Only bytes that differ count: a delta that
   changes nothing returns delta_id 0, logs nothing, keeps the epoch. */
int32_t mmsb_delta_route(MmsbState *st, const MmsbDeltaDesc *d, uint32_t flags,
                         MmsbWriteResult *out);
/* Validates all, then applies grouped by page (ascending), within a page by
   (base_epoch, id); then one propagation over every changed page. */
int32_t mmsb_delta_route_batch(MmsbState *st, const MmsbDeltaDesc *ds, uint64_t n,
                               uint32_t flags, MmsbBatchResult *out);

/* ---- graph ------------------------------------------------------------------------ */
int32_t mmsb_edge_add(MmsbState *st, uint64_t parent, uint64_t child, uint8_t kind);
int32_t mmsb_edge_remove(MmsbState *st, uint64_t parent, uint64_t child);
int32_t mmsb_page_children(MmsbState *st, uint64_t id, uint64_t *buf, uint64_t cap, uint64_t *out_n);
int32_t mmsb_page_parents(MmsbState *st, uint64_t id, uint64_t *buf, uint64_t cap, uint64_t *out_n);
int32_t mmsb_graph_topo(MmsbState *st, uint64_t *buf, uint64_t cap, uint64_t *out_n);
int32_t mmsb_graph_descendants(MmsbState *st, uint64_t id, uint64_t *buf, uint64_t cap, uint64_t *out_n);
int32_t mmsb_graph_edges(MmsbState *st, MmsbEdge *buf, uint64_t cap, uint64_t *out_n);

/* ---- recompute and propagation ---------------------------------------------------- */
/* Sets a page's recompute, adding missing parent edges (all or nothing). */
int32_t mmsb_recompute_set(MmsbState *st, uint64_t child, uint8_t kind,
                           const uint64_t *parents, uint64_t n);
int32_t mmsb_signature(MmsbState *st, uint64_t id, uint64_t *parent_ids, uint64_t *epochs,
                       uint64_t cap, uint64_t *out_n);
int32_t mmsb_prop_enqueue(MmsbState *st, const uint64_t *ids, uint64_t n, uint8_t mode);
/* Runs the cycle natively until it ends (status 0) or a closure page whose
   signature changed must be computed by the caller (status 1). While a page
   is pending (in a file log: until the mmsb_prop_run that ends the cycle),
   every call that would change the state other than mmsb_prop_submit,
   mmsb_prop_fail and mmsb_prop_run (writes, routes, batches, stamps, page,
   edge and recompute changes, enqueue, checkpoint write, replay) returns
   MMSB_ERR_BUSY and changes nothing; shared writes answer MMSB_PROP_NEED_LOCK;
   mmsb_checkpoint_load needs an empty state (MMSB_ERR_INVALID);
   mmsb_state_reset discards the cycle with everything else.
   In a file log the paused cycle and the write that started it survive a
   crash only once the cycle has ended; under MMSB_DURABILITY_FSYNC the call
   that ends it returns after its records are on disk (calls that leave it
   paused do not wait). */
int32_t mmsb_prop_run(MmsbState *st, MmsbPropStep *out);
/* The caller's bytes for the pending page; then call mmsb_prop_run again. */
int32_t mmsb_prop_submit(MmsbState *st, uint64_t page_id, const uint8_t *bytes, uint64_t len,
                         uint64_t *out_delta_id);
/* The caller's recompute failed: the pending page and every page still queued
   are marked stale (retried by the next cycle) and the cycle ends. */
int32_t mmsb_prop_fail(MmsbState *st, uint64_t page_id);

/* ---- events --------------------------------------------------------------------------- */
int32_t mmsb_events_enable(MmsbState *st, uint8_t on);  /* off: nothing is recorded */
/* Moves up to cap recorded events (oldest first) into buf; *out_n = moved. */
int32_t mmsb_events_drain(MmsbState *st, MmsbEvent *buf, uint64_t cap, uint64_t *out_n);

/* ---- log, checkpoint, replay ---------------------------------------------------------- */
int32_t mmsb_tlog_len(MmsbState *st, uint64_t *first_seq, uint64_t *next_seq);
/* Waits until every log record up to seq is on disk (FSYNC; returns at once
   otherwise). With MMSB_WRITE_DEFER_SYNC, callers release their own locks
   first, so concurrent writers share one sync (group commit). */
int32_t mmsb_tlog_sync(MmsbState *st, uint64_t seq);
int32_t mmsb_tlog_entry(MmsbState *st, uint64_t seq, MmsbLogRecord *hdr,
                        uint8_t *payload, uint64_t cap, uint64_t *out_len);
int32_t mmsb_checkpoint_write(MmsbState *st, const uint8_t *path, uint64_t path_len);
/* st must be empty (fresh or reset). Restores it and logs it as one MMSB_REC_SNAPSHOT
   record, so st's log alone rebuilds st; later records replay on top of it. */
int32_t mmsb_checkpoint_load(MmsbState *st, const uint8_t *path, uint64_t path_len);
/* Rolls st back to the log prefix ending at seq (the log is cut there too). */
int32_t mmsb_replay(MmsbState *st, uint64_t upto_seq);
/* A new in-memory state with every page as it was at epoch min(epoch, current). */
int32_t mmsb_replay_to_epoch(MmsbState *st, uint64_t epoch, MmsbState **out);

#ifdef __cplusplus
}
#endif
#endif /* MMSB_H */
