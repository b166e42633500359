//! Checkpoint files: a snapshot of pages, epochs, next ids, graph and
//! recompute registrations, written atomically (temp file, fsync, rename,
//! directory fsync). Format: `docs/tlog_format.md`.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// One page in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapPage {
    pub id: u64,
    pub size: u64,
    pub epoch: u64,
    /// MMSB_LOC_*
    pub location: u8,
    /// MMSB_RECOMPUTE_*; CLOSURE is stored but restored as NONE.
    pub recompute: u8,
    /// Declared recompute parents.
    pub parents: Vec<u64>,
    /// The page's bytes; `bytes.len() == size`.
    pub bytes: Vec<u8>,
}

/// A whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub next_page_id: u64,
    pub next_delta_id: u64,
    pub clock: u64,
    /// Last log seq included in this snapshot.
    pub log_seq: u64,
    pub pages: Vec<SnapPage>,
    /// (parent, child, kind)
    pub edges: Vec<(u64, u64, u8)>,
    /// Stored recompute signatures: (page id, [(parent id, parent epoch)]).
    pub signatures: Vec<(u64, Vec<(u64, u64)>)>,
}

/// Writes `snap` to `path` atomically.
pub fn write(path: &Path, _snap: &Snapshot) -> Result<()> {
    Err(Error::new(ErrorKind::Checkpoint, format!("checkpoint {}: not implemented yet", path.display())))
}

/// Reads and validates a checkpoint.
pub fn read(path: &Path) -> Result<Snapshot> {
    Err(Error::new(ErrorKind::Checkpoint, format!("checkpoint {}: not implemented yet", path.display())))
}
