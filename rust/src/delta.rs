//! Delta encodings, their validation, and the apply kernels.
//!
//! * Dense (`MMSB_ENC_DENSE`): `mask` is an LSB-first bitmap of
//!   `ceil(size/8)` bytes (bits past `size` must be 0); `payload` holds
//!   `size` bytes, of which the masked ones are applied.
//! * Sparse (`MMSB_ENC_SPARSE`): `mask` holds `(start, len)` pairs of
//!   little-endian `u64`, sorted, disjoint (adjacent allowed), each non-empty
//!   and inside the page; `payload` is the masked bytes concatenated.
//!
//! Apply kernels return how many bytes actually changed. The dense kernel
//! works on 64-byte blocks: a block whose mask word is 0 is skipped, a full
//! one is copied, otherwise each 8-byte word is blended without branches:
//! `dst = (dst & !m) | (src & m)` with `m` the mask byte expanded to a byte
//! mask through a 256-entry table.

use crate::diff::{block_mask, load64};
use crate::error::{Error, ErrorKind, Result};

pub const ENC_DENSE: u8 = 0;
pub const ENC_SPARSE: u8 = 1;

const fn build_expand() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut w = 0u64;
        let mut k = 0;
        while k < 8 {
            if (b >> k) & 1 == 1 {
                w |= 0xFFu64 << (8 * k);
            }
            k += 1;
        }
        t[b] = w;
        b += 1;
    }
    t
}

/// Mask byte -> 8-byte mask (bit k set -> byte k = 0xFF).
pub static EXPAND: [u64; 256] = build_expand();

/// Iterates the `(start, len)` pairs of a sparse mask (length a multiple of
/// 16; a trailing partial pair is ignored — validate first).
#[inline]
pub fn sparse_ranges(mask: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    mask.chunks_exact(16).map(|c| (load64(c, 0), load64(c, 8)))
}

/// Checks a caller-given encoding against a page of `size` bytes. Wrong
/// lengths are `Dimension`; bad ordering, bounds or stray bits `Invalid`.
pub fn validate(encoding: u8, mask: &[u8], payload: &[u8], size: u64, page: u64) -> Result<()> {
    match encoding {
        ENC_DENSE => {
            let want = size.div_ceil(8);
            if mask.len() as u64 != want {
                return Err(Error::new(
                    ErrorKind::Dimension,
                    format!("dense delta mask for page {page} has {} bytes, expected {want} (page size {size})", mask.len()),
                ));
            }
            if payload.len() as u64 != size {
                return Err(Error::new(
                    ErrorKind::Dimension,
                    format!("dense delta payload for page {page} has {} bytes, expected the page size {size}", payload.len()),
                ));
            }
            let rem = size % 8;
            if rem != 0 {
                if let Some(last) = mask.last() {
                    if last >> rem != 0 {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            format!("dense delta mask for page {page} sets bits past the page size {size}"),
                        ));
                    }
                }
            }
            Ok(())
        }
        ENC_SPARSE => {
            if mask.len() % 16 != 0 {
                return Err(Error::new(
                    ErrorKind::Dimension,
                    format!("sparse delta mask for page {page} has {} bytes, not a multiple of 16 ((start, len) u64 pairs)", mask.len()),
                ));
            }
            let mut end = 0u64;
            let mut total = 0u64;
            for (i, (s, l)) in sparse_ranges(mask).enumerate() {
                if l == 0 {
                    return Err(Error::new(ErrorKind::Invalid, format!("sparse delta for page {page}: range {i} is empty")));
                }
                if s < end {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        format!("sparse delta for page {page}: range {i} (start {s}) overlaps or is not sorted after the previous range (end {end})"),
                    ));
                }
                let e = s.checked_add(l).filter(|&e| e <= size).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Invalid,
                        format!("sparse delta for page {page}: range {i} (start {s}, len {l}) exceeds the page size {size}"),
                    )
                })?;
                end = e;
                total += l;
            }
            if payload.len() as u64 != total {
                return Err(Error::new(
                    ErrorKind::Dimension,
                    format!("sparse delta payload for page {page} has {} bytes, the ranges cover {total}", payload.len()),
                ));
            }
            Ok(())
        }
        e => Err(Error::new(ErrorKind::Invalid, format!("unknown delta encoding {e} for page {page} (0 dense, 1 sparse)"))),
    }
}

