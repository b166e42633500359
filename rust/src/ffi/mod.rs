//! The C boundary (`include/mmsb.h`). Every export runs through [`boundary`]:
//! it clears this thread's last error, runs the body under `catch_unwind`
//! (the last line of defence: no panic is reachable from caller input by
//! design), and maps an `Err` to its status code, keeping the message for
//! `mmsb_last_error_message`. Pointers are checked for NULL and lengths
//! before any slice is built; the state is only touched after every
//! argument passed its checks.

mod exports;
pub mod types;

pub use exports::*;
pub use types::*;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind, Result};
use crate::state::State;

pub const MMSB_ABI_VERSION: u32 = 2;
/// `MmsbConfig::durability`: memory log, file log, file log synced per write.
pub const DURABILITY_NONE: u8 = 0;
pub const DURABILITY_BUFFERED: u8 = 1;
pub const DURABILITY_FSYNC: u8 = 2;

thread_local! {
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_last_error(msg: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend_from_slice(msg.as_bytes());
    });
}

fn clear_last_error() {
    LAST_ERROR.with(|e| e.borrow_mut().clear());
}

/// Copies this thread's last error message into `buf` (up to `cap` bytes);
/// returns its full length.
pub(crate) fn copy_last_error(buf: *mut u8, cap: u64) -> u64 {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        let n = (e.len() as u64).min(cap) as usize;
        if n > 0 && !buf.is_null() {
            // SAFETY: the caller guarantees `buf` is valid for `cap` bytes and
            // n <= cap; the source is our own buffer, which cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), buf, n) };
        }
        e.len() as u64
    })
}

/// Runs one export body: status code out, message kept on error.
#[inline]
pub(crate) fn boundary(f: impl FnOnce() -> Result<()>) -> i32 {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.code()
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("internal error (a bug in libmmsb): {what}"));
            ErrorKind::Internal.code()
        }
    }
}

fn null(what: &str) -> Error {
    Error::new(ErrorKind::Null, format!("{what} is NULL"))
}

/// # Safety
/// `st` is NULL or a handle from `mmsb_state_new` not yet freed.
#[inline]
pub(crate) unsafe fn state<'a>(st: *mut State) -> Result<&'a State> {
    // SAFETY: per the contract above, a non-NULL `st` points at a live State;
    // State is Sync (all access goes through its mutex).
    unsafe { st.as_ref() }.ok_or_else(|| null("state handle"))
}

/// `n` values of `T` as a slice length: their byte size must fit in `isize`.
fn checked_count<T>(n: u64, what: &str, noun: &str) -> Result<usize> {
    usize::try_from(n)
        .ok()
        .filter(|&k| k.checked_mul(std::mem::size_of::<T>()).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("{what}: {noun} {n} is too large")))
}

/// # Safety
/// A non-NULL `p` is valid for reads of `len` bytes for the call.
#[inline]
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: u64, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(what));
    }
    let n = checked_count::<u8>(len, what, "length")?;
    // SAFETY: p is non-NULL and, per the contract, valid for n bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// # Safety
/// A non-NULL `p` is valid for writes of `len` bytes for the call.
#[inline]
pub(crate) unsafe fn bytes_mut<'a>(p: *mut u8, len: u64, what: &str) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(null(what));
    }
    let n = checked_count::<u8>(len, what, "length")?;
    // SAFETY: p is non-NULL and, per the contract, valid for n writable bytes
    // that nothing else accesses during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// # Safety
/// A non-NULL `p` is valid for reads of `n` values of `T`.
#[inline]
pub(crate) unsafe fn items<'a, T>(p: *const T, n: u64, what: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(what));
    }
    let n = checked_count::<T>(n, what, "count")?;
    // SAFETY: p is non-NULL and, per the contract, valid for n values.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// # Safety
/// A non-NULL `p` is valid for a write of one `T`.
#[inline]
pub(crate) unsafe fn out<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: per the contract, a non-NULL p is valid and exclusively ours.
    unsafe { p.as_mut() }.ok_or_else(|| null(what))
}

/// Checks the (buf, cap, out_n) triple of a list call before any work.
///
/// # Safety
/// As for [`out`]; `buf` is valid for `cap` values when non-NULL.
pub(crate) unsafe fn list_args<'a, T>(buf: *mut T, cap: u64, out_n: *mut u64) -> Result<(&'a mut u64, *mut T, u64)> {
    // SAFETY: forwarded contract.
    let n = unsafe { out(out_n, "out_n") }?;
    if cap > 0 && buf.is_null() {
        return Err(null("buf"));
    }
    Ok((n, buf, cap))
}

/// Writes a list result: `*out_n` = full count; BUFFER_TOO_SMALL (nothing
/// written) when it does not fit.
///
/// # Safety
/// `buf` is valid for `cap` values of `T` when `cap > 0` (checked non-NULL).
pub(crate) unsafe fn write_list<T: Copy>(buf: *mut T, cap: u64, out_n: &mut u64, src: &[T]) -> Result<()> {
    *out_n = src.len() as u64;
    if src.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("buffer holds {cap} entries, {} needed", src.len()),
        ));
    }
    if !src.is_empty() {
        // SAFETY: buf is non-NULL (cap > 0, checked by list_args) and valid
        // for cap >= src.len() values; src is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len()) };
    }
    Ok(())
}

/// A path argument: UTF-8 bytes + length.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn path_arg(p: *const u8, len: u64) -> Result<std::path::PathBuf> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(p, len, "path") }?;
    if p.is_null() {
        return Err(null("path"));
    }
    if b.is_empty() {
        return Err(Error::new(ErrorKind::Invalid, "path is empty"));
    }
    let s = std::str::from_utf8(b).map_err(|_| Error::new(ErrorKind::Invalid, "path is not valid UTF-8"))?;
    Ok(std::path::PathBuf::from(s))
}
