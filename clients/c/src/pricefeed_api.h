/*
 * pricefeed.h: read and write pricefeed feeds (layout version 3) from C or C++.
 *
 * One file, no library to link: every function is `static inline`. Linux only (futexes,
 * /dev/shm). C11 or later, or C++17 or later; GCC or Clang (it uses the `__atomic` builtins,
 * which both languages share, rather than <stdatomic.h>, which C++ cannot include).
 * The spec this implements is docs/layout.md; the subscriber's rules are docs/protocol.md.
 * Its layout constants are generated from pricefeed/_protocol/layout.py, and its protocol
 * core (clients/c/core/) is the one the Python accelerator compiles (docs/interop.md).
 *
 * Include it before any system header, or compile with -D_GNU_SOURCE (g++ always does):
 * it needs syscall(), flock() and getrandom(), which strict -std=c11 hides.
 *
 * ---------------------------------------------------------------------------------------
 * API
 * ---------------------------------------------------------------------------------------
 * A feed has a schema, fixed when it is created: 1 to 16 named fields, each a f64 (double)
 * or an i64 (int64_t); the default is one f64 named "price". A symbol's record (all its
 * fields) changes at once: one change, one sequence number, with a mask of the fields it
 * changed (bit i: field i). The one-field calls (pf_publish, quote.price) keep a program
 * of the default schema as simple as before.
 *
 * Every function that can fail returns 0 (PF_OK) or a PF_E* code, and fills `*err` (when
 * not NULL) with the code, the errno of a failed system call and a one-line message that
 * says what was found and what was expected. The open functions always initialise the
 * pf_feed, even when they fail, so pf_close() is always safe after them.
 *
 *   Reading (any number of processes; the mapping is PROT_READ, nothing is ever written):
 *     pf_open(&f, "prices", &err)              open a feed read-only, validate its header
 *                                               and schema
 *     pf_field_count(&f), pf_field_at(&f, i)    the schema: field i's name and type
 *     pf_field_index(&f, "bid")                 a field's number, -1 if the feed has none
 *     pf_get(&f, "AAPL", &quote, &err)          a symbol's current record (PF_ENOSYMBOL if
 *                                               none): quote.values[i].f64 / .i64, by the
 *                                               type of field i; quote.changed; quote.price
 *                                               on a feed of one field
 *     pf_head(&f), pf_ended(&f)                 newest sequence; 1 once the feed was ended
 *     pf_publisher_alive(&f)                    1 while some process holds the publisher lock,
 *                                               0 if none does, -1 (errno) if the probe failed
 *     pf_wait(&f, cursor, seconds, &err)        sleep until head_seq != cursor (PF_OK), the
 *                                               feed ended (PF_EENDED), or time (PF_ETIMEOUT)
 *     pf_close(&f)
 *
 *   Following changes, exactly once and in order, as the Python Subscriber.updates() does:
 *     pf_sub_open(&s, &f, symbols, n, &err)     cursor = head_seq now; symbols NULL: all
 *     pf_sub_on(&s, fields, n, &err)            optional: only changes that changed one of
 *                                               these fields (Python's on=); n 0: any change
 *     pf_next(&s, &ev, seconds, &err)           the next event: PF_EVENT_QUOTE (ev.quote, with
 *                                               its changed mask), _GAP,
 *                                               _PUBLISHER_GONE (ev.clean: it closed cleanly),
 *                                               _PUBLISHER_RESTARTED (after one that did not)
 *                                               or _ENDED (and _ENDED again on every later call);
 *                                               PF_ETIMEOUT when `seconds` (< 0: forever)
 *                                               pass in this call with nothing to hand out
 *                                               (for the CLI's idle timeout, which only a
 *                                               quote restarts, pass the time left: see
 *                                               clients/cpp/subscriber.cpp)
 *     pf_sub_close(&s)
 *
 *   Publishing (the single writer; refused with PF_EBUSY while another process holds it):
 *     pf_create(&f, name, capacity, ring_size, mode, &err)   a new feed of the default schema
 *                                                            (PF_EEXISTS if the name is taken)
 *     pf_create_fields(&f, name, "bid:f64,ask:f64,size:i64", capacity, ring_size, mode, &err)
 *                                                            a new feed of that schema
 *     pf_open_publisher(&f, name, &err)                      take an existing feed over
 *     pf_open_or_create(&f, name, capacity, ring_size, mode, &err)
 *     pf_open_or_create_fields(&f, name, fields, capacity, ring_size, mode, &err)
 *     pf_record_init(&r, &f)                                 a record of any subset of fields:
 *     pf_record_f64(&r, "bid", 5201.25)                      set by name (or pf_record_f64_at /
 *     pf_record_i64(&r, "bid_size", 12)                      pf_record_i64_at by number)
 *     pf_publish_record(&f, "ES", &r, &changed, &err)        one change of the fields given (the
 *                                                            others keep their values); changed
 *                                                            = 0: none differs, no event
 *     pf_publish_record_at(&f, "ES", &r, time_ns, &changed, &err)
 *     pf_publish(&f, "AAPL", 187.5, &changed, &err)          a feed of one f64 field: set it
 *     pf_publish_at(&f, "AAPL", 187.5, time_ns, &changed, &err)
 *     pf_end(&f, &err)                                       end the feed for good
 *     pf_close(&f)                                           give up the role cleanly (values stay)
 *
 *   pf_code_name(code) is "PF_EBADSEG" and so on; pf_exit_code(code) is the exit code the
 *   `pricefeed` CLI gives the same error (docs/cli.md). pf_format_price(price, buf, n)
 *   prints a price as Python's repr() does, pf_format_value(&f, i, value, buf, n) a value of
 *   field i, pf_format_fields(&f, buf, n) the schema ("bid:f64,ask:f64"), pf_format_mask(&f,
 *   mask, ",", buf, n) the names of the fields in a changed mask, pf_type_name(type) "f64" or
 *   "i64"; pf_now_ns() is the time stamp of a change.
 *
 * Error codes and the Python error each one matches:
 *     PF_ERROR     1   a system call failed (err->sys_errno)          PricefeedError / OSError
 *     PF_ENOTFOUND 3   no feed of that name                           FeedNotFound
 *     PF_ENOSYMBOL 4   pf_get: the feed has no such symbol            SymbolNotFound
 *     PF_EEXISTS   5   pf_create: the name is taken                   FeedExists
 *     PF_EBUSY     6   another live process is the publisher          FeedBusy
 *     PF_EINVAL    7   bad feed name, symbol, field, value, schema,   InvalidInput (InvalidField,
 *                      capacity, ...; nothing was written             InvalidPrice, ...)
 *     PF_EFULL     8   the slot table has no room for a new symbol    FeedFull
 *     PF_EBADSEG   9   not a pricefeed segment, damaged, truncated    BadSegment
 *     PF_EPERM    10   the OS refused access to the segment           FeedPermissionError
 *     PF_EENDED   11   the feed was ended for good                    FeedEnded
 *     PF_ETIMEOUT 12   nothing arrived within the timeout             Timeout
 *     PF_EVERSION 14   a pricefeed segment of another layout version  LayoutVersionMismatch
 *                      (the CLI exits 9 for it, as for any BadSegment)
 *     PF_EINTR    15   pf_wait/pf_next: *f->interrupt was set (a signal handler asked to stop)
 *
 * What this header does not do (the Python library does): follow a feed that is removed
 * and created anew (Reset), conflate or snapshot modes, publish a batch with one wake-up,
 * and waiting on the wake-table words of a few symbols with futex_waitv: a filtered pf_sub
 * sleeps on the header's word, so it is woken by every change (and correct, just not
 * targeted).
 *
 * Threads: one pf_feed or pf_sub per thread at a time. A publisher's pf_feed must not be
 * used from a forked child (the flock is shared with the parent's descriptor).
 */
#ifndef PRICEFEED_H
#define PRICEFEED_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#if !defined(__linux__)
#error "pricefeed.h needs Linux: futexes and POSIX shared memory in /dev/shm"
#endif
#if !defined(__GNUC__)
#error "pricefeed.h needs GCC or Clang: it uses the __atomic builtins"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pricefeed segments are little-endian, and this header reads them in place"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------
 * The protocol core (clients/c/core/; docs/layout.md and docs/protocol.md): the layout
 * constants (PF_OFF_HEAD_SEQ, PF_SLOT_VALUES, ...: every name of pricefeed/_protocol/layout.py
 * with a PF_ prefix, generated from it), the ordered loads and stores, the slot and record
 * writes and reads, the futex waits and wake-ups, and the follow step. The Python
 * accelerator compiles the same files, so this logic exists once.
 * --------------------------------------------------------------------------------------- */
#include "../core/pf_core.h"

/* A feed name: 1 to 27 characters of A-Z a-z 0-9 . _ -, not starting with . or -. */
#define PF_NAME_MAX 27u

/* ---------------------------------------------------------------------------------------
 * Public types
 * --------------------------------------------------------------------------------------- */
enum {
    PF_OK = 0,
    PF_ERROR = 1,
    PF_ENOTFOUND = 3,
    PF_ENOSYMBOL = 4,
    PF_EEXISTS = 5,
    PF_EBUSY = 6,
    PF_EINVAL = 7,
    PF_EFULL = 8,
    PF_EBADSEG = 9,
    PF_EPERM = 10,
    PF_EENDED = 11,
    PF_ETIMEOUT = 12,
    PF_EVERSION = 14,
    PF_EINTR = 15
};

typedef struct pf_error {
    int code;          /* PF_E*, PF_OK when nothing failed */
    int sys_errno;     /* errno of the system call that failed, 0 when none did */
    char message[384]; /* one line: the rule, what was found, what was expected */
} pf_error;

/* A field's value: one 8-byte word, read as the schema types the field. */
typedef union pf_value {
    double f64;    /* a PF_TYPE_F64 field: finite */
    int64_t i64;   /* a PF_TYPE_I64 field */
    uint64_t bits; /* the word as stored */
} pf_value;

/* One entry of a feed's schema. */
typedef struct pf_field {
    char name[PF_FIELD_NAME_FIELD]; /* NUL-terminated: a letter, then letters, digits or _ */
    uint32_t type;                  /* PF_TYPE_F64 or PF_TYPE_I64 */
} pf_field;

/* One symbol's record: a copy taken inside the seqlock, never a pointer into the mapping. */
typedef struct pf_quote {
    char symbol[PF_SYMBOL_FIELD]; /* NUL-terminated */
    double price;                 /* the one-field convenience: on a feed of one field, its value
                                     (an i64 converted); NaN on a feed of more (use values) */
    uint64_t time_ns;             /* publish time, ns since the Unix epoch */
    uint64_t seq;                 /* the change that set these values */
    uint32_t changed;             /* bit i: that change changed field i (a symbol's first change
                                     changes every field) */
    uint32_t nfields;             /* the feed's fields: values[0 .. nfields) */
    pf_value values[PF_MAX_FIELDS]; /* values[i].f64 or .i64, as pf_field_at(f, i)->type says */
} pf_quote;

enum {
    PF_EVENT_QUOTE = 1,               /* ev.quote: one change, in feed order */
    PF_EVENT_GAP = 2,                 /* the changes first_seq to last_seq (both included) were
                                         jumped over: the latest values of the (wanted) symbols
                                         changed in them follow, and ev.missed counts the rest */
    PF_EVENT_PUBLISHER_GONE = 3,      /* the publisher we followed left (ev.pid; ev.clean: it
                                         closed cleanly); never for one gone before pf_sub_open */
    PF_EVENT_PUBLISHER_RESTARTED = 4, /* ev.pid took the feed over (ev.epoch) from a publisher
                                         that did not close cleanly; the sequence goes on */
    PF_EVENT_ENDED = 5                /* the feed was ended and every change was handed out */
};

typedef struct pf_event {
    int kind;
    pf_quote quote;                          /* PF_EVENT_QUOTE */
    uint64_t missed, first_seq, last_seq;    /* PF_EVENT_GAP */
    uint32_t pid, epoch;                     /* PF_EVENT_PUBLISHER_* (pid 0: unknown) */
    uint64_t head_seq;                       /* PF_EVENT_PUBLISHER_* */
    int clean;                               /* PF_EVENT_PUBLISHER_GONE: 1 if it closed cleanly */
} pf_event;

/* Symbol -> slot index: the slots' names in order, and an open-addressing hash over them. */
typedef struct pf_names {
    char (*names)[PF_SYMBOL_FIELD];
    uint32_t count, room;
    uint32_t *table; /* slot + 1; 0 is empty */
    uint32_t table_size;
} pf_names;

