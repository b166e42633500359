use super::*;
use std::fs;
use std::path::Path;

fn hdr(kind: u8, i: u64) -> RecordHeader {
    RecordHeader {
        seq: 0,
        kind,
        page_id: i + 1,
        aux: i * 7,
        delta_id: i,
        base_epoch: i / 2,
        timestamp: 1000 + i,
        source: (i % 4) as u8,
        encoding: (i % 2) as u8,
        mask_len: 0,
    }
}

/// One record of every kind, then a few more deltas (dense and sparse).
fn sample() -> Vec<(RecordHeader, Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    for kind in 1..=6u8 {
        let i = kind as u64;
        let (mask, data) = match kind {
            5 => (vec![], [2u64, 3].iter().flat_map(|x| x.to_le_bytes()).collect()),
            6 => (vec![0xA5u8; 4], (0..32u8).collect()),
            _ => (vec![], vec![]),
        };
        v.push((hdr(kind, i), mask, data));
    }
    for i in 0..4u64 {
        let mask: Vec<u8> = (0..16).map(|j| (i as u8).wrapping_mul(31) ^ j).collect();
        let data: Vec<u8> = (0..(10 + 17 * i as usize)).map(|j| (j as u8) ^ (i as u8)).collect();
        v.push((hdr(6, 10 + i), mask, data));
    }
    v
}

fn expected(s: &[(RecordHeader, Vec<u8>, Vec<u8>)]) -> Vec<Record> {
    s.iter()
        .enumerate()
        .map(|(i, (h, m, d))| {
            let mut header = *h;
            header.seq = i as u64 + 1;
            header.mask_len = m.len() as u64;
            Record { header, payload: [m.as_slice(), d.as_slice()].concat() }
        })
        .collect()
}

fn fill(log: &mut TLog, s: &[(RecordHeader, Vec<u8>, Vec<u8>)]) {
    for (i, (h, m, d)) in s.iter().enumerate() {
        let seq = log.append(&RecordRef { header: *h, mask: m, data: d }).unwrap();
        assert_eq!(seq, i as u64 + 1);
    }
}

