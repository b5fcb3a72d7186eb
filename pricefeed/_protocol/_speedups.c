/*
 * pricefeed._protocol._speedups: the publish and read paths of pricefeed/_protocol/feed.py, in C.
 *
 * Optional: when this module is not built (no C compiler) or PRICEFEED_PURE is set, the pure
 * Python code in _protocol/feed.py runs instead, and the test suite runs against both. The protocol
 * is the same step for step (see the Rules in _protocol/feed.py and docs/protocol.md); only the cost
 * differs. Nothing here knows an offset: every offset and size comes from _protocol/layout.py through
 * the `layout` tuple that _protocol/accel.py builds.
 *
 * Memory ordering uses C11 atomics: relaxed single loads and stores for every shared word,
 * and acquire/release fences at exactly the points _protocol/feed.py puts them (each marked with the
 * fence it pairs with). On x86-64 they compile to plain moves; on aarch64 to the barriers the
 * seqlock needs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ACQUIRE() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define RELEASE() __atomic_thread_fence(__ATOMIC_RELEASE)

#define LOCK_MASK ((UINT64_C(1) << 63) - 1)
#define FUTEX_MASK UINT32_C(0x7fffffff)
#define SLOT_VOID UINT32_C(0xffffffff)

static inline PyObject *Py_NewRefCompat(PyObject *o) {
    Py_INCREF(o);
    return o;
}

/* The layout tuple, in this order (built by _protocol/accel.py from _protocol/layout.py). */
enum {
    L_SLOTS, L_SLOT_SIZE, L_RING, L_RECORD_SIZE, L_HEAD, L_FUTEX, L_WAKE, L_WAKE_WORDS,
    L_S_LOCK, L_S_PRICE, L_S_TIME, L_S_SEQ, L_R_SEQ, L_R_SLOT, L_R_PRICE, L_R_TIME,
    L_SLOT_COUNT, L_CLOSED, L_EPOCH, L_COUNT
};

typedef struct {
    PyObject_HEAD
    char *base; /* NULL once closed */
    uint64_t layout[L_COUNT];
    uint64_t capacity, mask;
    int spin_tries;
    int wake; /* 1: commit() wakes with FUTEX_WAKE_OP itself */
    unsigned long long woken; /* waits in wait_head() that a wake-up or a change ended */
    PyObject *bad_segment;
} Feed;