typedef struct pf_feed {
    int fd;
    int writable; /* 1: this process is the publisher */
    unsigned char *base;
    size_t map_size;
    uint32_t capacity, ring_size;
    uint64_t incarnation, created_ns, size; /* size: the bytes the geometry covers */
    uint64_t dev, ino;
    uint32_t field_count;            /* the schema, as validated at open: 1 to PF_MAX_FIELDS */
    uint32_t f64_mask;               /* bit i: field i is a f64 */
    pf_field fields[PF_MAX_FIELDS];
    pf_view view;                    /* the core's view: the mapping and the geometry above */
    char name[PF_NAME_MAX + 1];
    pf_names names; /* the symbols learned so far */
    /* Set by the caller (optional): while *interrupt is non-zero, pf_wait and pf_next return
       PF_EINTR instead of waiting. A signal handler that sets it (installed without
       SA_RESTART) so ends a wait at once; set at any other moment, within 0.25 s. */
    volatile int *interrupt;
    /* The publisher's own state (writable only). */
    uint64_t head;
    uint64_t *last; /* each slot's values (field_count words per slot), as last published */
    uint32_t epoch;
    int ended;
    int took_over;     /* 1 once this publisher recorded itself (pf_close then closes cleanly) */
    uint32_t repaired; /* slots the takeover found half-written and repaired */
} pf_feed;

typedef struct pf_sub {
    pf_feed *feed;
    uint64_t cursor;
    uint32_t on; /* 0, or a mask of fields: only changes that changed one of them (pf_sub_on) */
    int filtered;
    pf_names wanted;
    unsigned char *interest; /* per known slot: 1 if wanted */
    uint32_t interest_len;
    pf_quote *pending; /* catch-up values after a gap, in feed order */
    uint32_t npending, ipending, pending_room;
    uint32_t epoch, handovers; /* what we last took in of the publishers (protocol.md, Liveness) */
    int gone_reported, ended;
} pf_sub;

/* A record to publish: any subset of a feed's fields, set by name or number (pf_record_*).
   The fields not set keep their values. A mistake (a field the feed lacks, a value of the
   wrong type) is kept in the record and refused by pf_publish_record, which writes nothing. */
typedef struct pf_record {
    const pf_feed *feed;             /* the feed whose schema names the fields */
    uint32_t set;                    /* bit i: field i is given */
    pf_value values[PF_MAX_FIELDS];  /* the values given, as the schema types them */
    int bad;                         /* 1 after a mistake; why[] says which (the first) */
    char why[200];
} pf_record;

/* ---------------------------------------------------------------------------------------
 * Internals: tunables, errors, clocks
 * --------------------------------------------------------------------------------------- */
#define PF__SPIN_TRIES 200
#define PF__STUCK_CHECK_NS 500000000LL /* check the publisher lock this often on an odd lock */
#define PF__WATCH_SLICE 0.25           /* longest single futex wait in pf_next */
#ifndef PF__INIT_WAIT_NS /* (a test builds one that waits a minute, to tell waiting from refusing) */
#define PF__INIT_WAIT_NS 1000000000LL  /* how long a header reading version 0 is waited for */
#endif
#define PF__LOCK_RETRY_NS 50000000LL   /* how long a held publisher lock is retried */
#define PF__SETTLE_TRIES 100           /* loads of a takeover caught between its two stores */

static inline uint64_t *pf__u64(const pf_feed *f, uint64_t off) { return (uint64_t *)(void *)(f->base + off); }
static inline uint32_t *pf__u32(const pf_feed *f, uint64_t off) { return (uint32_t *)(void *)(f->base + off); }

/* The core's view of a feed: its mapping and the geometry validated at open (f->view, made
   once the header and the schema are validated). */
static inline pf_view pf__view(const pf_feed *f) { return f->view; }

__attribute__((format(printf, 4, 5))) static inline int pf__fail(pf_error *err, int code, int sys_errno,
                                                                 const char *fmt, ...) {
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
        err->sys_errno = sys_errno;
    }
    return code;
}

static inline int pf__ok(pf_error *err) {
    if (err != NULL) {
        err->code = PF_OK;
        err->sys_errno = 0;
        err->message[0] = '\0';
    }
    return PF_OK;
}

/* Nanoseconds since the Unix epoch: the time stamp of a change. */
static inline uint64_t pf_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void pf__sleep_ns(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline const char *pf_code_name(int code) {
    switch (code) {
    case PF_OK: return "PF_OK";
    case PF_ERROR: return "PF_ERROR";
    case PF_ENOTFOUND: return "PF_ENOTFOUND";
    case PF_ENOSYMBOL: return "PF_ENOSYMBOL";
    case PF_EEXISTS: return "PF_EEXISTS";
    case PF_EBUSY: return "PF_EBUSY";
    case PF_EINVAL: return "PF_EINVAL";
    case PF_EFULL: return "PF_EFULL";
    case PF_EBADSEG: return "PF_EBADSEG";
    case PF_EPERM: return "PF_EPERM";
    case PF_EENDED: return "PF_EENDED";
    case PF_ETIMEOUT: return "PF_ETIMEOUT";
    case PF_EVERSION: return "PF_EVERSION";
    case PF_EINTR: return "PF_EINTR";
    default: return "PF_E?";
    }
}

/* The exit code the `pricefeed` CLI gives the same error (docs/cli.md). */
static inline int pf_exit_code(int code) {
    if (code == PF_EVERSION) return PF_EBADSEG; /* LayoutVersionMismatch is a BadSegment */
    if (code == PF_EINTR) return 130;
    return code;
}

/* Format a price as Python's repr() does: the fewest digits that read back as the same
   double, in fixed notation from 1e-4 up to 1e16 and always with a '.' or an exponent
   (10.0, 0.1, 187.25, 1e-05, 1.5e+16). `out` needs 32 bytes. */
static inline void pf_format_price(double d, char *out, size_t n) {
    char buf[40];
    int prec = 17;
    if (!isfinite(d)) {
        snprintf(out, n, "%s", isnan(d) ? "nan" : d > 0 ? "inf" : "-inf");
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d) {
            prec = p;
            break;
        }
    }
    const char *e = strchr(buf, 'e');
    int exp = e != NULL ? atoi(e + 1) : 0;
    if (exp >= -4 && exp < 16) {
        int decimals = prec - 1 - exp;
        snprintf(out, n, "%.*f", decimals < 1 ? 1 : decimals, d);
    } else {
        snprintf(out, n, "%s", buf);
    }
}

/* ---------------------------------------------------------------------------------------
 * Validation of what callers pass in (the same rules as pricefeed/_values.py)
 * --------------------------------------------------------------------------------------- */
static inline int pf__check_name(const char *feed, pf_error *err) {
    size_t n = feed == NULL ? 0 : strlen(feed);
    int ok = n >= 1 && n <= PF_NAME_MAX && feed[0] != '.' && feed[0] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        char c = feed[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
             c == '-';
    }
    if (!ok)
        return pf__fail(err, PF_EINVAL, 0,
                        "feed name must be 1 to %u characters of A-Z a-z 0-9 . _ - not starting with . or -: "
                        "feed='%.64s'",
                        PF_NAME_MAX, feed == NULL ? "(null)" : feed);
    return PF_OK;
}

/* 1 to 31 bytes of 0x21-0x7E: printable ASCII, no space. */
static inline int pf__valid_symbol(const char *s, size_t n) {
    if (n < 1 || n > PF_SYMBOL_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7E) return 0;
    return 1;
}

static inline int pf__check_symbol(const char *symbol, pf_error *err) {
    if (symbol == NULL || !pf__valid_symbol(symbol, strnlen(symbol, PF_SYMBOL_FIELD + 1)))
        return pf__fail(err, PF_EINVAL, 0,
                        "symbol must be 1 to %u printable ASCII characters without spaces: symbol='%.40s'",
                        PF_SYMBOL_MAX, symbol == NULL ? "(null)" : symbol);
    return PF_OK;
}

static inline int pf__check_geometry(uint32_t capacity, uint32_t ring_size, char *why, size_t why_len) {
    if (capacity < PF_MIN_CAPACITY || capacity > PF_MAX_CAPACITY) {
        snprintf(why, why_len, "capacity must be a whole number from %u to %u: capacity=%u", PF_MIN_CAPACITY,
                 PF_MAX_CAPACITY, capacity);
        return 0;
    }
    if (ring_size < PF_MIN_RING || ring_size > PF_MAX_RING || (ring_size & (ring_size - 1u))) {
        snprintf(why, why_len, "ring size must be a power of 2 from %u to %u: ring_size=%u", PF_MIN_RING,
                 PF_MAX_RING, ring_size);
        return 0;
    }
    return 1;
}

/* The name of a field type, "f64" or "i64" ("?" for a number that is neither). */
static inline const char *pf_type_name(uint32_t type) {
    return type == PF_TYPE_F64 ? "f64" : type == PF_TYPE_I64 ? "i64" : "?";
}

