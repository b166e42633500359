//! Checkpoint files: a snapshot of pages, epochs, next ids, graph and
//! recompute registrations, written atomically (temp file, fsync, rename,
//! directory fsync). Format: `docs/tlog_format.md`.

use std::io::Write;
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
    /// Pages a failed cycle left stale (retried by the next cycle); version 2.
    pub stale: Vec<u64>,
}

const MAGIC: [u8; 8] = *b"MMSBCKPT";
/// Written: 2 (adds the stale pages); read: 1 and 2.
const VERSION: u32 = 2;
/// magic(8) version(4) flags(4) body_len(8) body_crc(4) header_crc(4)
const HEADER_LEN: usize = 32;

fn put(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// The checkpoint body of `snap` (the bytes after the 32-byte header; also
/// the payload of a `REC_SNAPSHOT` log record). `path` names the target in
/// errors. A page whose `bytes.len() != size`: `Invalid`.
pub fn encode_body(snap: &Snapshot, path: &str) -> Result<Vec<u8>> {
    let bytes_total: usize = snap.pages.iter().map(|p| p.bytes.len() + 48 + 8 * p.parents.len()).sum();
    let mut b = Vec::with_capacity(64 + bytes_total + 24 * snap.edges.len());
    for v in [snap.next_page_id, snap.next_delta_id, snap.clock, snap.log_seq] {
        put(&mut b, v);
    }
    put(&mut b, snap.pages.len() as u64);
    for p in &snap.pages {
        if p.bytes.len() as u64 != p.size {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("checkpoint {path}: page {} has size {} but {} bytes", p.id, p.size, p.bytes.len()),
            ));
        }
        put(&mut b, p.id);
        put(&mut b, p.size);
        put(&mut b, p.epoch);
        b.extend_from_slice(&[p.location, p.recompute, 0, 0, 0, 0, 0, 0]);
        put(&mut b, p.parents.len() as u64);
        for &q in &p.parents {
            put(&mut b, q);
        }
        b.extend_from_slice(&p.bytes);
    }
    put(&mut b, snap.edges.len() as u64);
    for &(parent, child, kind) in &snap.edges {
        put(&mut b, parent);
        put(&mut b, child);
        put(&mut b, u64::from(kind));
    }
    put(&mut b, snap.signatures.len() as u64);
    for (page, sig) in &snap.signatures {
        put(&mut b, *page);
        put(&mut b, sig.len() as u64);
        for &(q, e) in sig {
            put(&mut b, q);
            put(&mut b, e);
        }
    }
    put(&mut b, snap.stale.len() as u64);
    for &id in &snap.stale {
        put(&mut b, id);
    }
    Ok(b)
}

fn io(path: &str, what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("checkpoint {path}: {what}: {e}"))
}

/// The file header of a checkpoint with this body: magic, version, body
/// length, body CRC, then the header's own CRC.
fn header(body: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[24..28].copy_from_slice(&crate::tlog::crc32c(body).to_le_bytes());
    let hc = crate::tlog::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&hc.to_le_bytes());
    h
}

/// Numbers the temp files of `write` in this process.
static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes `snap` to `path` atomically: a temp file of its own beside it
/// (`path.tmp.<pid>.<n>`, created new, so concurrent writers to one path
/// never share one), fsync, rename, fsync the directory. On an error before
/// the rename `path` is untouched (the temp file this call created is
/// removed); if only the directory sync fails, the new file is in place but
/// its rename may not survive a crash. Only a regular file is ever replaced.
pub fn write(path: &Path, snap: &Snapshot) -> Result<()> {
    let p = path.display().to_string();
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() {
            return Err(Error::new(ErrorKind::Invalid, format!("checkpoint path {p} exists and is not a regular file")));
        }
    }
    let body = encode_body(snap, &p)?;
    let h = header(&body);

    // A name nobody else uses now: a file left by a crashed writer (same pid
    // after a restart) is skipped, never removed.
    let (tmp, mut f) = loop {
        let n = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&p, "create temp file", e)),
        }
    };
    let res = (|| -> Result<()> {
        f.write_all(&h).and_then(|_| f.write_all(&body)).map_err(|e| io(&p, "write", e))?;
        f.sync_all().map_err(|e| io(&p, "sync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io(&p, "rename", e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(&p, "sync directory", e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Bounds-checked reader over the body.
struct Cur<'a> {
    b: &'a [u8],
    off: usize,
    path: &'a str,
}

impl<'a> Cur<'a> {
    fn bad(&self, why: impl std::fmt::Display) -> Error {
        bad(self.path, format!("{why} (body offset {})", self.off))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.off.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(e) => {
                let s = &self.b[self.off..e];
                self.off = e;
                Ok(s)
            }
            None => Err(self.bad(format!("truncated {what}"))),
        }
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let s = self.take(8, what)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        Ok(u64::from_le_bytes(w))
    }
    /// A count of items of at least `min` bytes each, checked against what is left.
    fn count(&mut self, min: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.b.len() - self.off) as u64;
        if n > left / min as u64 {
            return Err(self.bad(format!("{what} count {n} exceeds the remaining {left} bytes")));
        }
        Ok(n as usize)
    }
}

fn bad(path: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Checkpoint, format!("checkpoint {path}: {why}"))
}

