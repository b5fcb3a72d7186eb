/*
 * pricefeed._protocol._speedups: Python bindings over the protocol's C core.
 *
 * The protocol itself (slot and record writes and reads, head and wake words, futex wait and
 * wake, the follow step) is in clients/c/core/, the same code the published single-file header
 * clients/c/pricefeed.h is made of; its layout constants are generated from
 * pricefeed/_protocol/layout.py into clients/c/core/pf_layout.h (scripts/gen_c.py). This file
 * knows no offset and has no protocol logic: it converts arguments, maps outcomes to Python
 * (errors, with the BadSegment class it is given; Quote objects), releases the GIL around
 * sleeps and checks signals. setup.py points the compiler at clients/c/core.
 *
 * Optional: when this module is not built (no C compiler) or PRICEFEED_PURE is set, the pure
 * Python code runs instead, and the test suite runs against both. Builds on Linux, macOS and
 * FreeBSD; the futex waits exist on Linux only (elsewhere Follow sleeps through its `wait`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pf_core.h"

static inline PyObject *Py_NewRefCompat(PyObject *o) {
    Py_INCREF(o);
    return o;
}

/* The longest spin Subscriber.updates() accepts, in seconds: longer is a busy loop. */
#define MAX_SPIN 0.01
/* The longest single wait_head(): a caller that wants longer calls again. */
#define MAX_WAIT 86400.0

typedef struct {
    PyObject_HEAD
    pf_view view; /* view.base is NULL once closed */
    int spin_tries;
    int wake;                 /* 1: commit() and commit_many() make the wake-up calls themselves */
    unsigned long long woken; /* sleeps that a wake-up or a moved word ended */
    PyObject *bad_segment;
} Feed;

static int closed(Feed *f) {
    if (f->view.base == NULL) {
        PyErr_SetString(PyExc_ValueError, "the feed's mapping is closed");
        return 1;
    }
    return 0;
}

static PyObject *os_error(int e) {
    errno = e;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static int Feed_init(Feed *self, PyObject *args, PyObject *kw) {
    unsigned long long address, capacity, ring_size;
    const char *types;
    Py_ssize_t ntypes;
    PyObject *bad;
    int spin_tries, wake;
    static char *kwlist[] = {"address", "capacity", "ring_size", "types", "spin_tries", "bad_segment", "wake", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKy#iOp", kwlist, &address, &capacity, &ring_size, &types, &ntypes,
                                     &spin_tries, &bad, &wake))
        return -1;
    if (capacity < PF_MIN_CAPACITY || capacity > PF_MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity must be a whole number from %u to %u: capacity=%llu",
                     PF_MIN_CAPACITY, PF_MAX_CAPACITY, capacity);
        return -1;
    }
    if (ring_size < PF_MIN_RING || ring_size > PF_MAX_RING || (ring_size & (ring_size - 1))) {
        PyErr_Format(PyExc_ValueError, "ring size must be a power of 2 from %u to %u: ring_size=%llu", PF_MIN_RING,
                     PF_MAX_RING, ring_size);
        return -1;
    }
    if (ntypes < 1 || ntypes > (Py_ssize_t)PF_MAX_FIELDS) {
        PyErr_Format(PyExc_ValueError, "a schema has 1 to %u fields: got %zd types", PF_MAX_FIELDS, ntypes);
        return -1;
    }
    uint32_t f64_mask = 0;
    for (Py_ssize_t k = 0; k < ntypes; k++) {
        unsigned char t = (unsigned char)types[k];
        if (t != PF_TYPE_F64 && t != PF_TYPE_I64) {
            PyErr_Format(PyExc_ValueError, "field %zd has type %u; expected %u (f64) or %u (i64)", k, (unsigned)t,
                         PF_TYPE_F64, PF_TYPE_I64);
            return -1;
        }
        if (t == PF_TYPE_F64) f64_mask |= UINT32_C(1) << k;
    }
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "address must be the address of a mapped feed: address=0");
        return -1;
    }
    self->view = pf_core_view((void *)(uintptr_t)address, capacity, ring_size, (uint32_t)ntypes, f64_mask);
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
    (void)unused;
    self->view.base = NULL;
    Py_RETURN_NONE;
}

/* Value k of a schema as Python has it: a float (f64) or an int (i64). */
static inline PyObject *value_object(const pf_view *v, uint32_t k, uint64_t bits) {
    if ((v->f64_mask >> k) & 1u) return PyFloat_FromDouble(pf_core_f64(bits));
    return PyLong_FromLongLong((long long)pf_core_i64(bits));
}

/* The values tuple of a slot or a record: one item per field. */
static PyObject *values_tuple(const pf_view *v, const uint64_t *values) {
    uint32_t n = v->fields;
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    if (t == NULL) return NULL;
    for (uint32_t k = 0; k < n; k++) {
        PyObject *x = value_object(v, k, values[k]);
        if (x == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)k, x);
    }
    return t;
}

/* A tuple of `n` items made of new references, stolen (each may be NULL after a failure: then
   the rest are released and NULL is returned). */
static PyObject *steal_tuple(Py_ssize_t n, PyObject **items) {
    PyObject *t = NULL;
    int ok = 1;
    for (Py_ssize_t k = 0; k < n; k++) ok = ok && items[k] != NULL;
    if (ok) t = PyTuple_New(n);
    if (t == NULL) {
        for (Py_ssize_t k = 0; k < n; k++) Py_XDECREF(items[k]);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) PyTuple_SET_ITEM(t, k, items[k]);
    return t;
}