/* Quote `n` bytes of `s` for a message, as '...' with \xNN for what is not printable. */
static inline void pf__quote_bytes(const char *s, size_t n, char *out, size_t out_len) {
    size_t k = 0;
    if (out_len == 0) return;
    out[0] = '\0';
    k += (size_t)snprintf(out + k, out_len - k, "'");
    for (size_t i = 0; i < n && k + 5 < out_len; i++) {
        unsigned char c = (unsigned char)s[i];
        k += (size_t)snprintf(out + k, out_len - k, (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') ? "%c" : "\\x%02x", c);
    }
    if (k + 1 < out_len) snprintf(out + k, out_len - k, "'");
}

/* A field name (n bytes): an ASCII letter, then letters, digits or _, 1 to PF_FIELD_NAME_MAX
   bytes, and not a name every quote already has (layout.py's check_field_name). 1 when
   valid; else 0, with why[] stating the rule and the name. */
static inline int pf__check_field_name(const char *name, size_t n, char *why, size_t why_len) {
    static const char *const reserved[] = {"changed", "changed_mask", "fields", "schema", "seq", "symbol", "time_ns"};
    int ok = n >= 1 && n <= PF_FIELD_NAME_MAX &&
             ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z'));
    for (size_t i = 1; ok && i < n; i++) {
        char c = name[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    }
    char shown[100];
    pf__quote_bytes(name, n < 40 ? n : 40, shown, sizeof shown);
    if (!ok) {
        snprintf(why, why_len,
                 "a field name is 1 to %u characters: an ASCII letter, then letters, digits or _: got %s",
                 PF_FIELD_NAME_MAX, shown);
        return 0;
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == n && memcmp(reserved[i], name, n) == 0) {
            snprintf(why, why_len,
                     "field name %s is taken by every quote; choose another than changed, changed_mask, fields, "
                     "schema, seq, symbol, time_ns",
                     shown);
            return 0;
        }
    return 1;
}

static inline int pf__same_ignoring_case(const char *a, const char *b) {
    for (;; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (x != y) return 0;
        if (x == '\0') return 1;
    }
}

/* A schema (layout.py's check_fields): 1 to PF_MAX_FIELDS fields, valid names, distinct even
   ignoring case (a name is also an environment variable's), types PF_TYPE_F64 or
   PF_TYPE_I64. 1 when valid; else 0, with why[] saying which rule it breaks. */
static inline int pf__check_fields(const pf_field *fields, uint32_t count, char *why, size_t why_len) {
    if (count < 1 || count > PF_MAX_FIELDS) {
        snprintf(why, why_len, "a schema has 1 to %u fields: got %u", PF_MAX_FIELDS, count);
        return 0;
    }
    for (uint32_t k = 0; k < count; k++) {
        const char *name = fields[k].name;
        if (!pf__check_field_name(name, strnlen(name, PF_FIELD_NAME_FIELD), why, why_len)) return 0;
        if (fields[k].type != PF_TYPE_F64 && fields[k].type != PF_TYPE_I64) {
            snprintf(why, why_len, "field '%.23s' has type %u; expected f64 or i64", name, fields[k].type);
            return 0;
        }
        for (uint32_t j = 0; j < k; j++)
            if (pf__same_ignoring_case(fields[j].name, name)) {
                snprintf(why, why_len, "fields '%.23s' and '%.23s' have the same name (ignoring case)", fields[j].name,
                         name);
                return 0;
            }
    }
    return 1;
}

/* A schema from its text, as `pricefeed create --fields` takes it: "bid:f64,ask:f64,size:i64"
   (NAME or NAME:TYPE, a bare name is a f64; spaces around each part are ignored). NULL is the
   default schema, one f64 named price. PF_EINVAL, saying what is wrong, for a bad one. */
static inline int pf__parse_fields(const char *spec, pf_field *out, uint32_t *count, pf_error *err) {
    char why[240];
    memset(out, 0, PF_MAX_FIELDS * sizeof *out);
    *count = 0;
    if (spec == NULL) {
        memcpy(out[0].name, "price", 6);
        out[0].type = PF_TYPE_F64;
        *count = 1;
        return PF_OK;
    }
    uint32_t items = 0;
    const char *p = spec;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '\0') {
        for (const char *item = spec;; items++) {
            const char *end = strchr(item, ',');
            size_t len = end != NULL ? (size_t)(end - item) : strlen(item);
            const char *colon = (const char *)memchr(item, ':', len);
            const char *name = item, *type = colon != NULL ? colon + 1 : item + len;
            size_t name_len = colon != NULL ? (size_t)(colon - item) : len, type_len = (size_t)(item + len - type);
            while (name_len && (*name == ' ' || *name == '\t')) name++, name_len--;
            while (name_len && (name[name_len - 1] == ' ' || name[name_len - 1] == '\t')) name_len--;
            while (type_len && (*type == ' ' || *type == '\t')) type++, type_len--;
            while (type_len && (type[type_len - 1] == ' ' || type[type_len - 1] == '\t')) type_len--;
            if (items < PF_MAX_FIELDS) {
                char shown[100];
                pf__quote_bytes(name, name_len < 40 ? name_len : 40, shown, sizeof shown);
                uint32_t kind = type_len == 0 || (type_len == 3 && memcmp(type, "f64", 3) == 0) ? PF_TYPE_F64
                                : type_len == 3 && memcmp(type, "i64", 3) == 0                   ? PF_TYPE_I64
                                                                                                 : 0;
                if (kind == 0) {
                    char t[100];
                    pf__quote_bytes(type, type_len < 40 ? type_len : 40, t, sizeof t);
                    return pf__fail(err, PF_EINVAL, 0, "bad schema: field %s has type %s; expected f64 or i64", shown, t);
                }
                if (!pf__check_field_name(name, name_len, why, sizeof why))
                    return pf__fail(err, PF_EINVAL, 0, "bad schema: %s", why);
                memcpy(out[items].name, name, name_len);
                out[items].type = kind;
            }
            if (end == NULL) break;
            item = end + 1;
        }
        items++;
    }
    if (!pf__check_fields(out, items, why, sizeof why)) return pf__fail(err, PF_EINVAL, 0, "bad schema: %s", why);
    *count = items;
    return PF_OK;
}

/* ---------------------------------------------------------------------------------------
 * Symbol table
 * --------------------------------------------------------------------------------------- */
static inline uint32_t pf__hash(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static inline void pf__names_free(pf_names *t) {
    free(t->names);
    free(t->table);
    memset(t, 0, sizeof *t);
}

/* The slot of `symbol`, or UINT32_MAX. */
static inline uint32_t pf__names_find(const pf_names *t, const char *symbol) {
    if (t->table_size == 0) return UINT32_MAX;
    size_t n = strnlen(symbol, PF_SYMBOL_FIELD);
    uint32_t mask = t->table_size - 1u;
    for (uint32_t h = pf__hash(symbol, n) & mask;; h = (h + 1u) & mask) {
        uint32_t v = t->table[h];
        if (v == 0) return UINT32_MAX;
        if (strncmp(t->names[v - 1u], symbol, PF_SYMBOL_FIELD) == 0) return v - 1u;
    }
}

static inline void pf__names_place(pf_names *t, uint32_t index) {
    const char *s = t->names[index];
    uint32_t mask = t->table_size - 1u;
    uint32_t h = pf__hash(s, strnlen(s, PF_SYMBOL_FIELD)) & mask;
    while (t->table[h] != 0) h = (h + 1u) & mask;
    t->table[h] = index + 1u;
}

/* Append `symbol` as the next slot. 0 on success, ENOMEM. */
static inline int pf__names_add(pf_names *t, const char *symbol) {
    if (t->count == t->room) {
        uint32_t room = t->room ? t->room * 2u : 16u;
        char(*names)[PF_SYMBOL_FIELD] = (char(*)[PF_SYMBOL_FIELD])realloc(t->names, (size_t)room * PF_SYMBOL_FIELD);
        if (names == NULL) return ENOMEM;
        t->names = names;
        t->room = room;
    }
    memset(t->names[t->count], 0, PF_SYMBOL_FIELD);
    memcpy(t->names[t->count], symbol, strnlen(symbol, PF_SYMBOL_MAX)); /* a NUL always follows */
    t->count++;
    if ((uint64_t)t->count * 2u > t->table_size) { /* keep the table at most half full */
        uint32_t size = t->table_size ? t->table_size : 32u;
        while ((uint64_t)t->count * 2u > size) size *= 2u;
        uint32_t *table = (uint32_t *)calloc(size, sizeof *table);
        if (table == NULL) {
            t->count--;
            return ENOMEM;
        }
        free(t->table);
        t->table = table;
        t->table_size = size;
        for (uint32_t i = 0; i < t->count; i++) pf__names_place(t, i);
    } else {
        pf__names_place(t, t->count - 1u);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Opening a segment and validating its header (layout.md, sections 1 and 5)
 * --------------------------------------------------------------------------------------- */
static inline void pf__init(pf_feed *f) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

static inline void pf__unmap(pf_feed *f) {
    if (f->base != NULL) munmap(f->base, f->map_size);
    f->base = NULL;
    f->map_size = 0;
    if (f->fd >= 0) close(f->fd); /* also drops the flock, if this descriptor held it */
    f->fd = -1;
}

static inline void pf__close_cleanly(pf_feed *f);

/* Give up the feed: unmap, close (releasing the publisher lock) and free. The values stay;
   another publisher may take over. A publisher's pf_close is a clean close: the feed records
   that it left with every change complete, so that subscribers report its departure as
   clean and its successor as no restart (a process that dies, or exits without pf_close, is
   reported as gone uncleanly). Safe on a feed that failed to open or is closed. */
static inline void pf_close(pf_feed *f) {
    if (f->writable && f->took_over && f->base != NULL) pf__close_cleanly(f); /* before the lock goes */
    f->took_over = 0;
    pf__unmap(f);
    pf__names_free(&f->names);
    free(f->last);
    f->last = NULL;
    f->writable = 0;
}

static inline void pf__shm_name(const char *feed, char *out /* >= 32 bytes */) {
    snprintf(out, 32, "/pf-%s", feed);
}

static inline int pf__open_error(pf_error *err, int e, const char *feed, const char *action) {
    if (e == ENOENT)
        return pf__fail(err, PF_ENOTFOUND, e, "no feed named '%s' on this machine (create it with pricefeed create)",
                        feed);
    if (e == EACCES || e == EPERM)
        return pf__fail(err, PF_EPERM, e, "permission denied to %s feed '%s': %s", action, feed, strerror(e));
    if (e == EEXIST)
        return pf__fail(err, PF_EEXISTS, e, "feed '%s' already exists (use open, or pricefeed rm first)", feed);
    if (e == ENOSPC)
        return pf__fail(err, PF_ERROR, e, "no room in shared memory (/dev/shm) to %s feed '%s': %s", action, feed,
                        strerror(e));
    return pf__fail(err, PF_ERROR, e, "cannot %s feed '%s': %s", action, feed, strerror(e));
}

/* A FIFO under the feed's name would block shm_open forever: look first (as _segment/__init__.py). */
static inline int pf__refuse_non_files(const char *feed, pf_error *err) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/dev/shm/pf-%s", feed);
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode)) return PF_OK;
    return pf__fail(err, PF_EBADSEG, 0, "feed '%s' is not a pricefeed segment: %s is %s", feed, path,
                    S_ISDIR(st.st_mode) ? "a directory" : S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
}

/* The schema table of a header being validated (section 5; pricefeed/_protocol/header.py's
   read_schema): `count` entries, each a valid name with nothing after its NUL, a known type and
   a zero reserved word, the names distinct ignoring case, and every entry after them all zero.
   The table is written before version and never after, so it is copied once. Kept in f. */
static inline int pf__read_schema(pf_feed *f, uint32_t count, pf_error *err) {
    const char *feed = f->name;
    unsigned char table[PF_SCHEMA_SIZE];
    char why[240];
    if (count < 1 || count > PF_MAX_FIELDS)
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: field_count is %u, expected 1 to %u", feed, count,
                        PF_MAX_FIELDS);
    memcpy(table, f->base + PF_SCHEMA_OFFSET, sizeof table);
    memset(f->fields, 0, sizeof f->fields);
    f->f64_mask = 0;
    for (uint32_t k = 0; k < PF_MAX_FIELDS; k++) {
        const unsigned char *entry = table + (size_t)k * PF_SCHEMA_ENTRY_SIZE;
        if (k >= count) {
            for (uint32_t i = 0; i < PF_SCHEMA_ENTRY_SIZE; i++)
                if (entry[i])
                    return pf__fail(err, PF_EBADSEG, 0,
                                    "feed '%s': damaged schema: entry %u is not zero, but the schema has %u field(s)",
                                    feed, k, count);
            continue;
        }
        const char *raw = (const char *)entry + PF_FIELD_NAME;
        size_t len = strnlen(raw, PF_FIELD_NAME_FIELD);
        uint32_t type, reserved;
        memcpy(&type, entry + PF_FIELD_TYPE, 4);
        memcpy(&reserved, entry + PF_FIELD_RESERVED, 4);
        int tail = 0;
        for (size_t i = len; i < PF_FIELD_NAME_FIELD; i++) tail |= raw[i];
        if (tail || reserved)
            return pf__fail(err, PF_EBADSEG, 0,
                            "feed '%s': damaged schema: entry %u has bytes after its name's NUL or in its reserved word",
                            feed, k);
        if (!pf__check_field_name(raw, len, why, sizeof why)) {
            char shown[100];
            pf__quote_bytes(raw, len, shown, sizeof shown);
            return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged schema: entry %u has name %s, not a valid field name",
                            feed, k, shown);
        }
        if (type != PF_TYPE_F64 && type != PF_TYPE_I64)
            return pf__fail(err, PF_EBADSEG, 0,
                            "feed '%s': damaged schema: field '%.23s' has type %u, expected 1 (f64) or 2 (i64)", feed, raw,
                            type);
        memcpy(f->fields[k].name, raw, len);
        f->fields[k].type = type;
        if (type == PF_TYPE_F64) f->f64_mask |= UINT32_C(1) << k;
    }
    if (!pf__check_fields(f->fields, count, why, sizeof why))
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged schema: %s", feed, why);
    f->field_count = count;
    return PF_OK;
}

#define PF__INITIALISING (-1)

/* Validate a mapped header (section 5, steps 4 to 7). PF__INITIALISING for version 0. */
static inline int pf__check_header(pf_feed *f, uint64_t seg_size, pf_error *err) {
    const char *feed = f->name;
    /* version first: the acquire pairs with the creator's release fence before it stores
       version, so a reader that sees the version sees every field stored before it, magic
       included (loading magic first could pair a stale 0 with a new version). */
    uint32_t version = PF__LOAD_ACQ(pf__u32(f, PF_OFF_VERSION));
    uint64_t magic = PF__LOAD(pf__u64(f, PF_OFF_MAGIC));
    if (magic == 0 && version == 0)
        return pf__fail(err, PF__INITIALISING, 0, "feed '%s': segment is still being created (its header is all zeros)",
                        feed);
    if (magic == 0) /* the creator stores magic before version: a version without it is damage */
        return pf__fail(err, PF_EBADSEG, 0,
                        "feed '%s': damaged header: magic is 0 but version is %u; a creator stores magic before "
                        "version, so this is damage, not a segment still being created",
                        feed, version);
    if (magic != PF_MAGIC) {
        char shown[8 * 4 + 1];
        size_t k = 0;
        for (int i = 0; i < 8; i++) {
            unsigned char c = (unsigned char)(magic >> (8 * i));
            k += (size_t)snprintf(shown + k, sizeof shown - k, (c >= 0x20 && c < 0x7f && c != '\\') ? "%c" : "\\x%02x",
                                  c);
        }
        return pf__fail(err, PF_EBADSEG, 0,
                        "feed '%s': not a pricefeed segment: its first 8 bytes are '%s', expected 'PRCFEED\\x00'",
                        feed, shown);
    }
    if (version == 0)
        return pf__fail(err, PF__INITIALISING, 0,
                        "feed '%s': segment is still being initialised (layout version 0): its creator has not "
                        "finished, or died before it did",
                        feed);
    if (version != PF_LAYOUT_VERSION)
        return pf__fail(err, PF_EVERSION, 0, "feed '%s': segment has layout version %u; this reader reads version %u",
                        feed, version, PF_LAYOUT_VERSION);
    if (seg_size < PF_SYMBOLS_OFFSET)
        return pf__fail(err, PF_EBADSEG, 0,
                        "feed '%s': segment is truncated: %llu bytes, expected at least %u for a header, a schema "
                        "and a wake table",
                        feed, (unsigned long long)seg_size, PF_SYMBOLS_OFFSET);
    static const char *const fixed_name[4] = {"header_size", "wake_words", "schema_offset", "symbols_offset"};
    const uint64_t fixed_want[4] = {PF_HEADER_SIZE, PF_WAKE_WORDS, PF_SCHEMA_OFFSET, PF_SYMBOLS_OFFSET};
    const uint64_t fixed_found[4] = {
        PF__LOAD(pf__u32(f, PF_OFF_HEADER_SIZE)), PF__LOAD(pf__u32(f, PF_OFF_WAKE_WORDS)),
        PF__LOAD(pf__u64(f, PF_OFF_SCHEMA_OFFSET)), PF__LOAD(pf__u64(f, PF_OFF_SYMBOLS_OFFSET))};
    for (int i = 0; i < 4; i++)
        if (fixed_found[i] != fixed_want[i])
            return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: %s is %llu, expected %llu", feed,
                            fixed_name[i], (unsigned long long)fixed_found[i], (unsigned long long)fixed_want[i]);
    uint32_t capacity = PF__LOAD(pf__u32(f, PF_OFF_CAPACITY));
    uint32_t ring_size = PF__LOAD(pf__u32(f, PF_OFF_RING_SIZE));
    char why[240];
    if (!pf__check_geometry(capacity, ring_size, why, sizeof why))
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: %s", feed, why);
    int rc = pf__read_schema(f, PF__LOAD(pf__u32(f, PF_OFF_FIELD_COUNT)), err);
    if (rc) return rc;
    uint32_t n = f->field_count;
    static const char *const derived_name[4] = {"slot_size", "record_size", "slots_offset", "ring_offset"};
    const uint64_t derived_want[4] = {pf_slot_size(n), pf_record_size(n), pf_slots_offset(capacity),
                                      pf_ring_offset(capacity, n)};
    const uint64_t derived_found[4] = {
        PF__LOAD(pf__u32(f, PF_OFF_SLOT_SIZE)), PF__LOAD(pf__u32(f, PF_OFF_RECORD_SIZE)),
        PF__LOAD(pf__u64(f, PF_OFF_SLOTS_OFFSET)), PF__LOAD(pf__u64(f, PF_OFF_RING_OFFSET))};
    for (int i = 0; i < 4; i++)
        if (derived_found[i] != derived_want[i])
            return pf__fail(err, PF_EBADSEG, 0,
                            "feed '%s': damaged header: %s is %llu, expected %llu for capacity %u and %u field(s)", feed,
                            derived_name[i], (unsigned long long)derived_found[i], (unsigned long long)derived_want[i],
                            capacity, n);
    uint64_t need = pf_segment_size(capacity, ring_size, n);
    if (seg_size < need)
        return pf__fail(err, PF_EBADSEG, 0,
                        "feed '%s': segment is truncated: %llu bytes, expected at least %llu for capacity %u, ring "
                        "size %u and %u field(s)",
                        feed, (unsigned long long)seg_size, (unsigned long long)need, capacity, ring_size, n);
    uint64_t incarnation = PF__LOAD(pf__u64(f, PF_OFF_INCARNATION));
    if (incarnation == 0)
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: incarnation is 0, expected a non-zero random id",
                        feed);
    /* Kept in our own memory and never read from the segment again (section 5, step 8). */
    f->capacity = capacity;
    f->ring_size = ring_size;
    f->incarnation = incarnation;
    f->created_ns = PF__LOAD(pf__u64(f, PF_OFF_CREATED_NS));
    f->size = need;
    f->view = pf_core_view(f->base, capacity, ring_size, f->field_count, f->f64_mask);
    return PF_OK;
}

