//! publisher: the single writer of a pricefeed feed (layout version 3), in Rust with the
//! standard library only: no crates. `extern "C"` declarations reach shm_open, mmap, flock,
//! posix_fallocate and syscall(SYS_futex) in the C library that every Rust program on Linux
//! links anyway. The spec is docs/layout.md; each step below names its section.
//!
//!     rustc -O -o publisher clients/rust/publisher.rs
//!     publisher FEED [--fields SPEC] [--capacity N] [--ring N] [--mode OCTAL] [--stdin]
//!               [--generate N] [--symbols K] [--end]
//!     publisher --print-layout
//!
//! It opens FEED as its publisher (its sequence continues, its schema is the one the feed was
//! created with), or creates it with the given schema, capacity, ring size and mode (0600 by
//! default; applied exactly with fchmod, whatever the umask). --fields is the schema, as
//! `pricefeed create --fields` takes it: "bid:f64,ask:f64,bid_size:i64,ask_size:i64" (a bare
//! name is a f64); the default is one f64 named price. Then it prints {"ready": true, ...}
//! and:
//!   --stdin        publishes each line of standard input as it arrives, like `pricefeed
//!                  publish FEED -`: "SYMBOL PRICE" or "SYMBOL=PRICE" on a feed of one field,
//!                  "SYMBOL NAME=VALUE [NAME=VALUE ...]" on any feed (one change, setting
//!                  those fields; the others keep their values). Blank lines and lines that
//!                  start with # are skipped; a bad line (an unknown field, a value that is
//!                  not a finite f64 or a whole i64) is reported on stderr with its number and
//!                  skipped, nothing of it written (the exit code is then 7);
//!   --generate N   then publishes N changes: change k (1..N) sets every field of symbol
//!                  G{(k-1) % K}: field i to 100 + k/4 + i if it is a f64, to k + i if it is
//!                  an i64, so every one is a change of every field;
//!   --end          then ends the feed for good (subscribers finish).
//! It prints {"published": CHANGES, "head_seq": H} when done. Exit codes are the `pricefeed`
//! CLI's (docs/cli.md): 3 no such feed, 6 another publisher holds it, 7 bad input, 9 not a
//! pricefeed segment (or another layout version), 11 the feed was ended.
//!
//! --print-layout prints every layout constant as JSON; tests/interop/test_interop.py compares it with
//! pricefeed/_protocol/layout.py, so these constants cannot drift.
//!
//! Simplification: a feed whose last publisher died in the middle of a change (a slot with an
//! odd lock, or a seq above head_seq) is refused with a message naming the slot; the Python
//! publisher and pricefeed.h repair such a feed on takeover (layout.md, section 10).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Permissions};
use std::io::{self, BufRead, Read, Write};
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
compile_error!("this publisher is for 64-bit little-endian Linux (x86-64, aarch64)");

// ---------------------------------------------------------------------------------------------
// The layout (docs/layout.md, section 4): each offset derived from the one before it.
// ---------------------------------------------------------------------------------------------
const LAYOUT_VERSION: u32 = 3;
const MAGIC: u64 = u64::from_le_bytes(*b"PRCFEED\0");
const CACHE_LINE: u64 = 64;
const SYMBOL_FIELD: u64 = 32;
const SYMBOL_MAX: u64 = SYMBOL_FIELD - 1;
const SLOT_VOID: u32 = 0xFFFF_FFFF;
const WAKE_WORDS: u64 = 128;
const MIN_CAPACITY: u64 = 1;
const MAX_CAPACITY: u64 = 1 << 20;
const DEFAULT_CAPACITY: u64 = 1024;
const MIN_RING: u64 = 2;
const MAX_RING: u64 = 1 << 24;
const DEFAULT_RING: u64 = 1 << 16;
const NAME_MAX: usize = 27;

// The schema: 1 to MAX_FIELDS fields, each a f64 or an i64 under a name of 1 to FIELD_NAME_MAX
// characters (the entry's name field keeps a NUL at its end).
const MAX_FIELDS: u64 = 16;
const FIELD_NAME_FIELD: u64 = 24;
const FIELD_NAME_MAX: u64 = FIELD_NAME_FIELD - 1;
const TYPE_F64: u32 = 1;
const TYPE_I64: u32 = 2;
const VALUE_SIZE: u64 = 8;
// Names every quote has besides its fields: a field may not take them.
const RESERVED_NAMES: [&str; 7] = ["symbol", "seq", "time_ns", "changed", "changed_mask", "fields", "schema"];

const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = OFF_MAGIC + 8;
const OFF_HEADER_SIZE: u64 = OFF_VERSION + 4;
const OFF_INCARNATION: u64 = OFF_HEADER_SIZE + 4;
const OFF_CAPACITY: u64 = OFF_INCARNATION + 8;
const OFF_RING_SIZE: u64 = OFF_CAPACITY + 4;
const OFF_SLOT_SIZE: u64 = OFF_RING_SIZE + 4;
const OFF_RECORD_SIZE: u64 = OFF_SLOT_SIZE + 4;
const OFF_CREATED_NS: u64 = OFF_RECORD_SIZE + 4;
const OFF_SLOTS_OFFSET: u64 = OFF_CREATED_NS + 8;
const OFF_RING_OFFSET: u64 = OFF_SLOTS_OFFSET + 8;
const OFF_HEAD_SEQ: u64 = OFF_RING_OFFSET + 8; // line 1: written on every change
const OFF_FUTEX: u64 = OFF_HEAD_SEQ + 8 + 56; // line 2: the word subscribers sleep on
const OFF_CLOSED: u64 = OFF_FUTEX + 4 + 60; // line 3: written rarely
const OFF_SLOT_COUNT: u64 = OFF_CLOSED + 4;
const OFF_PUBLISHER_PID: u64 = OFF_SLOT_COUNT + 4;
const OFF_PUBLISHER_EPOCH: u64 = OFF_PUBLISHER_PID + 4;
const OFF_WAKE_WORDS: u64 = OFF_PUBLISHER_EPOCH + 4;
const OFF_PUBLISHER_STATE: u64 = OFF_WAKE_WORDS + 4 + 4; // after 4 bytes that align it
const OFF_FIELD_COUNT: u64 = OFF_PUBLISHER_STATE + 8;
const OFF_SCHEMA_OFFSET: u64 = OFF_FIELD_COUNT + 4 + 4; // after 4 bytes that align it
const OFF_SYMBOLS_OFFSET: u64 = OFF_SCHEMA_OFFSET + 8;
const HEADER_SIZE: u64 = OFF_SYMBOLS_OFFSET + 8 + 8;
// publisher_state, one u64 stored at once: bits 0-31 the epoch of the publisher that wrote it,
// bits 32-39 what it did last (holds the feed, or closed it cleanly), bits 40-63 the number of
// clean handovers (layout.md, section 10).
const STATE_EPOCH_BITS: u64 = 32;
const STATE_SHIFT: u64 = STATE_EPOCH_BITS;
const STATE_BITS: u64 = 8;
const HANDOVERS_SHIFT: u64 = STATE_SHIFT + STATE_BITS;
const HANDOVERS_BITS: u64 = 64 - HANDOVERS_SHIFT;
const PUBLISHER_HOLDS: u64 = 1;
const PUBLISHER_CLOSED: u64 = 2;

fn pack_state(epoch: u32, state: u64, handovers: u64) -> u64 {
    epoch as u64 | (state & ((1 << STATE_BITS) - 1)) << STATE_SHIFT | (handovers & ((1 << HANDOVERS_BITS) - 1)) << HANDOVERS_SHIFT
}

