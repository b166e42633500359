//! One-pass, word-wide diff of new bytes against a page.
//!
//! The page is processed in 64-byte blocks; each block yields one 64-bit word
//! of the change bitmap (bit `i` = byte `i` differs, LSB-first, the same
//! layout as `MMSB_ENC_DENSE` masks). On x86_64 a block is four SSE2
//! compare + movemask steps (SSE2 is baseline there), or two AVX2 steps
//! when the CPU has AVX2 (detected at run time); elsewhere it is eight
//! SWAR steps on `u64` words. All kernels are property-tested equal to the
//! scalar reference. The same pass counts changed bytes and the
//! number of runs (maximal ranges of changed bytes), so the encoding can be
//! chosen without a second pass over the data:
//!
//! **Density threshold.** A delta is encoded sparse iff its sparse encoding is
//! smaller than its dense one: `16 * runs + changed < ceil(size/8) + size`
//! (16 bytes per `(start, len)` pair plus the changed bytes, against a bitmap
//! plus the full payload). For a 1 KiB page that means up to ~70 scattered
//! changed bytes (or any number in a few long runs) go sparse.
//!
//! A scalar reference ([`diff_scalar`], [`ranges_scalar`]) exists for tests.

/// Bitmap of changed bytes in one 64-byte block (bit i = byte i differs).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn block_mask(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
    let mut m: u64 = 0;
    let mut k = 0;
    while k < 4 {
        // SAFETY: SSE2 is part of the x86_64 baseline. Both pointers point at
        // 16 in-bounds bytes of 64-byte arrays (k < 4); loadu has no
        // alignment requirement.
        let eq = unsafe {
            let va = _mm_loadu_si128(a.as_ptr().add(16 * k) as *const __m128i);
            let vb = _mm_loadu_si128(b.as_ptr().add(16 * k) as *const __m128i);
            _mm_movemask_epi8(_mm_cmpeq_epi8(va, vb)) as u32 as u64
        };
        m |= (!eq & 0xFFFF) << (16 * k);
        k += 1;
    }
    m
}

/// Bitmap of changed bytes in one 64-byte block (bit i = byte i differs).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn block_mask(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    block_mask_swar(a, b)
}

/// AVX2 version of [`block_mask`]: two 32-byte compares.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn block_mask_avx2(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{__m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8};
    // SAFETY: AVX2 is available (caller contract); each pointer addresses
    // 32 in-bounds bytes of a 64-byte array; loadu needs no alignment.
    unsafe {
        let lo = _mm256_movemask_epi8(_mm256_cmpeq_epi8(
            _mm256_loadu_si256(a.as_ptr() as *const __m256i),
            _mm256_loadu_si256(b.as_ptr() as *const __m256i),
        )) as u32 as u64;
        let hi = _mm256_movemask_epi8(_mm256_cmpeq_epi8(
            _mm256_loadu_si256(a.as_ptr().add(32) as *const __m256i),
            _mm256_loadu_si256(b.as_ptr().add(32) as *const __m256i),
        )) as u32 as u64;
        !(lo | (hi << 32))
    }
}

/// Whether the AVX2 kernels can be used (std caches the CPUID probe).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which block kernel a diff uses (tests force each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2 if available, else the baseline.
    Auto,
    /// SSE2 on x86_64, SWAR elsewhere.
    Baseline,
    /// Portable `u64` SWAR.
    Swar,
}

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline(always)]
pub(crate) fn load64(a: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&a[at..at + 8]);
    u64::from_le_bytes(w)
}

/// High bit of every nonzero byte of `x`.
#[inline(always)]
pub fn nonzero_bytes(x: u64) -> u64 {
    (((x & LO7).wrapping_add(LO7)) | x) & HI
}

/// Packs the high bit of each byte (`t & HI`) into 8 bits, byte 0 -> bit 0.
#[inline(always)]
pub fn movemask64(t: u64) -> u64 {
    (t & HI).wrapping_mul(0x0002_0408_1020_4081) >> 56
}

/// Portable SWAR version of [`block_mask`]: eight `u64` XOR steps.
#[inline(always)]
pub fn block_mask_swar(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    let mut m = 0u64;
    let mut k = 0;
    while k < 8 {
        let x = load64(a, 8 * k) ^ load64(b, 8 * k);
        m |= movemask64(nonzero_bytes(x)) << (8 * k);
        k += 1;
    }
    m
}

/// Result of one diff pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffSummary {
    /// Bytes that differ.
    pub changed: u64,
    /// Maximal runs of differing bytes.
    pub runs: u64,
}