/* flock(LOCK_EX | LOCK_NB), retried for 50 ms: a liveness probe holds a shared lock for a
   few microseconds. */
static inline int pf__try_lock(int fd) {
    int64_t deadline = pf__mono_ns() + PF__LOCK_RETRY_NS;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 1;
        if (errno != EWOULDBLOCK && errno != EINTR) return -1;
        if (pf__mono_ns() >= deadline) return 0;
        pf__sleep_ns(2000000);
    }
}

/* The pid holding an exclusive flock on this inode, from /proc/locks; 0 if not found. */
static inline unsigned pf__holder_pid(uint64_t dev, uint64_t ino) {
    FILE *fp = fopen("/proc/locks", "r");
    if (fp == NULL) return 0;
    char line[256], want[64];
    snprintf(want, sizeof want, "%02x:%02x:%llu", major((dev_t)dev), minor((dev_t)dev), (unsigned long long)ino);
    unsigned found = 0;
    while (found == 0 && fgets(line, sizeof line, fp) != NULL) {
        char kind[16], mode[16], rw[16], where[64];
        unsigned pid;
        /* "1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF"; waiters read "1: -> FLOCK ..." */
        if (sscanf(line, "%*s %15s %15s %15s %u %63s", kind, mode, rw, &pid, where) == 5 &&
            strcmp(kind, "FLOCK") == 0 && strcmp(rw, "WRITE") == 0 && strcmp(where, want) == 0)
            found = pid;
    }
    fclose(fp);
    return found;
}

/* 1 while a process holds the publisher lock, 0 when none does (layout.md, section 10: ask
   the lock itself, through our own O_RDONLY descriptor: flock looks at no access mode), -1
   with errno set when the probe itself failed (never read that as "gone"). */
static inline int pf_publisher_alive(pf_feed *f) {
    if (f->writable) return 1; /* we are the publisher; a LOCK_SH here would downgrade our lock */
    for (;;) {
        if (flock(f->fd, LOCK_SH | LOCK_NB) == 0) {
            flock(f->fd, LOCK_UN); /* at once: a publisher taking the feed retries for 50 ms only */
            return 0;
        }
        if (errno == EWOULDBLOCK) return 1;
        if (errno != EINTR) return -1;
    }
}

/* Does the feed's name still lead to the segment we hold (same device and inode)? */
static inline int pf__still_linked(const pf_feed *f) {
    char shm[32];
    struct stat st;
    pf__shm_name(f->name, shm);
    int fd = shm_open(shm, O_RDONLY, 0);
    if (fd < 0) return 0;
    int same = fstat(fd, &st) == 0 && (uint64_t)st.st_dev == f->dev && (uint64_t)st.st_ino == f->ino;
    close(fd);
    return same;
}

static inline int pf__busy(pf_feed *f, pf_error *err) {
    unsigned pid = pf__holder_pid(f->dev, f->ino);
    char who[32];
    if (pid)
        snprintf(who, sizeof who, "pid %u", pid);
    else
        snprintf(who, sizeof who, "another process");
    return pf__fail(err, PF_EBUSY, EWOULDBLOCK, "feed '%s' already has a publisher (%s); a feed has one publisher at a time",
                    f->name, who);
}

static inline int pf__take(pf_feed *f, pf_error *err);

/* Open an existing segment, validate it, and (writable) take the publisher lock first. */
static inline int pf__attach(pf_feed *f, const char *feed, int writable, pf_error *err) {
    pf__init(f);
    int rc = pf__check_name(feed, err);
    if (rc) return rc;
    snprintf(f->name, sizeof f->name, "%s", feed);
    char shm[32];
    pf__shm_name(feed, shm);
    int64_t deadline = pf__mono_ns() + PF__INIT_WAIT_NS;
    for (;;) {
        if ((rc = pf__refuse_non_files(feed, err)) != 0) return rc;
        f->fd = shm_open(shm, writable ? O_RDWR : O_RDONLY, 0);
        if (f->fd < 0) return pf__open_error(err, errno, feed, writable ? "open for writing" : "open");
        struct stat st;
        if (fstat(f->fd, &st) != 0) {
            rc = pf__fail(err, PF_ERROR, errno, "cannot stat feed '%s': %s", feed, strerror(errno));
            pf__unmap(f);
            return rc;
        }
        f->dev = (uint64_t)st.st_dev;
        f->ino = (uint64_t)st.st_ino;
        if (writable) {
            int got = pf__try_lock(f->fd);
            if (got <= 0) {
                rc = got < 0 ? pf__fail(err, PF_ERROR, errno, "cannot lock feed '%s': %s", feed, strerror(errno))
                             : pf__busy(f, err);
                pf__unmap(f);
                return rc;
            }
            if (!pf__still_linked(f)) { /* removed or re-created while we took the lock */
                pf__unmap(f);
                continue;
            }
        }
        uint64_t size = (uint64_t)st.st_size;
        if (size == 0 && pf__mono_ns() < deadline) { /* created a moment ago, not sized yet */
            pf__unmap(f);
            pf__sleep_ns(5000000);
            continue;
        }
        if (size < PF_HEADER_SIZE) {
            rc = pf__fail(err, PF_EBADSEG, 0,
                          "feed '%s' is not a pricefeed segment: %llu bytes, smaller than the %u-byte header", feed,
                          (unsigned long long)size, PF_HEADER_SIZE);
            pf__unmap(f);
            return rc;
        }
        if (size > (uint64_t)SIZE_MAX) {
            rc = pf__fail(err, PF_ERROR, 0, "feed '%s' is %llu bytes: too large to map in this process", feed,
                          (unsigned long long)size);
            pf__unmap(f);
            return rc;
        }
        void *m = mmap(NULL, (size_t)size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, f->fd, 0);
        if (m == MAP_FAILED) {
            rc = pf__fail(err, PF_ERROR, errno, "cannot map feed '%s' (%llu bytes): %s", feed, (unsigned long long)size,
                          strerror(errno));
            pf__unmap(f);
            return rc;
        }
        f->base = (unsigned char *)m;
        f->map_size = (size_t)size;
        rc = pf__check_header(f, size, err);
        if (rc == PF__INITIALISING) {
            if (pf__mono_ns() >= deadline) {
                if (err != NULL) err->code = PF_EBADSEG;
                pf__unmap(f);
                return PF_EBADSEG;
            }
            pf__unmap(f);
            pf__sleep_ns(5000000);
            continue;
        }
        if (rc) {
            pf__unmap(f);
            return rc;
        }
        break;
    }
    if (writable) {
        f->writable = 1;
        if ((rc = pf__take(f, err)) != 0) {
            pf_close(f);
            return rc;
        }
    }
    return pf__ok(err);
}

/* Open feed `feed` read-only: PF_ENOTFOUND, PF_EPERM, PF_EBADSEG, PF_EVERSION, PF_EINVAL. */
static inline int pf_open(pf_feed *f, const char *feed, pf_error *err) { return pf__attach(f, feed, 0, err); }

/* ---------------------------------------------------------------------------------------
 * Reading (sections 6 and 7)
 * --------------------------------------------------------------------------------------- */
/* head_seq, loaded with acquire: pairs with the release before the writer's head store. */
static inline uint64_t pf_head(const pf_feed *f) {
    pf_view v = pf__view(f);
    return pf_core_head(&v);
}

/* 1 once the feed was ended for good. */
static inline int pf_ended(const pf_feed *f) {
    pf_view v = pf__view(f);
    return pf_core_ended(&v);
}

static inline uint32_t pf_publisher_epoch(const pf_feed *f) {
    pf_view v = pf__view(f);
    return pf_core_epoch(&v);
}
static inline uint32_t pf_publisher_pid(const pf_feed *f) { return PF__LOAD(pf__u32(f, PF_OFF_PUBLISHER_PID)); }

static inline uint64_t pf__pack_state(uint32_t epoch, uint32_t state, uint64_t handovers) {
    return (uint64_t)epoch | (uint64_t)(state & ((1u << PF_STATE_BITS) - 1u)) << PF_STATE_SHIFT |
           (handovers & ((UINT64_C(1) << PF_HANDOVERS_BITS) - 1u)) << PF_HANDOVERS_SHIFT;
}
static inline uint32_t pf__state_epoch(uint64_t w) { return (uint32_t)w; }
static inline uint32_t pf__state_kind(uint64_t w) { return (uint32_t)(w >> PF_STATE_SHIFT) & ((1u << PF_STATE_BITS) - 1u); }
static inline uint64_t pf__state_handovers(uint64_t w) { return w >> PF_HANDOVERS_SHIFT; }

/* publisher_epoch, then publisher_state: the state found is never older than the epoch (a
   takeover stores its state before its epoch). One exactly one takeover ahead (stored its
   state, not yet its epoch) is loaded again, a few times (protocol.md, "Liveness"). */
static inline void pf__publisher_view(const pf_feed *f, uint32_t *epoch, uint64_t *state) {
    for (int k = 0; k < PF__SETTLE_TRIES; k++) {
        *epoch = PF__LOAD(pf__u32(f, PF_OFF_PUBLISHER_EPOCH));
        PF__ACQUIRE(); /* pairs with the takeover's release between its state and epoch stores */
        *state = PF__LOAD(pf__u64(f, PF_OFF_PUBLISHER_STATE));
        if (pf__state_epoch(*state) != *epoch + 1u) break;
    }
}

/* With no process holding the lock: did the publisher of `epoch` close cleanly? */
static inline int pf__closed_cleanly(uint32_t epoch, uint64_t state) {
    return epoch != 0 && pf__state_epoch(state) == epoch && pf__state_kind(state) == PF_PUBLISHER_CLOSED;
}

static inline int pf__head_checked(const pf_feed *f, uint64_t *head, pf_error *err) {
    *head = pf_head(f);
    if (*head >> 63) /* 2^63 changes would take centuries: only damage gets here */
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: head_seq is %llu, beyond any real sequence",
                        f->name, (unsigned long long)*head);
    return PF_OK;
}

/* ---------------------------------------------------------------------------------------
 * The schema: fixed when the feed was created, validated at open
 * --------------------------------------------------------------------------------------- */
/* How many fields the feed has: 1 to PF_MAX_FIELDS. */
static inline uint32_t pf_field_count(const pf_feed *f) { return f->field_count; }

/* Field i (its name and type), or NULL when the feed has no field i. */
static inline const pf_field *pf_field_at(const pf_feed *f, uint32_t i) {
    return i < f->field_count ? &f->fields[i] : NULL;
}

/* The number of the field named `name` (exactly), or -1 when the feed has none. */
static inline int pf_field_index(const pf_feed *f, const char *name) {
    if (name == NULL) return -1;
    for (uint32_t k = 0; k < f->field_count; k++)
        if (strncmp(f->fields[k].name, name, PF_FIELD_NAME_FIELD) == 0) return (int)k;
    return -1;
}