static inline uint64_t *u64_at(Feed *f, uint64_t off) { return (uint64_t *)(f->base + off); }
static inline uint32_t *u32_at(Feed *f, uint64_t off) { return (uint32_t *)(f->base + off); }
static inline double load_double(uint64_t *p) {
    uint64_t bits = LOAD(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}
static inline void store_double(uint64_t *p, double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    STORE(p, bits);
}

static int closed(Feed *f) {
    if (f->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the feed's mapping is closed");
        return 1;
    }
    return 0;
}

#ifdef __linux__
static int wake_op(uint32_t *word, uint32_t *futex) {
    /* Wake every waiter of `word`, then OR 0 into the header's word and wake its waiters too:
       always, since it stays below 2**31 (see _wait/_futex_linux.py). */
    long r = syscall(SYS_futex, word, FUTEX_WAKE_OP, INT_MAX, (void *)(long)INT_MAX, futex,
                     FUTEX_OP(FUTEX_OP_OR, 0, FUTEX_OP_CMP_GE, 0));
    if (r < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}
static int wake_one(uint32_t *word) {
    if (syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}
#else
static int wake_op(uint32_t *word, uint32_t *futex) { return 0; }
static int wake_one(uint32_t *word) { return 0; }
#endif

static int Feed_init(Feed *self, PyObject *args, PyObject *kw) {
    unsigned long long address, capacity, ring_size;
    PyObject *layout, *bad;
    int spin_tries, wake;
    if (!PyArg_ParseTuple(args, "KKKO!iOp", &address, &capacity, &ring_size, &PyTuple_Type, &layout,
                          &spin_tries, &bad, &wake))
        return -1;
    if (PyTuple_GET_SIZE(layout) != L_COUNT) {
        PyErr_Format(PyExc_ValueError, "layout must have %d numbers: got %zd", L_COUNT, PyTuple_GET_SIZE(layout));
        return -1;
    }
    for (int i = 0; i < L_COUNT; i++) {
        self->layout[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(layout, i));
        if (PyErr_Occurred()) return -1;
    }
    if (ring_size == 0 || (ring_size & (ring_size - 1)) || capacity == 0) {
        PyErr_SetString(PyExc_ValueError, "bad geometry");
        return -1;
    }
    self->base = (char *)(uintptr_t)address;
    self->capacity = capacity;
    self->mask = ring_size - 1;
    self->spin_tries = spin_tries;
    self->wake = wake;
    Py_INCREF(bad);
    Py_XSETREF(self->bad_segment, bad);
    return 0;
}

static void Feed_dealloc(Feed *self) {
    Py_XDECREF(self->bad_segment);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Feed_close(Feed *self, PyObject *unused) {
    self->base = NULL;
    Py_RETURN_NONE;
}

/* The slot and record of one change (Rules 1 and 2); the caller moves the head. */
static void write_change(Feed *f, uint64_t index, double price, uint64_t time_ns, uint64_t seq) {
    const uint64_t *L = f->layout;
    char *slot = f->base + L[L_SLOTS] + index * L[L_SLOT_SIZE];
    uint64_t *lockp = (uint64_t *)(slot + L[L_S_LOCK]);
    uint64_t lock = LOAD(lockp) & LOCK_MASK;
    STORE(lockp, lock + 1);
    RELEASE(); /* pairs with the second acquire in read_slot() */
    store_double((uint64_t *)(slot + L[L_S_PRICE]), price);
    STORE((uint64_t *)(slot + L[L_S_TIME]), time_ns);
    STORE((uint64_t *)(slot + L[L_S_SEQ]), seq);
    RELEASE(); /* pairs with the first acquire in read_slot() */
    STORE(lockp, lock + 2);

    char *rec = f->base + L[L_RING] + (seq & f->mask) * L[L_RECORD_SIZE];
    uint64_t *rseq = (uint64_t *)(rec + L[L_R_SEQ]);
    STORE(rseq, 0);
    RELEASE(); /* pairs with the second acquire in read_record() */
    STORE((uint32_t *)(rec + L[L_R_SLOT]), (uint32_t)index);
    store_double((uint64_t *)(rec + L[L_R_PRICE]), price);
    STORE((uint64_t *)(rec + L[L_R_TIME]), time_ns);
    RELEASE(); /* pairs with the first acquire in read_record() */
    STORE(rseq, seq);
}

static void bump_words(Feed *f, const uint8_t *words) {
    const uint64_t *L = f->layout;
    RELEASE(); /* the head is visible before the words that announce it (Rule 3) */
    for (uint64_t w = 0; w < L[L_WAKE_WORDS]; w++) {
        if (words[w]) {
            uint32_t *p = u32_at(f, L[L_WAKE] + 4 * w);
            STORE(p, LOAD(p) + 1);
        }
    }
    uint32_t *futex = u32_at(f, L[L_FUTEX]);
    STORE(futex, (LOAD(futex) + 1) & FUTEX_MASK);
}

static PyObject *Feed_commit(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* commit(index, price, time_ns, seq): _feed.FeedWriter.commit() and the wake-up. */
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "commit(index, price, time_ns, seq)");
        return NULL;
    }
    /* Convert first: a conversion may run Python code (which could close the feed). */
    uint64_t index = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    double price = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (index >= self->capacity) {
        PyErr_Format(PyExc_IndexError, "slot %llu is outside the table of %llu", (unsigned long long)index,
                     (unsigned long long)self->capacity);
        return NULL;
    }
    const uint64_t *L = self->layout;
    write_change(self, index, price, time_ns, seq);
    RELEASE(); /* Rule 3: the record is complete before head covers it */
    STORE(u64_at(self, L[L_HEAD]), seq);
    RELEASE(); /* the head is visible before the words that announce it */
    uint64_t w = index & (L[L_WAKE_WORDS] - 1);
    uint32_t *word = u32_at(self, L[L_WAKE] + 4 * w);
    uint32_t *futex = u32_at(self, L[L_FUTEX]);
    STORE(word, LOAD(word) + 1);
    STORE(futex, (LOAD(futex) + 1) & FUTEX_MASK);
    if (self->wake && wake_op(word, futex) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Feed_commit_many(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* commit_many(changes, time_ns, first_seq, slot_count or -1): _feed.FeedWriter.commit_many()
       and the wake-ups. `changes` is a list of (slot, price) tuples. */
    if (nargs != 4 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "commit_many(list of (slot, price), time_ns, first_seq, slot_count)");
        return NULL;
    }
    PyObject *changes = args[0];
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    long long slot_count = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (slot_count > (long long)self->capacity) {
        PyErr_SetString(PyExc_ValueError, "slot_count beyond the table");
        return NULL;
    }
    const uint64_t *L = self->layout;
    uint8_t words[1024];
    if (L[L_WAKE_WORDS] > sizeof words) {
        PyErr_SetString(PyExc_ValueError, "too many wake words");
        return NULL;
    }
    memset(words, 0, L[L_WAKE_WORDS]);
    Py_ssize_t n = PyList_GET_SIZE(changes);
    /* Check everything before writing anything. */
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(changes, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "changes must be (slot, price) tuples");
            return NULL;
        }
        uint64_t index = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 0));
        if (PyErr_Occurred()) return NULL;
        if (index >= self->capacity) {
            PyErr_SetString(PyExc_IndexError, "slot outside the table");
            return NULL;
        }
        if (!PyFloat_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "prices must be floats");
            return NULL;
        }
    }
    if (closed(self)) return NULL; /* the checks above are done: no Python code runs below */
    seq -= 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(changes, k);
        uint64_t index = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 0));
        double price = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
        seq += 1;
        write_change(self, index, price, time_ns, seq);
        words[index & (L[L_WAKE_WORDS] - 1)] = 1;
    }
    if (slot_count >= 0) {
        RELEASE(); /* pairs with the acquire in slot_count(): new slots are whole (Rule 4) */
        STORE(u32_at(self, L[L_SLOT_COUNT]), (uint32_t)slot_count);
    }
    if (n == 0) return PySet_New(NULL);
    RELEASE(); /* Rule 3: the records are complete before head covers them */
    STORE(u64_at(self, L[L_HEAD]), seq);
    bump_words(self, words);
    if (self->wake) {
        uint32_t *futex = u32_at(self, L[L_FUTEX]);
        int first = 1;
        for (uint64_t w = 0; w < L[L_WAKE_WORDS]; w++) {
            if (!words[w]) continue;
            uint32_t *word = u32_at(self, L[L_WAKE] + 4 * w);
            if ((first ? wake_op(word, futex) : wake_one(word)) < 0) return NULL;
            first = 0;
        }
    }
    /* The words concerned, as FeedWriter.commit_many returns them (for a caller that wakes). */
    PyObject *out = PySet_New(NULL);
    if (out == NULL) return NULL;
    for (uint64_t w = 0; w < L[L_WAKE_WORDS]; w++) {
        if (!words[w]) continue;
        PyObject *v = PyLong_FromUnsignedLongLong(w);
        if (v == NULL || PySet_Add(out, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
    }
    return out;
}

static PyObject *damaged_slot(Feed *f, uint64_t index, double price) {
    PyObject *p = PyFloat_FromDouble(price);
    if (p != NULL) {
        PyErr_Format(f->bad_segment, "damaged slot %llu: its price is %R", (unsigned long long)index, p);
        Py_DECREF(p);
    }
    return NULL;
}

/* One consistent copy of a slot, or 0 when it raced a write every time (Rule 1). */
static int read_slot(Feed *f, uint64_t index, double *price, uint64_t *time_ns, uint64_t *seq, int tries) {
    const uint64_t *L = f->layout;
    char *slot = f->base + L[L_SLOTS] + index * L[L_SLOT_SIZE];
    uint64_t *lockp = (uint64_t *)(slot + L[L_S_LOCK]);
    for (int t = 0; t < tries; t++) {
        uint64_t lock = LOAD(lockp);
        if (lock & 1) continue;
        ACQUIRE(); /* pairs with the release before the even store in write_change() */
        *price = load_double((uint64_t *)(slot + L[L_S_PRICE]));
        *time_ns = LOAD((uint64_t *)(slot + L[L_S_TIME]));
        *seq = LOAD((uint64_t *)(slot + L[L_S_SEQ]));
        ACQUIRE(); /* pairs with the release after the odd store in write_change() */
        if (LOAD(lockp) == lock) return 1;
    }
    return 0;
}

static PyObject *Feed_read_slot(Feed *self, PyObject *arg) {
    uint64_t index = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (index >= self->capacity) {
        PyErr_SetString(PyExc_IndexError, "slot outside the table");
        return NULL;
    }
    double price;
    uint64_t time_ns, seq;
    if (!read_slot(self, index, &price, &time_ns, &seq, self->spin_tries)) Py_RETURN_NONE;
    if (!isfinite(price)) return damaged_slot(self, index, price);
    return Py_BuildValue("(dKK)", price, (unsigned long long)time_ns, (unsigned long long)seq);
}

static PyObject *Feed_read_slots(Feed *self, PyObject *arg) {
    uint64_t count = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (count > self->capacity) {
        PyErr_SetString(PyExc_IndexError, "more slots than the table has");
        return NULL;
    }
    PyObject *out = PyList_New((Py_ssize_t)count);
    if (out == NULL) return NULL;
    for (uint64_t i = 0; i < count; i++) {
        double price;
        uint64_t time_ns, seq;
        PyObject *v;
        if (self->base == NULL) { /* an allocation above may have run Python code that closed it */
            Py_DECREF(out);
            return closed(self), NULL;
        }
        if (!read_slot(self, i, &price, &time_ns, &seq, 1)) {
            Py_INCREF(Py_None);
            v = Py_None;
        } else if (!isfinite(price)) {
            Py_DECREF(out);
            return damaged_slot(self, i, price);
        } else {
            v = Py_BuildValue("(dKK)", price, (unsigned long long)time_ns, (unsigned long long)seq);
            if (v == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
    return out;
}

/* Change `seq` from the ring (Rule 2): 1 with *slot, *price, *time_ns filled; 0 when the
   record no longer (or does not yet) hold it, i.e. lapped; -1 with the exception set when the
   record is damaged (a slot outside the table, or a price that is not finite). */
static int read_rec(Feed *f, uint64_t seq, uint32_t *slot, double *price, uint64_t *time_ns) {
    const uint64_t *L = f->layout;
    char *rec = f->base + L[L_RING] + (seq & f->mask) * L[L_RECORD_SIZE];
    uint64_t *rseq = (uint64_t *)(rec + L[L_R_SEQ]);
    if (LOAD(rseq) != seq) return 0;
    ACQUIRE(); /* pairs with the release before the seq store in write_change() */
    *slot = LOAD((uint32_t *)(rec + L[L_R_SLOT]));
    *price = load_double((uint64_t *)(rec + L[L_R_PRICE]));
    *time_ns = LOAD((uint64_t *)(rec + L[L_R_TIME]));
    ACQUIRE(); /* pairs with the release after the 0 store in write_change() */
    if (LOAD(rseq) != seq) return 0;
    if ((*slot >= f->capacity && *slot != SLOT_VOID) || !isfinite(*price)) {
        PyObject *p = PyFloat_FromDouble(*price);
        if (p != NULL) {
            PyErr_Format(f->bad_segment, "damaged ring record for change %llu: slot %u (table of %llu), price %R",
                         (unsigned long long)seq, *slot, (unsigned long long)f->capacity, p);
            Py_DECREF(p);
        }
        return -1;
    }
    return 1;
}

static PyObject *Feed_read_record(Feed *self, PyObject *arg) {
    /* (slot, price, time_ns) of change `seq`, or None when lapped (Rule 2). */
    uint64_t seq = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || closed(self)) return NULL;
    uint32_t slot;
    double price;
    uint64_t time_ns;
    int got = read_rec(self, seq, &slot, &price, &time_ns);
    if (got < 0) return NULL;
    if (got == 0) Py_RETURN_NONE;
    return Py_BuildValue("(IdK)", slot, price, (unsigned long long)time_ns);
}

static PyObject *Feed_spin(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* spin(cursor, seconds): poll the head for up to `seconds`; True once it passes
       `cursor`. Bounded (at most 10 ms: Subscriber.updates checks), and with the GIL held: a
       thread that closed the subscriber meanwhile would unmap the memory read here. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "spin(cursor, seconds)");
        return NULL;
    }
    uint64_t cursor = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    double seconds = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (!(seconds >= 0)) seconds = 0;
    if (seconds > 0.01) seconds = 0.01; /* the most Subscriber.updates() accepts */
    uint64_t *head = u64_at(self, self->layout[L_HEAD]);
    int moved = 0;
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)seconds;
    end.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec += 1;
        end.tv_nsec -= 1000000000L;
    }
    for (unsigned k = 0;; k++) {
        if (LOAD(head) != cursor) {
            moved = 1;
            break;
        }
        if ((k & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)) break;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    }
    if (moved) ACQUIRE(); /* pairs with the release in the writer's head store */
    return PyBool_FromLong(moved);
}

