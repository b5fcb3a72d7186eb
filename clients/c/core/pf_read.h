/*
 * pf_read.h: the reader's side of the protocol (docs/layout.md, sections 6 and 7): the words
 * of the header a subscriber watches, a slot through its seqlock, a record of the change ring.
 *
 * Rules of this file:
 *
 * Rule 1. A reader never writes a byte (its mapping may be PROT_READ) and never uses a value
 *         it did not copy out inside a consistent read.
 * Rule 2. A slot read is bounded: `tries` attempts, then the caller decides (a publisher can
 *         be descheduled, or die, in the middle of a write).
 * Rule 3. A record read says which of three things it found: the change (GOT), another change
 *         or one being written (LAPPED: the ring moved on), or values no writer could have
 *         stored (DAMAGED: an index outside the table, a f64 field that is not finite). Callers
 *         word their own errors from the values handed back.
 * Rule 4. Values are copied as raw 64-bit words, one atomic load each (pf_view.h says how a
 *         caller reads them by type); a slot's are checked for finiteness by the caller
 *         (pf_core_finite()), a record's here.
 *
 * Part of the protocol core (clients/c/core/): no Python, no I/O.
 */
#ifndef PF_READ_H
#define PF_READ_H

#include <math.h>

#include "pf_view.h"

/* head_seq; the acquire pairs with the release store in pf_core_store_head(). */
static inline uint64_t pf_core_head(const pf_view *v) { return PF__LOAD_ACQ(pf_core_u64(v, PF_OFF_HEAD_SEQ)); }

/* 1 once the feed was ended for good; the acquire pairs with the writer's release store of
   closed, which comes after its last head_seq. */
static inline int pf_core_ended(const pf_view *v) { return PF__LOAD_ACQ(pf_core_u32(v, PF_OFF_CLOSED)) != 0; }

/* slot_count; the acquire pairs with the release store in pf_core_store_slot_count(): the
   names and first values of the counted slots are complete. */
static inline uint32_t pf_core_slot_count(const pf_view *v) {
    return PF__LOAD_ACQ(pf_core_u32(v, PF_OFF_SLOT_COUNT));
}

static inline uint32_t pf_core_epoch(const pf_view *v) { return PF__LOAD(pf_core_u32(v, PF_OFF_PUBLISHER_EPOCH)); }

/* One seqlock copy of slot `index`, at most `tries` attempts: 1 when consistent (values[0 ..
   fields), *time_ns, *seq and *changed filled), 0 when it met a write in progress every time
   (Rule 2). */
static inline int pf_core_read_slot(const pf_view *v, uint64_t index, uint64_t *values, uint64_t *time_ns,
                                    uint64_t *seq, uint32_t *changed, int tries) {
    unsigned char *slot = pf_core_slot(v, index);
    uint64_t *lockp = (uint64_t *)(void *)(slot + PF_SLOT_LOCK);
    const uint64_t *vals = (const uint64_t *)(const void *)(slot + PF_SLOT_VALUES);
    uint32_t n = v->fields;
    for (int t = 0; t < tries; t++) {
        /* Pairs with the release store of the even lock at the end of pf_core_write_slot(). */
        uint64_t l1 = PF__LOAD_ACQ(lockp);
        if (l1 & 1u) continue; /* a write is in progress */
        *seq = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_SEQ));
        *time_ns = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_TIME));
        *changed = PF__LOAD((uint32_t *)(void *)(slot + PF_SLOT_CHANGED));
        for (uint32_t k = 0; k < n; k++) values[k] = PF__LOAD(&vals[k]);
        /* Pairs with the release fence right after pf_core_write_slot() made the lock odd: a
           copy that picked up any field of a newer write sees that write's lock below. */
        PF__ACQUIRE();
        if (PF__LOAD(lockp) == l1) return 1;
    }
    return 0;
}

enum { PF_READ_DAMAGED = -1, PF_READ_LAPPED = 0, PF_READ_GOT = 1 };

/* Change `seq` from the ring (section 7): PF_READ_GOT with *slot, *changed, *time_ns and
   values[0 .. fields) filled; PF_READ_LAPPED when the record no longer (or does not yet) hold
   it; PF_READ_DAMAGED with the values found (Rule 3): a slot outside the table that is not
   PF_SLOT_VOID, or a f64 field that is not finite. *slot may be PF_SLOT_VOID: a change whose
   details were lost. */
static inline int pf_core_read_record(const pf_view *v, uint64_t seq, uint32_t *slot, uint32_t *changed,
                                      uint64_t *time_ns, uint64_t *values) {
    unsigned char *rec = pf_core_record(v, seq);
    uint64_t *rseq = (uint64_t *)(void *)(rec + PF_REC_SEQ);
    const uint64_t *vals = (const uint64_t *)(const void *)(rec + PF_REC_VALUES);
    uint32_t n = v->fields;
    if (PF__LOAD(rseq) != seq) return PF_READ_LAPPED;
    PF__ACQUIRE(); /* pairs with the release store of seq at the end of pf_core_write_record() */
    *slot = PF__LOAD((uint32_t *)(void *)(rec + PF_REC_SLOT));
    *changed = PF__LOAD((uint32_t *)(void *)(rec + PF_REC_CHANGED));
    *time_ns = PF__LOAD((uint64_t *)(void *)(rec + PF_REC_TIME));
    for (uint32_t k = 0; k < n; k++) values[k] = PF__LOAD(&vals[k]);
    PF__ACQUIRE(); /* pairs with the release fence after the 0 store in pf_core_write_record() */
    if (PF__LOAD(rseq) != seq) return PF_READ_LAPPED; /* overwritten while we copied it */
    if (((uint64_t)*slot >= v->capacity && *slot != PF_SLOT_VOID) || !pf_core_finite(v, values))
        return PF_READ_DAMAGED;
    return PF_READ_GOT;
}

#endif /* PF_READ_H */