/* The schema as `pricefeed create --fields` takes it ("bid:f64,ask:f64,size:i64"): out needs
   up to PF_MAX_FIELDS * (PF_FIELD_NAME_FIELD + 4) bytes (400 always do). */
static inline void pf_format_fields(const pf_feed *f, char *out, size_t n) {
    size_t k = 0;
    if (n == 0) return;
    out[0] = '\0';
    for (uint32_t i = 0; i < f->field_count && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s:%s", i ? "," : "", f->fields[i].name, pf_type_name(f->fields[i].type));
}

/* A value of field i as text: a f64 as Python's repr() writes it (pf_format_price), an i64 in
   decimal. out needs 32 bytes. */
static inline void pf_format_value(const pf_feed *f, uint32_t i, pf_value value, char *out, size_t n) {
    if (i < f->field_count && f->fields[i].type == PF_TYPE_I64)
        snprintf(out, n, "%lld", (long long)value.i64);
    else
        pf_format_price(value.f64, out, n);
}

/* The names of the fields in `mask` (bit i: field i), joined by `sep`: "bid,ask". */
static inline void pf_format_mask(const pf_feed *f, uint32_t mask, const char *sep, char *out, size_t n) {
    size_t k = 0;
    if (n == 0) return;
    out[0] = '\0';
    for (uint32_t i = 0; i < f->field_count && k < n; i++)
        if (mask >> i & 1u) k += (size_t)snprintf(out + k, n - k, "%s%s", k ? sep : "", f->fields[i].name);
}

/* Learn the symbols of slots added since we last looked (section 6: each name once, after
   slot_count covers it, checked). */
static inline int pf__refresh(pf_feed *f, pf_error *err) {
    pf_view v = pf__view(f);
    uint32_t n = pf_core_slot_count(&v); /* acquire: the counted slots are named and whole */
    if (n > f->capacity)
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: slot_count is %u, more than the capacity %u",
                        f->name, n, f->capacity);
    while (f->names.count < n) {
        uint32_t i = f->names.count;
        char raw[PF_SYMBOL_FIELD + 1];
        memcpy(raw, pf_core_symbol(&v, i), PF_SYMBOL_FIELD);
        raw[PF_SYMBOL_FIELD] = '\0';
        size_t len = strlen(raw);
        if (!pf__valid_symbol(raw, len))
            return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged slot %u: its symbol field is not a valid symbol",
                            f->name, i);
        uint32_t other = pf__names_find(&f->names, raw);
        if (other != UINT32_MAX)
            return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged slot table: symbol '%s' is in slots %u and %u",
                            f->name, raw, other, i);
        if (pf__names_add(&f->names, raw) != 0) return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
    }
    return PF_OK;
}

/* Fill a quote's values (n raw words of f's schema), and its one-field price. */
static inline void pf__set_values(const pf_feed *f, pf_quote *q, const uint64_t *values) {
    q->nfields = f->field_count;
    memset(q->values, 0, sizeof q->values);
    for (uint32_t k = 0; k < f->field_count; k++) q->values[k].bits = values[k];
    if (f->field_count != 1)
        q->price = NAN;
    else
        q->price = (f->f64_mask & 1u) ? q->values[0].f64 : (double)q->values[0].i64;
}

/* One seqlock copy of slot `index`, at most `tries` attempts: 1 when consistent. */
static inline int pf__read_slot_tries(const pf_feed *f, uint32_t index, pf_quote *q, int tries) {
    pf_view v = pf__view(f);
    uint64_t values[PF_MAX_FIELDS];
    if (!pf_core_read_slot(&v, index, values, &q->time_ns, &q->seq, &q->changed, tries)) return 0;
    pf__set_values(f, q, values);
    return 1;
}

#define PF__LAPPED (-2) /* internal outcomes of pf__read_record, apart from every PF_E* code */
#define PF__GOT (-3)

/* The first f64 field of `values` that is not finite, or -1. */
static inline int pf__not_finite(const pf_feed *f, const uint64_t *values) {
    for (uint32_t k = 0; k < f->field_count; k++) {
        pf_value x;
        x.bits = values[k];
        if ((f->f64_mask >> k & 1u) && !isfinite(x.f64)) return (int)k;
    }
    return -1;
}

static inline int pf__damaged_record(const pf_feed *f, uint64_t seq, uint32_t slot, const uint64_t *values,
                                     pf_error *err) {
    int bad = pf__not_finite(f, values);
    if (bad >= 0) {
        pf_value x;
        x.bits = values[bad];
        return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged ring record for change %llu: its f64 field '%s' is %g, "
                        "not finite", f->name, (unsigned long long)seq, f->fields[bad].name, x.f64);
    }
    return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged ring record for change %llu: slot %u (table of %u)", f->name,
                    (unsigned long long)seq, slot, f->capacity);
}

/* Change `seq` from the ring (section 7): PF__GOT, PF__LAPPED, or a PF_E* code. */
static inline int pf__read_record(const pf_feed *f, uint64_t seq, uint32_t *slot, uint32_t *changed,
                                  uint64_t *time_ns, uint64_t *values, pf_error *err) {
    pf_view v = pf__view(f);
    int got = pf_core_read_record(&v, seq, slot, changed, time_ns, values);
    if (got == PF_READ_GOT) return PF__GOT;
    if (got == PF_READ_LAPPED) return PF__LAPPED;
    return pf__damaged_record(f, seq, *slot, values, err);
}

/* The newest change of slot `index` still in the ring at or below head: 1 if found. */
static inline int pf__newest_record(const pf_feed *f, uint32_t index, uint64_t head, pf_quote *q, pf_error *err) {
    uint64_t stop = head > f->ring_size ? head - f->ring_size : 0;
    for (uint64_t seq = head; seq > stop; seq--) {
        uint32_t slot, changed;
        uint64_t time_ns, values[PF_MAX_FIELDS];
        int rc = pf__read_record(f, seq, &slot, &changed, &time_ns, values, err);
        if (rc != PF__GOT && rc != PF__LAPPED) return -rc;
        if (rc == PF__GOT && slot == index) {
            pf__set_values(f, q, values);
            q->changed = changed;
            q->time_ns = time_ns;
            q->seq = seq;
            return 1;
        }
    }
    return 0;
}

#define PF__LEFT_OUT (-4) /* pf__read_slot_patient with give_up: nothing to give */

/* A consistent copy of slot `index`, patiently (section 6, "Never spin forever"): a bounded
   spin, then sleeps from 10 us up to 1 ms; every 0.5 s it asks the publisher lock whether
   anyone is still writing. If nobody is, the slot was left mid-write by a publisher that is
   gone: the value handed out is the slot's newest change still in the ring (the search
   covers every record the ring holds at or below head_seq, newest first). If the ring has
   none: PF_EBADSEG, or PF__LEFT_OUT with `give_up` (the catch-up leaves the slot out). */
static inline int pf__read_slot_patient(pf_feed *f, uint32_t index, pf_quote *q, int give_up, pf_error *err) {
    int got = pf__read_slot_tries(f, index, q, PF__SPIN_TRIES);
    int64_t check_at = 0, pause = 10000;
    while (!got) {
        if (pf__mono_ns() >= check_at) {
            int alive = pf_publisher_alive(f);
            if (alive < 0)
                return pf__fail(err, PF_ERROR, errno, "feed '%s': cannot ask the publisher lock: %s", f->name,
                                strerror(errno));
            if (!alive) {
                if (pf__read_slot_tries(f, index, q, PF__SPIN_TRIES)) break; /* finished or repaired meanwhile */
                uint64_t head;
                int rc = pf__head_checked(f, &head, err);
                if (rc) return rc;
                int found = pf__newest_record(f, index, head, q, err);
                if (found < 0) return -found;
                if (found) break;
                if (give_up) return PF__LEFT_OUT;
                return pf__fail(err, PF_EBADSEG, 0,
                                "feed '%s': slot %u was left mid-write by a publisher that is gone, and the ring no "
                                "longer holds its last value; the next publisher to take the feed over repairs it",
                                f->name, index);
            }
            check_at = pf__mono_ns() + PF__STUCK_CHECK_NS;
        }
        pf__sleep_ns(pause);
        pause = pause * 2 > 1000000 ? 1000000 : pause * 2;
        got = pf__read_slot_tries(f, index, q, PF__SPIN_TRIES);
    }
    for (uint32_t k = 0; k < f->field_count; k++)
        if ((f->f64_mask >> k & 1u) && !isfinite(q->values[k].f64))
            return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged slot %u: its f64 field '%s' is %g, not finite",
                            f->name, index, f->fields[k].name, q->values[k].f64);
    if (index < f->names.count) memcpy(q->symbol, f->names.names[index], PF_SYMBOL_FIELD);
    return PF_OK;
}

static inline int pf__read_slot(pf_feed *f, uint32_t index, pf_quote *q, pf_error *err) {
    return pf__read_slot_patient(f, index, q, 0, err);
}

/* The current record of `symbol`: PF_ENOSYMBOL if the feed has never published it. */
static inline int pf_get(pf_feed *f, const char *symbol, pf_quote *out, pf_error *err) {
    int rc = pf__check_symbol(symbol, err);
    if (rc) return rc;
    uint32_t index = pf__names_find(&f->names, symbol);
    if (index == UINT32_MAX) {
        if ((rc = pf__refresh(f, err)) != 0) return rc;
        index = pf__names_find(&f->names, symbol);
        if (index == UINT32_MAX)
            return pf__fail(err, PF_ENOSYMBOL, 0, "feed '%s' has no symbol '%s'", f->name, symbol);
    }
    if ((rc = pf__read_slot(f, index, out, err)) != 0) return rc;
    return pf__ok(err);
}

/* How many symbols the feed has (learning new ones); pf_symbol_at(f, i) names slot i. */
static inline int pf_symbol_count(pf_feed *f, uint32_t *count, pf_error *err) {
    int rc = pf__refresh(f, err);
    *count = f->names.count;
    return rc;
}
static inline const char *pf_symbol_at(const pf_feed *f, uint32_t i) {
    return i < f->names.count ? f->names.names[i] : NULL;
}

/* ---------------------------------------------------------------------------------------
 * Waiting (section 9)
 * --------------------------------------------------------------------------------------- */
/* Sleep until head_seq != cursor (PF_OK), the feed is ended with nothing after cursor
   (PF_EENDED), or `seconds` pass (PF_ETIMEOUT; < 0 waits forever). FUTEX_WAIT on the
   header's word, never with FUTEX_PRIVATE_FLAG, which a shared wake never reaches. */
static inline int pf_wait(pf_feed *f, uint64_t cursor, double seconds, pf_error *err) {
    pf_view v = pf__view(f);
    pf_waiter w;
    w.nwords = 0; /* the header's word */
    int64_t end = !(seconds >= 0 && seconds <= 1e9) ? INT64_MAX : pf__mono_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        /* The word before the head (pf_wait.h, Rule 1): a change after this load makes the
           sleep below return at once instead of missing it. */
        int armed = pf_core_wait_arm(&v, cursor, &w);
        if (armed == PF_ARM_MOVED) return pf__ok(err);
        if (armed == PF_ARM_ENDED)
            return pf__fail(err, PF_EENDED, 0, "feed '%s' was ended, and nothing follows change %llu", f->name,
                            (unsigned long long)cursor);
        if (f->interrupt != NULL && *f->interrupt)
            return pf__fail(err, PF_EINTR, EINTR, "feed '%s': wait interrupted", f->name);
        if (end != INT64_MAX && end - pf__mono_ns() <= 0)
            return pf__fail(err, PF_ETIMEOUT, 0, "no change on feed '%s' within the timeout of %g s", f->name, seconds);
        int e = pf_core_wait_sleep(&v, &w, end);
        /* Woken, timed out or interrupted: the loop decides, with the time that is left (and
           *interrupt checked). */
        if (e == 0 || e == ETIMEDOUT || e == EINTR) continue;
        return pf__fail(err, PF_ERROR, e, "feed '%s': FUTEX_WAIT failed: %s", f->name, strerror(e));
    }
}

/* ---------------------------------------------------------------------------------------
 * Following changes (protocol.md, "The subscriber algorithm")
 * --------------------------------------------------------------------------------------- */
static inline void pf_sub_close(pf_sub *s) {
    pf__names_free(&s->wanted);
    free(s->interest);
    free(s->pending);
    memset(s, 0, sizeof *s);
}

/* Follow feed `f` from its current head: every change after now, once, in order. `symbols`
   (n of them; NULL for all) need not exist in the feed yet. */