fn check_log(log: &TLog, want: &[Record]) {
    assert_eq!(log.len(), want.len() as u64);
    assert_eq!(log.first_seq(), 1);
    assert_eq!(log.next_seq(), want.len() as u64 + 1);
    for r in want {
        assert_eq!(&log.get(r.header.seq).unwrap(), r);
    }
    assert_eq!(log.records_from(1).unwrap(), want);
    assert_eq!(log.records_from(3).unwrap(), &want[2..]);
    assert!(log.records_from(log.next_seq()).unwrap().is_empty());
    assert_eq!(log.get(0).unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(log.get(log.next_seq()).unwrap_err().kind, ErrorKind::Invalid);
}

#[test]
fn memory_round_trip_every_kind() {
    let s = sample();
    let want = expected(&s);
    let mut log = TLog::memory();
    assert!(log.sync_handle().is_none());
    fill(&mut log, &s);
    check_log(&log, &want);
    assert!(log.bytes_logged() > 0);
}

#[test]
fn append_rejects_bad_kind_and_changes_nothing() {
    for d in [Durability::None, Durability::Buffered, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = match d {
            Durability::None => TLog::memory(),
            _ => TLog::open(&dir.path().join("l"), d, false).unwrap().0,
        };
        for kind in [0u8, 11, 255] {
            let e = log.append(&RecordRef { header: hdr(kind, 1), mask: &[], data: &[] }).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
        }
        assert_eq!(log.len(), 0);
        assert_eq!(log.bytes_logged(), 0);
    }
}

#[test]
fn open_with_durability_none_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let e = TLog::open(&dir.path().join("l"), Durability::None, false).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[test]
fn file_round_trip_and_reopen() {
    for d in [Durability::Buffered, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let s = sample();
        let want = expected(&s);
        {
            let (mut log, recs, rep) = TLog::open(&path, d, false).unwrap();
            assert!(recs.is_empty());
            assert_eq!(rep, RecoveryReport::default());
            assert_eq!(log.sync_handle().is_some(), d == Durability::Fsync);
            fill(&mut log, &s);
            if let Some(h) = log.sync_handle() {
                h.wait_durable(log.len()).unwrap();
            }
            check_log(&log, &want);
        }
        let (log, recs, rep) = TLog::open(&path, d, false).unwrap();
        assert_eq!(recs, want, "{d:?}");
        assert_eq!(rep, RecoveryReport { records: want.len() as u64, bytes_truncated: 0 });
        check_log(&log, &want);
        drop(log);
        // truncate=true starts empty
        let (log, recs, _) = TLog::open(&path, d, true).unwrap();
        assert!(recs.is_empty());
        assert_eq!(log.len(), 0);
        assert_eq!(fs::metadata(&path).unwrap().len(), file::HEADER_LEN);
    }
}

#[test]
fn buffered_big_records_and_buffer_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let big: Vec<u8> = (0..(file::BUF_CAP + 100)).map(|i| (i % 251) as u8).collect();
    let mut want = Vec::new();
    {
        let (mut log, _, _) = TLog::open(&path, Durability::Buffered, false).unwrap();
        for i in 0..200u64 {
            let data: &[u8] = if i % 50 == 7 { &big } else { &big[..(i as usize * 997) % 20000] };
            let h = hdr(6, i);
            let seq = log.append(&RecordRef { header: h, mask: &[1, 2, 3], data }).unwrap();
            let mut header = h;
            header.seq = seq;
            header.mask_len = 3;
            want.push(Record { header, payload: [&[1u8, 2, 3][..], data].concat() });
        }
        check_log(&log, &want);
    }
    let (_, recs, rep) = TLog::open(&path, Durability::Buffered, false).unwrap();
    assert_eq!(rep.bytes_truncated, 0);
    assert_eq!(recs, want);
}

#[test]
fn truncate_after_and_clear() {
    for d in [Durability::None, Durability::Buffered, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let s = sample();
        let want = expected(&s);
        let mut log = match d {
            Durability::None => TLog::memory(),
            _ => TLog::open(&path, d, false).unwrap().0,
        };
        fill(&mut log, &s);
        log.truncate_after(100).unwrap();
        assert_eq!(log.len(), want.len() as u64);
        log.truncate_after(4).unwrap();
        check_log(&log, &want[..4]);
        // appending after a truncation continues at seq 5
        let (h, m, dd) = &s[4];
        assert_eq!(log.append(&RecordRef { header: *h, mask: m, data: dd }).unwrap(), 5);
        if let Some(sh) = log.sync_handle() {
            sh.wait_durable(5).unwrap();
        }
        check_log(&log, &want[..5]);
        if d != Durability::None {
            log.flush().unwrap();
            // (a copy: the open log holds its file's lock)
            let copy = dir.path().join("copy");
            std::fs::copy(&path, &copy).unwrap();
            let (_, recs, rep) = TLog::open(&copy, Durability::Buffered, false).unwrap();
            assert_eq!(recs, &want[..5]);
            assert_eq!(rep.bytes_truncated, 0);
        }
        log.clear().unwrap();
        assert_eq!(log.len(), 0);
        assert_eq!(log.bytes_logged(), 0);
        assert_eq!(log.next_seq(), 1);
        if d != Durability::None {
            assert_eq!(fs::metadata(&path).unwrap().len(), file::HEADER_LEN);
        }
        fill(&mut log, &s);
        if let Some(sh) = log.sync_handle() {
            sh.wait_durable(log.len()).unwrap();
        }
        check_log(&log, &want);
        drop(log);
        if d != Durability::None {
            let (_, recs, _) = TLog::open(&path, d, false).unwrap();
            assert_eq!(recs, want);
        }
    }
}