/* Python's Reading: (values, time_ns, seq, changed). */
/* A quote: an instance of `type` (the feed's Quote class, a tuple subclass) holding (symbol,
   values..., time_ns, seq, changed), made in place as the Python class's _build() would. */
static PyObject *new_quote(PyTypeObject *type, PyObject *symbol, const pf_view *v, const uint64_t *values,
                           uint64_t time_ns, uint64_t seq, uint32_t changed) {
    uint32_t n = v->fields;
    PyObject *q = type->tp_alloc(type, (Py_ssize_t)n + 4);
    if (q == NULL) return NULL;
#if PY_VERSION_HEX >= 0x030E0000
    ((PyTupleObject *)q)->ob_hash = -1; /* tuples cache their hash from 3.14; tp_alloc zeroed it */
#endif
    /* Until every item is set the tuple holds NULLs, which its traverse and dealloc skip. */
    PyTuple_SET_ITEM(q, 0, Py_NewRefCompat(symbol));
    for (uint32_t k = 0; k < n; k++) {
        PyObject *x = value_object(v, k, values[k]);
        if (x == NULL) goto fail;
        PyTuple_SET_ITEM(q, (Py_ssize_t)k + 1, x);
    }
    PyObject *tail[3];
    tail[0] = PyLong_FromUnsignedLongLong(time_ns);
    tail[1] = PyLong_FromUnsignedLongLong(seq);
    tail[2] = PyLong_FromUnsignedLong(changed);
    for (int k = 0; k < 3; k++) {
        if (tail[k] == NULL) {
            for (int j = 0; j < 3; j++) Py_XDECREF(tail[j]);
            goto fail;
        }
    }
    for (int k = 0; k < 3; k++) PyTuple_SET_ITEM(q, (Py_ssize_t)n + 1 + k, tail[k]);
    return q;
fail:
    Py_DECREF(q);
    return NULL;
}

static PyObject *reading(const pf_view *v, const uint64_t *values, uint64_t time_ns, uint64_t seq, uint32_t changed) {
    PyObject *items[4];
    items[0] = values_tuple(v, values);
    items[1] = PyLong_FromUnsignedLongLong(time_ns);
    items[2] = PyLong_FromUnsignedLongLong(seq);
    items[3] = PyLong_FromUnsignedLong(changed);
    return steal_tuple(4, items);
}

/* `values` (a tuple of the schema's values, checked by the caller) as raw words: PyFloat_AsDouble
   for a f64, PyLong_AsLongLong for an i64. -1 with an exception, before anything is written. */
static int convert_values(const pf_view *v, PyObject *values, uint64_t *out) {
    if (!PyTuple_Check(values) || PyTuple_GET_SIZE(values) != (Py_ssize_t)v->fields) {
        PyErr_Format(PyExc_TypeError, "values must be a tuple of %u values (one per field of the schema)", v->fields);
        return -1;
    }
    for (uint32_t k = 0; k < v->fields; k++) {
        PyObject *x = PyTuple_GET_ITEM(values, (Py_ssize_t)k);
        if ((v->f64_mask >> k) & 1u) {
            double d = PyFloat_CheckExact(x) ? PyFloat_AS_DOUBLE(x) : PyFloat_AsDouble(x);
            if (d == -1.0 && PyErr_Occurred()) return -1;
            out[k] = pf_core_f64_bits(d);
        } else {
            long long n = PyLong_AsLongLong(x);
            if (n == -1 && PyErr_Occurred()) return -1;
            out[k] = (uint64_t)n;
        }
    }
    return 0;
}

/* A changed mask: a u32. */
static int convert_changed(PyObject *x, uint32_t *out) {
    unsigned long c = PyLong_AsUnsignedLong(x);
    if (c == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (c > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "changed must be a mask of 32 bits: changed=%lu", c);
        return -1;
    }
    *out = (uint32_t)c;
    return 0;
}

static PyObject *Feed_commit(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* commit(index, values, changed, time_ns, seq): one change, whole (write, head, announce),
       and with `wake` its wake-up. */
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "commit(index, values, changed, time_ns, seq)");
        return NULL;
    }
    /* Convert first: a conversion may run Python code (which could close the feed). */
    uint64_t values[PF_MAX_FIELDS];
    uint32_t changed;
    uint64_t index = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    if (convert_values(&self->view, args[1], values) < 0 || convert_changed(args[2], &changed) < 0) return NULL;
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (index >= self->view.capacity) {
        PyErr_Format(PyExc_IndexError, "slot %llu is outside the table of %llu", (unsigned long long)index,
                     (unsigned long long)self->view.capacity);
        return NULL;
    }
    const pf_view *v = &self->view;
    pf_core_write_change(v, index, values, changed, time_ns, seq);
    pf_core_store_head(v, seq);
    pf_core_announce_slot(v, index);
    if (self->wake) {
        int e = pf_core_wake_slot(v, index);
        if (e) return os_error(e);
    }
    Py_RETURN_NONE;
}

/* commit_many() keeps a batch's converted changes here when they fit, else on the heap: per
   change, its slot, its changed mask, then its values. */
#define BATCH_WORDS 1024