/// Reads and validates a checkpoint. Any bad or missing byte gives
/// `Err(Checkpoint)` naming the path and the problem; never panics.
pub fn read(path: &Path) -> Result<Snapshot> {
    read_with_body(path).map(|(s, _, _)| s)
}

/// Like [`read`], also returning the validated body bytes (what a
/// `REC_SNAPSHOT` log record carries) and the format version.
pub fn read_with_body(path: &Path) -> Result<(Snapshot, Vec<u8>, u32)> {
    let p = path.display().to_string();
    let mut all = std::fs::read(path).map_err(|e| bad(&p, format!("cannot read: {e}")))?;
    let (snap, version) = decode(&all, &p)?;
    all.drain(..HEADER_LEN);
    Ok((snap, all, version))
}

fn decode(all: &[u8], p: &str) -> Result<(Snapshot, u32)> {
    if all.len() < HEADER_LEN {
        return Err(bad(p, format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", all.len())));
    }
    let (h, body) = all.split_at(HEADER_LEN);
    if h[0..8] != MAGIC {
        return Err(bad(p, "not an MMSB checkpoint (wrong magic)"));
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    if crate::tlog::crc32c(&h[0..28]) != u32_at(28) {
        return Err(bad(p, "header CRC32C mismatch"));
    }
    if !(1..=VERSION).contains(&u32_at(8)) {
        return Err(bad(p, format!("unsupported format version {} (this build reads 1 to {VERSION})", u32_at(8))));
    }
    if u32_at(12) != 0 {
        return Err(bad(p, format!("unsupported flags {:#x}", u32_at(12))));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&h[16..24]);
    let body_len = u64::from_le_bytes(w);
    if body_len != body.len() as u64 {
        return Err(bad(p, format!("body is {} bytes, header says {body_len} (truncated or extended file)", body.len())));
    }
    if crate::tlog::crc32c(body) != u32_at(24) {
        return Err(bad(p, "body CRC32C mismatch"));
    }
    decode_body(body, u32_at(8), p).map(|s| (s, u32_at(8)))
}

/// Parses a checkpoint body (no header, no CRC: the caller has checked the
/// bytes' integrity) with the same bounds checks as [`read`]. `p` names the
/// source in errors (`Checkpoint` kind); never panics.
pub fn decode_body(body: &[u8], version: u32, p: &str) -> Result<Snapshot> {
    let mut c = Cur { b: body, off: 0, path: p };
    let mut s = Snapshot {
        next_page_id: c.u64("next page id")?,
        next_delta_id: c.u64("next delta id")?,
        clock: c.u64("clock")?,
        log_seq: c.u64("log position")?,
        ..Default::default()
    };
    let n = c.count(40, "page")?;
    s.pages.reserve(n);
    for _ in 0..n {
        let id = c.u64("page id")?;
        let size = c.u64("page size")?;
        let epoch = c.u64("page epoch")?;
        let f = c.take(8, "page flags")?;
        let (location, recompute) = (f[0], f[1]);
        if f[2..] != [0u8; 6] {
            return Err(c.bad(format!("page {id}: reserved bytes are not zero")));
        }
        let np = c.count(8, "recompute parent")?;
        let mut parents = Vec::with_capacity(np);
        for _ in 0..np {
            parents.push(c.u64("recompute parent")?);
        }
        let size_us = usize::try_from(size).map_err(|_| c.bad(format!("page {id}: size {size} too large")))?;
        let bytes = c.take(size_us, "page bytes")?.to_vec();
        s.pages.push(SnapPage { id, size, epoch, location, recompute, parents, bytes });
    }
    let n = c.count(24, "edge")?;
    s.edges.reserve(n);
    for _ in 0..n {
        let parent = c.u64("edge parent")?;
        let child = c.u64("edge child")?;
        let kind = c.u64("edge kind")?;
        let kind = u8::try_from(kind).map_err(|_| c.bad(format!("edge {parent}->{child}: kind {kind} out of range")))?;
        s.edges.push((parent, child, kind));
    }
    let n = c.count(16, "signature")?;
    s.signatures.reserve(n);
    for _ in 0..n {
        let page = c.u64("signature page")?;
        let m = c.count(16, "signature entry")?;
        let mut v = Vec::with_capacity(m);
        for _ in 0..m {
            v.push((c.u64("signature parent")?, c.u64("signature epoch")?));
        }
        s.signatures.push((page, v));
    }
    if version >= 2 {
        let n = c.count(8, "stale page")?;
        for _ in 0..n {
            s.stale.push(c.u64("stale page")?);
        }
    }
    if c.off != body.len() {
        return Err(c.bad(format!("{} trailing bytes", body.len() - c.off)));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            next_page_id: 4,
            next_delta_id: 9,
            clock: 17,
            log_seq: 12,
            pages: vec![
                SnapPage { id: 1, size: 5, epoch: 3, location: 0, recompute: 0, parents: vec![], bytes: vec![1, 2, 3, 4, 5] },
                SnapPage { id: 2, size: 0, epoch: 0, location: 1, recompute: 1, parents: vec![1], bytes: vec![] },
                SnapPage { id: 3, size: 3, epoch: 7, location: 0, recompute: 2, parents: vec![1, 2], bytes: vec![9, 8, 7] },
            ],
            edges: vec![(1, 2, 0), (1, 3, 1), (2, 3, 0)],
            signatures: vec![(3, vec![(1, 3), (2, 0)])],
            stale: vec![3],
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        write(&p, &Snapshot::default()).unwrap();
        assert_eq!(read(&p).unwrap(), Snapshot::default());
        write(&p, &snap()).unwrap();
        assert_eq!(read(&p).unwrap(), snap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.ckpt"], "no temp file left behind");
        let mut bad = snap();
        bad.pages[0].size = 6;
        assert_eq!(write(&p, &bad).unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(read(&p).unwrap(), snap(), "a failed write leaves the old checkpoint");
        let e = read(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Checkpoint);
        assert!(e.msg.contains("missing"));
        // only a regular file is replaced (a directory, a device node: refused)
        assert_eq!(write(dir.path(), &snap()).unwrap_err().kind, ErrorKind::Invalid);
        // writers to one path at once each get a temp file of their own: every
        // call succeeds and the file holds one whole snapshot (review finding:
        // a shared `path.tmp` made one call fail and the other report the
        // winner's bytes as its own)
        let (a, mut b) = (snap(), snap());
        b.next_page_id = 99;
        std::thread::scope(|sc| {
            for s in [&a, &b, &a, &b] {
                let p = &p;
                sc.spawn(move || (0..20).for_each(|_| write(p, s).unwrap()));
            }
        });
        let got = read(&p).unwrap();
        assert!(got == a || got == b);
        // temp files left by a crashed writer with this pid are skipped, not
        // removed (review finding: the write failed on one, then deleted it)
        let next = TMP_SEQ.load(std::sync::atomic::Ordering::Relaxed);
        let left: Vec<_> = (next..next + 3).map(|n| dir.path().join(format!("c.ckpt.tmp.{}.{n}", std::process::id()))).collect();
        for f in &left {
            std::fs::write(f, b"left over").unwrap();
        }
        write(&p, &b).unwrap();
        assert_eq!(read(&p).unwrap(), b);
        assert!(left.iter().all(|f| std::fs::read(f).unwrap() == b"left over"));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        write(&p, &snap()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let name = p.display().to_string();
        let check = |b: &[u8]| match decode(b, &name) {
            Ok((s, _)) => assert_eq!(s, snap(), "wrong data accepted"),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Checkpoint);
                assert!(e.msg.contains(&name));
            }
        };
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &name).is_err(), "truncation at {n} accepted");
            check(&bytes[..n]);
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b, &name).is_err(), "flip at {i} accepted");
                check(&b);
            }
        }
        let mut b = bytes.clone();
        b.push(0);
        assert!(decode(&b, &name).is_err());
        // also through the file path
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read(&p).unwrap_err().kind, ErrorKind::Checkpoint);
    }

    /// A version-1 file (before the stale list) still reads, as no stale pages.
    #[test]
    fn version_1_files_still_read() {
        let mut old = snap();
        old.stale.clear();
        let mut body = encode_body(&old, "x").unwrap();
        body.truncate(body.len() - 8); // version 1 ends after the signatures
        let mut h = header(&body);
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        let hc = crate::tlog::crc32c(&h[0..28]);
        h[28..32].copy_from_slice(&hc.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v1.ckpt");
        std::fs::write(&p, [&h[..], &body[..]].concat()).unwrap();
        assert_eq!(read_with_body(&p).unwrap(), (old, body, 1));
    }

    #[test]
    fn body_round_trip_and_every_body_truncation_is_an_error() {
        let body = encode_body(&snap(), "x").unwrap();
        assert_eq!(decode_body(&body, VERSION, "x").unwrap(), snap());
        for n in 0..body.len() {
            let e = decode_body(&body[..n], VERSION, "x").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Checkpoint);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.ckpt");
        write(&p, &snap()).unwrap();
        assert_eq!(read_with_body(&p).unwrap(), (snap(), body, VERSION));
    }

    #[test]
    fn absurd_counts_with_valid_crc_do_not_allocate_or_panic() {
        // A body whose CRC is right but whose page count is huge.
        let mut body = vec![0u8; 32];
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let h = header(&body);
        let all = [&h[..], &body[..]].concat();
        let e = decode(&all, "x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Checkpoint);
        assert!(e.msg.contains("page count"), "{}", e.msg);
    }
}