static inline int pf_sub_open(pf_sub *s, pf_feed *f, const char *const *symbols, size_t n, pf_error *err) {
    memset(s, 0, sizeof *s);
    s->feed = f;
    int rc;
    if (symbols != NULL) {
        s->filtered = 1;
        for (size_t i = 0; i < n; i++) {
            if ((rc = pf__check_symbol(symbols[i], err)) != 0) {
                pf_sub_close(s);
                return rc;
            }
            if (pf__names_find(&s->wanted, symbols[i]) == UINT32_MAX && pf__names_add(&s->wanted, symbols[i]) != 0) {
                pf_sub_close(s);
                return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
            }
        }
    }
    /* What is true now is not news: the publisher words first, then the lock (the other
       order could miss a publisher taking over in between, and never report its departure);
       a publisher already gone left before we came. */
    uint64_t state;
    pf__publisher_view(f, &s->epoch, &state);
    s->handovers = pf__state_handovers(state);
    int alive = pf_publisher_alive(f);
    if (alive < 0) {
        rc = pf__fail(err, PF_ERROR, errno, "feed '%s': cannot ask the publisher lock: %s", f->name, strerror(errno));
        pf_sub_close(s);
        return rc;
    }
    s->gone_reported = !alive;
    if ((rc = pf__refresh(f, err)) != 0 || (rc = pf__head_checked(f, &s->cursor, err)) != 0) {
        pf_sub_close(s);
        return rc;
    }
    return pf__ok(err);
}

/* Only the changes that changed one of these fields (n of them; Python's updates(on=...)):
   the others are passed over as changes of symbols not asked for, and each wanted change
   still comes once, in order, with its changed mask. After a gap the catch-up still gives
   every wanted symbol that changed in the range, whichever fields: the lost changes may have
   changed one of these. n 0 (or NULL) wants every change again. PF_EINVAL for a name the
   feed's schema lacks, the filter left as it was. */
static inline int pf_sub_on(pf_sub *s, const char *const *fields, size_t n, pf_error *err) {
    const pf_feed *f = s->feed;
    uint32_t mask = 0;
    for (size_t i = 0; fields != NULL && i < n; i++) {
        int k = pf_field_index(f, fields[i]);
        if (k < 0) {
            char names[400];
            pf_format_mask(f, UINT32_MAX, ", ", names, sizeof names);
            return pf__fail(err, PF_EINVAL, 0, "feed '%s' has no field '%.40s'; its fields are %s", f->name,
                            fields[i] == NULL ? "(null)" : fields[i], names);
        }
        mask |= UINT32_C(1) << k;
    }
    s->on = mask;
    return pf__ok(err);
}

/* Takeovers since we last looked (protocol.md, "Liveness"): -1 when there is nothing to say
   (yet); else how many followed a publisher that did not close cleanly, each of which may
   have repaired what it found. `final`: no process holds the lock, so a takeover caught
   between its two stores died there, and the handover it may have counted is not believed. */
static inline int64_t pf__takeover_news(pf_sub *s, int final) {
    uint32_t epoch;
    uint64_t state;
    pf__publisher_view(s->feed, &epoch, &state);
    if (epoch == s->epoch) return -1;
    int ahead = pf__state_epoch(state) == epoch + 1u;
    if (ahead && !final) return -1;
    uint64_t mask = (UINT64_C(1) << PF_HANDOVERS_BITS) - 1u;
    int64_t takeovers = (int64_t)(uint32_t)(epoch - s->epoch) - (s->epoch == 0); /* a first publisher took nothing over */
    int64_t clean = (int64_t)((pf__state_handovers(state) - s->handovers) & mask);
    if (ahead && clean > 0) clean--;
    s->epoch = epoch;
    s->handovers = pf__state_handovers(state);
    s->gone_reported = 0; /* a new publisher: its departure is news */
    return takeovers > clean ? takeovers - clean : 0;
}

static inline int pf__restarted(pf_sub *s, pf_event *ev, pf_error *err) {
    ev->kind = PF_EVENT_PUBLISHER_RESTARTED;
    ev->pid = pf_publisher_pid(s->feed);
    ev->epoch = s->epoch;
    int rc = pf__head_checked(s->feed, &ev->head_seq, err);
    return rc ? rc : pf__ok(err);
}

/* Extend the interest map to every slot known now: 0, or ENOMEM. */
static inline int pf__grow_interest(pf_sub *s) {
    pf_feed *f = s->feed;
    if (!s->filtered || s->interest_len >= f->names.count) return 0;
    unsigned char *grown = (unsigned char *)realloc(s->interest, f->names.count);
    if (grown == NULL) return ENOMEM;
    s->interest = grown;
    for (uint32_t i = s->interest_len; i < f->names.count; i++)
        grown[i] = pf__names_find(&s->wanted, f->names.names[i]) != UINT32_MAX;
    s->interest_len = f->names.count;
    return 0;
}

/* Is slot `index` (known) one the subscriber follows? */
static inline int pf__wanted(pf_sub *s, uint32_t index) {
    if (!s->filtered) return 1;
    if (pf__grow_interest(s) != 0) return pf__names_find(&s->wanted, s->feed->names.names[index]) != UINT32_MAX;
    return s->interest[index];
}

static inline int pf__cmp_seq(const void *a, const void *b) {
    uint64_t x = ((const pf_quote *)a)->seq, y = ((const pf_quote *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Lapped at cursor C: jump to head H. Current values of the wanted slots whose seq is in
   (C, H] become the pending catch-up, in feed order; a slot already past H is left for the
   ring, where that newer change still lies ahead, and so is one a dead publisher left
   mid-write whose last value the ring no longer holds (counted in missed; the next
   publisher's repair announces it). slot_count is loaded again first, after H: a symbol
   added in the skipped range is counted by then. Returns the number missed via *missed. */
static inline int pf__catch_up(pf_sub *s, uint64_t after, uint64_t upto, uint64_t *missed, pf_error *err) {
    pf_feed *f = s->feed;
    int rc = pf__refresh(f, err);
    if (rc) return rc;
    s->npending = s->ipending = 0;
    if (s->pending_room < f->names.count) {
        pf_quote *grown = (pf_quote *)realloc(s->pending, (size_t)f->names.count * sizeof *grown);
        if (grown == NULL) return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
        s->pending = grown;
        s->pending_room = f->names.count;
    }
    for (uint32_t i = 0; i < f->names.count; i++) {
        if (!pf__wanted(s, i)) continue;
        pf_quote q;
        rc = pf__read_slot_patient(f, i, &q, 1, err);
        if (rc == PF__LEFT_OUT) continue;
        if (rc) return rc;
        if (q.seq > after && q.seq <= upto) s->pending[s->npending++] = q;
    }
    qsort(s->pending, s->npending, sizeof *s->pending, pf__cmp_seq);
    *missed = upto - after - s->npending;
    return PF_OK;
}

/* The next event, waiting up to `seconds` (< 0: forever) for one: PF_OK with *ev filled,
   PF_ETIMEOUT, or an error. At the end of the feed: PF_OK with PF_EVENT_ENDED, every time.
   A PF_EVENT_QUOTE holds the record the change set (every field) and its changed mask.
   Built on the core's follow step (pf_follow.h): the step reads, filters (the symbols, and the
   fields of pf_sub_on) and skips; what it hands back is decided here, as the Python subscriber
   decides what the accelerator's Follow hands back. */
static inline int pf_next(pf_sub *s, pf_event *ev, double seconds, pf_error *err) {
    pf_feed *f = s->feed;
    memset(ev, 0, sizeof *ev);
    if (s->ipending < s->npending) {
        ev->kind = PF_EVENT_QUOTE;
        ev->quote = s->pending[s->ipending++];
        return pf__ok(err);
    }
    if (s->ended) {
        ev->kind = PF_EVENT_ENDED;
        return pf__ok(err);
    }
    int64_t deadline = !(seconds >= 0 && seconds <= 1e9) ? INT64_MAX : pf__mono_ns() + (int64_t)(seconds * 1e9);
    pf_view v = pf__view(f);
    int rc;
    for (;;) {
        /* One round: read up to the head, then sleep one slice. The step compares the epoch
           with the last one taken in, so a takeover not taken in yet (one caught between its
           two stores) is looked at again every round. */
        pf_step st;
        st.cursor = s->cursor;
        st.epoch = s->epoch;
        st.head = 0;
        int code;
        for (;;) {
            if (pf__grow_interest(s) != 0) return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
            st.known = f->names.count;
            pf_change c;
            code = pf_core_follow_step(&v, &st, s->filtered ? s->interest : NULL, s->interest_len, s->on, &c);
            s->cursor = st.cursor;
            if (st.head >> 63) /* 2^63 changes would take centuries: only damage gets here */
                return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: head_seq is %llu, beyond any real sequence",
                                f->name, (unsigned long long)st.head);
            if (code == PF_F_CHANGE) {
                ev->kind = PF_EVENT_QUOTE;
                memcpy(ev->quote.symbol, f->names.names[c.slot], PF_SYMBOL_FIELD);
                pf__set_values(f, &ev->quote, c.values);
                ev->quote.changed = c.changed;
                ev->quote.time_ns = c.time_ns;
                ev->quote.seq = c.seq;
                return pf__ok(err);
            }
            if (code == PF_F_SKIPPED) continue;
            if (code == PF_F_BEHIND) /* never waited on: the wait would return at once, forever */
                return pf__fail(err, PF_EBADSEG, 0,
                                "feed '%s': head_seq went back from %llu to %llu; sequences only grow for a "
                                "segment's life, so the segment was damaged or rewritten in place",
                                f->name, (unsigned long long)s->cursor, (unsigned long long)st.head);
            if (code == PF_F_EPOCH) { /* before any change of the new publisher (repairs included) */
                if (pf__takeover_news(s, 0) > 0) return pf__restarted(s, ev, err);
                continue;
            }
            if (code == PF_F_DAMAGED) return pf__damaged_record(f, c.seq, c.slot, c.values, err);
            if (code == PF_F_VOID) { /* a change whose details were lost */
                ev->kind = PF_EVENT_GAP;
                ev->missed = 1;
                ev->first_seq = ev->last_seq = c.seq;
                return pf__ok(err);
            }
            if (code == PF_F_NEWSLOT) {
                if ((rc = pf__refresh(f, err)) != 0) return rc;
                if (c.slot >= f->names.count) {
                    s->cursor = c.seq; /* reported once: the next call goes on after it */
                    return pf__fail(err, PF_EBADSEG, 0,
                                    "feed '%s': change %llu names slot %u, but only %u slots hold a symbol", f->name,
                                    (unsigned long long)c.seq, c.slot, f->names.count);
                }
                continue;
            }
            if (code == PF_F_LAPPED) { /* jump to the head: the catch-up, then a gap if any were missed */
                uint64_t missed = 0, after = s->cursor, head;
                if ((rc = pf__head_checked(f, &head, err)) != 0) return rc;
                if ((rc = pf__catch_up(s, after, head, &missed, err)) != 0) return rc;
                s->cursor = st.cursor = head;
                if (missed) {
                    ev->kind = PF_EVENT_GAP;
                    ev->missed = missed;
                    ev->first_seq = c.seq;
                    ev->last_seq = head;
                    return pf__ok(err);
                }
                if (s->ipending < s->npending) {
                    ev->kind = PF_EVENT_QUOTE;
                    ev->quote = s->pending[s->ipending++];
                    return pf__ok(err);
                }
                continue;
            }
            break; /* PF_F_IDLE or PF_F_ENDED */
        }
        /* Everything up to the head is read and none of it was wanted: wait, in slices so
           that a publisher that is gone is noticed. */
        int64_t now = pf__mono_ns();
        if (now >= deadline)
            return pf__fail(err, PF_ETIMEOUT, 0, "no change on feed '%s' within the timeout of %g s", f->name, seconds);
        double slice = (double)(deadline - now) / 1e9;
        if (slice > PF__WATCH_SLICE) slice = PF__WATCH_SLICE;
        rc = code == PF_F_ENDED ? PF_EENDED : pf_wait(f, s->cursor, slice, err);
        if (rc == PF_EENDED) {
            s->ended = 1;
            ev->kind = PF_EVENT_ENDED;
            return pf__ok(err);
        }
        if (rc == PF_ETIMEOUT && (!s->gone_reported || pf_publisher_epoch(f) != s->epoch)) {
            int alive = pf_publisher_alive(f);
            if (alive < 0)
                return pf__fail(err, PF_ERROR, errno, "feed '%s': cannot ask the publisher lock: %s", f->name,
                                strerror(errno));
            /* The words after the lock: a publisher that closed cleanly stored its state
               before it let the lock go. A takeover we had not taken in comes first (one
               caught between its two stores is settled here if nobody holds the lock). */
            uint32_t before = s->epoch;
            if (pf__takeover_news(s, !alive) > 0) return pf__restarted(s, ev, err);
            if (!alive && !s->gone_reported && s->epoch == before) {
                uint32_t epoch;
                uint64_t state;
                pf__publisher_view(f, &epoch, &state);
                s->gone_reported = 1;
                ev->kind = PF_EVENT_PUBLISHER_GONE;
                ev->pid = pf_publisher_pid(f);
                ev->head_seq = pf_head(f);
                ev->clean = pf__closed_cleanly(epoch, state);
                return pf__ok(err);
            }
            continue; /* a newer publisher than we knew: its departure is for a later slice */
        }
        if (rc == PF_ETIMEOUT) continue;
        if (rc != PF_OK) return rc;
    }
}

/* ---------------------------------------------------------------------------------------
 * Publishing (sections 8, 10, 11): this process is the single writer
 * --------------------------------------------------------------------------------------- */
/* Bump every wake word and wake them all: for what concerns every subscriber (the end, a
   takeover, a repair). */
static inline int pf__bump_and_wake_all(pf_feed *f) {
    pf_view v = pf__view(f);
    pf_core_announce(&v, NULL);
    return pf_core_wake_words(&v, NULL);
}

/* Section 8, step 5: head_seq covers the changes up to `seq`. */
static inline void pf__set_head(pf_feed *f, uint64_t seq) {
    pf_view v = pf__view(f);
    pf_core_store_head(&v, seq);
}

/* Do two records hold the same values? A f64 compares as a number (0.0 equals -0.0), an i64
   as its bits: what makes a publish a change. */
static inline int pf__same_value(const pf_feed *f, uint32_t k, uint64_t a, uint64_t b) {
    if (!(f->f64_mask >> k & 1u)) return a == b;
    pf_value x, y;
    x.bits = a;
    y.bits = b;
    return x.f64 == y.f64;
}
static inline int pf__same_values(const pf_feed *f, const uint64_t *a, const uint64_t *b) {
    for (uint32_t k = 0; k < f->field_count; k++)
        if (!pf__same_value(f, k, a[k], b[k])) return 0;
    return 1;
}

/* Repair on takeover (section 10): a publisher killed mid-change can leave, in a slot in
   use, an odd lock or a seq above head. Put back the slot's newest published change if the
   slot still holds its values (or holds a f64 that is not finite); otherwise publish the
   values it holds, each whole since every field is one store, as a new change of every field
   (which ones the dead publisher changed is not known): pricefeed/_roles/publisher.py's
   _repair, step for step, so both number the repairs alike. */
static inline int pf__repair(pf_feed *f, pf_error *err) {
    pf_view v = pf__view(f);
    uint64_t head = f->head, start_head = f->head;
    uint64_t now = pf_now_ns();
    uint32_t n = f->field_count, all = (UINT32_C(1) << n) - 1u;
    f->repaired = 0;
    for (uint32_t i = 0; i < f->names.count; i++) {
        unsigned char *slot = pf_core_slot(&v, i);
        uint64_t *lockp = (uint64_t *)(void *)(slot + PF_SLOT_LOCK);
        uint64_t lock = PF__LOAD(lockp);
        uint64_t seq = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_SEQ));
        if (!(lock & 1u) && seq <= start_head) continue;
        f->repaired++;
        uint64_t values[PF_MAX_FIELDS], known_values[PF_MAX_FIELDS];
        for (uint32_t k = 0; k < n; k++)
            values[k] = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_VALUES + (uint64_t)PF_VALUE_SIZE * k));
        int whole = pf__not_finite(f, values) < 0;
        pf_quote known;
        memset(&known, 0, sizeof known);
        int found = pf__newest_record(f, i, start_head, &known, err);
        if (found < 0) return -found;
        for (uint32_t k = 0; k < n; k++) known_values[k] = known.values[k].bits;
        if (lock & 1u) PF__STORE(lockp, (lock & PF__LOCK_MASK) + 1u); /* forward to even, never back to a value readers saw */
        if (found && (pf__same_values(f, known_values, values) || !whole)) {
            pf_core_write_slot(&v, i, known_values, known.changed, known.time_ns, known.seq); /* no new change */
        } else if (!whole) {
            return pf__fail(err, PF_EBADSEG, 0,
                            "feed '%s': slot %u holds no valid values and none is left in the ring", f->name, i);
        } else {
            head++;
            pf_core_write_change(&v, i, values, all, now, head); /* the symbol's final state, announced */
        }
    }
    if (head != start_head) {
        pf__set_head(f, head);
        f->head = head;
        int e = pf__bump_and_wake_all(f); /* a rare path: wake everyone rather than work out who */
        if (e) return pf__fail(err, PF_ERROR, e, "feed '%s': FUTEX_WAKE failed: %s", f->name, strerror(e));
    }
    return PF_OK;
}