static PyObject *Feed_commit_many(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* commit_many(changes, time_ns, first_seq, slot_count=-1): a batch, whole, then one head
       store, one announce and (with `wake`) the wake-ups. `changes` is a list of
       (slot, values, changed) tuples. Returns the set of wake-table words concerned. */
    if ((nargs != 3 && nargs != 4) || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "commit_many(list of (slot, values, changed), time_ns, first_seq, slot_count=-1)");
        return NULL;
    }
    PyObject *changes = args[0];
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    long long slot_count = -1;
    if (nargs == 4) {
        slot_count = PyLong_AsLongLong(args[3]);
        if (slot_count == -1 && PyErr_Occurred()) return NULL;
    }
    if (slot_count > (long long)self->view.capacity) {
        PyErr_Format(PyExc_ValueError, "slot_count must not exceed the capacity %llu: slot_count=%lld",
                     (unsigned long long)self->view.capacity, slot_count);
        return NULL;
    }
    /* Convert everything before writing anything (a conversion may run Python code, and a
       change refused halfway must leave the feed as it was). */
    const uint64_t stride = 2u + self->view.fields;
    Py_ssize_t n = PyList_GET_SIZE(changes);
    uint64_t local[BATCH_WORDS];
    uint64_t *batch = local;
    if ((uint64_t)n * stride > BATCH_WORDS) {
        batch = (uint64_t *)PyMem_Malloc((size_t)n * (size_t)stride * sizeof(uint64_t));
        if (batch == NULL) return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (k >= PyList_GET_SIZE(changes)) { /* a conversion's Python code shortened it */
            PyErr_SetString(PyExc_RuntimeError, "changes was modified during commit_many()");
            goto done;
        }
        PyObject *item = PyList_GET_ITEM(changes, k);
        uint64_t *at = batch + (uint64_t)k * stride;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "changes must be (slot, values, changed) tuples");
            goto done;
        }
        uint64_t index = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 0));
        if (PyErr_Occurred()) goto done;
        if (index >= self->view.capacity) {
            PyErr_Format(PyExc_IndexError, "slot %llu is outside the table of %llu", (unsigned long long)index,
                         (unsigned long long)self->view.capacity);
            goto done;
        }
        uint32_t changed;
        if (convert_values(&self->view, PyTuple_GET_ITEM(item, 1), at + 2) < 0 ||
            convert_changed(PyTuple_GET_ITEM(item, 2), &changed) < 0)
            goto done;
        at[0] = index;
        at[1] = changed;
    }
    if (closed(self)) goto done; /* the conversions are done: no Python code runs below */
    {
        const pf_view *v = &self->view;
        uint8_t words[PF_WAKE_WORDS];
        memset(words, 0, sizeof words);
        seq -= 1;
        for (Py_ssize_t k = 0; k < n; k++) {
            const uint64_t *at = batch + (uint64_t)k * stride;
            seq += 1;
            pf_core_write_change(v, at[0], at + 2, (uint32_t)at[1], time_ns, seq);
            words[at[0] & (PF_WAKE_WORDS - 1u)] = 1;
        }
        if (slot_count >= 0) pf_core_store_slot_count(v, (uint32_t)slot_count);
        if (n > 0) {
            pf_core_store_head(v, seq);
            pf_core_announce(v, words);
            if (self->wake) {
                int e = pf_core_wake_words(v, words);
                if (e) {
                    os_error(e);
                    goto done;
                }
            }
        }
        /* The words concerned, as the pure FeedWriter.commit_many returns them (for a caller
           that wakes them itself). */
        out = PySet_New(NULL);
        if (out == NULL || n == 0) goto done;
        for (unsigned w = 0; w < PF_WAKE_WORDS; w++) {
            if (!words[w]) continue;
            PyObject *x = PyLong_FromUnsignedLong(w);
            if (x == NULL || PySet_Add(out, x) < 0) {
                Py_XDECREF(x);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(x);
        }
    }
done:
    if (batch != local) PyMem_Free(batch);
    return out;
}

static PyObject *damaged_slot(Feed *f, uint64_t index, const uint64_t *values) {
    PyObject *t = values_tuple(&f->view, values);
    if (t != NULL) {
        PyErr_Format(f->bad_segment, "damaged slot %llu: a float field is %R, not finite", (unsigned long long)index,
                     t);
        Py_DECREF(t);
    }
    return NULL;
}

static PyObject *damaged_record(Feed *f, uint64_t seq, uint32_t slot, const uint64_t *values) {
    PyObject *t = values_tuple(&f->view, values);
    if (t != NULL) {
        PyErr_Format(f->bad_segment, "damaged ring record for change %llu: slot %u (table of %llu), values %R",
                     (unsigned long long)seq, slot, (unsigned long long)f->view.capacity, t);
        Py_DECREF(t);
    }
    return NULL;
}

static PyObject *Feed_read_slot(Feed *self, PyObject *arg) {
    /* (values, time_ns, seq, changed), or None when every try met a write in progress. */
    uint64_t index = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (index >= self->view.capacity) {
        PyErr_SetString(PyExc_IndexError, "slot outside the table");
        return NULL;
    }
    uint64_t values[PF_MAX_FIELDS], time_ns, seq;
    uint32_t changed;
    if (!pf_core_read_slot(&self->view, index, values, &time_ns, &seq, &changed, self->spin_tries)) Py_RETURN_NONE;
    if (!pf_core_finite(&self->view, values)) return damaged_slot(self, index, values);
    return reading(&self->view, values, time_ns, seq, changed);
}