#ifdef __linux__
struct waitv {
    uint64_t val, uaddr;
    uint32_t flags, reserved;
};
#define WAITV_MAX 128
#define FUTEX2_SIZE_U32_ 0x02
#define SYS_FUTEX_WAITV_ 449
#endif

static PyObject *Feed_wait_head(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* wait_head(cursor, seconds[, words]): sleep until the head passes `cursor` (returns 1),
       the feed is ended with nothing new (2), or `seconds` pass (0). It sleeps on the
       header's word, or with `words` (a tuple of wake-table indices) on those words with
       futex_waitv. The words are loaded before the head, as _roles/subscriber.py explains; the GIL
       is released while asleep, and a signal (Ctrl-C) ends the wait with its exception. */
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait_head(cursor, seconds[, words])");
        return NULL;
    }
    uint64_t cursor = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    double seconds = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (!(seconds >= 0)) seconds = 0; /* NaN too */
    if (seconds > 86400) seconds = 86400; /* a caller that wants longer calls again */
#ifdef __linux__
    const uint64_t *L = self->layout;
    struct waitv wv[WAITV_MAX];
    uint64_t woff[WAITV_MAX];
    Py_ssize_t nw = 0;
    if (nargs == 3 && args[2] != Py_None) {
        if (!PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) < 1 || PyTuple_GET_SIZE(args[2]) > WAITV_MAX) {
            PyErr_SetString(PyExc_ValueError, "words must be a tuple of 1 to 128 wake-table indices");
            return NULL;
        }
        nw = PyTuple_GET_SIZE(args[2]);
        for (Py_ssize_t k = 0; k < nw; k++) {
            uint64_t w = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(args[2], k));
            if (PyErr_Occurred()) return NULL;
            if (w >= L[L_WAKE_WORDS]) {
                PyErr_SetString(PyExc_IndexError, "wake-table index out of range");
                return NULL;
            }
            woff[k] = L[L_WAKE] + 4 * w;
            wv[k].flags = FUTEX2_SIZE_U32_;
            wv[k].reserved = 0;
        }
    }
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)seconds;
    end.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec += 1;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        /* Every round starts from base: a signal handler (run by PyErr_CheckSignals below) or
           another thread may have closed the feed since the last one. */
        if (closed(self)) return NULL;
        uint32_t *futex = u32_at(self, L[L_FUTEX]);
        uint64_t *head = u64_at(self, L[L_HEAD]);
        uint32_t *closedp = u32_at(self, L[L_CLOSED]);
        uint32_t expected = LOAD(futex);
        for (Py_ssize_t k = 0; k < nw; k++) {
            uint32_t *wp = u32_at(self, woff[k]);
            wv[k].uaddr = (uint64_t)(uintptr_t)wp;
            wv[k].val = LOAD(wp);
        }
        ACQUIRE(); /* the head is loaded after the words: see _roles/subscriber.py */
        if (LOAD(head) != cursor) {
            ACQUIRE(); /* pairs with the release before the head store */
            return PyLong_FromLong(1);
        }
        if (LOAD(closedp)) {
            ACQUIRE(); /* pairs with the release before the closed store */
            return PyLong_FromLong(LOAD(head) != cursor ? 1 : 2);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
        if (left.tv_nsec < 0) {
            left.tv_sec -= 1;
            left.tv_nsec += 1000000000L;
        }
        if (left.tv_sec < 0) return PyLong_FromLong(0);
        long r;
        int err;
        Py_BEGIN_ALLOW_THREADS
        if (nw)  /* futex_waitv's timeout is absolute */
            r = syscall(SYS_FUTEX_WAITV_, wv, (unsigned)nw, 0, &end, CLOCK_MONOTONIC);
        else
            r = syscall(SYS_futex, futex, FUTEX_WAIT, expected, &left, NULL, 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (nw && r >= 0) r = 0; /* the index of a woken word */
        if (r == 0 || err == EAGAIN) {
            self->woken++;
            continue;
        }
        if (err == ETIMEDOUT) continue; /* the loop sees the time is up */
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) return NULL;
            continue; /* the top of the loop checks the feed is still open */
        }
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
#else
    PyErr_SetString(PyExc_OSError, "wait_head needs Linux futexes");
    return NULL;
