//! `include/mmsb.h` against the library, as a C compiler sees it: the header
//! compiles as strict C99; it declares exactly the functions the library
//! exports, with the parameter and return types of their Rust signatures
//! (`rust/src/ffi/exports.rs`); every declared function links; every struct has the size and
//! field offsets of its `#[repr(C)]` mirror; and a small C program drives a
//! state through the header (create, write with propagation, read, log).

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use mmsb::ffi::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/mmsb.h")).unwrap()
}

/// Names `mmsb_*` that are followed by `(` outside comments: the declared functions.
fn declared_functions(h: &str) -> BTreeSet<String> {
    let code = strip_comments(h);
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("mmsb_") {
        let name: String = code[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if code[i + name.len()..].starts_with('(') && !code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(name);
        }
    }
    out
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(a) = rest.find("/*") {
        out.push_str(&rest[..a]);
        rest = rest[a..].find("*/").map_or("", |b| &rest[a + b + 2..]);
    }
    out.push_str(rest);
    out
}

/// A prototype as C type tokens: (return type, parameter types), e.g.
/// `(["int32_t"], [["MmsbState", "*"], ["const", "uint8_t", "*"]])`.
type Proto = (Vec<String>, Vec<Vec<String>>);

fn c_tokens(t: &str) -> Vec<String> {
    t.replace('*', " * ").split_whitespace().map(String::from).collect()
}

/// The C type tokens of a Rust FFI type (`*mut *mut MmsbState`, `u64`, ...).
fn rust_type_tokens(t: &str) -> Vec<String> {
    let t = t.trim();
    if let Some(rest) = t.strip_prefix("*mut ") {
        let mut v = rust_type_tokens(rest);
        v.push("*".into());
        return v;
    }
    if let Some(rest) = t.strip_prefix("*const ") {
        let mut v = vec!["const".to_string()];
        v.extend(rust_type_tokens(rest));
        v.push("*".into());
        return v;
    }
    let c = match t {
        "u8" => "uint8_t",
        "u32" => "uint32_t",
        "u64" => "uint64_t",
        "i32" => "int32_t",
        "i64" => "int64_t",
        other => other,
    };
    vec![c.to_string()]
}

/// `extern "C" fn mmsb_*` in the Rust exports, with their C prototypes.
fn exported_prototypes() -> BTreeMap<String, Proto> {
    let src = std::fs::read_to_string(root().join("rust/src/ffi/exports.rs")).unwrap();
    let mut out = BTreeMap::new();
    for piece in src.split("extern \"C\" fn ").skip(1) {
        let open = piece.find('(').unwrap();
        let close = piece.find(')').unwrap();
        let name = piece[..open].trim().to_string();
        let params = piece[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| rust_type_tokens(p.split_once(':').unwrap().1))
            .collect();
        let after = &piece[close + 1..piece.find('{').unwrap()];
        let ret = match after.trim().strip_prefix("->") {
            Some(r) => rust_type_tokens(r),
            None => vec!["void".to_string()],
        };
        out.insert(name, (ret, params));
    }
    out
}

/// The `mmsb_*` prototypes declared in the header.
fn declared_prototypes(h: &str) -> BTreeMap<String, Proto> {
    let code: String = strip_comments(h).lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.rsplit(['{', '}']).next().unwrap();
        let Some(at) = stmt.find("mmsb_") else { continue };
        let Some(open) = stmt[at..].find('(').map(|o| at + o) else { continue };
        let close = stmt.rfind(')').unwrap();
        let params = stmt[open + 1..close]
            .split(',')
            .map(c_tokens)
            .filter(|t| t != &["void"])
            .map(|mut t| {
                t.pop(); // the parameter's name
                t
            })
            .collect();
        out.insert(stmt[at..open].trim().to_string(), (c_tokens(&stmt[..at]), params));
    }
    out
}