static PyObject *Feed_read_quote(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* read_quote(index, symbol, quote): read_slot() as a quote of class `quote` (the feed's
       Quote class), or None when every try met a write in progress. */
    if (nargs != 3 || !PyType_Check(args[2]) || !PyType_IsSubtype((PyTypeObject *)args[2], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "read_quote(index, symbol, quote: a Quote class)");
        return NULL;
    }
    uint64_t index = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (index >= self->view.capacity) {
        PyErr_SetString(PyExc_IndexError, "slot outside the table");
        return NULL;
    }
    uint64_t values[PF_MAX_FIELDS], time_ns, seq;
    uint32_t changed;
    if (!pf_core_read_slot(&self->view, index, values, &time_ns, &seq, &changed, self->spin_tries)) Py_RETURN_NONE;
    if (!pf_core_finite(&self->view, values)) return damaged_slot(self, index, values);
    return new_quote((PyTypeObject *)args[2], args[1], &self->view, values, time_ns, seq, changed);
}

static PyObject *Feed_read_slots(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* read_slots(count, names=None, quote=None): read_slot() of slots [0, count), one try
       each; with `names` (a list of at least count symbols) and `quote` (the feed's Quote
       class), each as a quote, as read_quote() makes it. */
    PyObject *names = nargs >= 2 && args[1] != Py_None ? args[1] : NULL;
    PyObject *quote = nargs >= 3 && args[2] != Py_None ? args[2] : NULL;
    if (nargs < 1 || nargs > 3 || (names == NULL) != (quote == NULL) || (names && !PyList_CheckExact(names)) ||
        (quote && (!PyType_Check(quote) || !PyType_IsSubtype((PyTypeObject *)quote, &PyTuple_Type)))) {
        PyErr_SetString(PyExc_TypeError, "read_slots(count, names: list = None, quote: a Quote class = None)");
        return NULL;
    }
    uint64_t count = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    if (names && (uint64_t)PyList_GET_SIZE(names) < count) {
        PyErr_SetString(PyExc_IndexError, "fewer names than slots to read");
        return NULL;
    }
    if (count > self->view.capacity) {
        PyErr_SetString(PyExc_IndexError, "more slots than the table has");
        return NULL;
    }
    PyObject *out = PyList_New((Py_ssize_t)count);
    if (out == NULL) return NULL;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t values[PF_MAX_FIELDS], time_ns, seq;
        uint32_t changed;
        PyObject *x;
        if (self->view.base == NULL) { /* an allocation above may have run Python code that closed it */
            Py_DECREF(out);
            return closed(self), NULL;
        }
        if (!pf_core_read_slot(&self->view, i, values, &time_ns, &seq, &changed, 1)) {
            x = Py_NewRefCompat(Py_None);
        } else if (!pf_core_finite(&self->view, values)) {
            Py_DECREF(out);
            return damaged_slot(self, i, values);
        } else {
            x = quote ? new_quote((PyTypeObject *)quote, PyList_GET_ITEM(names, (Py_ssize_t)i), &self->view, values,
                                  time_ns, seq, changed)
                      : reading(&self->view, values, time_ns, seq, changed);
            if (x == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, x);
    }
    return out;
}

static PyObject *Feed_read_record(Feed *self, PyObject *arg) {
    /* (slot, values, time_ns, changed) of change `seq`, or None when lapped; BadSegment when
       damaged. */
    uint64_t seq = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || closed(self)) return NULL;
    uint32_t slot, changed;
    uint64_t time_ns, values[PF_MAX_FIELDS];
    int got = pf_core_read_record(&self->view, seq, &slot, &changed, &time_ns, values);
    if (got == PF_READ_DAMAGED) return damaged_record(self, seq, slot, values);
    if (got == PF_READ_LAPPED) Py_RETURN_NONE;
    PyObject *items[4];
    items[0] = PyLong_FromUnsignedLong(slot);
    items[1] = values_tuple(&self->view, values);
    items[2] = PyLong_FromUnsignedLongLong(time_ns);
    items[3] = PyLong_FromUnsignedLong(changed);
    return steal_tuple(4, items);
}

static double clamp_spin(double seconds) {
    if (!(seconds >= 0)) return 0; /* NaN too */
    return seconds > MAX_SPIN ? MAX_SPIN : seconds;
}

static PyObject *Feed_spin(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* spin(cursor, seconds): poll the head for up to `seconds` (at most 10 ms); True once it
       passes `cursor`. With the GIL held: a thread that closed the feed meanwhile would unmap
       the memory read here. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "spin(cursor, seconds)");
        return NULL;
    }
    uint64_t cursor = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    double seconds = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred() || closed(self)) return NULL;
    return PyBool_FromLong(pf_core_spin_head(&self->view, cursor, clamp_spin(seconds)));
}

/* The wake-table words of a `words` argument (None: the header's word) into `w`. */
static int parse_words(PyObject *words, pf_waiter *w) {
    w->nwords = 0;
    if (words == NULL || words == Py_None) return 0;
    if (!PyTuple_Check(words) || PyTuple_GET_SIZE(words) < 1 || PyTuple_GET_SIZE(words) > PF_WAIT_WORDS_MAX) {
        PyErr_Format(PyExc_ValueError, "words must be None or a tuple of 1 to %d wake-table indices",
                     PF_WAIT_WORDS_MAX);
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(words);
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned long long x = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(words, k));
        if (PyErr_Occurred()) return -1;
        if (x >= PF_WAKE_WORDS) {
            PyErr_Format(PyExc_IndexError, "wake-table index must be below %u: %llu", PF_WAKE_WORDS, x);
            return -1;
        }
        w->words[k] = (uint32_t)x;
    }
    w->nwords = (uint32_t)n;
    return 0;
}

/* Sleep until the head passes `cursor` (1), the feed is ended with nothing new (2), or
   `seconds` pass (0); -1 with an exception. The core arms (words before head) and sleeps;
   here: the GIL released while asleep, signals, and a feed closed between rounds. */
