//! Error kinds shared by every module; `ffi` maps them to the stable
//! `MMSB_ERR_*` status codes of `include/mmsb.h`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Null,
    Invalid,
    Dimension,
    PageNotFound,
    Cycle,
    HasDependents,
    StaleDelta,
    TLogCorrupt,
    Checkpoint,
    GpuUnavailable,
    Io,
    Busy,
    BufferTooSmall,
    /// The state was closed (`mmsb_state_close`); only freeing it is left.
    Closed,
    Internal,
}

impl ErrorKind {
    /// The `MMSB_ERR_*` status code of this kind.
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::Null => -1,
            ErrorKind::Invalid => -2,
            ErrorKind::Dimension => -3,
            ErrorKind::PageNotFound => -4,
            ErrorKind::Cycle => -5,
            ErrorKind::HasDependents => -6,
            ErrorKind::StaleDelta => -7,
            ErrorKind::TLogCorrupt => -8,
            ErrorKind::Checkpoint => -9,
            ErrorKind::GpuUnavailable => -10,
            ErrorKind::Io => -11,
            ErrorKind::Busy => -12,
            ErrorKind::BufferTooSmall => -13,
            ErrorKind::Closed => -14,
            ErrorKind::Internal => -99,
        }
    }
}

/// An error with a message that names the page, file or value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error { kind, msg: msg.into() }
    }

    pub fn code(&self) -> i32 {
        self.kind.code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, e.to_string())
    }
}
