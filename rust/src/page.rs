//! Pages: fixed-size byte buffers with an id, an epoch and a location.
//!
//! The epoch is 0 at creation and rises by one for every applied delta that
//! changed at least one byte. CPU bytes live in a zero-initialised heap
//! buffer (allocated lazily-zeroed through `alloc_zeroed`, so a huge page
//! costs nothing until touched, and an impossible size is an error rather
//! than an abort); GPU bytes in a [`gpu::DevicePage`]. The CPU path costs
//! one `match` on [`PageData`].

use crate::error::{Error, ErrorKind, Result};
use crate::gpu;

pub const LOC_CPU: u8 = 0;
pub const LOC_GPU: u8 = 1;

pub enum PageData {
    Cpu(PageBuf),
    Gpu(gpu::DevicePage),
}

pub struct Page {
    pub id: u64,
    pub size: usize,
    pub epoch: u64,
    pub data: PageData,
}

/// A zero-filled buffer of `size` (> 0) bytes, or `Invalid` if it cannot be
/// allocated.
pub fn alloc_zeroed(size: usize) -> Result<Box<[u8]>> {
    let fail = || Error::new(ErrorKind::Invalid, format!("cannot allocate a page of {size} bytes"));
    if size == 0 || size > isize::MAX as usize {
        return Err(fail());
    }
    let layout = std::alloc::Layout::array::<u8>(size).map_err(|_| fail())?;
    // SAFETY: layout has non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(fail());
    }
    // SAFETY: ptr was allocated by the global allocator with the layout of a
    // `[u8; size]` and is zero-initialised, which is a valid `[u8]`; the Box
    // takes sole ownership and frees it with the same layout.
    Ok(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, size)) })
}

/// Alignment of CPU page bytes: two pages never share a cache line (nor an
/// adjacent-line prefetch pair), so writers of different pages on different
/// threads do not slow each other down.
pub const PAGE_ALIGN: usize = 128;

/// The bytes of a CPU page: a zero-initialised heap buffer aligned to
/// [`PAGE_ALIGN`].
pub struct PageBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: PageBuf owns its buffer exclusively (like Box<[u8]>).
unsafe impl Send for PageBuf {}
// SAFETY: shared access only reads (through Deref), like &[u8].
unsafe impl Sync for PageBuf {}

impl PageBuf {
    fn layout(size: usize) -> Result<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(size, PAGE_ALIGN)
            .map_err(|_| Error::new(ErrorKind::Invalid, format!("cannot allocate a page of {size} bytes")))
    }

    /// A zeroed buffer of `size` bytes (lazily zeroed by the OS for large
    /// sizes); an impossible size is an error, not an abort.
    pub fn zeroed(size: usize) -> Result<PageBuf> {
        if size == 0 {
            return Err(Error::new(ErrorKind::Invalid, "cannot allocate a page of 0 bytes"));
        }
        let layout = Self::layout(size)?;
        // SAFETY: layout has a non-zero size (checked above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(p)
            .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("cannot allocate a page of {size} bytes")))?;
        Ok(PageBuf { ptr, len: size })
    }
}

impl std::ops::Deref for PageBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid, initialised (zeroed) memory of len bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for PageBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if let Ok(layout) = Self::layout(self.len) {
            // SAFETY: allocated in `zeroed` with this same layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

/// A page in the state's page table, with a small lock of its own.
///
/// While the state is held exclusively (every shard locked, see
/// `State::exclusive`), the page is used through `Deref`/`DerefMut` like a
/// plain [`Page`]. The shared write path (`State::page_write_shared`) holds
/// only one shard, so several threads may hold `&PageCell` at once: there the
/// page is reached only through [`PageCell::lock`].
#[repr(align(128))]
pub struct PageCell {
    locked: std::sync::atomic::AtomicBool,
    page: std::cell::UnsafeCell<Page>,
}

// SAFETY: the Page inside is reached either with the whole state held
// exclusively (no other reference exists) or through `lock`, which admits one
// thread at a time; Page itself is Send.
unsafe impl Sync for PageCell {}

impl PageCell {
    pub fn new(page: Page) -> PageCell {
        PageCell { locked: std::sync::atomic::AtomicBool::new(false), page: std::cell::UnsafeCell::new(page) }
    }

    /// Locks this page against other shared-path writers.
    #[inline]
    pub fn lock(&self) -> PageGuard<'_> {
        use std::sync::atomic::Ordering;
        let mut spins = 0u32;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        PageGuard { cell: self }
    }
}

impl std::ops::Deref for PageCell {
    type Target = Page;
    #[inline]
    fn deref(&self) -> &Page {
        // SAFETY: only used with the state held exclusively (see the type's
        // docs): no shared-path writer, and so no `PageGuard`, exists.
        unsafe { &*self.page.get() }
    }
}

