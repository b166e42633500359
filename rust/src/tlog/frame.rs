//! Record framing shared by the memory log, the file log and group commit.
//!
//! One frame (all integers little-endian; see `docs/tlog_format.md`):
//!
//! ```text
//! off  size  field
//!   0     4  len        bytes after the crc field (= 64 + payload length)
//!   4     4  crc        CRC32C over bytes [8, 8 + len)
//!   8     8  seq        1-based, dense
//!  16     1  kind       MMSB_REC_* (1..=10)
//!  17     1  source     MMSB_SOURCE_*
//!  18     1  encoding   MMSB_ENC_* / location / edge kind
//!  19     5  reserved   zero
//!  24     8  page_id
//!  32     8  aux
//!  40     8  delta_id
//!  48     8  base_epoch
//!  56     8  timestamp
//!  64     8  mask_len   payload starts with mask_len mask bytes
//!  72     .  payload    mask ++ data
//! ```

use super::{crc, Record, RecordHeader, RecordRef};
use crate::error::{Error, ErrorKind, Result};

/// Bytes before the payload.
pub const FRAME_HDR: usize = 72;
/// `len` of a frame with an empty payload.
pub const MIN_LEN: u32 = (FRAME_HDR - 8) as u32;
/// Largest payload a frame may carry (the `len` field is a u32).
pub const MAX_PAYLOAD: u64 = (u32::MAX - MIN_LEN) as u64;
/// Highest record kind (MMSB_REC_PROP_STATE).
pub const MAX_KIND: u8 = super::REC_PROP_STATE;

/// Checks the kind and the payload size of a record with a `mask_len` +
/// `data_len` byte payload; returns the payload length.
#[inline]
fn check_payload(kind: u8, mask_len: usize, data_len: usize) -> Result<u64> {
    if kind == 0 || kind > MAX_KIND {
        return Err(Error::new(ErrorKind::Invalid, format!("log record kind {kind} is not an MMSB_REC_* value")));
    }
    match (mask_len as u64).checked_add(data_len as u64).filter(|&n| n <= MAX_PAYLOAD) {
        Some(n) => Ok(n),
        None => Err(Error::new(
            ErrorKind::Invalid,
            format!("log record payload of {mask_len} + {data_len} bytes exceeds the frame limit of {MAX_PAYLOAD}"),
        )),
    }
}

/// Writes the frame header of `h` (sequence number `seq`, a payload of
/// `mask_len` plus `data_len` bytes) into `b` with a zero CRC field: the
/// memory log's frames, which cannot tear, carry no CRC. Invalid kind or
/// size: `Err`, `b` untouched.
#[inline]
pub fn write_header(b: &mut [u8; FRAME_HDR], seq: u64, h: &RecordHeader, mask_len: usize, data_len: usize) -> Result<()> {
    let payload = check_payload(h.kind, mask_len, data_len)?;
    b[0..4].copy_from_slice(&(MIN_LEN + payload as u32).to_le_bytes());
    b[4..8].copy_from_slice(&0u32.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16] = h.kind;
    b[17] = h.source;
    b[18] = h.encoding;
    b[19..24].copy_from_slice(&[0u8; 5]);
    b[24..32].copy_from_slice(&h.page_id.to_le_bytes());
    b[32..40].copy_from_slice(&h.aux.to_le_bytes());
    b[40..48].copy_from_slice(&h.delta_id.to_le_bytes());
    b[48..56].copy_from_slice(&h.base_epoch.to_le_bytes());
    b[56..64].copy_from_slice(&h.timestamp.to_le_bytes());
    b[64..72].copy_from_slice(&(mask_len as u64).to_le_bytes());
    Ok(())
}

/// The frame header of `rec` with sequence number `seq`, CRC filled in.
pub fn encode_header(seq: u64, rec: &RecordRef) -> Result<[u8; FRAME_HDR]> {
    let mut b = [0u8; FRAME_HDR];
    write_header(&mut b, seq, &rec.header, rec.mask.len(), rec.data.len())?;
    let c = crc::append(crc::append(crc::crc32c(&b[8..]), rec.mask), rec.data);
    b[4..8].copy_from_slice(&c.to_le_bytes());
    Ok(b)
}

/// Total frame size of `rec`, if valid.
#[inline]
pub fn frame_len(rec: &RecordRef) -> usize {
    FRAME_HDR + rec.mask.len() + rec.data.len()
}