/// Applies a validated dense delta to `dst`; returns bytes that changed.
/// AVX2 (detected at run time) blends 64 bytes per step with 32-byte lane
/// masks; otherwise the SSE2 / portable kernel below.
pub fn apply_dense(dst: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::diff::has_avx2() {
            // SAFETY: AVX2 is present (checked at run time just above).
            return unsafe { dense_kernel_avx2(dst, mask, payload) };
        }
    }
    dense_kernel(dst, mask, payload)
}

/// Does a validated delta change any byte of `dst`? Stops at the first
/// changed 64-byte block (dense) or range (sparse), so a delta that changes
/// something costs one block to check, not a pass over the page.
pub fn changes_any(encoding: u8, dst: &[u8], mask: &[u8], payload: &[u8]) -> bool {
    if encoding == ENC_SPARSE {
        let mut off = 0usize;
        for (s, l) in sparse_ranges(mask) {
            let (s, l) = (s as usize, l as usize);
            let (Some(d), Some(src)) = (dst.get(s..s + l), payload.get(off..off + l)) else {
                break;
            };
            if d != src {
                return true;
            }
            off += l;
        }
        return false;
    }
    let n = dst.len().min(payload.len()).min(mask.len() * 8);
    let full = n / 64;
    for ((d, s), m) in dst.chunks_exact(64).zip(payload.chunks_exact(64)).zip(mask.chunks_exact(8)).take(full) {
        let (Ok(d), Ok(s)) = (<&[u8; 64]>::try_from(d), <&[u8; 64]>::try_from(s)) else { continue };
        let m = mask_word(m, 0);
        if m != 0 && block_mask(d, s) & m != 0 {
            return true;
        }
    }
    (full * 64..n).any(|i| (mask[i / 8] >> (i % 8)) & 1 == 1 && dst[i] != payload[i])
}

/// AVX2 dense kernel: per 64-byte block, compare (two 32-byte `cmpeq` +
/// `movemask`), keep the masked differing bytes `cm`, count them, and if any
/// blend the block: each 32-bit half of `cm` is broadcast, bytes shuffled so
/// byte j holds mask byte j/8, `and` with the bit selector, `cmpeq` gives a
/// 0x00/0xFF lane mask for `blendv`. Blocks with nothing to change are not
/// stored.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dense_kernel_avx2(dst: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let n = dst.len().min(payload.len()).min(mask.len() * 8);
    let full = n / 64;
    let mut changed = 0u64;
    let shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    for ((d, s), m) in dst.chunks_exact_mut(64).zip(payload.chunks_exact(64)).zip(mask.chunks_exact(8)).take(full) {
        let m = mask_word(m, 0);
        if m == 0 {
            continue;
        }
        // SAFETY: AVX2 is available (caller contract); `d` and `s` are
        // 64-byte chunks, so offsets 0 and 32 address 32 in-bounds bytes
        // each; loadu/storeu need no alignment; `d` is exclusively borrowed.
        unsafe {
            let pd = d.as_mut_ptr() as *mut __m256i;
            let ps = s.as_ptr() as *const __m256i;
            let (d0, d1) = (_mm256_loadu_si256(pd), _mm256_loadu_si256(pd.add(1)));
            let (s0, s1) = (_mm256_loadu_si256(ps), _mm256_loadu_si256(ps.add(1)));
            let eq0 = _mm256_movemask_epi8(_mm256_cmpeq_epi8(d0, s0)) as u32 as u64;
            let eq1 = _mm256_movemask_epi8(_mm256_cmpeq_epi8(d1, s1)) as u32 as u64;
            let cm = !(eq0 | (eq1 << 32)) & m;
            if cm == 0 {
                continue;
            }
            changed += u64::from(cm.count_ones());
            let lane = |bits: u32| {
                let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
                _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel)
            };
            _mm256_storeu_si256(pd, _mm256_blendv_epi8(d0, s0, lane(cm as u32)));
            _mm256_storeu_si256(pd.add(1), _mm256_blendv_epi8(d1, s1, lane((cm >> 32) as u32)));
        }
    }
    for i in full * 64..n {
        if (mask[i / 8] >> (i % 8)) & 1 == 1 {
            changed += (dst[i] != payload[i]) as u64;
            dst[i] = payload[i];
        }
    }
    changed
}