// A schema entry: the field's name (NUL-padded), its type, a reserved zero word.
const FIELD_NAME: u64 = 0;
const FIELD_TYPE: u64 = FIELD_NAME + FIELD_NAME_FIELD;
const FIELD_RESERVED: u64 = FIELD_TYPE + 4;
const SCHEMA_ENTRY_SIZE: u64 = FIELD_RESERVED + 4;

// The blocks after the header: the schema table, the wake table, the symbol table; then the
// slot table and the ring, whose offsets depend on the capacity and the schema.
const SCHEMA_OFFSET: u64 = HEADER_SIZE;
const SCHEMA_SIZE: u64 = MAX_FIELDS * SCHEMA_ENTRY_SIZE;
const WAKE_OFFSET: u64 = SCHEMA_OFFSET + SCHEMA_SIZE;
const WAKE_SIZE: u64 = WAKE_WORDS * 4;
const SYMBOLS_OFFSET: u64 = WAKE_OFFSET + WAKE_SIZE;

// A slot: its seqlock, the change that set it, then one value per field.
const SLOT_LOCK: u64 = 0;
const SLOT_SEQ: u64 = SLOT_LOCK + 8;
const SLOT_TIME: u64 = SLOT_SEQ + 8;
const SLOT_CHANGED: u64 = SLOT_TIME + 8;
const SLOT_RESERVED: u64 = SLOT_CHANGED + 4;
const SLOT_VALUES: u64 = SLOT_RESERVED + 4;

// A ring record: its seq (which doubles as its lock), the slot, the changed mask, the time,
// then one value per field.
const REC_SEQ: u64 = 0;
const REC_SLOT: u64 = REC_SEQ + 8;
const REC_CHANGED: u64 = REC_SLOT + 4;
const REC_TIME: u64 = REC_CHANGED + 4;
const REC_VALUES: u64 = REC_TIME + 8;

const _: () = assert!(HEADER_SIZE == 4 * CACHE_LINE && SCHEMA_SIZE % CACHE_LINE == 0 && WAKE_SIZE % CACHE_LINE == 0);
const _: () = assert!(OFF_HEAD_SEQ == CACHE_LINE && OFF_FUTEX == 2 * CACHE_LINE && OFF_CLOSED == 3 * CACHE_LINE);
const _: () = assert!(SLOT_VALUES % VALUE_SIZE == 0 && REC_VALUES % VALUE_SIZE == 0 && CACHE_LINE % SYMBOL_FIELD == 0);

fn to_line(size: u64) -> u64 {
    size.div_ceil(CACHE_LINE) * CACHE_LINE
}
fn slot_size(fields: u64) -> u64 {
    to_line(SLOT_VALUES + VALUE_SIZE * fields)
}
// 32 bytes (half a line) while that holds a record, else whole lines.
fn record_size(fields: u64) -> u64 {
    let size = REC_VALUES + VALUE_SIZE * fields;
    if size <= CACHE_LINE / 2 { CACHE_LINE / 2 } else { to_line(size) }
}
fn slots_offset(capacity: u64) -> u64 {
    SYMBOLS_OFFSET + to_line(capacity * SYMBOL_FIELD)
}
fn ring_offset(capacity: u64, fields: u64) -> u64 {
    slots_offset(capacity) + capacity * slot_size(fields)
}
fn segment_size(capacity: u64, ring_size: u64, fields: u64) -> u64 {
    ring_offset(capacity, fields) + ring_size * record_size(fields)
}
fn slot_offset(index: u64, capacity: u64, fields: u64) -> u64 {
    slots_offset(capacity) + index * slot_size(fields)
}
fn symbol_offset(index: u64) -> u64 {
    SYMBOLS_OFFSET + index * SYMBOL_FIELD
}
fn schema_entry_offset(field: u64) -> u64 {
    SCHEMA_OFFSET + field * SCHEMA_ENTRY_SIZE
}
fn wake_word_of(slot: u64) -> u64 {
    slot & (WAKE_WORDS - 1)
}
fn wake_offset(word: u64) -> u64 {
    WAKE_OFFSET + 4 * word
}

const LOCK_MASK: u64 = (1 << 63) - 1;
const FUTEX_MASK: u32 = 0x7fff_ffff;

// ---------------------------------------------------------------------------------------------
// The C library
// ---------------------------------------------------------------------------------------------
const O_RDONLY: c_int = 0;
const O_RDWR: c_int = 2;
const O_CREAT: c_int = 0o100;
const O_EXCL: c_int = 0o200;
const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const LOCK_EX: c_int = 2;
const LOCK_NB: c_int = 4;
const FUTEX_WAKE: c_long = 1;
const FUTEX_WAKE_OP: c_long = 5;
// FUTEX_OP(FUTEX_OP_OR, 0, FUTEX_OP_CMP_GE, 0): OR 0 into the second word (no change), wake
// its waiters if its old value, as an int, is >= 0 (always: it stays below 2^31).
const FUTEX_OP_OR_0_IF_GE_0: c_long = (2 << 28) | (5 << 24);
#[cfg(target_arch = "x86_64")]
const SYS_FUTEX: c_long = 202;
#[cfg(target_arch = "aarch64")]
const SYS_FUTEX: c_long = 98;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EPERM: i32 = 1;
const EEXIST: i32 = 17;
const EWOULDBLOCK: i32 = 11;
const EINTR: i32 = 4;

extern "C" {
    fn shm_open(name: *const c_char, oflag: c_int, mode: u32) -> c_int;
    fn shm_unlink(name: *const c_char) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: i64) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn flock(fd: c_int, operation: c_int) -> c_int;
    fn posix_fallocate(fd: c_int, offset: i64, len: i64) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
}

// ---------------------------------------------------------------------------------------------
// Errors: the message says what was found and what was expected; the code is the CLI's.
// ---------------------------------------------------------------------------------------------
#[derive(Debug)]
struct Error {
    exit: i32,
    message: String,
}
const EXIT_ERROR: i32 = 1;
const EXIT_NOT_FOUND: i32 = 3;
const EXIT_EXISTS: i32 = 5;
const EXIT_BUSY: i32 = 6;
const EXIT_INVALID: i32 = 7;
const EXIT_FULL: i32 = 8;
const EXIT_BAD_SEGMENT: i32 = 9;
const EXIT_PERMISSION: i32 = 10;
const EXIT_ENDED: i32 = 11;

fn fail<T>(exit: i32, message: String) -> Result<T, Error> {
    Err(Error { exit, message })
}

fn os_error(err: io::Error, feed: &str, action: &str) -> Error {
    let (exit, message) = match err.raw_os_error() {
        Some(ENOENT) => (EXIT_NOT_FOUND, format!("no feed named '{feed}' on this machine")),
        Some(EACCES) | Some(EPERM) => (EXIT_PERMISSION, format!("permission denied to {action} feed '{feed}': {err}")),
        Some(EEXIST) => (EXIT_EXISTS, format!("feed '{feed}' already exists")),
        _ => (EXIT_ERROR, format!("cannot {action} feed '{feed}': {err}")),
    };
    Error { exit, message }
}

fn check_name(feed: &str) -> Result<(), Error> {
    let ok = !feed.is_empty()
        && feed.len() <= NAME_MAX
        && !feed.starts_with('.')
        && !feed.starts_with('-')
        && feed.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        fail(
            EXIT_INVALID,
            format!("feed name must be 1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ - not starting with . or -: feed={feed:?}"),
        )
    }
}

