/*
 * pf_view.h: a mapped segment as the protocol core sees it: where it is, and its geometry.
 *
 * The geometry (capacity, ring size) is the one validated when the segment was opened and
 * kept in the caller's own memory (layout.md, section 5, step 8): the core never reads it
 * from the segment again, so a damaged header cannot send an index outside the mapping.
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
} pf_view;

static inline pf_view pf_core_view(void *base, uint64_t capacity, uint64_t ring_size) {
    pf_view v;
    v.base = (unsigned char *)base;
    v.capacity = capacity;
    v.mask = ring_size - 1u;
    return v;
}

static inline uint64_t *pf_core_u64(const pf_view *v, uint64_t off) { return (uint64_t *)(void *)(v->base + off); }
static inline uint32_t *pf_core_u32(const pf_view *v, uint64_t off) { return (uint32_t *)(void *)(v->base + off); }

static inline unsigned char *pf_core_slot(const pf_view *v, uint64_t index) {
    return v->base + PF_SLOTS_OFFSET + index * PF_SLOT_SIZE;
}
/* The record that holds change `seq` while the ring still has it. */
static inline unsigned char *pf_core_record(const pf_view *v, uint64_t seq) {
    return v->base + PF_SLOTS_OFFSET + v->capacity * PF_SLOT_SIZE + (seq & v->mask) * PF_RECORD_SIZE;
}
static inline uint32_t *pf_core_wake_word(const pf_view *v, uint64_t word) {
    return pf_core_u32(v, PF_WAKE_OFFSET + 4u * word);
}

#endif /* PF_VIEW_H */