/// `typedef struct { ... } Name;` blocks: (name, field names in order).
fn declared_structs(h: &str) -> Vec<(String, Vec<String>)> {
    let code = strip_comments(h);
    let mut out = Vec::new();
    for part in code.split("typedef struct {").skip(1) {
        let close = part.find('}').unwrap();
        let name: String = part[close + 1..].trim_start().chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let mut fields = Vec::new();
        for decl in part[..close].split(';').map(str::trim).filter(|d| !d.is_empty()) {
            // "uint64_t a, b" / "const uint8_t *p" / "uint8_t reserved[5]": each
            // declarator's name is its last identifier, array bounds removed
            for piece in decl.split(',') {
                let piece = piece.split('[').next().unwrap();
                let name = piece.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| !w.is_empty()).unwrap();
                fields.push(name.to_string());
            }
        }
        out.push((name, fields));
    }
    out
}

/// A Rust mirror's name, size, and (field, offset) pairs.
type Layout = (String, usize, Vec<(String, usize)>);

macro_rules! layout {
    ($($t:ident { $($f:ident),* $(,)? })*) => {
        vec![$((stringify!($t).to_string(), size_of::<$t>(), vec![$((stringify!($f).to_string(), offset_of!($t, $f))),*])),*]
    };
}

fn rust_layouts() -> Vec<Layout> {
    layout! {
        MmsbConfig { abi_version, strict_epochs, enable_gpu, durability, truncate, gpu_threshold, tlog_path, tlog_path_len, threads, reserved }
        MmsbRecoveryInfo { records_recovered, bytes_truncated }
        MmsbPageInfo { id, size, epoch, location, recompute, stale, reserved }
        MmsbWriteResult { delta_id, epoch, pending_page, prop_status, reserved }
        MmsbDeltaDesc { id, page_id, base_epoch, timestamp, source, encoding, reserved, mask, mask_len, payload, payload_len }
        MmsbDeltaStamp { id, base_epoch, timestamp }
        MmsbBatchResult { applied, pending_page, prop_status, reserved }
        MmsbEdge { parent, child, kind }
        MmsbEvent { kind, page_id, delta_id, epoch }
        MmsbPropStep { status, reserved, page_id }
        MmsbStats { pages, page_bytes, deltas_applied, bytes_logged, log_records, recomputes_run, recomputes_skipped, recomputes_cutoff, propagation_cycles, propagation_ns, apply_samples, apply_ns }
        MmsbLogRecord { seq, kind, page_id, aux, delta_id, base_epoch, timestamp, source, encoding, mask_len, payload_len }
    }
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let h = header();
    let declared = declared_functions(&h);
    let exported: BTreeSet<String> = exported_prototypes().into_keys().collect();
    assert!(exported.len() >= 40, "found only {} exports: is the parser broken?", exported.len());
    let missing: Vec<_> = exported.difference(&declared).collect();
    let extra: Vec<_> = declared.difference(&exported).collect();
    assert!(missing.is_empty(), "exported but not declared in mmsb.h: {missing:?}");
    assert!(extra.is_empty(), "declared in mmsb.h but not exported: {extra:?}");
}

#[test]
fn header_prototypes_are_the_rust_signatures() {
    let c = declared_prototypes(&header());
    let r = exported_prototypes();
    assert_eq!(c.keys().collect::<Vec<_>>(), r.keys().collect::<Vec<_>>());
    for (name, proto) in &r {
        assert_eq!(&c[name], proto, "prototype of {name}: mmsb.h (left) vs rust/src/ffi/exports.rs (right)");
    }
    // the parser sees what it should: a pointer-to-pointer and a void return
    assert_eq!(c["mmsb_state_new"].1[1], ["MmsbState", "*", "*"]);
    assert_eq!(c["mmsb_state_free"].0, ["void"]);
}