static int feed_wait(Feed *self, uint64_t cursor, double seconds, PyObject *words) {
    if (!(seconds >= 0)) seconds = 0; /* NaN too */
    if (seconds > MAX_WAIT) seconds = MAX_WAIT;
#ifdef __linux__
    pf_waiter w;
    if (parse_words(words, &w) < 0) return -1;
    int64_t deadline = pf__mono_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        /* Every round starts from the view: a signal handler (run by PyErr_CheckSignals below)
           or another thread may have closed the feed since the last one. */
        if (closed(self)) return -1;
        pf_view v = self->view;
        int armed = pf_core_wait_arm(&v, cursor, &w);
        if (armed == PF_ARM_MOVED) return 1;
        if (armed == PF_ARM_ENDED) return 2;
        if (pf__mono_ns() >= deadline) return 0;
        int e;
        Py_BEGIN_ALLOW_THREADS
        e = pf_core_wait_sleep(&v, &w, deadline);
        Py_END_ALLOW_THREADS
        if (e == 0) {
            self->woken++;
            continue;
        }
        if (e == ETIMEDOUT) continue; /* the loop sees the time is up */
        if (e == EINTR) {
            if (PyErr_CheckSignals() < 0) return -1;
            continue;
        }
        os_error(e);
        return -1;
    }
#else
    (void)self;
    (void)cursor;
    (void)words;
    PyErr_SetString(PyExc_OSError, "wait_head needs Linux futexes");
    return -1;
#endif
}

static PyObject *Feed_wait_head(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    /* wait_head(cursor, seconds[, words]): 1 once the head passes `cursor`, 2 when the feed is
       ended with nothing new, 0 when `seconds` pass. It sleeps on the header's word, or with
       `words` (a tuple of wake-table indices) on those words with futex_waitv. A signal
       (Ctrl-C) ends the wait with its exception. */
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait_head(cursor, seconds[, words])");
        return NULL;
    }
    uint64_t cursor = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) return NULL;
    double seconds = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    int code = feed_wait(self, cursor, seconds, nargs == 3 ? args[2] : NULL);
    return code < 0 ? NULL : PyLong_FromLong(code);
}

static PyObject *Feed_get_woken(Feed *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->woken);
}