impl DiffSummary {
    /// Whether the sparse encoding is the smaller one (see module docs).
    #[inline]
    pub fn prefer_sparse(&self, size: u64) -> bool {
        self.runs.saturating_mul(16).saturating_add(self.changed) < size.div_ceil(8) + size
    }
}

#[inline(always)]
fn as_block(s: &[u8]) -> Option<&[u8; 64]> {
    <&[u8; 64]>::try_from(s).ok()
}

/// Diffs `new` against `old` (equal lengths; extra bytes of the longer one
/// are ignored) in one pass. `bitmap` is resized to `ceil(n/8)` bytes and
/// receives the change bitmap. Returns changed bytes and runs.
#[inline]
pub fn diff_bitmap(old: &[u8], new: &[u8], bitmap: &mut Vec<u8>) -> DiffSummary {
    diff_bitmap_with(Kernel::Auto, old, new, bitmap)
}

/// [`diff_bitmap`] with a chosen block kernel.
pub fn diff_bitmap_with(kernel: Kernel, old: &[u8], new: &[u8], bitmap: &mut Vec<u8>) -> DiffSummary {
    let n = old.len().min(new.len());
    bitmap.clear();
    bitmap.resize(n.div_ceil(8), 0);
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Auto if has_avx2() => {
            // SAFETY: AVX2 is available (checked just above).
            unsafe { diff_avx2(&old[..n], &new[..n], bitmap) }
        }
        Kernel::Auto | Kernel::Baseline => diff_loop(&old[..n], &new[..n], bitmap, block_mask),
        Kernel::Swar => diff_loop(&old[..n], &new[..n], bitmap, block_mask_swar),
    }
}

/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn diff_avx2(old: &[u8], new: &[u8], bitmap: &mut [u8]) -> DiffSummary {
    // SAFETY: AVX2 is available (this function's contract).
    diff_loop(old, new, bitmap, |a, b| unsafe { block_mask_avx2(a, b) })
}

/// The one-pass loop over equal-length `old`/`new`; `bitmap` holds
/// `ceil(n/8)` zero bytes.
#[inline(always)]
fn diff_loop(old: &[u8], new: &[u8], bitmap: &mut [u8], block: impl Fn(&[u8; 64], &[u8; 64]) -> u64) -> DiffSummary {
    let n = old.len().min(new.len());
    let mut changed = 0u64;
    let mut runs = 0u64;
    let mut carry = 0u64; // 1 if the byte before the current block changed
    let full = n / 64;
    let (bm_full, bm_tail) = bitmap.split_at_mut((full * 8).min(bitmap.len()));
    for ((ca, cb), out) in old
        .chunks_exact(64)
        .zip(new.chunks_exact(64))
        .zip(bm_full.chunks_exact_mut(8))
    {
        let (Some(a), Some(b)) = (as_block(ca), as_block(cb)) else {
            continue;
        };
        let m = block(a, b);
        out.copy_from_slice(&m.to_le_bytes());
        changed += m.count_ones() as u64;
        runs += (m & !((m << 1) | carry)).count_ones() as u64;
        carry = m >> 63;
    }
    let tail = n - full * 64;
    if tail > 0 {
        let mut m = 0u64;
        for (i, (x, y)) in old[full * 64..n].iter().zip(&new[full * 64..n]).enumerate() {
            m |= ((x != y) as u64) << i;
        }
        changed += m.count_ones() as u64;
        runs += (m & !((m << 1) | carry)).count_ones() as u64;
        let bytes = m.to_le_bytes();
        let k = bm_tail.len().min(8);
        bm_tail[..k].copy_from_slice(&bytes[..k]);
    }
    DiffSummary { changed, runs }
}

/// Number of differing bytes between `a` and `b` (equal lengths).
pub fn count_diff(a: &[u8], b: &[u8]) -> u64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut changed = 0u64;
    for (ca, cb) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
        if let (Some(x), Some(y)) = (as_block(ca), as_block(cb)) {
            changed += block_mask(x, y).count_ones() as u64;
        }
    }
    let full = n / 64 * 64;
    changed + a[full..].iter().zip(&b[full..]).filter(|(x, y)| x != y).count() as u64
}