#[test]
fn header_structs_are_the_rust_structs() {
    let c: Vec<(String, Vec<String>)> = declared_structs(&header());
    let r = rust_layouts();
    let c_names: Vec<&String> = c.iter().map(|x| &x.0).collect();
    let r_names: Vec<&String> = r.iter().map(|x| &x.0).collect();
    assert_eq!(c_names, r_names, "struct list differs between mmsb.h and the Rust mirrors");
    for ((name, cf), (_, _, rf)) in c.iter().zip(&r) {
        let rf: Vec<&String> = rf.iter().map(|x| &x.0).collect();
        assert_eq!(cf.iter().collect::<Vec<_>>(), rf, "fields of {name}");
    }
}

/// The C program: links every declared function, prints each struct's size
/// and field offsets, then drives a state.
fn c_program(h: &str) -> String {
    let mut s = String::from("#include <stddef.h>\n#include <stdio.h>\n#include <string.h>\n#include \"mmsb.h\"\n\n");
    s += "typedef void (*fnptr)(void);\nstatic const fnptr all_functions[] = {\n";
    for f in declared_functions(h) {
        s += &format!("    (fnptr){f},\n");
    }
    s += "};\n\nstatic void layouts(void) {\n";
    for (name, fields) in declared_structs(h) {
        s += &format!("    printf(\"size {name} %zu\\n\", sizeof({name}));\n");
        for f in fields {
            s += &format!("    printf(\"field {name}.{f} %zu\\n\", offsetof({name}, {f}));\n");
        }
    }
    s += r#"}

#define CHECK(x) do { int32_t rc_ = (x); if (rc_ != MMSB_OK) { uint8_t m[256]; uint64_t n = mmsb_last_error_message(m, sizeof m); \
    fprintf(stderr, "%s failed: %d %.*s\n", #x, rc_, (int)(n < sizeof m ? n : sizeof m), (const char *)m); return 1; } } while (0)

int main(void) {
    MmsbConfig cfg;
    MmsbState *st = NULL;
    MmsbPageInfo a, b;
    MmsbWriteResult w;
    MmsbLogRecord rec;
    uint8_t bytes[64], back[64], payload[256];
    uint64_t first = 0, next = 0, n = 0;
    int i;
    if (sizeof all_functions / sizeof all_functions[0] == 0) return 1;
    layouts();
    if (mmsb_abi_version() != MMSB_ABI_VERSION) { fprintf(stderr, "ABI %u\n", mmsb_abi_version()); return 1; }
    memset(&cfg, 0, sizeof cfg);
    cfg.abi_version = MMSB_ABI_VERSION;
    CHECK(mmsb_state_new(&cfg, &st, NULL));
    CHECK(mmsb_page_create(st, sizeof bytes, MMSB_LOC_CPU, &a));
    CHECK(mmsb_page_create(st, sizeof bytes, MMSB_LOC_CPU, &b));
    CHECK(mmsb_recompute_set(st, b.id, MMSB_RECOMPUTE_PASSTHROUGH, &a.id, 1));
    for (i = 0; i < 64; i++) bytes[i] = (uint8_t)(3 * i + 1);
    CHECK(mmsb_page_write(st, a.id, bytes, sizeof bytes, MMSB_WRITE_PROPAGATE, &w));
    if (w.epoch != 1 || w.delta_id == 0 || w.prop_status != 0) { fprintf(stderr, "write result\n"); return 1; }
    CHECK(mmsb_page_read(st, b.id, back, sizeof back));
    if (memcmp(bytes, back, sizeof back) != 0) { fprintf(stderr, "passthrough child differs\n"); return 1; }
    if (mmsb_page_read(st, 999, back, sizeof back) != MMSB_ERR_PAGE_NOT_FOUND) { fprintf(stderr, "missing page\n"); return 1; }
    CHECK(mmsb_tlog_len(st, &first, &next));
    CHECK(mmsb_tlog_entry(st, next - 1, &rec, payload, sizeof payload, &n));
    printf("log %llu records, last kind %llu page %llu\n", (unsigned long long)(next - first),
           (unsigned long long)rec.kind, (unsigned long long)rec.page_id);
    mmsb_state_free(st);
    printf("ok\n");
    return 0;
}
"#;
    s
}

#[test]
fn c_program_compiles_links_and_agrees_on_layouts() {
    let h = header();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("use_mmsb.c");
    std::fs::write(&src, c_program(&h)).unwrap();
    // the cdylib cargo built for this test run, beside the test binary
    // (target/<profile>/deps; target/<profile>/ holds it only after `cargo build`)
    let exe = std::env::current_exe().unwrap();
    let libdir = exe.parent().unwrap();
    assert!(libdir.join("libmmsb.so").exists(), "no libmmsb.so in {}", libdir.display());
    let bin = dir.path().join("use_mmsb");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg(format!("-L{}", libdir.display()))
        .arg("-lmmsb")
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    // cargo's LD_LIBRARY_PATH for tests names target/<profile>/ first, which may hold an older build
    let run = Command::new(&bin).env("LD_LIBRARY_PATH", libdir).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "C program failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.ends_with("ok\n"), "{stdout}");
    assert!(stdout.contains(&format!("last kind {} page 2", 6)), "the passthrough's delta is the last record:\n{stdout}");
    for (name, size, fields) in rust_layouts() {
        assert!(stdout.contains(&format!("size {name} {size}\n")), "sizeof({name}) differs from Rust's {size}:\n{stdout}");
        for (f, off) in fields {
            assert!(stdout.contains(&format!("field {name}.{f} {off}\n")), "offsetof({name}, {f}) differs from Rust's {off}:\n{stdout}");
        }
    }
}

/// `#define MMSB_* value` lines of the header (the include guard aside), values as numbers.
fn declared_constants(h: &str) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for line in strip_comments(h).lines() {
        let mut t = line.split_whitespace();
        if t.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(v)) = (t.next(), t.next()) else { continue };
        if name == "MMSB_H" {
            continue;
        }
        let value = match v {
            "UINT64_MAX" => u64::MAX as i128,
            _ => v.trim_end_matches('u').parse::<i128>().unwrap_or_else(|_| panic!("{name}: value {v:?} not understood")),
        };
        assert!(out.insert(name.to_string(), value).is_none(), "{name} defined twice");
    }
    out
}