static PyGetSetDef Feed_getset[] = {
    {"woken", (getter)Feed_get_woken, NULL, "sleeps in wait_head() that a wake-up or a moved word ended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Feed_commit_merge(Feed *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef Feed_methods[] = {
    {"wait_head", (PyCFunction)(void (*)(void))Feed_wait_head, METH_FASTCALL, "Sleep until the head moves."},
    {"commit", (PyCFunction)(void (*)(void))Feed_commit, METH_FASTCALL, "One change, whole, and its wake-up."},
    {"commit_many", (PyCFunction)(void (*)(void))Feed_commit_many, METH_FASTCALL, "A batch, whole, and its wake-ups."},
    {"commit_merge", (PyCFunction)(void (*)(void))Feed_commit_merge, METH_FASTCALL,
     "merge(), then commit() of the record it makes: the record, current (no change) or None."},
    {"read_slot", (PyCFunction)Feed_read_slot, METH_O, "(values, time_ns, seq, changed) or None."},
    {"read_slots", (PyCFunction)(void (*)(void))Feed_read_slots, METH_FASTCALL,
     "read_slot() of slots [0, n), one try each; as quotes, given names and the Quote class."},
    {"read_quote", (PyCFunction)(void (*)(void))Feed_read_quote, METH_FASTCALL, "read_slot() as a Quote, or None."},
    {"read_record", (PyCFunction)Feed_read_record, METH_O, "(slot, values, time_ns, changed) or None when lapped."},
    {"spin", (PyCFunction)(void (*)(void))Feed_spin, METH_FASTCALL, "Poll the head; True once it moves."},
    {"close", (PyCFunction)Feed_close, METH_NOARGS, "Forget the mapping (before it is unmapped)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pricefeed._protocol._speedups.Feed",
    .tp_basicsize = sizeof(Feed),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Feed(address, capacity, ring_size, types, spin_tries, bad_segment, wake)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Feed_init,
    .tp_dealloc = (destructor)Feed_dealloc,
    .tp_methods = Feed_methods,
    .tp_getset = Feed_getset,
};

/* ---------------------------------------------------------------------------------------------
 * Follow: pricefeed/_protocol/follow.py's Follow loop over the core's follow step
 * (clients/c/core/pf_follow.h). Each next() returns the next wanted change as an instance of
 * `quote` (the feed's Quote class: a tuple subclass whose items are symbol, the values,
 * time_ns, seq and the changed mask), or one of the step's codes (module constants F_TIMEOUT
 * ... F_BEHIND; follow.py documents them) for the caller to deal with. The caller owns `names`
 * (a list it appends to), `known` (how many of them `interest` and `words` were made for),
 * `interest` (None, or a bytearray with a non-zero byte per wanted slot), `on` (a mask of
 * fields of which a wanted change changed one; 0: any), and may set cursor, deadline, known,
 * interest, words, on and block.
 *
 * When nothing is new (and `block` is true): the deadline, a bounded spin, then one sleep of at
 * most `slice` seconds: on the wake words themselves when `futex` is true (the caller's wait
 * backend said they are kernel futex words in this address space), else through
 * wait(cursor, seconds, words) -> 0 (time passed), 1 (woken), 2 (ended).
 */
typedef struct {
    PyObject_HEAD
    Feed *feed;
    PyObject *names;    /* list of str */
    PyObject *interest; /* None or bytearray */
    PyObject *quote;    /* the Quote class: a subclass of tuple */
    PyObject *words;    /* None or tuple of wake-table indices */
    PyObject *wait;     /* None or wait(cursor, seconds, words) */
    pf_step st;
    uint32_t on;                  /* a mask of fields; 0: every change is wanted */
    double slice, spin, deadline; /* deadline: CLOCK_MONOTONIC seconds; < 0 none */
    int futex, block;
} Follow;

static double mono_now(void) { return (double)pf__mono_ns() / 1e9; }

static int passed(double deadline) { return deadline >= 0 && mono_now() >= deadline; }

static PyObject *code(int c) { return PyLong_FromLong(c); }

/* The Quote of a change, made as tuple.__new__(quote, items) makes it but with no tuple in
   between: allocated as an instance of `quote` (a tuple subclass, as structseq types are) and
   filled in place: (symbol, *values, time_ns, seq, changed). */
static PyObject *make_quote(Follow *self, const pf_view *v, const pf_change *c) {
    if ((Py_ssize_t)c->slot >= PyList_GET_SIZE(self->names)) {
        PyErr_SetString(PyExc_RuntimeError, "Follow.known is beyond its names");
        return NULL;
    }
    return new_quote((PyTypeObject *)self->quote, PyList_GET_ITEM(self->names, c->slot), v, c->values, c->time_ns,
                     c->seq, c->changed);
}

/* The caller's wait(cursor, seconds, words): its result, or -1 with an exception. */
static int call_wait(Follow *self, double seconds) {
    PyObject *r = PyObject_CallFunction(self->wait, "KdO", (unsigned long long)self->st.cursor, seconds,
                                        self->words ? self->words : Py_None);
    if (r == NULL) return -1;
    long c = PyLong_AsLong(r);
    Py_DECREF(r);
    if (c == -1 && PyErr_Occurred()) return -1;
    return (int)c;
}

static PyObject *Follow_next(Follow *self) {
    Feed *f = self->feed;
    if (f == NULL) {
        PyErr_SetString(PyExc_ValueError, "Follow was not initialised");
        return NULL;
    }
    for (;;) {
        /* Every round starts from the view: Python code run below (signal handlers, `wait`)
           may have closed the feed, or set interest. */
        if (closed(f)) return NULL;
        pf_view v = f->view;
        const uint8_t *interest = NULL;
        uint64_t interest_len = 0;
        if (self->interest != Py_None) {
            interest = (const uint8_t *)PyByteArray_AS_STRING(self->interest);
            interest_len = (uint64_t)PyByteArray_GET_SIZE(self->interest);
        }
        pf_change c;
        int got = pf_core_follow_step(&v, &self->st, interest, interest_len, self->on, &c);
        if (got == PF_F_CHANGE) return make_quote(self, &v, &c);
        if (got == PF_F_DAMAGED) return damaged_record(f, c.seq, c.slot, c.values);
        if (got == PF_F_SKIPPED) { /* a feed kept just ahead of us must not hold these off */
            if (passed(self->deadline)) return code(PF_F_TIMEOUT);
            if (PyErr_CheckSignals() < 0) return NULL;
            continue;
        }
        if (got != PF_F_IDLE) return code(got);
        /* Nothing new, and not ended. */
        if (!self->block) return code(PF_F_IDLE);
        double limit = self->slice;
        if (self->deadline >= 0) {
            double left = self->deadline - mono_now();
            if (left <= 0) return code(PF_F_TIMEOUT);
            if (left < limit) limit = left;
        }
        if (self->spin > 0 && pf_core_spin_head(&v, self->st.cursor, clamp_spin(self->spin))) continue;
        int woke = self->futex ? feed_wait(f, self->st.cursor, limit, self->words) : call_wait(self, limit);
        if (woke < 0) return NULL;
        if (woke == 0) return code(PF_F_TIMEOUT);
        /* 1: the head may have moved; 2: ended: both are seen by the next step */
    }
}

static int Follow_init(Follow *self, PyObject *args, PyObject *kw) {
    PyObject *feed, *names, *interest, *quote, *words, *wait = Py_None;
    unsigned long long cursor, known;
    unsigned int epoch;
    unsigned long on = 0;
    double slice, spin, deadline;
    int futex = 1;
    static char *kwlist[] = {"feed",  "names",    "known", "interest", "quote", "words", "cursor", "epoch",
                             "slice", "spin",     "deadline", "wait", "futex", "on",    NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!KOOOKIddd|Opk", kwlist, &FeedType, &feed, &PyList_Type, &names,
                                     &known, &interest, &quote, &words, &cursor, &epoch, &slice, &spin, &deadline,
                                     &wait, &futex, &on))
        return -1;
    if (!PyType_Check(quote) || !PyType_IsSubtype((PyTypeObject *)quote, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "quote must be the feed's Quote class (a subclass of tuple)");
        return -1;
    }
    /* A Quote class of another schema would make quotes of the wrong length. */
    PyObject *qnames = PyObject_GetAttrString(quote, "_names");
    if (qnames == NULL) {
        PyErr_Clear();
    } else {
        Py_ssize_t qn = PyObject_Length(qnames);
        Py_DECREF(qnames);
        if (qn < 0) return -1;
        if (qn != (Py_ssize_t)((Feed *)feed)->view.fields) {
            PyErr_Format(PyExc_ValueError, "quote is the Quote class of a schema of %zd field(s); the feed has %u", qn,
                         ((Feed *)feed)->view.fields);
            return -1;
        }
    }
    if (known > (unsigned long long)PyList_GET_SIZE(names)) {
        PyErr_SetString(PyExc_ValueError, "known is beyond names");
        return -1;
    }
    if (interest != Py_None && !PyByteArray_Check(interest)) {
        PyErr_SetString(PyExc_TypeError, "interest must be None or a bytearray");
        return -1;
    }
    if (wait != Py_None && !PyCallable_Check(wait)) {
        PyErr_SetString(PyExc_TypeError, "wait must be None or wait(cursor, seconds, words)");
        return -1;
    }
    if (!futex && wait == Py_None) {
        PyErr_SetString(PyExc_TypeError, "wait(cursor, seconds, words) is needed when futex is False");
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
    Py_INCREF(wait);
    Py_XSETREF(self->wait, wait);
    self->st.cursor = cursor;
    self->st.known = known;
    self->st.epoch = epoch;
    self->st.head = 0;
    self->on = (uint32_t)on;
    self->slice = slice;
    self->spin = spin;
    self->deadline = deadline;
    self->futex = futex;
    self->block = 1;
    return 0;
}

static void Follow_dealloc(Follow *self) {
    Py_XDECREF(self->feed);
    Py_XDECREF(self->names);
    Py_XDECREF(self->interest);
    Py_XDECREF(self->quote);
    Py_XDECREF(self->words);
    Py_XDECREF(self->wait);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Follow_iter(PyObject *self) { return Py_NewRefCompat(self); }

static PyObject *Follow_get_cursor(Follow *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->st.cursor);
}
static int Follow_set_cursor(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cursor cannot be deleted");
        return -1;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(x);
    if (PyErr_Occurred()) return -1;
    self->st.cursor = n;
    return 0;
}
static PyObject *Follow_get_epoch(Follow *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLong(self->st.epoch);
}
static PyObject *Follow_get_head(Follow *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->st.head);
}
static PyObject *Follow_get_known(Follow *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->st.known);
}
static int Follow_set_known(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "known cannot be deleted");
        return -1;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(x);
    if (PyErr_Occurred()) return -1;
    if (self->names == NULL || n > (unsigned long long)PyList_GET_SIZE(self->names)) {
        PyErr_SetString(PyExc_ValueError, "known is beyond names");
        return -1;
    }
    self->st.known = n;
    return 0;
}
static PyObject *Follow_get_deadline(Follow *self, void *c) {
    (void)c;
    return PyFloat_FromDouble(self->deadline);
}
static int Follow_set_deadline(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "deadline cannot be deleted");
        return -1;
    }
    double d = PyFloat_AsDouble(x);
    if (PyErr_Occurred()) return -1;
    self->deadline = d;
    return 0;
}
static PyObject *Follow_get_words(Follow *self, void *c) {
    (void)c;
    return Py_NewRefCompat(self->words ? self->words : Py_None);
}
static int Follow_set_words(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) x = Py_None;
    Py_INCREF(x);
    Py_XSETREF(self->words, x);
    return 0;
}
static PyObject *Follow_get_interest(Follow *self, void *c) {
    (void)c;
    return Py_NewRefCompat(self->interest ? self->interest : Py_None);
}
static int Follow_set_interest(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) x = Py_None;
    if (x != Py_None && !PyByteArray_Check(x)) {
        PyErr_SetString(PyExc_TypeError, "interest must be None or a bytearray");
        return -1;
    }
    Py_INCREF(x);
    Py_XSETREF(self->interest, x);
    return 0;
}
static PyObject *Follow_get_on(Follow *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLong(self->on);
}
static int Follow_set_on(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "on cannot be deleted");
        return -1;
    }
    unsigned long m = PyLong_AsUnsignedLongMask(x);
    if (m == (unsigned long)-1 && PyErr_Occurred()) return -1;
    self->on = (uint32_t)m;
    return 0;
}
static PyObject *Follow_get_block(Follow *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->block);
}
static int Follow_set_block(Follow *self, PyObject *x, void *c) {
    (void)c;
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "block cannot be deleted");
        return -1;
    }
    int b = PyObject_IsTrue(x);
    if (b < 0) return -1;
    self->block = b;
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
    {"on", (getter)Follow_get_on, (setter)Follow_set_on, "a mask of fields a wanted change changed one of; 0: any",
     NULL},
    {"block", (getter)Follow_get_block, (setter)Follow_set_block, "False: next() returns F_IDLE instead of waiting",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FollowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pricefeed._protocol._speedups.Follow",
    .tp_basicsize = sizeof(Follow),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Follow(feed, names, known, interest, quote, words, cursor, epoch, slice, spin, deadline, wait=None, "
              "futex=True, on=0)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Follow_init,
    .tp_dealloc = (destructor)Follow_dealloc,
    .tp_iter = Follow_iter,
    .tp_iternext = (iternextfunc)Follow_next,
    .tp_getset = Follow_getset,
};

/* The record after setting `fields` (name -> value) over `current` (a tuple) into *out, and
   the mask of the fields that differ into *changed: 1. `spec` maps each name to its position
   for a f64 field, to ~position for an i64 one. 0 (nothing made) for anything but a known name
   with a value of its field's own type (a finite float; an int in the i64 range): the caller
   then checks in full. -1 with an exception set. writer.merge() is the reference. */
static int merge_into(PyObject *current, PyObject *fields, PyObject *spec, PyObject **out, unsigned long *changed) {
    if (!PyTuple_CheckExact(current) || !PyDict_CheckExact(fields) || !PyDict_CheckExact(spec)) {
        PyErr_SetString(PyExc_TypeError, "merge(current: tuple, fields: dict, spec: dict)");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(current);
    if (n > PF_MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "merge: more values than a schema has fields");
        return -1;
    }
    PyObject *made = PyTuple_New(n);
    if (made == NULL) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(current, i);
        Py_INCREF(item);
        PyTuple_SET_ITEM(made, i, item);
    }
    unsigned long mask = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        PyObject *where = PyDict_GetItemWithError(spec, key);
        if (where == NULL) {
            if (PyErr_Occurred()) goto fail;
            goto other;
        }
        long k = PyLong_AsLong(where);
        if (k == -1 && PyErr_Occurred()) goto fail;
        int is_float = k >= 0;
        if (!is_float) k = ~k;
        if (k >= n) goto other;
        PyObject *old = PyTuple_GET_ITEM(current, k);
        if (is_float) {
            if (!PyFloat_CheckExact(value)) goto other;
            double d = PyFloat_AS_DOUBLE(value);
            if (!isfinite(d)) goto other;
            if (PyFloat_CheckExact(old) && PyFloat_AS_DOUBLE(old) == d) continue; /* 0.0 == -0.0 */
        } else {
            if (!PyLong_CheckExact(value)) goto other;
            int overflow;
            long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow) goto other;
            if (x == -1 && PyErr_Occurred()) goto fail;
            if (PyLong_CheckExact(old)) {
                long long y = PyLong_AsLongLongAndOverflow(old, &overflow);
                if (!overflow && y == x) continue;
            }
        }
        mask |= 1ul << k;
        PyObject *prev = PyTuple_GET_ITEM(made, k);
        Py_INCREF(value);
        PyTuple_SET_ITEM(made, k, value);
        Py_DECREF(prev);
    }
    *out = made;
    *changed = mask;
    return 1;