/// Calls `f(start, len)` for every run of set bits in an LSB-first bitmap
/// covering `n` bytes, in ascending order. Work is proportional to the
/// bitmap words plus the runs, not to the bytes.
#[inline]
pub fn for_each_run(bitmap: &[u8], n: usize, mut f: impl FnMut(usize, usize)) {
    let mut open: Option<usize> = None; // start of a run continuing across words
    let words = bitmap.chunks_exact(8);
    let tail = words.remainder();
    // Whole words load directly (a variable-length copy into a buffer
    // compiled to a memcpy call per word); the short tail word is padded.
    let tail_word = (!tail.is_empty()).then(|| {
        let mut wb = [0u8; 8];
        wb[..tail.len()].copy_from_slice(tail);
        u64::from_le_bytes(wb)
    });
    let all = words.map(|c| {
        let mut wb = [0u8; 8];
        wb.copy_from_slice(c);
        u64::from_le_bytes(wb)
    });
    for (wi, mut w) in all.chain(tail_word).enumerate() {
        let base = wi * 64;
        let limit = n.saturating_sub(base).min(64);
        if limit < 64 {
            w &= (1u64 << limit) - 1;
        }
        if let Some(s) = open {
            let ones = w.trailing_ones();
            if ones == 64 {
                continue;
            }
            f(s, base + ones as usize - s);
            open = None;
            w &= !0u64 << ones;
        }
        while w != 0 {
            let tz = w.trailing_zeros();
            let ones = (w >> tz).trailing_ones();
            let end = tz + ones;
            if end == 64 {
                open = Some(base + tz as usize);
                break;
            }
            f(base + tz as usize, ones as usize);
            w &= !0u64 << end;
        }
    }
    if let Some(s) = open {
        f(s, n - s);
    }
}

/// Builds the sparse encoding of a diff: `mask` receives the `(start, len)`
/// pairs as little-endian `u64`s, `data` the changed bytes of `new`.
/// `sum` (from the same diff) sizes both buffers up front.
pub fn encode_sparse(bitmap: &[u8], new: &[u8], sum: DiffSummary, mask: &mut Vec<u8>, data: &mut Vec<u8>) {
    mask.clear();
    data.clear();
    mask.resize(sum.runs as usize * 16, 0);
    data.resize(sum.changed as usize, 0);
    let (mi, di) = encode_sparse_into(bitmap, new, mask, data);
    mask.truncate(mi);
    data.truncate(di);
}

/// Writes the sparse encoding of a diff into `mask` (`16 * runs` bytes) and
/// `data` (`changed` bytes) in place, e.g. straight into a log frame;
/// returns the bytes written to each (equal to the slice lengths when they
/// were sized from the diff's [`DiffSummary`]).
#[inline]
pub fn encode_sparse_into(bitmap: &[u8], new: &[u8], mask: &mut [u8], data: &mut [u8]) -> (usize, usize) {
    let n = new.len();
    if mask.len() == 16 && !data.is_empty() {
        // One run (e.g. a fully rewritten page): it starts at the first set
        // bit and covers `data.len()` bytes; no walk over the whole bitmap.
        if let Some(i) = bitmap.iter().position(|&b| b != 0) {
            let s = i * 8 + bitmap[i].trailing_zeros() as usize;
            let l = data.len();
            if let Some(src) = new.get(s..s + l) {
                mask[..8].copy_from_slice(&(s as u64).to_le_bytes());
                mask[8..].copy_from_slice(&(l as u64).to_le_bytes());
                data.copy_from_slice(src);
                return (16, l);
            }
        }
    }
    let (mut mi, mut di) = (0usize, 0usize);
    for_each_run(bitmap, n, |s, l| {
        if let (Some(m), Some(d), Some(src)) = (mask.get_mut(mi..mi + 16), data.get_mut(di..di + l), new.get(s..s + l)) {
            m[..8].copy_from_slice(&(s as u64).to_le_bytes());
            m[8..].copy_from_slice(&(l as u64).to_le_bytes());
            if l == 1 {
                d[0] = src[0];
            } else {
                d.copy_from_slice(src);
            }
            mi += 16;
            di += l;
        }
    });
    (mi, di)
}

/// Scalar reference: bitmap and changed count, byte by byte.
pub fn diff_scalar(old: &[u8], new: &[u8]) -> (Vec<u8>, u64) {
    let n = old.len().min(new.len());
    let mut bm = vec![0u8; n.div_ceil(8)];
    let mut c = 0;
    for i in 0..n {
        if old[i] != new[i] {
            bm[i / 8] |= 1 << (i % 8);
            c += 1;
        }
    }
    (bm, c)
}