/* 1 when no slot in use is odd or ahead of the head (nothing for a takeover to repair), 0 when
   one is, -1 when slot_count itself is damaged. Only the lock holder asks: nothing moves. */
static inline int pf__intact(pf_feed *f) {
    pf_view v = pf__view(f);
    uint64_t head = PF__LOAD(pf__u64(f, PF_OFF_HEAD_SEQ));
    uint32_t n = PF__LOAD(pf__u32(f, PF_OFF_SLOT_COUNT));
    if (n > f->capacity) return -1;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char *slot = pf_core_slot(&v, i);
        if ((PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_LOCK)) & 1u) ||
            PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_SEQ)) > head)
            return 0;
    }
    return 1;
}

/* Become the publisher of the attached, locked, validated feed (section 10). */
static inline int pf__take(pf_feed *f, pf_error *err) {
    if (pf_ended(f))
        return pf__fail(err, PF_EENDED, 0, "feed '%s' was ended for good; remove it (pricefeed rm %s) to start anew",
                        f->name, f->name);
    /* Announce the takeover before repairing, so that a subscriber sees the restart before
       any change the repair publishes. The state first, then the epoch (protocol.md,
       "Liveness"): the handover is clean if the state describes the previous epoch and says
       it closed cleanly (a state of an older epoch: that publisher did not keep the word). */
    uint32_t *epochp = pf__u32(f, PF_OFF_PUBLISHER_EPOCH);
    uint64_t *statep = pf__u64(f, PF_OFF_PUBLISHER_STATE);
    uint32_t before = PF__LOAD(epochp);
    uint64_t prior = PF__LOAD(statep);
    int intact = pf__intact(f); /* a clean close is checked, not trusted */
    if (intact < 0) return pf__fail(err, PF_EBADSEG, 0, "feed '%s': damaged header: slot_count is above the capacity %u",
                                    f->name, f->capacity);
    f->epoch = before + 1u;
    PF__STORE(statep, pf__pack_state(f->epoch, PF_PUBLISHER_HOLDS,
                                     pf__state_handovers(prior) + (uint64_t)(intact && pf__closed_cleanly(before, prior))));
    PF__RELEASE(); /* pairs with the reader's acquire between its epoch and state loads */
    PF__STORE(epochp, f->epoch);
    PF__STORE(pf__u32(f, PF_OFF_PUBLISHER_PID), (uint32_t)getpid());
    int e = pf__bump_and_wake_all(f);
    if (e) return pf__fail(err, PF_ERROR, e, "feed '%s': FUTEX_WAKE failed: %s", f->name, strerror(e));
    int rc = pf__head_checked(f, &f->head, err);
    if (rc || (rc = pf__refresh(f, err)) != 0 || (rc = pf__repair(f, err)) != 0) return rc;
    uint32_t n = f->field_count;
    f->last = (uint64_t *)calloc((size_t)f->capacity * n, sizeof *f->last);
    if (f->last == NULL) return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
    pf_view v = pf__view(f);
    for (uint32_t i = 0; i < f->names.count; i++) {
        unsigned char *slot = pf_core_slot(&v, i);
        for (uint32_t k = 0; k < n; k++)
            f->last[(size_t)i * n + k] = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_VALUES + (uint64_t)PF_VALUE_SIZE * k));
    }
    f->took_over = 1;
    return PF_OK;
}

/* pf_close's clean close: say that this publisher left with every change complete. What that
   promises is checked on the segment, not trusted: a slot left odd or ahead of the head keeps
   the word at "holds", and the next publisher (which repairs it) is reported as a restart. */
static inline void pf__close_cleanly(pf_feed *f) {
    if (pf__intact(f) != 1) return;
    uint64_t *statep = pf__u64(f, PF_OFF_PUBLISHER_STATE);
    /* Release: every change is complete before the word says so. A reader asks the lock
       before it loads the word, and the lock is given up only after this store. */
    PF__STORE_REL(statep, pf__pack_state(f->epoch, PF_PUBLISHER_CLOSED, pf__state_handovers(PF__LOAD(statep))));
}

/* Take existing feed `feed` over: its values stay, its sequence continues, its schema is the
   one it was created with. PF_EBUSY while another process publishes, PF_EENDED if it was
   ended for good. */
static inline int pf_open_publisher(pf_feed *f, const char *feed, pf_error *err) { return pf__attach(f, feed, 1, err); }

/* Create feed `feed` (PF_EEXISTS if the name is taken) with the schema `fields` and become
   its publisher. `fields` is "bid:f64,ask:f64,bid_size:i64" (NAME or NAME:TYPE, a bare name
   is a f64; 1 to 16 fields, names of a letter then letters, digits or _, distinct ignoring
   case), or NULL for the default: one f64 named price. `mode` must let the owner read and
   write (0600 to 0777); it is applied exactly (fchmod), not narrowed by the umask. */
static inline int pf_create_fields(pf_feed *f, const char *feed, const char *fields, uint32_t capacity,
                                   uint32_t ring_size, unsigned mode, pf_error *err) {
    pf__init(f);
    int rc = pf__check_name(feed, err);
    if (rc) return rc;
    snprintf(f->name, sizeof f->name, "%s", feed);
    char why[240];
    if (!pf__check_geometry(capacity, ring_size, why, sizeof why)) return pf__fail(err, PF_EINVAL, 0, "%s", why);
    pf_field schema[PF_MAX_FIELDS];
    uint32_t n;
    if ((rc = pf__parse_fields(fields, schema, &n, err)) != 0) return rc;
    if ((mode & ~0777u) || (mode & 0600u) != 0600u)
        return pf__fail(err, PF_EINVAL, 0,
                        "mode must be a permission from 0o600 to 0o777 that lets the owner read and write: mode=0o%o",
                        mode);
    uint64_t size = pf_segment_size(capacity, ring_size, n);
    if (size > (uint64_t)SIZE_MAX || size > (uint64_t)INT64_MAX)
        return pf__fail(err, PF_EINVAL, 0,
                        "a feed of capacity %u, ring size %u and %u field(s) (%llu bytes) is too large to map here",
                        capacity, ring_size, n, (unsigned long long)size);
    char shm[32];
    pf__shm_name(feed, shm);
    f->fd = shm_open(shm, O_CREAT | O_EXCL | O_RDWR, (mode_t)mode);
    if (f->fd < 0) return pf__open_error(err, errno, feed, "create");
    struct stat st;
    int e;
    void *m = MAP_FAILED;
    if (fchmod(f->fd, (mode_t)mode) != 0 || fstat(f->fd, &st) != 0) {
        e = errno;
        goto fail;
    }
    f->dev = (uint64_t)st.st_dev;
    f->ino = (uint64_t)st.st_ino;
    /* posix_fallocate reserves the pages: with ftruncate alone a full tmpfs accepts the
       size and the first write to the mapping kills us with SIGBUS. */
    if ((e = posix_fallocate(f->fd, 0, (off_t)size)) != 0) goto fail;
    m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) {
        e = errno;
        goto fail;
    }
    f->base = (unsigned char *)m;
    f->map_size = (size_t)size;
    if (pf__try_lock(f->fd) <= 0) { /* someone opened it between our create and lock */
        rc = pf__busy(f, err);
        pf__unmap(f);
        shm_unlink(shm);
        return rc;
    }
    {
        uint64_t incarnation = 0;
        if (getrandom(&incarnation, sizeof incarnation, 0) != (ssize_t)sizeof incarnation)
            incarnation = pf_now_ns() ^ ((uint64_t)getpid() << 32);
        incarnation = (incarnation & PF__LOCK_MASK) | 1u; /* 63 random bits, lowest set */
        /* The schema table: read by nobody before version says the header is complete. */
        for (uint32_t k = 0; k < n; k++) {
            unsigned char *entry = f->base + pf_schema_entry_offset(k);
            memcpy(entry + PF_FIELD_NAME, schema[k].name, strnlen(schema[k].name, PF_FIELD_NAME_MAX));
            PF__STORE((uint32_t *)(void *)(entry + PF_FIELD_TYPE), schema[k].type);
        }
        PF__STORE(pf__u64(f, PF_OFF_MAGIC), PF_MAGIC);
        PF__STORE(pf__u32(f, PF_OFF_HEADER_SIZE), PF_HEADER_SIZE);
        PF__STORE(pf__u64(f, PF_OFF_INCARNATION), incarnation);
        PF__STORE(pf__u32(f, PF_OFF_CAPACITY), capacity);
        PF__STORE(pf__u32(f, PF_OFF_RING_SIZE), ring_size);
        PF__STORE(pf__u32(f, PF_OFF_SLOT_SIZE), (uint32_t)pf_slot_size(n));
        PF__STORE(pf__u32(f, PF_OFF_RECORD_SIZE), (uint32_t)pf_record_size(n));
        PF__STORE(pf__u64(f, PF_OFF_CREATED_NS), pf_now_ns());
        PF__STORE(pf__u64(f, PF_OFF_SLOTS_OFFSET), pf_slots_offset(capacity));
        PF__STORE(pf__u64(f, PF_OFF_RING_OFFSET), pf_ring_offset(capacity, n));
        PF__STORE(pf__u32(f, PF_OFF_WAKE_WORDS), PF_WAKE_WORDS);
        PF__STORE(pf__u32(f, PF_OFF_FIELD_COUNT), n);
        PF__STORE(pf__u64(f, PF_OFF_SCHEMA_OFFSET), (uint64_t)PF_SCHEMA_OFFSET);
        PF__STORE(pf__u64(f, PF_OFF_SYMBOLS_OFFSET), (uint64_t)PF_SYMBOLS_OFFSET);
        /* version is written last, with release: pairs with the reader's acquire load of it. */
        PF__STORE_REL(pf__u32(f, PF_OFF_VERSION), PF_LAYOUT_VERSION);
    }
    if ((rc = pf__check_header(f, size, err)) != 0 || (f->writable = 1, rc = pf__take(f, err)) != 0) {
        pf_close(f);
        shm_unlink(shm);
        return rc;
    }
    return pf__ok(err);