#endif
}

static PyObject *Feed_get_woken(Feed *self, void *closure) { return PyLong_FromUnsignedLongLong(self->woken); }

static PyGetSetDef Feed_getset[] = {
    {"woken", (getter)Feed_get_woken, NULL, "waits in wait_head() that a wake-up or a change ended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Feed_methods[] = {
    {"wait_head", (PyCFunction)(void (*)(void))Feed_wait_head, METH_FASTCALL, "Sleep until the head moves."},
    {"commit", (PyCFunction)(void (*)(void))Feed_commit, METH_FASTCALL, "One change, whole, and its wake-up."},
    {"commit_many", (PyCFunction)(void (*)(void))Feed_commit_many, METH_FASTCALL, "A batch, whole, and its wake-ups."},
    {"read_slot", (PyCFunction)Feed_read_slot, METH_O, "(price, time_ns, seq) or None."},
    {"read_slots", (PyCFunction)Feed_read_slots, METH_O, "read_slot() of slots [0, n), one try each."},
    {"read_record", (PyCFunction)Feed_read_record, METH_O, "(slot, price, time_ns) or None when lapped."},
    {"spin", (PyCFunction)(void (*)(void))Feed_spin, METH_FASTCALL, "Poll the head; True once it moves."},
    {"close", (PyCFunction)Feed_close, METH_NOARGS, "Forget the mapping (before it is unmapped)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pricefeed._protocol._speedups.Feed",
    .tp_basicsize = sizeof(Feed),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Feed(address, capacity, ring_size, layout, spin_tries, bad_segment, wake)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Feed_init,
    .tp_dealloc = (destructor)Feed_dealloc,
    .tp_methods = Feed_methods,
    .tp_getset = Feed_getset,
};

/* ---------------------------------------------------------------------------------------------
 * Follow: the common case of Subscriber.updates() in C. Each next() returns the next wanted
 * change as a Quote, or, for anything that needs Python (see _subscriber._changes), a small int:
 *   F_TIMEOUT  a wait slice passed, or the deadline, with nothing wanted
 *   F_ENDED    the feed was ended and every change read
 *   F_LAPPED   the record of cursor + 1 was overwritten: the caller catches up, sets cursor
 *   F_NEWSLOT  the record names a slot at or beyond `known`: the caller learns the new
 *              symbols, sets `known` (and `interest`, `words`) and goes on
 *   F_VOID     the record stands for a lost change (cursor is already past it)
 *   F_EPOCH    a new publisher took over (epoch is updated)
 *   F_BEHIND   head_seq is below the cursor (`head` says what was loaded): damage, which
 *              the caller reports; sequences only grow for a segment's life
 * The caller owns `names` (a list it appends to), `known` (how many of them `interest` and
 * `words` were made for: others may append to `names` meanwhile) and `interest` (None, or a
 * bytearray with a non-zero byte per wanted slot), and may set cursor, deadline, known,
 * interest and words. Unwanted records are skipped in C, but at most SKIP_CHECK at a time
 * before the deadline and signals are looked at.
 */
enum { F_TIMEOUT = 0, F_ENDED = 2, F_LAPPED = 3, F_NEWSLOT = 4, F_VOID = 5, F_EPOCH = 6, F_BEHIND = 7 };

typedef struct {
    PyObject_HEAD
    Feed *feed;
    PyObject *names;    /* list of str */
    PyObject *interest; /* None or bytearray */
    PyObject *quote;    /* the Quote class */
    PyObject *words;    /* None or tuple of wake-table indices */
    uint64_t cursor;
    uint64_t known;
    uint64_t head; /* the head_seq loaded last */
    uint32_t epoch;
    double slice, spin, deadline; /* deadline: CLOCK_MONOTONIC seconds; < 0 none */
} Follow;

#define SKIP_CHECK 4096

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static PyObject *Follow_next(Follow *self) {
    Feed *f = self->feed;
    if (f == NULL) {
        PyErr_SetString(PyExc_ValueError, "Follow was not initialised");
        return NULL;
    }
    const uint64_t *L = f->layout;
    unsigned skipped = 0;
    for (;;) {
        /* Every round starts from base: Python code run below (signal handlers, the spin's and
           the wait's callers) may have closed the feed. */
        if (closed(f)) return NULL;
        uint64_t *head = u64_at(f, L[L_HEAD]);
        uint64_t h = LOAD(head);
        ACQUIRE(); /* pairs with the release before the head store */
        self->head = h;
        if (h < self->cursor) return PyLong_FromLong(F_BEHIND); /* never waited on: it would spin */
        /* The epoch after the head: a new publisher bumps it before any change it makes, so
           its takeover is reported before its first change (repairs included). */
        uint32_t epoch = LOAD(u32_at(f, L[L_EPOCH]));
        if (epoch != self->epoch) {
            self->epoch = epoch;
            return PyLong_FromLong(F_EPOCH);
        }
        if (h > self->cursor) {
            uint64_t seq = self->cursor + 1;
            if (h - self->cursor > f->mask + 1) return PyLong_FromLong(F_LAPPED);
            uint32_t slot;
            double price;
            uint64_t time_ns;
            int got = read_rec(f, seq, &slot, &price, &time_ns);
            if (got < 0) return NULL;
            if (got == 0) return PyLong_FromLong(F_LAPPED);
            if (slot == SLOT_VOID) {
                self->cursor = seq;
                return PyLong_FromLong(F_VOID);
            }
            if ((uint64_t)slot >= self->known) return PyLong_FromLong(F_NEWSLOT);
            if ((Py_ssize_t)slot >= PyList_GET_SIZE(self->names)) {
                PyErr_SetString(PyExc_RuntimeError, "Follow.known is beyond its names");
                return NULL;
            }
            self->cursor = seq;
            if (self->interest != Py_None) {
                if ((Py_ssize_t)slot >= PyByteArray_GET_SIZE(self->interest) ||
                    !PyByteArray_AS_STRING(self->interest)[slot]) {
                    /* Unwanted: skip it here, but now and then let Python look at the time and
                       at signals, so that a feed kept just ahead of us cannot hold them off. */
                    if (++skipped % SKIP_CHECK == 0) {
                        if (self->deadline >= 0 && mono_now() >= self->deadline) return PyLong_FromLong(F_TIMEOUT);
                        if (PyErr_CheckSignals() < 0) return NULL;
                    }
                    continue;
                }
            }
            PyObject *name = PyList_GET_ITEM(self->names, slot);
            PyObject *args[4];
            args[0] = name;
            args[1] = PyFloat_FromDouble(price);
            args[2] = PyLong_FromUnsignedLongLong(time_ns);
            args[3] = PyLong_FromUnsignedLongLong(seq);
            PyObject *q = NULL;
            if (args[1] && args[2] && args[3]) q = PyObject_Vectorcall(self->quote, args, 4, NULL);
            Py_XDECREF(args[1]);
            Py_XDECREF(args[2]);
            Py_XDECREF(args[3]);
            return q;
        }
        /* Nothing new: ended? the deadline? else spin, then sleep one slice. */
        if (LOAD(u32_at(f, L[L_CLOSED]))) {
            ACQUIRE();
            if (LOAD(head) != self->cursor) continue;
            return PyLong_FromLong(F_ENDED);
        }
        if (self->deadline >= 0 && mono_now() >= self->deadline) return PyLong_FromLong(F_TIMEOUT);
        PyObject *cursor = PyLong_FromUnsignedLongLong(self->cursor);
        if (cursor == NULL) return NULL;
        PyObject *r;
        if (self->spin > 0) {
            PyObject *secs = PyFloat_FromDouble(self->spin);
            PyObject *sargs[2] = {cursor, secs};
            r = secs ? Feed_spin(f, sargs, 2) : NULL;
            Py_XDECREF(secs);
            if (r == NULL) {
                Py_DECREF(cursor);
                return NULL;
            }
            int moved = r == Py_True;
            Py_DECREF(r);
            if (moved) {
                Py_DECREF(cursor);
                continue;
            }
        }
        double limit = self->slice; /* after the spin, which took some of the time */
        if (self->deadline >= 0) {
            double now = mono_now();
            if (now >= self->deadline) {
                Py_DECREF(cursor);
                return PyLong_FromLong(F_TIMEOUT);
            }
            if (self->deadline - now < limit) limit = self->deadline - now;
        }
        PyObject *secs = PyFloat_FromDouble(limit);
        PyObject *wargs[3] = {cursor, secs, self->words};
        r = secs ? Feed_wait_head(f, wargs, 3) : NULL;
        Py_XDECREF(secs);
        Py_DECREF(cursor);
        if (r == NULL) return NULL;
        long code = PyLong_AsLong(r);
        Py_DECREF(r);
        if (code == 0) return PyLong_FromLong(F_TIMEOUT);
        /* 1: the head moved; 2: ended: both are seen at the top of the loop */
    }
}

static int Follow_init(Follow *self, PyObject *args, PyObject *kw) {
    PyObject *feed, *names, *interest, *quote, *words;
    unsigned long long cursor, known;
    unsigned int epoch;
    double slice, spin, deadline;
    if (!PyArg_ParseTuple(args, "O!O!KOOOKIddd", &FeedType, &feed, &PyList_Type, &names, &known, &interest, &quote,
                          &words, &cursor, &epoch, &slice, &spin, &deadline))
        return -1;
    if (known > (unsigned long long)PyList_GET_SIZE(names)) {
        PyErr_SetString(PyExc_ValueError, "known is beyond names");
        return -1;
    }
    if (interest != Py_None && !PyByteArray_Check(interest)) {
        PyErr_SetString(PyExc_TypeError, "interest must be None or a bytearray");
        return -1;
    }
    Py_INCREF(feed);
    Py_XSETREF(self->feed, (Feed *)feed);
    Py_INCREF(names);
    Py_XSETREF(self->names, names);
    Py_INCREF(interest);
    Py_XSETREF(self->interest, interest);
    Py_INCREF(quote);
    Py_XSETREF(self->quote, quote);
    Py_INCREF(words);
    Py_XSETREF(self->words, words);
    self->cursor = cursor;
    self->known = known;
    self->epoch = epoch;
    self->slice = slice;
    self->spin = spin;
    self->deadline = deadline;
    return 0;
}

static void Follow_dealloc(Follow *self) {
    Py_XDECREF(self->feed);
    Py_XDECREF(self->names);
    Py_XDECREF(self->interest);
    Py_XDECREF(self->quote);
    Py_XDECREF(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Follow_iter(PyObject *self) {
    Py_INCREF(self);
    return self;
}

static PyObject *Follow_get_cursor(Follow *self, void *c) { return PyLong_FromUnsignedLongLong(self->cursor); }
static int Follow_set_cursor(Follow *self, PyObject *v, void *c) {
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred()) return -1;
    self->cursor = x;
    return 0;
}
static PyObject *Follow_get_epoch(Follow *self, void *c) { return PyLong_FromUnsignedLong(self->epoch); }
static PyObject *Follow_get_head(Follow *self, void *c) { return PyLong_FromUnsignedLongLong(self->head); }
static PyObject *Follow_get_known(Follow *self, void *c) { return PyLong_FromUnsignedLongLong(self->known); }
static int Follow_set_known(Follow *self, PyObject *v, void *c) {
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred()) return -1;
    if (self->names == NULL || x > (unsigned long long)PyList_GET_SIZE(self->names)) {
        PyErr_SetString(PyExc_ValueError, "known is beyond names");
        return -1;
    }
    self->known = x;
    return 0;
}
static PyObject *Follow_get_deadline(Follow *self, void *c) { return PyFloat_FromDouble(self->deadline); }
static int Follow_set_deadline(Follow *self, PyObject *v, void *c) {
    double x = PyFloat_AsDouble(v);
    if (PyErr_Occurred()) return -1;
    self->deadline = x;
    return 0;
}
static PyObject *Follow_get_words(Follow *self, void *c) { return Py_NewRefCompat(self->words ? self->words : Py_None); }
static int Follow_set_words(Follow *self, PyObject *v, void *c) {
    if (v == NULL) v = Py_None;
    Py_INCREF(v);
    Py_XSETREF(self->words, v);
    return 0;
}
static PyObject *Follow_get_interest(Follow *self, void *c) {
    return Py_NewRefCompat(self->interest ? self->interest : Py_None);
}
static int Follow_set_interest(Follow *self, PyObject *v, void *c) {
    if (v == NULL) v = Py_None;
    if (v != Py_None && !PyByteArray_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "interest must be None or a bytearray");
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(self->interest, v);
    return 0;
}

static PyGetSetDef Follow_getset[] = {
    {"cursor", (getter)Follow_get_cursor, (setter)Follow_set_cursor, "last change dealt with", NULL},
    {"epoch", (getter)Follow_get_epoch, NULL, "the publisher epoch last seen", NULL},
    {"head", (getter)Follow_get_head, NULL, "the head_seq loaded last", NULL},
    {"known", (getter)Follow_get_known, (setter)Follow_set_known, "names that interest and words cover", NULL},
    {"deadline", (getter)Follow_get_deadline, (setter)Follow_set_deadline, "CLOCK_MONOTONIC s; < 0 none", NULL},
    {"words", (getter)Follow_get_words, (setter)Follow_set_words, "wake-table words to sleep on, or None", NULL},
    {"interest", (getter)Follow_get_interest, (setter)Follow_set_interest, "None or a bytearray of wanted slots", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FollowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pricefeed._protocol._speedups.Follow",
    .tp_basicsize = sizeof(Follow),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Follow(feed, names, known, interest, quote, words, cursor, epoch, slice, spin, deadline)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Follow_init,
    .tp_dealloc = (destructor)Follow_dealloc,
    .tp_iter = Follow_iter,
    .tp_iternext = (iternextfunc)Follow_next,
    .tp_getset = Follow_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pricefeed._protocol._speedups", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&FeedType) < 0 || PyType_Ready(&FollowType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&FeedType);
    if (PyModule_AddObject(m, "Feed", (PyObject *)&FeedType) < 0) {
        Py_DECREF(&FeedType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FollowType);
    if (PyModule_AddObject(m, "Follow", (PyObject *)&FollowType) < 0) {
        Py_DECREF(&FollowType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