/// Writes the sample log and returns (path, bytes, records).
fn sample_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>, Vec<Record>) {
    let path = dir.join("orig");
    let s = sample();
    {
        let (mut log, _, _) = TLog::open(&path, Durability::Buffered, false).unwrap();
        fill(&mut log, &s);
    }
    (path.clone(), fs::read(&path).unwrap(), expected(&s))
}

/// Opening `bytes` gives a prefix of `want` (and the file is cut to exactly
/// that prefix) or TLogCorrupt; returns whether it was a prefix.
fn open_image(path: &Path, bytes: &[u8], want: &[Record]) -> bool {
    fs::write(path, bytes).unwrap();
    match TLog::open(path, Durability::Buffered, false) {
        Ok((log, recs, rep)) => {
            assert!(recs.len() <= want.len());
            assert_eq!(recs, &want[..recs.len()], "recovered records are not a prefix");
            assert_eq!(rep.records, recs.len() as u64);
            assert_eq!(log.len(), recs.len() as u64);
            let len = fs::metadata(path).unwrap().len();
            let orig = bytes.len() as u64;
            if orig > 0 {
                let cut = &bytes[len as usize..];
                let reported = if cut.iter().all(|&b| b == 0) { 0 } else { cut.len() as u64 };
                assert_eq!(rep.bytes_truncated, reported);
            }
            assert_eq!(len, file::HEADER_LEN + log.bytes_logged());
            drop(log);
            // the cut file reopens cleanly with the same records
            let (_, again, rep2) = TLog::open(path, Durability::Buffered, false).unwrap();
            assert_eq!(again, recs);
            assert_eq!(rep2.bytes_truncated, 0);
            true
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::TLogCorrupt, "{e:?}");
            assert!(e.msg.contains(&path.display().to_string()), "{}", e.msg);
            false
        }
    }
}

#[test]
fn truncation_at_every_offset_gives_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, want) = sample_file(dir.path());
    let path = dir.path().join("cut");
    let mut frame_ends = vec![file::HEADER_LEN as usize];
    {
        let mut end = file::HEADER_LEN as usize;
        for r in &want {
            end += frame::FRAME_HDR + r.payload.len();
            frame_ends.push(end);
        }
    }
    assert_eq!(*frame_ends.last().unwrap(), bytes.len());
    for n in 0..=bytes.len() {
        let ok = open_image(&path, &bytes[..n], &want);
        if n == 0 {
            assert!(ok); // an empty file is a new log
        } else if n < file::HEADER_LEN as usize {
            assert!(!ok, "partial header at {n} accepted");
        } else {
            assert!(ok, "truncation at {n} must be a torn tail");
            let (_, recs, rep) = TLog::open(&path, Durability::Buffered, false).unwrap();
            let whole = frame_ends.iter().filter(|&&e| e <= n).count() - 1;
            assert_eq!(recs.len(), whole, "cut at {n}");
            let _ = rep;
        }
    }
}

#[test]
fn bit_flip_at_every_offset_never_gives_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, want) = sample_file(dir.path());
    let path = dir.path().join("flip");
    let last_start = bytes.len() - (frame::FRAME_HDR + want.last().unwrap().payload.len());
    let (mut prefix, mut corrupt) = (0, 0);
    for i in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if open_image(&path, &b, &want) {
                prefix += 1;
                // only a flip in the last frame can be taken for a torn tail
                assert!(i >= last_start, "flip at {i} (before the last frame) was silently cut");
            } else {
                corrupt += 1;
            }
        }
    }
    assert!(prefix > 0 && corrupt > 0);
}