/// Appends the frame of `rec` to `buf` (one reserve, three copies), then
/// computes the CRC over the copied frame in one pass (one long input keeps
/// the three CRC streams busy, where header, mask and data apart would not).
#[inline]
pub fn encode_into(buf: &mut Vec<u8>, seq: u64, rec: &RecordRef) -> Result<usize> {
    let mut hdr = [0u8; FRAME_HDR];
    write_header(&mut hdr, seq, &rec.header, rec.mask.len(), rec.data.len())?;
    let n = frame_len(rec);
    let at = buf.len();
    buf.reserve(n);
    buf.extend_from_slice(&hdr);
    buf.extend_from_slice(rec.mask);
    buf.extend_from_slice(rec.data);
    let c = crc::crc32c(&buf[at + 8..]);
    buf[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
    Ok(n)
}

#[inline]
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

#[inline]
fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than the frame needs (header or declared length).
    Short,
    /// The length field is below the minimum (checked before the CRC).
    Length(u32),
    /// CRC fine, but a kind, reserved byte or mask length that cannot be.
    Invalid(String),
    /// The CRC does not match.
    Crc,
    /// CRC fine, but not the expected sequence number.
    Seq(u64),
}

/// Checks the frame at the start of `b`; on success returns its total length
/// and its sequence number. Never panics, whatever `b` holds.
pub fn check(b: &[u8], expected_seq: Option<u64>) -> std::result::Result<(usize, u64), Bad> {
    if b.len() < 8 {
        return Err(Bad::Short);
    }
    let len = u32_at(b, 0);
    if len < MIN_LEN {
        return Err(Bad::Length(len));
    }
    let total = 8usize.checked_add(len as usize).ok_or(Bad::Length(len))?;
    if b.len() < total {
        return Err(Bad::Short);
    }
    let f = &b[..total];
    if crc::crc32c(&f[8..]) != u32_at(f, 4) {
        return Err(Bad::Crc);
    }
    let seq = u64_at(f, 8);
    if f[16] == 0 || f[16] > MAX_KIND {
        return Err(Bad::Invalid(format!("record kind {} is unknown", f[16])));
    }
    if f[19..24] != [0u8; 5] {
        return Err(Bad::Invalid("reserved header bytes are not zero".into()));
    }
    let mask_len = u64_at(f, 64);
    if mask_len > (total - FRAME_HDR) as u64 {
        return Err(Bad::Invalid(format!("mask length {mask_len} exceeds the payload of {} bytes", total - FRAME_HDR)));
    }
    if let Some(e) = expected_seq {
        if seq != e {
            return Err(Bad::Seq(seq));
        }
    }
    Ok((total, seq))
}

/// Decodes a frame already accepted by [`check`] (or written by this module).
/// Returns `None` instead of panicking if `f` is too short.
pub fn decode(f: &[u8]) -> Option<Record> {
    if f.len() < FRAME_HDR {
        return None;
    }
    let header = RecordHeader {
        seq: u64_at(f, 8),
        kind: f[16],
        source: f[17],
        encoding: f[18],
        page_id: u64_at(f, 24),
        aux: u64_at(f, 32),
        delta_id: u64_at(f, 40),
        base_epoch: u64_at(f, 48),
        timestamp: u64_at(f, 56),
        mask_len: u64_at(f, 64),
    };
    Some(Record { header, payload: f[FRAME_HDR..].to_vec() })
}

/// Decodes a frame of the memory log (written by [`write_header`], no CRC):
/// checks the length field, the sequence number and the mask length, so a
/// bad index is an error, never a panic or a wrong record.
pub fn decode_unchecked_crc(f: &[u8], seq: u64, off: u64) -> Result<Record> {
    let bad = |why: &str| Error::new(ErrorKind::Internal, format!("memory log frame {seq} at {off}: {why}"));
    if f.len() < FRAME_HDR || u32_at(f, 0) as usize + 8 != f.len() {
        return Err(bad("length does not match the index"));
    }
    // Frames moved in from write lanes carry 0: the index gives their seq.
    if u64_at(f, 8) != seq && u64_at(f, 8) != 0 {
        return Err(bad("sequence number does not match"));
    }
    if u64_at(f, 64) > (f.len() - FRAME_HDR) as u64 {
        return Err(bad("mask longer than the payload"));
    }
    let mut r = decode(f).ok_or_else(|| bad("short frame"))?;
    r.header.seq = seq;
    Ok(r)
}

/// `check` then `decode`, mapping failures to `TLogCorrupt` for `what` at `off`.
pub fn decode_checked(f: &[u8], seq: u64, what: &str, off: u64) -> Result<Record> {
    match check(f, Some(seq)) {
        Ok((n, _)) if n == f.len() => decode(f).ok_or_else(|| corrupt(what, off, "short frame")),
        Ok(_) => Err(corrupt(what, off, "frame length does not match the index")),
        Err(b) => Err(corrupt(what, off, &describe(&b, seq))),
    }
}

pub fn describe(b: &Bad, expected: u64) -> String {
    match b {
        Bad::Short => "incomplete frame".into(),
        Bad::Length(n) => format!("frame length {n} is below the minimum {MIN_LEN}"),
        Bad::Invalid(s) => s.clone(),
        Bad::Crc => "CRC32C mismatch".into(),
        Bad::Seq(s) => format!("sequence number {s}, expected {expected}"),
    }
}

pub fn corrupt(what: &str, off: u64, why: &str) -> Error {
    Error::new(ErrorKind::TLogCorrupt, format!("transaction log {what} is corrupt at byte offset {off}: {why}"))
}