/// Counts the bytes a validated dense delta would change, without applying.
pub fn count_dense(dst: &[u8], mask: &[u8], payload: &[u8]) -> u64 {
    dense_count_only(dst, mask, payload)
}

#[inline(always)]
fn mask_word(mask: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&mask[at..at + 8]);
    u64::from_le_bytes(w)
}

fn dense_count_only(dst: &[u8], mask: &[u8], payload: &[u8]) -> u64 {
    let n = dst.len().min(payload.len()).min(mask.len() * 8);
    let full = n / 64;
    let mut changed = 0u64;
    for ((d, s), m) in dst.chunks_exact(64).zip(payload.chunks_exact(64)).zip(mask.chunks_exact(8)).take(full) {
        let (Ok(d), Ok(s)) = (<&[u8; 64]>::try_from(d), <&[u8; 64]>::try_from(s)) else { continue };
        let m = mask_word(m, 0);
        if m != 0 {
            changed += (block_mask(d, s) & m).count_ones() as u64;
        }
    }
    for i in full * 64..n {
        if (mask[i / 8] >> (i % 8)) & 1 == 1 && dst[i] != payload[i] {
            changed += 1;
        }
    }
    changed
}

/// Blends one 64-byte block: `d = (d & !m) | (s & m)`, 16 bytes at a time
/// with SSE2 (x86_64 baseline), the byte mask built from two table lookups.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn blend_block(d: &mut [u8; 64], s: &[u8; 64], m: u64) {
    use std::arch::x86_64::*;
    let mut k = 0;
    while k < 4 {
        let bits = (m >> (16 * k)) & 0xFFFF;
        if bits != 0 {
            let lo = EXPAND[(bits & 0xFF) as usize] as i64;
            let hi = EXPAND[(bits >> 8) as usize] as i64;
            // SAFETY: SSE2 is baseline on x86_64; both pointers address 16
            // in-bounds bytes of 64-byte arrays (k < 4); loadu/storeu need
            // no alignment; `d` is exclusively borrowed.
            unsafe {
                let pd = d.as_mut_ptr().add(16 * k) as *mut __m128i;
                let ps = s.as_ptr().add(16 * k) as *const __m128i;
                let mk = _mm_set_epi64x(hi, lo);
                let r = _mm_or_si128(_mm_and_si128(mk, _mm_loadu_si128(ps)), _mm_andnot_si128(mk, _mm_loadu_si128(pd)));
                _mm_storeu_si128(pd, r);
            }
        }
        k += 1;
    }
}

/// Blends one 64-byte block: `d = (d & !m) | (s & m)` per 8-byte word.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn blend_block(d: &mut [u8; 64], s: &[u8; 64], m: u64) {
    let mut k = 0;
    while k < 8 {
        let em = EXPAND[((m >> (8 * k)) & 0xFF) as usize];
        let dw = load64(d, 8 * k);
        let sw = load64(s, 8 * k);
        d[8 * k..8 * k + 8].copy_from_slice(&((dw & !em) | (sw & em)).to_le_bytes());
        k += 1;
    }
}