fn check_symbol(symbol: &str) -> Result<(), Error> {
    let n = symbol.len() as u64;
    if (1..=SYMBOL_MAX).contains(&n) && symbol.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        fail(EXIT_INVALID, format!("symbol must be 1 to {SYMBOL_MAX} printable ASCII characters without spaces: symbol={symbol:?}"))
    }
}

fn check_geometry(capacity: u64, ring_size: u64) -> Result<(), String> {
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!("capacity must be a whole number from {MIN_CAPACITY} to {MAX_CAPACITY}: capacity={capacity}"));
    }
    if !(MIN_RING..=MAX_RING).contains(&ring_size) || !ring_size.is_power_of_two() {
        return Err(format!("ring size must be a power of 2 from {MIN_RING} to {MAX_RING}: ring_size={ring_size}"));
    }
    Ok(())
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The segment: one descriptor (which holds the flock) and one read-write mapping.
// ---------------------------------------------------------------------------------------------
struct Segment {
    file: File, // closing it drops the publisher lock
    base: *mut u8,
    len: usize,
}

impl Drop for Segment {
    fn drop(&mut self) {
        unsafe { munmap(self.base as *mut c_void, self.len) };
    }
}

impl Segment {
    fn map(file: File, len: u64) -> io::Result<Segment> {
        let len = len as usize;
        let base = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ | PROT_WRITE, MAP_SHARED, file.as_raw_fd(), 0) };
        if base as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Segment { file, base: base as *mut u8, len })
    }
    // Every shared word is accessed through an atomic of its full width: one load or store,
    // never split (layout.md, section 2). The offsets are checked against the geometry.
    fn u64(&self, off: u64) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len as u64);
        unsafe { AtomicU64::from_ptr(self.base.add(off as usize) as *mut u64) }
    }
    fn u32(&self, off: u64) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len as u64);
        unsafe { AtomicU32::from_ptr(self.base.add(off as usize) as *mut u32) }
    }
    // Bytes written once, before anyone may read them (a symbol, a schema entry), or only
    // read by the lock holder.
    fn bytes(&self, off: u64, len: u64) -> &mut [u8] {
        assert!(off + len <= self.len as u64);
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off as usize), len as usize) }
    }
}