other:
    Py_DECREF(made);
    return 0;
fail:
    Py_DECREF(made);
    return -1;
}

/* merge(current, fields, spec) -> (values, changed) or None: writer.merge(), in one pass. */
static PyObject *merge(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "merge(current: tuple, fields: dict, spec: dict)");
        return NULL;
    }
    PyObject *out;
    unsigned long changed;
    int got = merge_into(args[0], args[1], args[2], &out, &changed);
    if (got < 0) return NULL;
    if (got == 0) Py_RETURN_NONE;
    return Py_BuildValue("(Nk)", out, changed);
}

/* commit_merge(index, current, fields, spec, time_ns, seq): writer.commit_merge(), the
   publisher's common case in one call: merge(), then commit() of the record it makes when
   a field differs. Returns that record (committed), `current` itself (nothing differs:
   nothing written), or None (merge() could not say: nothing written). */
static PyObject *Feed_commit_merge(Feed *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "commit_merge(index, current, fields, spec, time_ns, seq)");
        return NULL;
    }
    PyObject *out;
    unsigned long changed;
    int got = merge_into(args[1], args[2], args[3], &out, &changed);
    if (got < 0) return NULL;
    if (got == 0) Py_RETURN_NONE;
    if (changed == 0) {
        Py_DECREF(out);
        Py_INCREF(args[1]);
        return args[1];
    }
    /* As commit(), without making and parsing its arguments again. */
    uint64_t values[PF_MAX_FIELDS];
    uint64_t index = PyLong_AsUnsignedLongLong(args[0]);
    uint64_t time_ns = PyErr_Occurred() ? 0 : PyLong_AsUnsignedLongLong(args[4]);
    uint64_t seq = PyErr_Occurred() ? 0 : PyLong_AsUnsignedLongLong(args[5]);
    if (PyErr_Occurred() || convert_values(&self->view, out, values) < 0 || closed(self)) {
        Py_DECREF(out);
        return NULL;
    }
    const pf_view *v = &self->view;
    if (index >= v->capacity) {
        Py_DECREF(out);
        PyErr_Format(PyExc_IndexError, "slot %llu is outside the table of %llu", (unsigned long long)index,
                     (unsigned long long)v->capacity);
        return NULL;
    }
    pf_core_write_change(v, index, values, (uint32_t)changed, time_ns, seq);
    pf_core_store_head(v, seq);
    pf_core_announce_slot(v, index);
    if (self->wake) {
        int e = pf_core_wake_slot(v, index);
        if (e) {
            Py_DECREF(out);
            return os_error(e);
        }
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"merge", (PyCFunction)(void (*)(void))merge, METH_FASTCALL, "writer.merge() in one pass, in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pricefeed._protocol._speedups", "Python bindings over the pricefeed protocol's C core.",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

static int add_type(PyObject *m, const char *name, PyTypeObject *type) {
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&FeedType) < 0 || PyType_Ready(&FollowType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* The follow step's codes, so that Python can hold its own equal to them. */
    static const struct {
        const char *name;
        int value;
    } codes[] = {
        {"F_TIMEOUT", PF_F_TIMEOUT}, {"F_IDLE", PF_F_IDLE}, {"F_ENDED", PF_F_ENDED}, {"F_LAPPED", PF_F_LAPPED},
        {"F_NEWSLOT", PF_F_NEWSLOT}, {"F_VOID", PF_F_VOID}, {"F_EPOCH", PF_F_EPOCH}, {"F_BEHIND", PF_F_BEHIND},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (PyModule_AddIntConstant(m, codes[i].name, codes[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    /* What this build was made from: accel.py refuses a build of another layout. */
    if (PyModule_AddStringConstant(m, "LAYOUT_DIGEST", PF_LAYOUT_DIGEST) < 0 || add_type(m, "Feed", &FeedType) < 0 ||
        add_type(m, "Follow", &FollowType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