fn dense_kernel(dst: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    let n = dst.len().min(payload.len()).min(mask.len() * 8);
    let full = n / 64;
    let mut changed = 0u64;
    for ((d, s), m) in dst.chunks_exact_mut(64).zip(payload.chunks_exact(64)).zip(mask.chunks_exact(8)).take(full) {
        let (Ok(d), Ok(s)) = (<&mut [u8; 64]>::try_from(d), <&[u8; 64]>::try_from(s)) else { continue };
        let m = mask_word(m, 0);
        // bytes that are masked and differ: the only ones that need a store
        let cm = block_mask(d, s) & m;
        if cm == 0 {
            continue;
        }
        changed += cm.count_ones() as u64;
        if cm == !0 {
            d.copy_from_slice(s);
        } else if cm.count_ones() <= 4 {
            // a few changed bytes: copy them one by one
            let mut c = cm;
            while c != 0 {
                let i = c.trailing_zeros() as usize & 63;
                d[i] = s[i];
                c &= c - 1;
            }
        } else {
            blend_block(d, s, cm);
        }
    }
    for i in full * 64..n {
        if (mask[i / 8] >> (i % 8)) & 1 == 1 {
            changed += (dst[i] != payload[i]) as u64;
            dst[i] = payload[i];
        }
    }
    changed
}

/// Applies a validated sparse delta to `dst`; returns bytes that changed.
pub fn apply_sparse(dst: &mut [u8], mask: &[u8], data: &[u8]) -> u64 {
    let mut changed = 0u64;
    let mut off = 0usize;
    for (s, l) in sparse_ranges(mask) {
        let (s, l) = (s as usize, l as usize);
        let (Some(d), Some(src)) = (dst.get_mut(s..s + l), data.get(off..off + l)) else {
            break;
        };
        if l < 16 {
            for (x, y) in d.iter_mut().zip(src) {
                changed += (*x != *y) as u64;
                *x = *y;
            }
        } else {
            changed += crate::diff::count_diff(d, src);
            d.copy_from_slice(src);
        }
        off += l;
    }
    changed
}

/// Counts the bytes a validated sparse delta would change, without applying.
pub fn count_sparse(dst: &[u8], mask: &[u8], data: &[u8]) -> u64 {
    let mut changed = 0u64;
    let mut off = 0usize;
    for (s, l) in sparse_ranges(mask) {
        let (s, l) = (s as usize, l as usize);
        let (Some(d), Some(src)) = (dst.get(s..s + l), data.get(off..off + l)) else {
            break;
        };
        changed += crate::diff::count_diff(d, src);
        off += l;
    }
    changed
}

/// Applies a validated delta of either encoding.
#[inline]
pub fn apply(encoding: u8, dst: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    if encoding == ENC_SPARSE {
        apply_sparse(dst, mask, payload)
    } else {
        apply_dense(dst, mask, payload)
    }
}

/// Counts what a validated delta of either encoding would change.
#[inline]
pub fn count(encoding: u8, dst: &[u8], mask: &[u8], payload: &[u8]) -> u64 {
    if encoding == ENC_SPARSE {
        count_sparse(dst, mask, payload)
    } else {
        count_dense(dst, mask, payload)
    }
}

/// Scalar reference of [`apply_dense`].
pub fn apply_dense_scalar(dst: &mut [u8], mask: &[u8], payload: &[u8]) -> u64 {
    let mut c = 0;
    for i in 0..dst.len() {
        if (mask[i / 8] >> (i % 8)) & 1 == 1 {
            if dst[i] != payload[i] {
                c += 1;
            }
            dst[i] = payload[i];
        }
    }
    c
}