#[test]
fn header_constants_are_the_rust_constants() {
    use mmsb::delta::*;
    use mmsb::error::ErrorKind as K;
    use mmsb::page::*;
    use mmsb::propagate::*;
    use mmsb::state::*;
    use mmsb::tlog::{REC_CYCLE, REC_PROP_STATE};
    let code = |k: K| k.code() as i128;
    let rust: BTreeMap<String, i128> = [
        ("MMSB_ABI_VERSION", MMSB_ABI_VERSION as i128),
        ("MMSB_OK", 0),
        ("MMSB_ERR_NULL", code(K::Null)),
        ("MMSB_ERR_INVALID", code(K::Invalid)),
        ("MMSB_ERR_DIMENSION", code(K::Dimension)),
        ("MMSB_ERR_PAGE_NOT_FOUND", code(K::PageNotFound)),
        ("MMSB_ERR_CYCLE", code(K::Cycle)),
        ("MMSB_ERR_HAS_DEPENDENTS", code(K::HasDependents)),
        ("MMSB_ERR_STALE_DELTA", code(K::StaleDelta)),
        ("MMSB_ERR_TLOG_CORRUPT", code(K::TLogCorrupt)),
        ("MMSB_ERR_CHECKPOINT", code(K::Checkpoint)),
        ("MMSB_ERR_GPU_UNAVAILABLE", code(K::GpuUnavailable)),
        ("MMSB_ERR_IO", code(K::Io)),
        ("MMSB_ERR_BUSY", code(K::Busy)),
        ("MMSB_ERR_BUFFER_TOO_SMALL", code(K::BufferTooSmall)),
        ("MMSB_ERR_CLOSED", code(K::Closed)),
        ("MMSB_ERR_INTERNAL", code(K::Internal)),
        ("MMSB_LOC_CPU", LOC_CPU as i128),
        ("MMSB_LOC_GPU", LOC_GPU as i128),
        ("MMSB_DURABILITY_NONE", DURABILITY_NONE as i128),
        ("MMSB_DURABILITY_BUFFERED", DURABILITY_BUFFERED as i128),
        ("MMSB_DURABILITY_FSYNC", DURABILITY_FSYNC as i128),
        ("MMSB_SOURCE_API", SOURCE_API as i128),
        ("MMSB_SOURCE_PROPAGATION", SOURCE_PROPAGATION as i128),
        ("MMSB_SOURCE_BATCH", SOURCE_BATCH as i128),
        ("MMSB_SOURCE_REPLAY", SOURCE_REPLAY as i128),
        ("MMSB_ENC_DENSE", ENC_DENSE as i128),
        ("MMSB_ENC_SPARSE", ENC_SPARSE as i128),
        ("MMSB_RECOMPUTE_NONE", RC_NONE as i128),
        ("MMSB_RECOMPUTE_PASSTHROUGH", RC_PASSTHROUGH as i128),
        ("MMSB_RECOMPUTE_CLOSURE", RC_CLOSURE as i128),
        ("MMSB_EVENT_PAGE_CREATED", EV_PAGE_CREATED as i128),
        ("MMSB_EVENT_PAGE_DELETED", EV_PAGE_DELETED as i128),
        ("MMSB_EVENT_PAGE_INVALIDATED", EV_INVALIDATED as i128),
        ("MMSB_EVENT_DELTA_APPLIED", EV_DELTA_APPLIED as i128),
        ("MMSB_EVENT_PAGE_CHANGED", EV_PAGE_CHANGED as i128),
        ("MMSB_REC_PAGE_CREATE", REC_PAGE_CREATE as i128),
        ("MMSB_REC_PAGE_DELETE", REC_PAGE_DELETE as i128),
        ("MMSB_REC_EDGE_ADD", REC_EDGE_ADD as i128),
        ("MMSB_REC_EDGE_REMOVE", REC_EDGE_REMOVE as i128),
        ("MMSB_REC_RECOMPUTE_SET", REC_RECOMPUTE_SET as i128),
        ("MMSB_REC_DELTA", REC_DELTA as i128),
        ("MMSB_REC_DELTA_STAMP", REC_DELTA_STAMP as i128),
        ("MMSB_REC_SNAPSHOT", REC_SNAPSHOT as i128),
        ("MMSB_REC_CYCLE", REC_CYCLE as i128),
        ("MMSB_REC_PROP_STATE", REC_PROP_STATE as i128),
        ("MMSB_WRITE_PROPAGATE", WRITE_PROPAGATE as i128),
        ("MMSB_WRITE_PARALLEL", WRITE_PARALLEL as i128),
        ("MMSB_WRITE_DEFER_SYNC", WRITE_DEFER_SYNC as i128),
        ("MMSB_WRITE_SHARED", WRITE_SHARED as i128),
        ("MMSB_PROP_NEED_LOCK", PROP_NEED_LOCK as i128),
        ("MMSB_DELTA_ID_PENDING", DELTA_ID_PENDING as i128),
        ("MMSB_PROP_ENQUEUE_CHILDREN", ENQUEUE_CHILDREN as i128),
        ("MMSB_PROP_ENQUEUE_SELF", ENQUEUE_SELF as i128),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    let c = declared_constants(&header());
    let c_names: Vec<&String> = c.keys().collect();
    let r_names: Vec<&String> = rust.keys().collect();
    assert_eq!(c_names, r_names, "constants defined in mmsb.h (left) vs checked against Rust (right)");
    for (name, v) in &rust {
        assert_eq!(c[name], *v, "{name}: mmsb.h (left) vs Rust (right)");
    }
}