fail:
    rc = pf__open_error(err, e, feed, "create");
    pf__unmap(f);
    shm_unlink(shm); /* leave nothing half-created behind */
    return rc;
}

/* Create feed `feed` of the default schema (one f64 named price): pf_create_fields(..., NULL, ...). */
static inline int pf_create(pf_feed *f, const char *feed, uint32_t capacity, uint32_t ring_size, unsigned mode,
                            pf_error *err) {
    return pf_create_fields(f, feed, NULL, capacity, ring_size, mode, err);
}

/* Open `feed` as its publisher if it exists (fields, capacity, ring_size and mode are then
   ignored: it keeps its own), else create it with them. */
static inline int pf_open_or_create_fields(pf_feed *f, const char *feed, const char *fields, uint32_t capacity,
                                           uint32_t ring_size, unsigned mode, pf_error *err) {
    for (int i = 0; i < 3; i++) { /* another process may create or remove it between our calls */
        int rc = pf_open_publisher(f, feed, err);
        if (rc != PF_ENOTFOUND) return rc;
        rc = pf_create_fields(f, feed, fields, capacity, ring_size, mode, err);
        if (rc != PF_EEXISTS) return rc;
    }
    return pf_open_publisher(f, feed, err);
}

static inline int pf_open_or_create(pf_feed *f, const char *feed, uint32_t capacity, uint32_t ring_size, unsigned mode,
                                    pf_error *err) {
    return pf_open_or_create_fields(f, feed, NULL, capacity, ring_size, mode, err);
}

static inline int pf__writer(pf_feed *f, pf_error *err) {
    if (f->base == NULL || !f->writable)
        return pf__fail(err, PF_EINVAL, 0, "feed '%s' is not open for publishing (use pf_open_publisher or pf_create)",
                        f->name);
    if (f->ended)
        return pf__fail(err, PF_EENDED, 0, "feed '%s' was ended for good; no more changes can be published", f->name);
    return PF_OK;
}

/* ---------------------------------------------------------------------------------------
 * Records: any subset of a feed's fields, published as one change
 * --------------------------------------------------------------------------------------- */
/* An empty record for feed `f` (its schema names the fields). Reuse it for another publish
   with pf_record_init again: a field set stays set until then. */
static inline void pf_record_init(pf_record *r, const pf_feed *f) {
    memset(r, 0, sizeof *r);
    r->feed = f;
}

__attribute__((format(printf, 2, 3))) static inline int pf__record_bad(pf_record *r, const char *fmt, ...) {
    if (!r->bad) { /* the first mistake is the one reported */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof r->why, fmt, ap);
        va_end(ap);
        r->bad = 1;
    }
    return PF_EINVAL;
}

/* Set field number `field` (pf_field_index) to `value`. A f64 field takes a double; an i64
   field refuses one (a double cannot hold every i64, and 3.0 for a size is more likely a
   mistake than a size): use pf_record_i64_at. PF_OK, or PF_EINVAL with the mistake kept in
   the record, which pf_publish_record then refuses. A NaN or an infinity is refused there. */
static inline int pf_record_f64_at(pf_record *r, uint32_t field, double value) {
    const pf_feed *f = r->feed;
    if (f == NULL || field >= f->field_count)
        return pf__record_bad(r, "feed '%s' has no field number %u; it has %u", f ? f->name : "(none)", field,
                              f ? f->field_count : 0u);
    if (f->fields[field].type != PF_TYPE_F64)
        return pf__record_bad(r, "field '%s' of feed '%s' is an i64: set it with pf_record_i64 (a double is not a whole "
                              "number): %s=%g", f->fields[field].name, f->name, f->fields[field].name, value);
    r->values[field].f64 = value;
    r->set |= UINT32_C(1) << field;
    return PF_OK;
}

/* Set field number `field` to `value`: an i64 field as it is, a f64 field as the nearest
   double (as the Python publisher takes an int for a f64). */
static inline int pf_record_i64_at(pf_record *r, uint32_t field, int64_t value) {
    const pf_feed *f = r->feed;
    if (f == NULL || field >= f->field_count)
        return pf__record_bad(r, "feed '%s' has no field number %u; it has %u", f ? f->name : "(none)", field,
                              f ? f->field_count : 0u);
    if (f->fields[field].type == PF_TYPE_F64)
        r->values[field].f64 = (double)value;
    else
        r->values[field].i64 = value;
    r->set |= UINT32_C(1) << field;
    return PF_OK;
}

static inline int pf__record_field(pf_record *r, const char *name) {
    const pf_feed *f = r->feed;
    int k = f == NULL ? -1 : pf_field_index(f, name);
    if (k < 0) {
        char names[400] = "";
        if (f != NULL) pf_format_mask(f, UINT32_MAX, ", ", names, sizeof names);
        pf__record_bad(r, "feed '%s' has no field '%.40s'; its fields are %s", f ? f->name : "(none)",
                       name == NULL ? "(null)" : name, names);
    }
    return k;
}

/* Set the field named `name` (as pf_record_f64_at and pf_record_i64_at; PF_EINVAL, kept in
   the record, for a name the feed's schema lacks). */
static inline int pf_record_f64(pf_record *r, const char *name, double value) {
    int k = pf__record_field(r, name);
    return k < 0 ? PF_EINVAL : pf_record_f64_at(r, (uint32_t)k, value);
}
static inline int pf_record_i64(pf_record *r, const char *name, int64_t value) {
    int k = pf__record_field(r, name);
    return k < 0 ? PF_EINVAL : pf_record_i64_at(r, (uint32_t)k, value);
}

/* Publish record `r` of `symbol` with time stamp `time_ns`: the fields it sets take its
   values, the others keep theirs (a new symbol's start at 0). It is one change (one seqlock
   write, one sequence number, one ring record, one wake-up) when at least one field differs
   from its current value, and the change's mask names the fields that do (every field for a
   symbol's first); *changed (if not NULL) is then 1, else 0 with no event at all. A value
   equal to the current one (0.0 and -0.0 are equal) leaves it as it was. PF_EINVAL for a mistake kept in the record (a field the feed lacks, a
   double for an i64), a record that sets no field, a NaN or infinite f64, a bad symbol;
   PF_EFULL when a new symbol does not fit: nothing is written then. */
static inline int pf_publish_record_at(pf_feed *f, const char *symbol, const pf_record *r, uint64_t time_ns,
                                       int *changed, pf_error *err) {
    if (changed != NULL) *changed = 0;
    int rc = pf__writer(f, err);
    if (rc) return rc;
    const char *shown = symbol == NULL ? "(null)" : symbol;
    if (r == NULL || r->feed != f)
        return pf__fail(err, PF_EINVAL, 0, "the record for '%.40s' was not made for feed '%s': pf_record_init(&r, &feed) "
                        "with the feed it is published to", shown, f->name);
    if (r->bad) return pf__fail(err, PF_EINVAL, 0, "%s", r->why);
    uint32_t n = f->field_count, set = r->set & ((UINT32_C(1) << n) - 1u);
    if (set == 0) {
        char names[400];
        pf_format_mask(f, UINT32_MAX, ", ", names, sizeof names);
        return pf__fail(err, PF_EINVAL, 0, "a publish of '%.40s' sets no field; feed '%s' has %s", shown, f->name, names);
    }
    for (uint32_t k = 0; k < n; k++)
        if ((set >> k & 1u) && (f->f64_mask >> k & 1u) && !isfinite(r->values[k].f64))
            return pf__fail(err, PF_EINVAL, 0, "%s for symbol '%.40s' must be a finite number (not NaN or infinite): %s=%g",
                            f->fields[k].name, shown, f->fields[k].name, r->values[k].f64);
    uint32_t index = symbol == NULL ? UINT32_MAX : pf__names_find(&f->names, symbol);
    int fresh = index == UINT32_MAX;
    uint64_t values[PF_MAX_FIELDS];
    uint32_t mask = 0;
    if (fresh) {
        if ((rc = pf__check_symbol(symbol, err)) != 0) return rc;
        if (f->names.count >= f->capacity)
            return pf__fail(err, PF_EFULL, 0,
                            "feed '%s' is full: %u of %u slots hold a symbol and 1 more was asked for (create the "
                            "feed with a larger --capacity)",
                            f->name, f->names.count, f->capacity);
        memset(values, 0, sizeof values); /* the fields a first record does not set start at 0 */
    } else {
        memcpy(values, f->last + (size_t)index * n, n * sizeof *values);
    }
    /* A value equal to the current one (-0.0 to 0.0) is no change and leaves it as it was. */
    for (uint32_t k = 0; k < n; k++)
        if ((set >> k & 1u) && !pf__same_value(f, k, values[k], r->values[k].bits)) {
            mask |= UINT32_C(1) << k;
            values[k] = r->values[k].bits;
        }
    if (fresh)
        mask = (UINT32_C(1) << n) - 1u; /* a first record changes every field */
    else if (mask == 0)
        return pf__ok(err); /* nothing differs: no change, nobody wakes */
    if (fresh) {
        index = f->names.count;
        if (pf__names_add(&f->names, symbol) != 0) return pf__fail(err, PF_ERROR, ENOMEM, "out of memory");
    }
    pf_view v = pf__view(f);
    uint64_t seq = f->head + 1u;
    if (fresh) pf_core_write_symbol(&v, index, symbol);             /* step 1: name the slot */
    pf_core_write_change(&v, index, values, mask, time_ns, seq);    /* steps 2 and 3 */
    if (fresh) pf_core_store_slot_count(&v, index + 1u);            /* step 4 */
    pf_core_store_head(&v, seq);                                    /* step 5 */
    f->head = seq;
    memcpy(f->last + (size_t)index * n, values, n * sizeof *values);
    pf_core_announce_slot(&v, index);                               /* step 6 */
    int e = pf_core_wake_slot(&v, index); /* step 7: always, since we keep no count of waiters */
    if (changed != NULL) *changed = 1;
    if (e) return pf__fail(err, PF_ERROR, e, "feed '%s': FUTEX_WAKE_OP failed: %s", f->name, strerror(e));
    return pf__ok(err);
}

static inline int pf_publish_record(pf_feed *f, const char *symbol, const pf_record *r, int *changed, pf_error *err) {
    return pf_publish_record_at(f, symbol, r, pf_now_ns(), changed, err);
}

/* The one-field convenience: set `symbol` to `price` on a feed of one f64 field (the default
   schema's price), with time stamp `time_ns`. *changed (if not NULL) is 0 when the price
   equals the current one (0.0 and -0.0 are equal): no event, no sequence, no wake-up.
   PF_EINVAL on a feed of more fields (publish a pf_record) or of one i64 field, for a bad
   symbol, or a NaN or infinite price; PF_EFULL when a new symbol does not fit; nothing is
   written then. */
static inline int pf_publish_at(pf_feed *f, const char *symbol, double price, uint64_t time_ns, int *changed,
                                pf_error *err) {
    if (changed != NULL) *changed = 0;
    int rc = pf__writer(f, err);
    if (rc) return rc;
    if (f->field_count != 1) {
        char names[400];
        pf_format_mask(f, UINT32_MAX, ", ", names, sizeof names);
        return pf__fail(err, PF_EINVAL, 0,
                        "feed '%s' has fields %s: name the ones to set with a pf_record (pf_publish sets the field of "
                        "a feed that has one); got the value %g for '%.40s' without a name",
                        f->name, names, price, symbol == NULL ? "(null)" : symbol);
    }
    pf_record r;
    pf_record_init(&r, f);
    pf_record_f64_at(&r, 0, price);
    return pf_publish_record_at(f, symbol, &r, time_ns, changed, err);
}

static inline int pf_publish(pf_feed *f, const char *symbol, double price, int *changed, pf_error *err) {
    return pf_publish_at(f, symbol, price, pf_now_ns(), changed, err);
}

/* End the feed for good (section 11): subscribers finish once they have every change, and
   no publisher may take it again. The values stay readable. */
static inline int pf_end(pf_feed *f, pf_error *err) {
    int rc = pf__writer(f, err);
    if (rc) return rc;
    PF__STORE_REL(pf__u32(f, PF_OFF_CLOSED), 1u); /* the last head comes first */
    f->ended = 1;
    int e = pf__bump_and_wake_all(f);
    if (e) return pf__fail(err, PF_ERROR, e, "feed '%s': FUTEX_WAKE failed: %s", f->name, strerror(e));
    return pf__ok(err);
}

#endif /* PRICEFEED_H */