/// Scalar reference: maximal runs of differing bytes.
pub fn ranges_scalar(old: &[u8], new: &[u8]) -> Vec<(u64, u64)> {
    let n = old.len().min(new.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if old[i] != new[i] {
            let s = i;
            while i < n && old[i] != new[i] {
                i += 1;
            }
            out.push((s as u64, (i - s) as u64));
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn runs_of(bm: &[u8], n: usize) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for_each_run(bm, n, |s, l| v.push((s as u64, l as u64)));
        v
    }

    #[test]
    fn movemask_all_patterns() {
        for p in 0u64..256 {
            let mut x = 0u64;
            for k in 0..8 {
                if p >> k & 1 == 1 {
                    x |= 0x5au64 << (8 * k);
                }
            }
            assert_eq!(movemask64(nonzero_bytes(x)), p);
            // every nonzero byte value is detected
            for v in [1u64, 0x7f, 0x80, 0xff] {
                assert_eq!(movemask64(nonzero_bytes(v << 8)), 2);
            }
        }
    }

    #[test]
    fn simd_equals_swar_on_blocks() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        for i in 0..64 {
            a[i] = i as u8;
            b[i] = if i % 3 == 0 { i as u8 ^ 0x80 } else { i as u8 };
        }
        assert_eq!(block_mask(&a, &b), block_mask_swar(&a, &b));
        if has_avx2() {
            // SAFETY: AVX2 checked.
            assert_eq!(unsafe { block_mask_avx2(&a, &b) }, block_mask_swar(&a, &b));
        }
        b = a;
        assert_eq!(block_mask(&a, &b), 0);
    }

    #[test]
    fn runs_cross_word_boundaries() {
        let n = 200;
        let old = vec![0u8; n];
        let mut new = old.clone();
        for i in 60..140 {
            new[i] = 1;
        }
        new[199] = 3;
        new[0] = 9;
        let mut bm = Vec::new();
        let s = diff_bitmap(&old, &new, &mut bm);
        assert_eq!(s.changed, 82);
        assert_eq!(s.runs, 3);
        assert_eq!(runs_of(&bm, n), vec![(0, 1), (60, 80), (199, 1)]);
        assert_eq!(runs_of(&bm, n), ranges_scalar(&old, &new));
    }

    #[test]
    fn density_threshold() {
        assert!(DiffSummary { changed: 10, runs: 10 }.prefer_sparse(1024));
        assert!(!DiffSummary { changed: 512, runs: 256 }.prefer_sparse(1024));
        assert!(DiffSummary { changed: 1024, runs: 1 }.prefer_sparse(1024));
    }

    fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (0usize..600, 0u32..4).prop_flat_map(|(n, dens)| {
            (
                proptest::collection::vec(any::<u8>(), n),
                proptest::collection::vec((any::<u8>(), 0u32..8), n),
            )
                .prop_map(move |(old, edits)| {
                    let new = old
                        .iter()
                        .zip(edits)
                        .map(|(o, (v, r))| if r < dens * 2 { *o ^ v } else { *o })
                        .collect();
                    (old, new)
                })
        })
    }

    proptest! {
        #[test]
        fn wide_diff_equals_scalar((old, new) in pair()) {
            let mut bm = Vec::new();
            let s = diff_bitmap(&old, &new, &mut bm);
            let (rbm, rc) = diff_scalar(&old, &new);
            prop_assert_eq!(&bm, &rbm);
            prop_assert_eq!(s.changed, rc);
            for k in [Kernel::Baseline, Kernel::Swar] {
                let mut bk = vec![0xEE; 3];
                prop_assert_eq!(diff_bitmap_with(k, &old, &new, &mut bk), s);
                prop_assert_eq!(&bk, &rbm);
            }
            prop_assert_eq!(count_diff(&old, &new), rc);
            let rr = ranges_scalar(&old, &new);
            prop_assert_eq!(s.runs, rr.len() as u64);
            prop_assert_eq!(runs_of(&bm, old.len()), rr.clone());
            let (mut m, mut d) = (Vec::new(), Vec::new());
            encode_sparse(&bm, &new, s, &mut m, &mut d);
            prop_assert_eq!(m.len(), rr.len() * 16);
            prop_assert_eq!(d.len() as u64, rc);
            let pairs: Vec<(u64, u64)> = m.chunks_exact(16).map(|c| (load64(c, 0), load64(c, 8))).collect();
            prop_assert_eq!(&pairs, &rr);
            let want: Vec<u8> = rr.iter().flat_map(|&(s, l)| new[s as usize..(s + l) as usize].to_vec()).collect();
            prop_assert_eq!(&d, &want);
        }
    }
}
