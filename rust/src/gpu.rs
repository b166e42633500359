//! GPU pages: page bytes in CUDA device memory, deltas applied by kernels.
//!
//! With feature `gpu` (default) the implementation in `gpu/cuda.rs` loads the
//! CUDA driver and NVRTC at run time through cudarc; without it, or on a
//! machine with no driver or no device, [`available`] is false and every
//! constructor returns `ErrorKind::GpuUnavailable`. Nothing here panics when
//! CUDA is missing: the driver library is probed with a plain `dlopen` before
//! any CUDA call, and initialisation runs under `catch_unwind` as a last line
//! of defence. Setting `MMSB_DISABLE_GPU=1` hides the device.
//!
//! Semantics shared with the CPU path: bitmaps are LSB-first (bit `i` of mask
//! byte `j` is page byte `8*j+i`), counts are the number of bytes whose value
//! actually changed. Sparse ranges are applied in order; overlapping ranges
//! behave like a sequential loop (later ranges win, each range's changes count).
//! Where the host waits for the device is listed in `gpu/cuda.rs` and docs/gpu.md.

use crate::error::{Error, ErrorKind, Result};

#[cfg(feature = "gpu")]
mod cuda;
#[cfg(feature = "gpu")]
mod staging;
#[cfg(test)]
mod tests;

/// True when a CUDA device can be used (driver, device and NVRTC present and
/// the kernels compiled). The first call initialises; later calls are cheap.
pub fn available() -> bool {
    #[cfg(feature = "gpu")]
    {
        cuda::available()
    }
    #[cfg(not(feature = "gpu"))]
    {
        false
    }
}

/// Why the GPU cannot be used, or `None` when it can.
pub fn unavailable_reason() -> Option<String> {
    #[cfg(feature = "gpu")]
    {
        cuda::reason()
    }
    #[cfg(not(feature = "gpu"))]
    {
        Some("built without the `gpu` feature".into())
    }
}

/// Name of the CUDA device in use, if any.
pub fn device_name() -> Option<String> {
    #[cfg(feature = "gpu")]
    {
        cuda::gpu().ok().map(|g| g.name.clone())
    }
    #[cfg(not(feature = "gpu"))]
    {
        None
    }
}

#[cfg(feature = "gpu")]
type Inner = cuda::Page;
#[cfg(not(feature = "gpu"))]
enum Inner {}

/// A page's bytes in device memory. `Send`; the memory is freed on drop.
pub struct DevicePage {
    inner: Inner,
}

fn dim(what: &str, got: usize, want: usize) -> Error {
    Error::new(ErrorKind::Dimension, format!("{what}: got {got} bytes, expected {want}"))
}

impl DevicePage {
    /// A zero-filled device page of `size` bytes; `GpuUnavailable` without a device.
    pub fn new(size: usize) -> Result<DevicePage> {
        #[cfg(feature = "gpu")]
        {
            Ok(DevicePage { inner: cuda::Page::new(size)? })
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = size;
            Err(Error::new(ErrorKind::GpuUnavailable, "GPU unavailable: built without the `gpu` feature"))
        }
    }

    pub fn size(&self) -> usize {
        #[cfg(feature = "gpu")]
        {
            self.inner.size()
        }
        #[cfg(not(feature = "gpu"))]
        {
            match self.inner {}
        }
    }

    /// Copies the page into `dst` (`len == size`); waits for all queued work.
    pub fn read(&self, dst: &mut [u8]) -> Result<()> {
        if dst.len() != self.size() {
            return Err(dim("GPU page read buffer", dst.len(), self.size()));
        }
        #[cfg(feature = "gpu")]
        {
            self.inner.read(dst)
        }
        #[cfg(not(feature = "gpu"))]
        {
            match self.inner {}
        }
    }

    /// Diffs `new` (len == size) against the page on the device, writes it,
    /// and returns the changed-byte count; `mask_out` gets the LSB-first
    /// change bitmap (`ceil(size/8)` bytes).
    pub fn write_diff(&mut self, new: &[u8], mask_out: &mut Vec<u8>) -> Result<u64> {
        if new.len() != self.size() {
            return Err(dim("GPU page write", new.len(), self.size()));
        }
        #[cfg(feature = "gpu")]
        {
            self.inner.write_diff(new, mask_out)
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = mask_out;
            match self.inner {}
        }
    }

    /// Applies a dense delta (bitmap of `ceil(size/8)` bytes + full-size
    /// payload); returns the number of bytes that actually changed. Mask bits
    /// past `size` are ignored.
    pub fn apply_dense(&mut self, mask: &[u8], payload: &[u8]) -> Result<u64> {
        let size = self.size();
        if mask.len() != size.div_ceil(8) {
            return Err(dim("dense delta mask", mask.len(), size.div_ceil(8)));
        }
        if payload.len() != size {
            return Err(dim("dense delta payload", payload.len(), size));
        }
        #[cfg(feature = "gpu")]
        {
            self.inner.apply_dense(mask, payload)
        }
        #[cfg(not(feature = "gpu"))]
        {
            match self.inner {}
        }
    }

    /// Applies `(start, len)` ranges with their bytes concatenated in `data`;
    /// returns the number of bytes that changed.
    pub fn apply_sparse(&mut self, ranges: &[(u64, u64)], data: &[u8]) -> Result<u64> {
        let size = self.size() as u64;
        let mut total = 0u64;
        for &(start, len) in ranges {
            let end = start.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
                Error::new(
                    ErrorKind::Dimension,
                    format!("sparse range ({start}, {len}) lies outside the {size}-byte page"),
                )
            })?;
            let _ = end;
            total += len; // cannot overflow: each len <= size
        }
        if total != data.len() as u64 {
            return Err(Error::new(
                ErrorKind::Dimension,
                format!("sparse delta: ranges cover {total} bytes but data has {}", data.len()),
            ));
        }
        #[cfg(feature = "gpu")]
        {
            self.inner.apply_sparse(ranges, data)
        }
        #[cfg(not(feature = "gpu"))]
        {
            match self.inner {}
        }
    }

    /// Passthrough on the device: `self := src` (same size); returns the
    /// changed-byte count and fills `mask_out` with the change bitmap.
    pub fn copy_from(&mut self, src: &DevicePage, mask_out: &mut Vec<u8>) -> Result<u64> {
        if src.size() != self.size() {
            return Err(dim("GPU page copy source", src.size(), self.size()));
        }
        #[cfg(feature = "gpu")]
        {
            self.inner.copy_from(&src.inner, mask_out)
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = mask_out;
            match self.inner {}
        }
    }
}

impl std::fmt::Debug for DevicePage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePage({} bytes)", self.size())
    }
}
