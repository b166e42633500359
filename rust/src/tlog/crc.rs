//! CRC32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected 0x82F63B78).
//!
//! x86_64 with SSE4.2 uses the `crc32` instruction (detected once at run
//! time); everything else uses a table-driven slice-by-8 loop. Both give the
//! same values (tested below), so a log written on one machine reads on any.
//!
//! The `crc32` instruction has a latency of 3 cycles but a throughput of one
//! per cycle, so one dependent stream uses a third of it. Long inputs are cut
//! into rounds of three equal blocks of `L` bytes, CRC'd as three
//! independent streams (the second and third starting from a zero register),
//! then combined: `c = shift_L(shift_L(c0) ^ c1) ^ c2`, where `shift_L`
//! (appending `L` zero bytes to the register) is a linear map on 32 bits,
//! applied with four 256-entry tables built at compile time (the technique
//! of Mark Adler's crc32c.c and Intel's crc_pcl). Block sizes go down
//! `LEVELS`; what is left after the smallest is one stream.

const POLY: u32 = 0x82F6_3B78;

/// 8 tables of 256 entries for slice-by-8, built at compile time.
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// `a * b mod P` in the reflected representation (bit 31 is x^0), as zlib's
/// `multmodp`.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        if m == 0 {
            break;
        }
    }
    p
}

/// `x^(8 * n) mod P`: the operator that appends `n` zero bytes to a CRC register.
const fn x8nmodp(n: usize) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut sq = 1u32 << 23; // x^8
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(sq, p);
        }
        sq = multmodp(sq, sq);
        n >>= 1;
    }
    p
}

/// Tables applying `shift_n` to a register a byte at a time.
const fn build_shift(n: usize) -> [[u32; 256]; 4] {
    let op = x8nmodp(n);
    let mut t = [[0u32; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 256 {
            t[k][b] = multmodp(op, (b as u32) << (8 * k));
            b += 1;
        }
        k += 1;
    }
    t
}

/// Block sizes of the three-stream rounds, largest first (multiples of 8).
#[cfg(target_arch = "x86_64")]
const LEVELS: [usize; 3] = [2048, 256, 64];

#[cfg(target_arch = "x86_64")]
static SHIFTS: [[[u32; 256]; 4]; 3] = [build_shift(LEVELS[0]), build_shift(LEVELS[1]), build_shift(LEVELS[2])];

/// Appends `n` zero bytes (the table's length) to a raw register.
#[inline(always)]
fn shift(t: &[[u32; 256]; 4], c: u32) -> u32 {
    t[0][(c & 0xFF) as usize] ^ t[1][((c >> 8) & 0xFF) as usize] ^ t[2][((c >> 16) & 0xFF) as usize] ^ t[3][(c >> 24) as usize]
}

/// Continues a CRC32C: `append(append(0, a), b) == crc32c(a ++ b)`.
#[inline]
pub fn append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if hw_available() {
            // SAFETY: the CPU supports SSE4.2 (checked at run time just above).
            return unsafe { append_sse42_3way(crc, data) };
        }
    }
    append_sw(crc, data)
}

/// CRC32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    append(0, data)
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn hw_available() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0 = unknown, 1 = no, 2 = yes
    static HW: AtomicU8 = AtomicU8::new(0);
    match HW.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let yes = std::is_x86_feature_detected!("sse4.2");
            HW.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Single-stream SSE4.2 CRC: the reference the three-stream path is tested
/// against.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "sse4.2")]
unsafe fn append_sse42(crc: u32, data: &[u8]) -> u32 {
    !raw_sse42(!crc, data)
}

/// Raw register update over `data` (no pre/post inversion), one stream.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn raw_sse42(c: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(c);
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        c = _mm_crc32_u64(c, word(ch, 0));
    }
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

/// Three interleaved streams per round, rounds of `LEVELS` block sizes,
/// then one stream for the rest.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn append_sse42_3way(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    if data.len() < 3 * LEVELS[LEVELS.len() - 1] {
        return !raw_sse42(!crc, data);
    }
    let mut c = !crc;
    let mut rest = data;
    for (lvl, &l) in LEVELS.iter().enumerate() {
        let t = &SHIFTS[lvl];
        while rest.len() >= 3 * l {
            let (round, tail) = rest.split_at(3 * l);
            let (a, bc) = round.split_at(l);
            let (b, cc) = bc.split_at(l);
            let (mut c0, mut c1, mut c2) = (u64::from(c), 0u64, 0u64);
            let mut i = 0;
            while i < l {
                c0 = _mm_crc32_u64(c0, word(a, i));
                c1 = _mm_crc32_u64(c1, word(b, i));
                c2 = _mm_crc32_u64(c2, word(cc, i));
                i += 8;
            }
            c = shift(t, shift(t, c0 as u32) ^ c1 as u32) ^ c2 as u32;
            rest = tail;
        }
    }
    // SAFETY (of the call): the caller guarantees SSE4.2.
    !raw_sse42(c, rest)
}

/// Portable slice-by-8.
pub fn append_sw(crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ t[0][((c ^ u32::from(b)) & 0xFF) as usize];
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 and the usual check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(append_sw(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn hw_equals_sw_and_append_composes() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for n in [0, 1, 7, 8, 9, 63, 64, 65, 999, 1000] {
            assert_eq!(crc32c(&data[..n]), append_sw(0, &data[..n]), "n = {n}");
            for cut in [0, n / 3, n / 2, n] {
                assert_eq!(append(crc32c(&data[..cut]), &data[cut..n]), crc32c(&data[..n]));
            }
        }
    }

    #[test]
    fn shift_tables_append_zeros() {
        // shift_n(c) == the register after n zero bytes
        for (lvl, &l) in LEVELS_ALL.iter().enumerate() {
            let t = build_shift(l);
            for c in [1u32, 0x8000_0000, 0xDEAD_BEEF, 0x1234_5678] {
                let z = vec![0u8; l];
                assert_eq!(shift(&t, c), !append_sw(!c, &z), "level {lvl}");
            }
        }
    }

    const LEVELS_ALL: [usize; 5] = [1, 8, 64, 256, 2048];

    /// Lengths around every round boundary, at every alignment, with a
    /// running CRC: the three-stream path equals the single stream and the
    /// portable tables, so the on-disk values do not change.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn three_streams_equal_one_stream_and_sw() {
        if !std::is_x86_feature_detected!("sse4.2") {
            eprintln!("SSE4.2 not present: three-stream CRC not tested");
            return;
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let buf: Vec<u8> = (0..(3 * 2048 * 2 + 200)).map(|_| rnd() as u8).collect();
        let mut lens: Vec<usize> = Vec::new();
        for l in [64usize, 256, 2048] {
            for k in [1usize, 2, 3] {
                for d in 0..10 {
                    lens.push((3 * l * k + d).saturating_sub(5));
                }
            }
        }
        for _ in 0..400 {
            lens.push((rnd() % (buf.len() as u64 - 16)) as usize);
        }
        for (i, &n) in lens.iter().enumerate() {
            let off = i % 16;
            let d = &buf[off..off + n.min(buf.len() - off)];
            let init = rnd() as u32;
            // SAFETY: SSE4.2 checked above.
            let (one, three) = unsafe { (append_sse42(init, d), append_sse42_3way(init, d)) };
            assert_eq!(three, one, "len {} off {off}", d.len());
            assert_eq!(three, append_sw(init, d), "len {} off {off}", d.len());
        }
    }
}