fn wake(word: &AtomicU32) -> io::Result<()> {
    let r = unsafe { syscall(SYS_FUTEX, word.as_ptr(), FUTEX_WAKE, i32::MAX as c_long, 0 as c_long, 0 as c_long, 0 as c_long) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

// Wake every waiter of `word`, then of `futex`, in one system call (layout.md, section 8,
// step 7). The fourth argument, INT_MAX waiters of the second word, travels in the place of
// the timeout pointer.
fn wake_op(word: &AtomicU32, futex: &AtomicU32) -> io::Result<()> {
    let r = unsafe {
        syscall(SYS_FUTEX, word.as_ptr(), FUTEX_WAKE_OP, i32::MAX as c_long, i32::MAX as c_long, futex.as_ptr(), FUTEX_OP_OR_0_IF_GE_0)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn shm_name(feed: &str) -> CString {
    CString::new(format!("/pf-{feed}")).expect("a checked feed name has no NUL")
}

fn open_shm(feed: &str, flags: c_int, mode: u32) -> io::Result<File> {
    let fd = unsafe { shm_open(shm_name(feed).as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

// flock(LOCK_EX | LOCK_NB), retried for 50 ms: a subscriber's liveness probe holds a shared
// lock for a few microseconds (layout.md, section 10).
fn try_lock(file: &File) -> io::Result<bool> {
    let deadline = Instant::now() + Duration::from_millis(50);
    loop {
        if unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(EWOULDBLOCK) | Some(EINTR) => {}
            _ => return Err(err),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// The pid holding the exclusive flock on this inode, from /proc/locks (0: not found).
fn holder_pid(dev: u64, ino: u64) -> u32 {
    // dev_t as glibc's major() and minor() split it.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() >= 6 && parts[1] == "FLOCK" && parts[3] == "WRITE" && parts[5] == want {
            return parts[4].parse().unwrap_or(0);
        }
    }
    0
}

fn busy(feed: &str, file: &File) -> Error {
    let meta = file.metadata().ok();
    let pid = meta.map(|m| holder_pid(m.dev(), m.ino())).unwrap_or(0);
    let who = if pid != 0 { format!("pid {pid}") } else { "another process".to_string() };
    Error { exit: EXIT_BUSY, message: format!("feed '{feed}' already has a publisher ({who}); a feed has one publisher at a time") }
}

// ---------------------------------------------------------------------------------------------
// The schema (layout.md, section 4): what each field is called and what it holds
// ---------------------------------------------------------------------------------------------
#[derive(Clone, Debug, PartialEq)]
struct Field {
    name: String,
    kind: u32, // TYPE_F64 or TYPE_I64
}

fn type_name(kind: u32) -> &'static str {
    if kind == TYPE_I64 { "i64" } else { "f64" }
}

// A letter, then letters, digits or _ (an identifier in C, Python, Rust and the shell); not
// a name every quote already has.
fn check_field_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = (1..=FIELD_NAME_MAX as usize).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    if !ok {
        return Err(format!(
            "a field name is 1 to {FIELD_NAME_MAX} characters: an ASCII letter, then letters, digits or _: got '{name}'"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        let mut all = RESERVED_NAMES.to_vec();
        all.sort();
        return Err(format!("field name '{name}' is taken by every quote; choose another than {}", all.join(", ")));
    }
    Ok(())
}

// 1 to MAX_FIELDS fields, valid names, distinct even ignoring case, known types.
fn check_fields(fields: &[Field]) -> Result<(), String> {
    if !(1..=MAX_FIELDS as usize).contains(&fields.len()) {
        return Err(format!("a schema has 1 to {MAX_FIELDS} fields: got {}", fields.len()));
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for f in fields {
        check_field_name(&f.name)?;
        if f.kind != TYPE_F64 && f.kind != TYPE_I64 {
            return Err(format!("field '{}' has type {}; expected f64 or i64", f.name, f.kind));
        }
        if let Some(other) = seen.insert(f.name.to_ascii_lowercase(), &f.name) {
            return Err(format!("fields '{other}' and '{}' have the same name (ignoring case)", f.name));
        }
    }
    Ok(())
}

// "bid:f64,ask:f64,size:i64", as `pricefeed create --fields` takes it (a bare name is a f64).
fn parse_fields(spec: &str) -> Result<Vec<Field>, String> {
    let mut out = Vec::new();
    if !spec.trim().is_empty() {
        for item in spec.split(',') {
            let (name, kind) = item.split_once(':').unwrap_or((item, "f64"));
            let (name, kind) = (name.trim(), kind.trim());
            let kind = match kind {
                "f64" | "" => TYPE_F64,
                "i64" => TYPE_I64,
                _ => return Err(format!("field '{name}' has type '{kind}'; expected f64 or i64")),
            };
            out.push(Field { name: name.to_string(), kind });
        }
    }
    check_fields(&out).map_err(|why| format!("bad schema: {why}"))?;
    Ok(out)
}

fn format_fields(fields: &[Field]) -> String {
    fields.iter().map(|f| format!("{}:{}", f.name, type_name(f.kind))).collect::<Vec<_>>().join(",")
}

// The schema table of a validated header (section 5): `count` entries, each checked, and the
// entries after them all zero.
fn read_schema(seg: &Segment, count: u64) -> Result<Vec<Field>, String> {
    if !(1..=MAX_FIELDS).contains(&count) {
        return Err(format!("damaged header: field_count is {count}, expected 1 to {MAX_FIELDS}"));
    }
    let mut fields = Vec::new();
    for k in 0..MAX_FIELDS {
        let entry = &seg.bytes(schema_entry_offset(k), SCHEMA_ENTRY_SIZE)[..];
        if k >= count {
            if entry.iter().any(|&b| b != 0) {
                return Err(format!("damaged schema: entry {k} is not zero, but the schema has {count} field(s)"));
            }
            continue;
        }
        let raw = &entry[FIELD_NAME as usize..(FIELD_NAME + FIELD_NAME_FIELD) as usize];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let word = |at: u64| {
            let a = at as usize;
            u32::from_le_bytes([entry[a], entry[a + 1], entry[a + 2], entry[a + 3]])
        };
        let (kind, reserved) = (word(FIELD_TYPE), word(FIELD_RESERVED));
        if raw[len..].iter().any(|&b| b != 0) || reserved != 0 {
            return Err(format!("damaged schema: entry {k} has bytes after its name's NUL or in its reserved word"));
        }
        let name = match std::str::from_utf8(&raw[..len]) {
            Ok(name) if check_field_name(name).is_ok() => name.to_string(),
            _ => return Err(format!("damaged schema: entry {k} has name {raw:?}, not a valid field name")),
        };
        if kind != TYPE_F64 && kind != TYPE_I64 {
            return Err(format!("damaged schema: field '{name}' has type {kind}, expected 1 (f64) or 2 (i64)"));
        }
        fields.push(Field { name, kind });
    }
    check_fields(&fields).map_err(|why| format!("damaged schema: {why}"))?;
    Ok(fields)
}

// A value of field `f` from text: its bits as the slot stores them.
fn parse_value(f: &Field, text: &str, symbol: &str) -> Result<u64, String> {
    if f.kind == TYPE_I64 {
        return text
            .parse::<i64>()
            .map(|v| v as u64)
            .map_err(|_| format!("{} for symbol '{symbol}' must be a whole number (i64): got '{text}'", f.name));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v.to_bits()),
        Ok(_) => Err(format!("{} for symbol '{symbol}' must be a finite number (not NaN or infinite): got '{text}'", f.name)),
        Err(_) => Err(format!("{} for symbol '{symbol}' must be a number: got '{text}'", f.name)),
    }
}

// Does `new` differ from `old` as values of field `f`? (0.0 and -0.0 are equal, as in Python.)
fn differs(f: &Field, old: u64, new: u64) -> bool {
    if f.kind == TYPE_F64 { f64::from_bits(old) != f64::from_bits(new) } else { old != new }
}

// ---------------------------------------------------------------------------------------------
// The publisher
// ---------------------------------------------------------------------------------------------
struct Publisher {
    name: String,
    seg: Segment,
    capacity: u64,
    ring_size: u64,
    fields: Vec<Field>,
    head: u64,
    index: HashMap<String, u32>,
    last: Vec<Vec<u64>>, // each symbol's values, as their bits
    epoch: u32,
    ended: bool,
}

enum Checked {
    Ok(u64, u64, Vec<Field>),
    Initialising(String),
}

// Validate the header and the schema (layout.md, section 5, steps 4 to 7), as
// pricefeed/_protocol/header.py does: (capacity, ring_size, fields).
fn check_header(seg: &Segment, feed: &str, size: u64) -> Result<Checked, Error> {
    let bad = |why: String| fail(EXIT_BAD_SEGMENT, format!("feed '{feed}': {why}"));
    // version first: the acquire pairs with the creator's release before its store of
    // version, so the magic loaded after it is the one stored before it.
    let version = seg.u32(OFF_VERSION).load(Ordering::Acquire);
    let magic = seg.u64(OFF_MAGIC).load(Ordering::Relaxed);
    if magic == 0 && version == 0 {
        return Ok(Checked::Initialising(format!("feed '{feed}': segment is still being created (its header is all zeros)")));
    }
    if magic == 0 {
        return bad(format!(
            "damaged header: magic is 0 but version is {version}; a creator stores magic before version, so this is damage, not a segment still being created"
        ));
    }
    if magic != MAGIC {
        return bad(format!("not a pricefeed segment: its first 8 bytes are {:?}, expected \"PRCFEED\\0\"", magic.to_le_bytes()));
    }
    if version == 0 {
        return Ok(Checked::Initialising(format!(
            "feed '{feed}': segment is still being initialised (layout version 0): its creator has not finished, or died before it did"
        )));
    }
    if version != LAYOUT_VERSION {
        return bad(format!("segment has layout version {version}; this publisher writes version {LAYOUT_VERSION}"));
    }
    if size < SYMBOLS_OFFSET {
        return bad(format!("segment is truncated: {size} bytes, expected at least {SYMBOLS_OFFSET} for a header, a schema and a wake table"));
    }
    let fixed = [
        ("header_size", seg.u32(OFF_HEADER_SIZE).load(Ordering::Relaxed) as u64, HEADER_SIZE),
        ("wake_words", seg.u32(OFF_WAKE_WORDS).load(Ordering::Relaxed) as u64, WAKE_WORDS),
        ("schema_offset", seg.u64(OFF_SCHEMA_OFFSET).load(Ordering::Relaxed), SCHEMA_OFFSET),
        ("symbols_offset", seg.u64(OFF_SYMBOLS_OFFSET).load(Ordering::Relaxed), SYMBOLS_OFFSET),
    ];
    for (name, found, want) in fixed {
        if found != want {
            return bad(format!("damaged header: {name} is {found}, expected {want}"));
        }
    }
    let capacity = seg.u32(OFF_CAPACITY).load(Ordering::Relaxed) as u64;
    let ring_size = seg.u32(OFF_RING_SIZE).load(Ordering::Relaxed) as u64;
    if let Err(why) = check_geometry(capacity, ring_size) {
        return bad(format!("damaged header: {why}"));
    }
    let fields = match read_schema(seg, seg.u32(OFF_FIELD_COUNT).load(Ordering::Relaxed) as u64) {
        Ok(fields) => fields,
        Err(why) => return bad(why),
    };
    let n = fields.len() as u64;
    let derived = [
        ("slot_size", seg.u32(OFF_SLOT_SIZE).load(Ordering::Relaxed) as u64, slot_size(n)),
        ("record_size", seg.u32(OFF_RECORD_SIZE).load(Ordering::Relaxed) as u64, record_size(n)),
        ("slots_offset", seg.u64(OFF_SLOTS_OFFSET).load(Ordering::Relaxed), slots_offset(capacity)),
        ("ring_offset", seg.u64(OFF_RING_OFFSET).load(Ordering::Relaxed), ring_offset(capacity, n)),
    ];
    for (name, found, want) in derived {
        if found != want {
            return bad(format!("damaged header: {name} is {found}, expected {want} for capacity {capacity} and {n} field(s)"));
        }
    }
    let need = segment_size(capacity, ring_size, n);
    if size < need {
        return bad(format!(
            "segment is truncated: {size} bytes, expected at least {need} for capacity {capacity}, ring size {ring_size} and {n} field(s)"
        ));
    }
    if seg.u64(OFF_INCARNATION).load(Ordering::Relaxed) == 0 {
        return bad("damaged header: incarnation is 0, expected a non-zero random id".to_string());
    }
    Ok(Checked::Ok(capacity, ring_size, fields))
}

impl Publisher {
    /// Create a new feed and become its publisher (layout.md, sections 1 and 5).
    fn create(feed: &str, capacity: u64, ring_size: u64, mode: u32, fields: &[Field]) -> Result<Publisher, Error> {
        check_name(feed)?;
        check_geometry(capacity, ring_size).or_else(|why| fail(EXIT_INVALID, why))?;
        check_fields(fields).or_else(|why| fail(EXIT_INVALID, format!("bad schema: {why}")))?;
        if mode & !0o777 != 0 || mode & 0o600 != 0o600 {
            return fail(EXIT_INVALID, format!("mode must be a permission from 0o600 to 0o777 that lets the owner read and write: mode=0o{mode:o}"));
        }
        let size = segment_size(capacity, ring_size, fields.len() as u64);
        let file = open_shm(feed, O_CREAT | O_EXCL | O_RDWR, mode).map_err(|e| os_error(e, feed, "create"))?;
        let made = Self::initialise(feed, file, capacity, ring_size, mode, size, fields);
        if made.is_err() {
            unsafe { shm_unlink(shm_name(feed).as_ptr()) }; // leave nothing half-created behind
        }
        made
    }

    fn initialise(feed: &str, file: File, capacity: u64, ring_size: u64, mode: u32, size: u64, fields: &[Field]) -> Result<Publisher, Error> {
        // The mode given to shm_open is masked by the umask: set it exactly.
        file.set_permissions(Permissions::from_mode(mode)).map_err(|e| os_error(e, feed, "create"))?;
        // posix_fallocate reserves the pages: with ftruncate alone a full tmpfs accepts the
        // size and the first write to the mapping kills the writer with SIGBUS.
        let e = unsafe { posix_fallocate(file.as_raw_fd(), 0, size as i64) };
        if e != 0 {
            return Err(os_error(io::Error::from_raw_os_error(e), feed, "create"));
        }
        let seg = Segment::map(file, size).map_err(|e| os_error(e, feed, "create"))?;
        if !try_lock(&seg.file).map_err(|e| os_error(e, feed, "lock"))? {
            return Err(busy(feed, &seg.file));
        }
        let mut random = [0u8; 8];
        File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).map_err(|e| os_error(e, feed, "create"))?;
        let incarnation = (u64::from_le_bytes(random) & LOCK_MASK) | 1; // 63 random bits, lowest set
        // The schema table: nobody reads it before version says the header is complete.
        for (k, f) in fields.iter().enumerate() {
            let entry = schema_entry_offset(k as u64);
            seg.bytes(entry + FIELD_NAME, f.name.len() as u64).copy_from_slice(f.name.as_bytes());
            seg.u32(entry + FIELD_TYPE).store(f.kind, Ordering::Relaxed);
        }
        let n = fields.len() as u64;
        seg.u64(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        seg.u32(OFF_HEADER_SIZE).store(HEADER_SIZE as u32, Ordering::Relaxed);
        seg.u64(OFF_INCARNATION).store(incarnation, Ordering::Relaxed);
        seg.u32(OFF_CAPACITY).store(capacity as u32, Ordering::Relaxed);
        seg.u32(OFF_RING_SIZE).store(ring_size as u32, Ordering::Relaxed);
        seg.u32(OFF_SLOT_SIZE).store(slot_size(n) as u32, Ordering::Relaxed);
        seg.u32(OFF_RECORD_SIZE).store(record_size(n) as u32, Ordering::Relaxed);
        seg.u64(OFF_CREATED_NS).store(now_ns(), Ordering::Relaxed);
        seg.u64(OFF_SLOTS_OFFSET).store(slots_offset(capacity), Ordering::Relaxed);
        seg.u64(OFF_RING_OFFSET).store(ring_offset(capacity, n), Ordering::Relaxed);
        seg.u32(OFF_WAKE_WORDS).store(WAKE_WORDS as u32, Ordering::Relaxed);
        seg.u32(OFF_FIELD_COUNT).store(n as u32, Ordering::Relaxed);
        seg.u64(OFF_SCHEMA_OFFSET).store(SCHEMA_OFFSET, Ordering::Relaxed);
        seg.u64(OFF_SYMBOLS_OFFSET).store(SYMBOLS_OFFSET, Ordering::Relaxed);
        // Written last, with release: pairs with the reader's acquire load of version.
        seg.u32(OFF_VERSION).store(LAYOUT_VERSION, Ordering::Release);
        Self::take(feed, seg, capacity, ring_size, fields.to_vec())
    }

    /// Take an existing feed over: its values stay and its sequence continues (section 10).
    fn open(feed: &str) -> Result<Publisher, Error> {
        check_name(feed)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let file = open_shm(feed, O_RDWR, 0).map_err(|e| os_error(e, feed, "open for writing"))?;
            if !try_lock(&file).map_err(|e| os_error(e, feed, "lock"))? {
                return Err(busy(feed, &file));
            }
            let meta = file.metadata().map_err(|e| os_error(e, feed, "stat"))?;
            // Removed, or removed and created anew, while we took the lock: start again.
            let same = open_shm(feed, O_RDONLY, 0)
                .and_then(|f| f.metadata())
                .map(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
                .unwrap_or(false);
            if !same {
                continue;
            }
            let size = meta.len();
            if size == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5)); // created a moment ago, not sized yet
                continue;
            }
            if size < HEADER_SIZE {
                return fail(EXIT_BAD_SEGMENT, format!("feed '{feed}' is not a pricefeed segment: {size} bytes, smaller than the {HEADER_SIZE}-byte header"));
            }
            let seg = Segment::map(file, size).map_err(|e| os_error(e, feed, "map"))?;
            match check_header(&seg, feed, size)? {
                Checked::Ok(capacity, ring_size, fields) => return Self::take(feed, seg, capacity, ring_size, fields),
                Checked::Initialising(message) => {
                    if Instant::now() >= deadline {
                        return fail(EXIT_BAD_SEGMENT, message);
                    }
                    drop(seg);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    fn open_or_create(feed: &str, capacity: u64, ring_size: u64, mode: u32, fields: &[Field]) -> Result<Publisher, Error> {
        for _ in 0..3 {
            match Self::open(feed) {
                Err(e) if e.exit == EXIT_NOT_FOUND => {}
                other => return other,
            }
            match Self::create(feed, capacity, ring_size, mode, fields) {
                Err(e) if e.exit == EXIT_EXISTS => {}
                other => return other,
            }
        }
        Self::open(feed)
    }

    fn slot(&self, index: u64) -> u64 {
        slot_offset(index, self.capacity, self.fields.len() as u64)
    }

    /// The lock is held and the header valid: read the state and record ourselves.
    fn take(feed: &str, seg: Segment, capacity: u64, ring_size: u64, fields: Vec<Field>) -> Result<Publisher, Error> {
        if seg.u32(OFF_CLOSED).load(Ordering::Acquire) != 0 {
            return fail(EXIT_ENDED, format!("feed '{feed}' was ended for good; remove it (pricefeed rm {feed}) to start anew"));
        }
        let n = fields.len() as u64;
        let head = seg.u64(OFF_HEAD_SEQ).load(Ordering::Acquire);
        let count = seg.u32(OFF_SLOT_COUNT).load(Ordering::Acquire) as u64;
        if count > capacity {
            return fail(EXIT_BAD_SEGMENT, format!("feed '{feed}': damaged header: slot_count is {count}, more than the capacity {capacity}"));
        }
        let mut index = HashMap::new();
        let mut last = Vec::with_capacity(count as usize);
        for i in 0..count {
            let raw = &seg.bytes(symbol_offset(i), SYMBOL_FIELD)[..];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let name = std::str::from_utf8(&raw[..end]).unwrap_or("");
            if check_symbol(name).is_err() {
                return fail(EXIT_BAD_SEGMENT, format!("feed '{feed}': damaged slot {i}: its symbol field {raw:?} is not a valid symbol"));
            }
            if let Some(other) = index.insert(name.to_string(), i as u32) {
                return fail(EXIT_BAD_SEGMENT, format!("feed '{feed}': damaged slot table: symbol '{name}' is in slots {other} and {i}"));
            }
            // Refused rather than repaired (see the top of this file): checked before we
            // record ourselves, so a refusal leaves the feed exactly as it was.
            let slot = slot_offset(i, capacity, n);
            let lock = seg.u64(slot + SLOT_LOCK).load(Ordering::Relaxed);
            let seq = seg.u64(slot + SLOT_SEQ).load(Ordering::Relaxed);
            if lock & 1 == 1 || seq > head {
                let why = if lock & 1 == 1 { format!("its lock is odd ({lock})") } else { format!("it holds change {seq}, above head_seq {head}") };
                return fail(
                    EXIT_BAD_SEGMENT,
                    format!("feed '{feed}': slot {i} ('{name}') was left mid-change by a publisher that died: {why}; this publisher does not repair feeds: take it over once with the Python publisher or pricefeed.h, which repair it, then retry"),
                );
            }
            last.push((0..n).map(|k| seg.u64(slot + SLOT_VALUES + VALUE_SIZE * k).load(Ordering::Relaxed)).collect());
        }
        // Record ourselves: the state first, then the epoch (protocol.md, "Liveness"). The
        // handover is clean if the state describes the previous epoch and says it closed.
        let before = seg.u32(OFF_PUBLISHER_EPOCH).load(Ordering::Relaxed);
        let prior = seg.u64(OFF_PUBLISHER_STATE).load(Ordering::Relaxed);
        let clean = before != 0 && prior as u32 == before && (prior >> STATE_SHIFT) & ((1 << STATE_BITS) - 1) == PUBLISHER_CLOSED;
        let epoch = before.wrapping_add(1);
        seg.u64(OFF_PUBLISHER_STATE).store(pack_state(epoch, PUBLISHER_HOLDS, (prior >> HANDOVERS_SHIFT) + clean as u64), Ordering::Relaxed);
        fence(Ordering::Release); // pairs with the reader's acquire between its epoch and state loads
        seg.u32(OFF_PUBLISHER_EPOCH).store(epoch, Ordering::Relaxed);
        seg.u32(OFF_PUBLISHER_PID).store(std::process::id(), Ordering::Relaxed);
        let publisher = Publisher { name: feed.to_string(), seg, capacity, ring_size, fields, head, index, last, epoch, ended: false };
        publisher.bump_and_wake_all().map_err(|e| os_error(e, feed, "wake the subscribers of"))?;
        Ok(publisher)
    }

    /// Bump every wake word and wake them all (a takeover, the end: section 11).
    fn bump_and_wake_all(&self) -> io::Result<()> {
        fence(Ordering::Release); // what came before is visible before the words announce it
        for w in 0..WAKE_WORDS {
            let word = self.seg.u32(wake_offset(w));
            word.store(word.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        let futex = self.seg.u32(OFF_FUTEX);
        futex.store(futex.load(Ordering::Relaxed).wrapping_add(1) & FUTEX_MASK, Ordering::Relaxed);
        wake(futex)?;
        for w in 0..WAKE_WORDS {
            wake(self.seg.u32(wake_offset(w)))?;
        }
        Ok(())
    }

    /// One record: set the fields in `given` ((field index, value bits), each field once) of
    /// `symbol`; the others keep their values (a new symbol's start at 0). Ok(false), with no
    /// event and no wake-up, when no field differs from its current value (0.0 == -0.0: an
    /// equal value leaves the current one as it was);
    /// else one change (one sequence number, one ring record) whose mask names the fields
    /// that differ, every field for a symbol's first. Refuses an unknown field, a field given
    /// twice, a value that is not a finite f64, a bad symbol or a full feed, writing nothing.
    fn publish(&mut self, symbol: &str, given: &[(usize, u64)], time_ns: u64) -> Result<bool, Error> {
        if self.ended {
            return fail(EXIT_ENDED, format!("feed '{}' was ended for good; no more changes can be published", self.name));
        }
        let n = self.fields.len();
        if given.is_empty() {
            return fail(EXIT_INVALID, format!("a publish of '{symbol}' sets no field; feed '{}' has {}", self.name, format_fields(&self.fields)));
        }
        let mut set = 0u32;
        for &(k, bits) in given {
            if k >= n {
                return fail(EXIT_INVALID, format!("feed '{}' has no field number {k}; it has {n}", self.name));
            }
            let f = &self.fields[k];
            if set & (1 << k) != 0 {
                return fail(EXIT_INVALID, format!("field '{}' is given twice", f.name));
            }
            set |= 1 << k;
            if f.kind == TYPE_F64 && !f64::from_bits(bits).is_finite() {
                return fail(EXIT_INVALID, format!("{} for symbol '{symbol}' must be a finite number (not NaN or infinite): {}={}", f.name, f.name, f64::from_bits(bits)));
            }
        }
        let all = (1u32 << n) - 1;
        // A value equal to the current one (0.0 and -0.0) is no change and leaves it as it was.
        let merge = |mut values: Vec<u64>| {
            let mut changed = 0u32;
            for &(k, bits) in given {
                if differs(&self.fields[k], values[k], bits) {
                    changed |= 1 << k;
                    values[k] = bits;
                }
            }
            (values, changed)
        };
        let (index, fresh, values, changed) = match self.index.get(symbol) {
            Some(&i) => {
                let (values, changed) = merge(self.last[i as usize].clone());
                if changed == 0 {
                    return Ok(false);
                }
                (i as u64, false, values, changed)
            }
            None => {
                check_symbol(symbol)?;
                let count = self.last.len() as u64;
                if count >= self.capacity {
                    return fail(
                        EXIT_FULL,
                        format!("feed '{}' is full: {count} of {} slots hold a symbol and 1 more was asked for (create the feed with a larger --capacity)", self.name, self.capacity),
                    );
                }
                let (values, _) = merge(vec![0u64; n]); // the fields it does not set start at 0
                (count, true, values, all) // a first value changes every field
            }
        };
        let seg = &self.seg;
        let seq = self.head + 1;
        let slot = self.slot(index);
        if fresh {
            // Step 1: name the slot. Nobody reads a slot that slot_count does not cover, so
            // it is reset whole (a publisher may have died while adding it).
            let field = seg.bytes(symbol_offset(index), SYMBOL_FIELD);
            field.fill(0);
            field[..symbol.len()].copy_from_slice(symbol.as_bytes());
            for k in (0..slot_size(n as u64)).step_by(8) {
                seg.u64(slot + k).store(0, Ordering::Relaxed);
            }
        }
        // Step 2: the slot, under its seqlock: every field of the record in one write.
        let lock = seg.u64(slot + SLOT_LOCK);
        let l = lock.load(Ordering::Relaxed) & LOCK_MASK;
        lock.store(l + 1, Ordering::Relaxed); // odd: a write is in progress
        fence(Ordering::Release); // pairs with the reader's acquire fence before its 2nd lock load
        seg.u64(slot + SLOT_SEQ).store(seq, Ordering::Relaxed);
        seg.u64(slot + SLOT_TIME).store(time_ns, Ordering::Relaxed);
        seg.u32(slot + SLOT_CHANGED).store(changed, Ordering::Relaxed);
        for (k, &bits) in values.iter().enumerate() {
            seg.u64(slot + SLOT_VALUES + VALUE_SIZE * k as u64).store(bits, Ordering::Relaxed);
        }
        lock.store(l + 2, Ordering::Release); // pairs with the reader's acquire load of lock
        // Step 3: the ring record of seq.
        let rec = ring_offset(self.capacity, n as u64) + (seq & (self.ring_size - 1)) * record_size(n as u64);
        let rseq = seg.u64(rec + REC_SEQ);
        rseq.store(0, Ordering::Relaxed);
        fence(Ordering::Release); // pairs with the reader's acquire fence before its 2nd seq load
        seg.u32(rec + REC_SLOT).store(index as u32, Ordering::Relaxed);
        seg.u32(rec + REC_CHANGED).store(changed, Ordering::Relaxed);
        seg.u64(rec + REC_TIME).store(time_ns, Ordering::Relaxed);
        for (k, &bits) in values.iter().enumerate() {
            seg.u64(rec + REC_VALUES + VALUE_SIZE * k as u64).store(bits, Ordering::Relaxed);
        }
        rseq.store(seq, Ordering::Release); // pairs with the reader's fence after its 1st seq load
        // Step 4: a new slot is whole before it is counted (pairs with the reader's acquire).
        if fresh {
            seg.u32(OFF_SLOT_COUNT).store(index as u32 + 1, Ordering::Release);
            self.index.insert(symbol.to_string(), index as u32);
            self.last.push(values);
        } else {
            self.last[index as usize] = values;
        }
        // Step 5: the head covers only finished work (pairs with the reader's acquire).
        seg.u64(OFF_HEAD_SEQ).store(seq, Ordering::Release);
        self.head = seq;
        // Step 6: the head is visible before the words that announce it.
        fence(Ordering::Release);
        let word = seg.u32(wake_offset(wake_word_of(index)));
        let futex = seg.u32(OFF_FUTEX);
        word.store(word.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        futex.store(futex.load(Ordering::Relaxed).wrapping_add(1) & FUTEX_MASK, Ordering::Relaxed);
        // Step 7: wake both, every time: we keep no count of waiters.
        wake_op(word, futex).map_err(|e| os_error(e, &self.name, "wake the subscribers of"))?;
        Ok(true)
    }

    /// Give the role up cleanly: every change it began is complete (each publish is whole
    /// when it returns), so subscribers report the departure as clean and the next publisher
    /// as no restart. A process that exits without this (an error, a kill) stays "holds".
    fn close(self) {
        let state = self.seg.u64(OFF_PUBLISHER_STATE);
        let handovers = state.load(Ordering::Relaxed) >> HANDOVERS_SHIFT;
        // Release: the changes come before the word; the lock is given up after it (drop).
        state.store(pack_state(self.epoch, PUBLISHER_CLOSED, handovers), Ordering::Release);
    }

    /// End the feed for good (section 11).
    fn end(&mut self) -> Result<(), Error> {
        self.seg.u32(OFF_CLOSED).store(1, Ordering::Release); // the last head comes first
        self.ended = true;
        self.bump_and_wake_all().map_err(|e| os_error(e, &self.name, "wake the subscribers of"))
    }
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------
fn print_layout() {
    let fields: &[(&str, u64)] = &[
        ("LAYOUT_VERSION", LAYOUT_VERSION as u64),
        ("MAGIC", MAGIC),
        ("CACHE_LINE", CACHE_LINE),
        ("SYMBOL_FIELD", SYMBOL_FIELD),
        ("SYMBOL_MAX", SYMBOL_MAX),
        ("SLOT_VOID", SLOT_VOID as u64),
        ("WAKE_WORDS", WAKE_WORDS),
        ("MIN_CAPACITY", MIN_CAPACITY),
        ("MAX_CAPACITY", MAX_CAPACITY),
        ("DEFAULT_CAPACITY", DEFAULT_CAPACITY),
        ("MIN_RING", MIN_RING),
        ("MAX_RING", MAX_RING),
        ("DEFAULT_RING", DEFAULT_RING),
        ("MAX_FIELDS", MAX_FIELDS),
        ("FIELD_NAME_FIELD", FIELD_NAME_FIELD),
        ("FIELD_NAME_MAX", FIELD_NAME_MAX),
        ("TYPE_F64", TYPE_F64 as u64),
        ("TYPE_I64", TYPE_I64 as u64),
        ("VALUE_SIZE", VALUE_SIZE),
        ("HEADER_SIZE", HEADER_SIZE),
        ("SCHEMA_ENTRY_SIZE", SCHEMA_ENTRY_SIZE),
        ("SCHEMA_OFFSET", SCHEMA_OFFSET),
        ("SCHEMA_SIZE", SCHEMA_SIZE),
        ("WAKE_OFFSET", WAKE_OFFSET),
        ("WAKE_SIZE", WAKE_SIZE),
        ("SYMBOLS_OFFSET", SYMBOLS_OFFSET),
        ("SLOT_VALUES", SLOT_VALUES),
        ("REC_VALUES", REC_VALUES),
        ("OFF_MAGIC", OFF_MAGIC),
        ("OFF_VERSION", OFF_VERSION),
        ("OFF_HEADER_SIZE", OFF_HEADER_SIZE),
        ("OFF_INCARNATION", OFF_INCARNATION),
        ("OFF_CAPACITY", OFF_CAPACITY),
        ("OFF_RING_SIZE", OFF_RING_SIZE),
        ("OFF_SLOT_SIZE", OFF_SLOT_SIZE),
        ("OFF_RECORD_SIZE", OFF_RECORD_SIZE),
        ("OFF_CREATED_NS", OFF_CREATED_NS),
        ("OFF_SLOTS_OFFSET", OFF_SLOTS_OFFSET),
        ("OFF_RING_OFFSET", OFF_RING_OFFSET),
        ("OFF_HEAD_SEQ", OFF_HEAD_SEQ),
        ("OFF_FUTEX", OFF_FUTEX),
        ("OFF_CLOSED", OFF_CLOSED),
        ("OFF_SLOT_COUNT", OFF_SLOT_COUNT),
        ("OFF_PUBLISHER_PID", OFF_PUBLISHER_PID),
        ("OFF_PUBLISHER_EPOCH", OFF_PUBLISHER_EPOCH),
        ("OFF_WAKE_WORDS", OFF_WAKE_WORDS),
        ("OFF_PUBLISHER_STATE", OFF_PUBLISHER_STATE),
        ("OFF_FIELD_COUNT", OFF_FIELD_COUNT),
        ("OFF_SCHEMA_OFFSET", OFF_SCHEMA_OFFSET),
        ("OFF_SYMBOLS_OFFSET", OFF_SYMBOLS_OFFSET),
        ("STATE_EPOCH_BITS", STATE_EPOCH_BITS),
        ("STATE_SHIFT", STATE_SHIFT),
        ("STATE_BITS", STATE_BITS),
        ("HANDOVERS_SHIFT", HANDOVERS_SHIFT),
        ("HANDOVERS_BITS", HANDOVERS_BITS),
        ("PUBLISHER_HOLDS", PUBLISHER_HOLDS),
        ("PUBLISHER_CLOSED", PUBLISHER_CLOSED),
        ("FIELD_NAME", FIELD_NAME),
        ("FIELD_TYPE", FIELD_TYPE),
        ("FIELD_RESERVED", FIELD_RESERVED),
        ("SLOT_LOCK", SLOT_LOCK),
        ("SLOT_SEQ", SLOT_SEQ),
        ("SLOT_TIME", SLOT_TIME),
        ("SLOT_CHANGED", SLOT_CHANGED),
        ("SLOT_RESERVED", SLOT_RESERVED),
        ("REC_SEQ", REC_SEQ),
        ("REC_SLOT", REC_SLOT),
        ("REC_CHANGED", REC_CHANGED),
        ("REC_TIME", REC_TIME),
    ];
    let mut out = String::from("{\n");
    for (name, value) in fields {
        out += &format!("  \"{name}\": {value},\n");
    }
    // [capacity, ring_size, fields, slot_size, record_size, slots_offset, ring_offset, segment_size]
    let shapes = [(1u64, 2u64, 1u64), (1024, 65536, 1), (1000, 16, 4), (3, 4, 5), (1 << 20, 1 << 24, 16)];
    let geometries: Vec<String> = shapes
        .iter()
        .map(|&(c, r, n)| {
            format!("[{c}, {r}, {n}, {}, {}, {}, {}, {}]", slot_size(n), record_size(n), slots_offset(c), ring_offset(c, n), segment_size(c, r, n))
        })
        .collect();
    out += &format!("  \"geometries\": [{}],\n", geometries.join(", "));
    // [slot, capacity, fields, slot_offset, symbol_offset, wake word, wake_offset]
    let slots: Vec<String> = [(0u64, 1u64, 1u64), (1, 8, 4), (127, 1000, 2), (128, 1000, 16), (1000, 1024, 1)]
        .iter()
        .map(|&(s, c, n)| {
            format!("[{s}, {c}, {n}, {}, {}, {}, {}]", slot_offset(s, c, n), symbol_offset(s), wake_word_of(s), wake_offset(wake_word_of(s)))
        })
        .collect();
    out += &format!("  \"slots\": [{}],\n", slots.join(", "));
    let entries: Vec<String> = [0u64, 1, 15].iter().map(|&k| format!("[{k}, {}]", schema_entry_offset(k))).collect();
    out += &format!("  \"schema\": [{}],\n", entries.join(", "));
    out += &format!("  \"NAME_MAX\": {NAME_MAX}\n}}");
    println!("{out}");
}

struct Options {
    feed: String,
    fields: Vec<Field>,
    capacity: u64,
    ring_size: u64,
    mode: u32,
    stdin: bool,
    generate: u64,
    symbols: u64,
    end: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        feed: String::new(),
        fields: vec![Field { name: "price".to_string(), kind: TYPE_F64 }],
        capacity: DEFAULT_CAPACITY,
        ring_size: DEFAULT_RING,
        mode: 0o600,
        stdin: false,
        generate: 0,
        symbols: 10,
        end: false,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || -> Result<String, String> {
            i += 1;
            args.get(i).cloned().ok_or(format!("{a} needs a value"))
        };
        match a {
            "--fields" => o.fields = parse_fields(&value()?)?,
            "--capacity" => o.capacity = value()?.parse().map_err(|_| "--capacity takes a whole number")?,
            "--ring" => o.ring_size = value()?.parse().map_err(|_| "--ring takes a whole number")?,
            "--mode" => o.mode = u32::from_str_radix(&value()?, 8).map_err(|_| "--mode takes octal digits such as 0600")?,
            "--generate" => o.generate = value()?.parse().map_err(|_| "--generate takes a whole number")?,
            "--symbols" => o.symbols = value()?.parse().map_err(|_| "--symbols takes a whole number")?,
            "--stdin" => o.stdin = true,
            "--end" => o.end = true,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if o.feed.is_empty() => o.feed = a.to_string(),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
        i += 1;
    }
    if o.feed.is_empty() {
        return Err("missing FEED".to_string());
    }
    if o.symbols == 0 {
        return Err("--symbols must be at least 1".to_string());
    }
    Ok(o)
}

/// A line of standard input as (symbol, [(field index, value bits)]): "SYMBOL PRICE" or
/// "SYMBOL=PRICE" (a feed of one field), or "SYMBOL NAME=VALUE [NAME=VALUE ...]" (any feed).
fn parse_line(line: &str, fields: &[Field]) -> Result<(String, Vec<(usize, u64)>), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let one = |symbol: &str, text: &str| -> Result<(String, Vec<(usize, u64)>), String> {
        if fields.len() != 1 {
            return Err(format!(
                "the feed has fields {}: name the ones to set, as in '{symbol} {}=VALUE'; got the value '{text}' without a name",
                fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "),
                fields[0].name
            ));
        }
        Ok((symbol.to_string(), vec![(0, parse_value(&fields[0], text, symbol)?)]))
    };
    match words.as_slice() {
        [pair] => match pair.rsplit_once('=') {
            Some((symbol, text)) => one(symbol, text),
            None => Err(format!("expected 'SYMBOL PRICE', 'SYMBOL=PRICE' or 'SYMBOL NAME=VALUE ...': got {line:?}")),
        },
        [symbol, text] if !text.contains('=') => one(symbol, text),
        [symbol, assignments @ ..] => {
            let mut given = Vec::new();
            for assignment in assignments {
                let (name, text) = assignment.split_once('=').ok_or(format!("expected NAME=VALUE: got {assignment:?}"))?;
                let k = fields.iter().position(|f| f.name == name).ok_or(format!(
                    "the feed has no field '{name}'; its fields are {}",
                    fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ))?;
                if given.iter().any(|&(j, _)| j == k) {
                    return Err(format!("field '{name}' is given twice"));
                }
                given.push((k, parse_value(&fields[k], text, symbol)?));
            }
            Ok((symbol.to_string(), given))
        }
        [] => Err("an empty line".to_string()),
    }
}

// Change k of --generate: every field of its symbol, each a value it did not hold before.
fn generated(fields: &[Field], k: u64) -> Vec<(usize, u64)> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| (i, if f.kind == TYPE_F64 { (100.0 + k as f64 / 4.0 + i as f64).to_bits() } else { (k + i as u64) as i64 as u64 }))
        .collect()
}

fn run(o: &Options) -> Result<i32, Error> {
    let mut publisher = Publisher::open_or_create(&o.feed, o.capacity, o.ring_size, o.mode, &o.fields)?;
    let mut stdout = io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{{\"ready\": true, \"pid\": {}, \"head_seq\": {}, \"epoch\": {}, \"fields\": \"{}\"}}",
        std::process::id(),
        publisher.head,
        publisher.epoch,
        format_fields(&publisher.fields)
    );
    let _ = stdout.flush();
    let mut changes = 0u64;
    let mut code = 0;
    if o.stdin {
        for (number, line) in io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| Error { exit: EXIT_ERROR, message: format!("cannot read stdin: {e}") })?;
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let outcome = parse_line(text, &publisher.fields)
                .map_err(|message| Error { exit: EXIT_INVALID, message })
                .and_then(|(symbol, given)| publisher.publish(&symbol, &given, now_ns()));
            match outcome {
                Ok(changed) => changes += changed as u64,
                Err(e) if e.exit == EXIT_INVALID => {
                    eprintln!("publisher: line {}: {}", number + 1, e.message);
                    code = EXIT_INVALID;
                }
                Err(e) => return Err(e),
            }
        }
    }
    for k in 1..=o.generate {
        let symbol = format!("G{}", (k - 1) % o.symbols);
        let given = generated(&publisher.fields, k);
        changes += publisher.publish(&symbol, &given, now_ns())? as u64;
    }
    if o.end {
        publisher.end()?;
    }
    let _ = writeln!(stdout, "{{\"published\": {changes}, \"head_seq\": {}}}", publisher.head);
    publisher.close();
    Ok(code)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--print-layout") {
        print_layout();
        return;
    }
    let options = match parse(&args) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("publisher: {why}\nusage: publisher FEED [--fields SPEC] [--capacity N] [--ring N] [--mode OCTAL] [--stdin] [--generate N] [--symbols K] [--end] | --print-layout");
            std::process::exit(if why.starts_with("bad schema") { EXIT_INVALID } else { 2 });
        }
    };
    match run(&options) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("publisher: {}", e.message);
            std::process::exit(e.exit);
        }
    }
}
