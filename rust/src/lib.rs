//! MMSB native core: fixed-size byte pages, byte-level deltas, the dependency
//! graph and its propagation scheduler, the transaction log, checkpoints and
//! GPU pages, exposed to Julia (and C) through the ABI in `include/mmsb.h`.
//!
//! Modules are listed in dependency order; only `ffi` knows about C types.

pub mod error;
pub mod ids;
pub mod diff;
pub mod delta;
pub mod page;
pub mod graph;
pub mod tlog;
pub mod checkpoint;
pub mod gpu;
pub mod propagate;
pub mod lanes;
pub mod state;
pub mod batch;
pub mod persist;
pub mod ffi;