/// Converts a dense delta to the sparse encoding (for tests and tools).
pub fn dense_to_sparse(size: usize, mask: &[u8], payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut m, mut d) = (Vec::new(), Vec::new());
    crate::diff::for_each_run(mask, size, |s, l| {
        m.extend_from_slice(&(s as u64).to_le_bytes());
        m.extend_from_slice(&(l as u64).to_le_bytes());
        d.extend_from_slice(&payload[s..s + l]);
    });
    (m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sp(pairs: &[(u64, u64)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (s, l) in pairs {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&l.to_le_bytes());
        }
        v
    }

    #[test]
    fn validation_errors_never_panic() {
        let k = |r: Result<()>| r.err().map(|e| e.kind);
        assert_eq!(k(validate(ENC_DENSE, &[0; 2], &[0; 10], 10, 1)), None);
        assert_eq!(k(validate(ENC_DENSE, &[0; 1], &[0; 10], 10, 1)), Some(ErrorKind::Dimension));
        assert_eq!(k(validate(ENC_DENSE, &[0; 2], &[0; 9], 10, 1)), Some(ErrorKind::Dimension));
        assert_eq!(k(validate(ENC_DENSE, &[0, 4], &[0; 10], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(0, 2), (2, 3)]), &[0; 5], 10, 1)), None);
        assert_eq!(k(validate(ENC_SPARSE, &[0; 15], &[], 10, 1)), Some(ErrorKind::Dimension));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(0, 0)]), &[], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(4, 2), (5, 1)]), &[0; 3], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(4, 2), (0, 1)]), &[0; 3], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(9, 2)]), &[0; 2], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(u64::MAX, 2)]), &[0; 2], 10, 1)), Some(ErrorKind::Invalid));
        assert_eq!(k(validate(ENC_SPARSE, &sp(&[(1, 2)]), &[0; 3], 10, 1)), Some(ErrorKind::Dimension));
        assert_eq!(k(validate(7, &[], &[], 10, 1)), Some(ErrorKind::Invalid));
    }

    #[test]
    fn expand_table() {
        assert_eq!(EXPAND[0], 0);
        assert_eq!(EXPAND[1], 0xFF);
        assert_eq!(EXPAND[0x81], 0xFF00_0000_0000_00FF);
        assert_eq!(EXPAND[255], !0);
    }

    fn case() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>)> {
        (0usize..700).prop_flat_map(|n| {
            (
                proptest::collection::vec(any::<u8>(), n),
                proptest::collection::vec(any::<u8>(), n.div_ceil(8)),
                proptest::collection::vec(any::<u8>(), n),
                any::<bool>(),
            )
                .prop_map(move |(dst, mut mask, mut payload, full)| {
                    if full {
                        // whole blocks set, to hit the copy fast path
                        for b in mask.iter_mut().take(16) {
                            *b = 0xFF;
                        }
                        for (i, p) in payload.iter_mut().enumerate() {
                            if i % 5 == 0 {
                                *p = dst[i];
                            }
                        }
                    }
                    if n % 8 != 0 {
                        if let Some(l) = mask.last_mut() {
                            *l &= (1u8 << (n % 8)) - 1;
                        }
                    }
                    (dst, mask, payload)
                })
        })
    }

    proptest! {
        #[test]
        fn dense_and_sparse_apply_identically((dst, mask, payload) in case()) {
            let n = dst.len();
            prop_assert!(validate(ENC_DENSE, &mask, &payload, n as u64, 1).is_ok());
            let mut a = dst.clone();
            let mut r = dst.clone();
            let c_ref = apply_dense_scalar(&mut r, &mask, &payload);
            prop_assert_eq!(count_dense(&dst, &mask, &payload), c_ref);
            let c = apply_dense(&mut a, &mask, &payload);
            prop_assert_eq!(&a, &r);
            prop_assert_eq!(c, c_ref);
            // the portable/SSE2 kernel too, where AVX2 took apply_dense
            let mut p = dst.clone();
            prop_assert_eq!(dense_kernel(&mut p, &mask, &payload), c_ref);
            prop_assert_eq!(&p, &r);
            prop_assert_eq!(changes_any(ENC_DENSE, &dst, &mask, &payload), c_ref > 0);
            let (sm, sd) = dense_to_sparse(n, &mask, &payload);
            prop_assert!(validate(ENC_SPARSE, &sm, &sd, n as u64, 1).is_ok());
            let mut s = dst.clone();
            prop_assert_eq!(count_sparse(&dst, &sm, &sd), c_ref);
            prop_assert_eq!(changes_any(ENC_SPARSE, &dst, &sm, &sd), c_ref > 0);
            let cs = apply_sparse(&mut s, &sm, &sd);
            prop_assert_eq!(&s, &r);
            prop_assert_eq!(cs, c_ref);
            // applying again changes nothing
            prop_assert_eq!(apply_dense(&mut a, &mask, &payload), 0);
            prop_assert_eq!(apply_sparse(&mut s, &sm, &sd), 0);
        }
    }
}