impl std::ops::DerefMut for PageCell {
    #[inline]
    fn deref_mut(&mut self) -> &mut Page {
        self.page.get_mut()
    }
}

pub struct PageGuard<'a> {
    cell: &'a PageCell,
}

impl std::ops::Deref for PageGuard<'_> {
    type Target = Page;
    #[inline]
    fn deref(&self) -> &Page {
        // SAFETY: the guard holds the page's lock: no other reference to the Page is live.
        unsafe { &*self.cell.page.get() }
    }
}

impl std::ops::DerefMut for PageGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Page {
        // SAFETY: as in deref; the guard is borrowed mutably.
        unsafe { &mut *self.cell.page.get() }
    }
}

impl Drop for PageGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.cell.locked.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Page {
    pub fn new_cpu(id: u64, size: usize) -> Result<Page> {
        Ok(Page { id, size, epoch: 0, data: PageData::Cpu(PageBuf::zeroed(size)?) })
    }

    pub fn new_gpu(id: u64, size: usize) -> Result<Page> {
        Ok(Page { id, size, epoch: 0, data: PageData::Gpu(gpu::DevicePage::new(size)?) })
    }

    /// `MMSB_LOC_*` of where the bytes live.
    pub fn location(&self) -> u8 {
        match self.data {
            PageData::Cpu(_) => LOC_CPU,
            PageData::Gpu(_) => LOC_GPU,
        }
    }

    #[inline]
    pub fn cpu(&self) -> Option<&[u8]> {
        match &self.data {
            PageData::Cpu(b) => Some(b),
            PageData::Gpu(_) => None,
        }
    }

    #[inline]
    pub fn cpu_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.data {
            PageData::Cpu(b) => Some(b),
            PageData::Gpu(_) => None,
        }
    }

    /// Copies the page into `dst` (exactly `size` bytes).
    pub fn read(&self, dst: &mut [u8]) -> Result<()> {
        if dst.len() != self.size {
            return Err(Error::new(
                ErrorKind::Dimension,
                format!("read of page {}: buffer has {} bytes, page size is {}", self.id, dst.len(), self.size),
            ));
        }
        match &self.data {
            PageData::Cpu(b) => {
                dst.copy_from_slice(b);
                Ok(())
            }
            PageData::Gpu(d) => d.read(dst),
        }
    }

    /// The bytes as an owned vector (snapshots, replay).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        match &self.data {
            PageData::Cpu(b) => Ok(b.to_vec()),
            PageData::Gpu(d) => {
                let mut v = vec![0u8; self.size];
                d.read(&mut v)?;
                Ok(v)
            }
        }
    }

    /// Applies a validated delta; returns bytes that changed. The epoch is
    /// left to the caller.
    pub fn apply(&mut self, encoding: u8, mask: &[u8], payload: &[u8]) -> Result<u64> {
        match &mut self.data {
            PageData::Cpu(b) => Ok(crate::delta::apply(encoding, b, mask, payload)),
            PageData::Gpu(d) => {
                if encoding == crate::delta::ENC_SPARSE {
                    let ranges: Vec<(u64, u64)> = crate::delta::sparse_ranges(mask).collect();
                    d.apply_sparse(&ranges, payload)
                } else {
                    d.apply_dense(mask, payload)
                }
            }
        }
    }

    /// Overwrites the whole content (restore).
    pub fn set_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != self.size {
            return Err(Error::new(
                ErrorKind::Dimension,
                format!("page {}: {} bytes given, page size is {}", self.id, bytes.len(), self.size),
            ));
        }
        match &mut self.data {
            PageData::Cpu(b) => {
                b.copy_from_slice(bytes);
                Ok(())
            }
            PageData::Gpu(d) => {
                let mut mask = Vec::new();
                d.write_diff(bytes, &mut mask).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_page_zero_filled_and_reads() {
        let mut p = Page::new_cpu(3, 100).unwrap();
        assert_eq!(p.location(), LOC_CPU);
        assert_eq!(p.epoch, 0);
        let mut b = vec![1u8; 100];
        p.read(&mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(p.read(&mut [0u8; 5]).unwrap_err().kind, ErrorKind::Dimension);
        let mask = vec![0xFFu8; 13];
        let mut mask = mask;
        mask[12] = 0x0F;
        assert_eq!(p.apply(0, &mask, &[7u8; 100]).unwrap(), 100);
        assert_eq!(p.to_vec().unwrap(), vec![7u8; 100]);
    }

    #[test]
    fn impossible_sizes_are_errors() {
        assert_eq!(alloc_zeroed(0).unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(alloc_zeroed(usize::MAX).unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(alloc_zeroed(1 << 62).unwrap_err().kind, ErrorKind::Invalid);
    }
}