#[test]
fn garbage_and_zero_tails() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, want) = sample_file(dir.path());
    let path = dir.path().join("tail");
    // a zero-filled tail (file extended, data never written) is torn
    let mut b = bytes.clone();
    b.extend_from_slice(&[0u8; 300]);
    assert!(open_image(&path, &b, &want));
    let (_, recs, rep) = {
        fs::write(&path, &b).unwrap();
        TLog::open(&path, Durability::Buffered, false).unwrap()
    };
    assert_eq!(recs, want);
    assert_eq!(rep.bytes_truncated, 0, "zeros at a frame boundary are preallocated space");
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, bytes.len());
    // a torn (non-zero) tail is reported
    let mut b = bytes.clone();
    b.extend_from_slice(&[0x55u8; 100]);
    fs::write(&path, &b).unwrap();
    let (_, recs, rep) = TLog::open(&path, Durability::Buffered, false).unwrap();
    assert_eq!(recs, want);
    assert_eq!(rep.bytes_truncated, 100);
    // a whole valid frame duplicated (wrong seq) is corruption
    let last = want.last().unwrap();
    let n = frame::FRAME_HDR + last.payload.len();
    let mut b = bytes.clone();
    b.extend_from_slice(&bytes[bytes.len() - n..]);
    fs::write(&path, &b).unwrap();
    let e = TLog::open(&path, Durability::Buffered, false).err().unwrap();
    assert_eq!(e.kind, ErrorKind::TLogCorrupt);
    assert!(e.msg.contains(&format!("offset {}", bytes.len())), "{}", e.msg);
    // bad magic / version
    let mut b = bytes.clone();
    b[0] = b'X';
    fs::write(&path, &b).unwrap();
    let e = TLog::open(&path, Durability::Buffered, false).err().unwrap();
    assert_eq!(e.kind, ErrorKind::TLogCorrupt);
    assert!(e.msg.contains("magic"), "{}", e.msg);
}

#[test]
fn group_commit_eight_threads() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let (log, _, _) = TLog::open(&path, Durability::Fsync, false).unwrap();
    let log = Arc::new(Mutex::new(log));
    let per = 50u64;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per {
                    let data = (t * 1000 + i).to_le_bytes();
                    let (seq, h) = {
                        let mut l = log.lock().unwrap();
                        let seq = l.append(&RecordRef { header: hdr(6, t), mask: &[], data: &data }).unwrap();
                        (seq, l.sync_handle().unwrap())
                    };
                    h.wait_durable(seq).unwrap();
                    assert!(h.durable_seq() >= seq);
                    mine.push((seq, t * 1000 + i));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(u64, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    assert_eq!(all.len() as u64, 8 * per);
    let h = log.lock().unwrap().sync_handle().unwrap();
    assert_eq!(h.waiters(), 0, "every waiter unregistered itself");
    assert_eq!(h.wait_durable(8 * per + 5).unwrap_err().kind, ErrorKind::Invalid);
    drop(log); // joins the writer thread
    h.wait_durable(8 * per).unwrap();
    let (_, recs, rep) = TLog::open(&path, Durability::Fsync, false).unwrap();
    assert_eq!(rep.bytes_truncated, 0);
    assert_eq!(recs.len() as u64, 8 * per);
    for ((seq, val), r) in all.iter().zip(&recs) {
        assert_eq!(r.header.seq, *seq);
        assert_eq!(r.payload, val.to_le_bytes());
    }
}

#[test]
fn fsync_log_image_with_preallocation_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let copy = dir.path().join("crash-image");
    let s = sample();
    let want = expected(&s);
    let (mut log, _, _) = TLog::open(&path, Durability::Fsync, false).unwrap();
    fill(&mut log, &s);
    log.sync_handle().unwrap().wait_durable(log.len()).unwrap();
    // the file as a crash would leave it: synced frames, then zeros
    let img = fs::read(&path).unwrap();
    assert!(img.len() as u64 > file::HEADER_LEN + log.bytes_logged());
    fs::write(&copy, &img).unwrap();
    let logical = file::HEADER_LEN + log.bytes_logged();
    drop(log);
    assert_eq!(fs::metadata(&path).unwrap().len(), logical, "a clean close drops the preallocation");
    let (_, recs, rep) = TLog::open(&copy, Durability::Fsync, false).unwrap();
    assert_eq!(recs, want);
    assert_eq!(rep.bytes_truncated, 0);
}

