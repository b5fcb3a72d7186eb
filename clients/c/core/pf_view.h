/*
 * pf_view.h: a mapped segment as the protocol core sees it: where it is, and its geometry.
 *
 * The geometry (capacity, ring size, the schema's field count and types) is the one validated
 * when the segment was opened and kept in the caller's own memory (layout.md, section 5,
 * step 8): the core never reads it from the segment again, so a damaged header cannot send an
 * index outside the mapping. The sizes and offsets that follow from it are computed once, here,
 * with pf_layout.h's functions.
 *
 * Values travel as raw 64-bit words (uint64_t values[PF_MAX_FIELDS]): the bits of a double for
 * a f64 field (bit i of f64_mask set), of an int64_t for an i64 field; the caller interprets
 * them by type (pf_core_f64(), pf_core_i64()).
 *
 * Part of the protocol core (clients/c/core/): no Python, no I/O.
 */
#ifndef PF_VIEW_H
#define PF_VIEW_H

#include "pf_layout.h"
#include "pf_ordering.h"

typedef struct pf_view {
    unsigned char *base; /* the segment's first byte */
    uint64_t capacity;   /* slots in the slot table */
    uint64_t mask;       /* ring_size - 1; the ring size is a power of two */
    uint32_t fields;     /* fields in the schema: 1 to PF_MAX_FIELDS */
    uint32_t f64_mask;   /* bit i: field i is f64 (else i64) */
    uint64_t slot_size, record_size, slots_offset, ring_offset; /* from pf_layout.h's functions */
} pf_view;

/* `fields` must be 1 to PF_MAX_FIELDS (the caller validated the schema); bits of `f64_mask` at
   or above `fields` are ignored. */
static inline pf_view pf_core_view(void *base, uint64_t capacity, uint64_t ring_size, uint32_t fields,
                                   uint32_t f64_mask) {
    pf_view v;
    v.base = (unsigned char *)base;
    v.capacity = capacity;
    v.mask = ring_size - 1u;
    v.fields = fields;
    v.f64_mask = fields >= 32u ? f64_mask : f64_mask & ((UINT32_C(1) << fields) - 1u);
    v.slot_size = pf_slot_size(fields);
    v.record_size = pf_record_size(fields);
    v.slots_offset = pf_slots_offset((uint32_t)capacity);
    v.ring_offset = pf_ring_offset((uint32_t)capacity, fields);
    return v;
}

static inline uint64_t *pf_core_u64(const pf_view *v, uint64_t off) { return (uint64_t *)(void *)(v->base + off); }
static inline uint32_t *pf_core_u32(const pf_view *v, uint64_t off) { return (uint32_t *)(void *)(v->base + off); }

/* The symbol table's entry of slot `index`: PF_SYMBOL_FIELD bytes, NUL-padded; written once,
   before slot_count covers the slot (so it needs no atomic access). */
static inline char *pf_core_symbol(const pf_view *v, uint64_t index) {
    return (char *)(v->base + PF_SYMBOLS_OFFSET + index * PF_SYMBOL_FIELD);
}
static inline unsigned char *pf_core_slot(const pf_view *v, uint64_t index) {
    return v->base + v->slots_offset + index * v->slot_size;
}
/* The record that holds change `seq` while the ring still has it. */
static inline unsigned char *pf_core_record(const pf_view *v, uint64_t seq) {
    return v->base + v->ring_offset + (seq & v->mask) * v->record_size;
}
static inline uint32_t *pf_core_wake_word(const pf_view *v, uint64_t word) {
    return pf_core_u32(v, PF_WAKE_OFFSET + 4u * word);
}

/* A value word as its type: the bits of a double (f64), or of an int64_t (i64). */
static inline double pf_core_f64(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}
static inline int64_t pf_core_i64(uint64_t bits) { return (int64_t)bits; }
static inline uint64_t pf_core_f64_bits(double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

/* 1 when every f64 value of `values` is finite (its exponent is not all ones): a publisher
   never stores a NaN or an infinity, so a reader that finds one found damage. */
static inline int pf_core_finite(const pf_view *v, const uint64_t *values) {
    const uint64_t exp = UINT64_C(0x7ff0000000000000);
    for (uint32_t k = 0, m = v->f64_mask; m != 0; k++, m >>= 1)
        if ((m & 1u) && (values[k] & exp) == exp) return 0;
    return 1;
}

#endif /* PF_VIEW_H */