/// Cycle records that cannot be (a bound other than begin/end, a begin not
/// naming itself or inside another bracket, an end naming anything but the
/// open begin): `TLogCorrupt` at their offset, never a silent cut.
#[test]
fn impossible_cycle_records_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let (b, e) = (super::CYCLE_BEGIN, super::CYCLE_END);
    let cases: [&[(u8, u64)]; 8] = [
        &[(0, 2)],
        &[(3, 2)],
        &[(b, 1)],
        &[(b, 3)],
        &[(e, 1)],
        &[(b, 2), (b, 3)],
        &[(b, 2), (e, 1)],
        &[(b, 2), (e, 2), (e, 2)],
    ];
    for case in cases {
        let (mut log, _, _) = TLog::open(&path, Durability::Buffered, true).unwrap();
        log.append(&RecordRef { header: hdr(1, 1), mask: &[], data: &[] }).unwrap();
        for &(bound, aux) in case {
            let h = RecordHeader { kind: super::REC_CYCLE, aux, encoding: bound, ..RecordHeader::default() };
            log.append(&RecordRef { header: h, mask: &[], data: &[] }).unwrap();
        }
        drop(log);
        let err = TLog::open(&path, Durability::Buffered, false).err().unwrap();
        assert_eq!(err.kind, ErrorKind::TLogCorrupt, "{case:?}: {}", err.msg);
        assert!(err.msg.contains("marks a propagation cycle that cannot be"), "{}", err.msg);
    }
    // a begin with no end: cut from the begin on; a closed one: kept
    let (mut log, _, _) = TLog::open(&path, Durability::Buffered, true).unwrap();
    for (kind, aux, enc) in [(1u8, 0u64, 0u8), (super::REC_CYCLE, 2, b), (6, 0, 0), (super::REC_CYCLE, 2, e), (1, 0, 0), (super::REC_CYCLE, 6, b), (6, 0, 0)] {
        let h = RecordHeader { kind, aux, encoding: enc, page_id: 1, ..RecordHeader::default() };
        log.append(&RecordRef { header: h, mask: &[], data: &[] }).unwrap();
    }
    drop(log);
    let (_, recs, rep) = TLog::open(&path, Durability::Buffered, false).unwrap();
    assert_eq!(recs.len(), 5, "records 6 and 7 (an unfinished cycle) are cut off");
    assert_eq!(rep.bytes_truncated, 2 * 72);
}

/// After `poison` a file log refuses appends (it keeps its records); a
/// memory log ignores it; `clear` lifts it.
#[test]
fn a_poisoned_file_log_takes_no_more_records() {
    let dir = tempfile::tempdir().unwrap();
    let cause = crate::error::Error::new(ErrorKind::Io, "disk full");
    for d in [Durability::Buffered, Durability::Fsync] {
        let path = dir.path().join(format!("{d:?}"));
        let (mut log, _, _) = TLog::open(&path, d, true).unwrap();
        log.append(&RecordRef { header: hdr(1, 1), mask: &[], data: &[] }).unwrap();
        log.poison(&cause);
        let e = log.append(&RecordRef { header: hdr(1, 2), mask: &[], data: &[] }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.msg.contains("disk full"), "{}", e.msg);
        assert_eq!(log.len(), 1);
        log.clear().unwrap();
        log.append(&RecordRef { header: hdr(1, 3), mask: &[], data: &[] }).unwrap();
    }
    let mut m = TLog::memory();
    m.poison(&cause);
    m.append(&RecordRef { header: hdr(1, 1), mask: &[], data: &[] }).unwrap();
}
