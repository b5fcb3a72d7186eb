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
 *         stored (DAMAGED: an index outside the table, a price that is not finite). Callers
 *         word their own errors from the values handed back.
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

/* One seqlock copy of slot `index`, at most `tries` attempts: 1 when consistent, 0 when it
   met a write in progress every time (Rule 2). */
static inline int pf_core_read_slot(const pf_view *v, uint64_t index, double *price, uint64_t *time_ns,
                                    uint64_t *seq, int tries) {
    unsigned char *slot = pf_core_slot(v, index);
    uint64_t *lockp = (uint64_t *)(void *)(slot + PF_SLOT_LOCK);
    for (int t = 0; t < tries; t++) {
        /* Pairs with the release store of the even lock at the end of pf_core_write_slot(). */
        uint64_t l1 = PF__LOAD_ACQ(lockp);
        if (l1 & 1u) continue; /* a write is in progress */
        *price = pf__load_double((uint64_t *)(void *)(slot + PF_SLOT_PRICE));
        *time_ns = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_TIME));
        *seq = PF__LOAD((uint64_t *)(void *)(slot + PF_SLOT_SEQ));
        /* Pairs with the release fence right after pf_core_write_slot() made the lock odd: a
           copy that picked up any field of a newer write sees that write's lock below. */
        PF__ACQUIRE();
        if (PF__LOAD(lockp) == l1) return 1;
    }
    return 0;
}

enum { PF_READ_DAMAGED = -1, PF_READ_LAPPED = 0, PF_READ_GOT = 1 };

/* Change `seq` from the ring (section 7): PF_READ_GOT with *slot, *price, *time_ns filled;
   PF_READ_LAPPED when the record no longer (or does not yet) hold it; PF_READ_DAMAGED with
   the values found (Rule 3). *slot may be PF_SLOT_VOID: a change whose details were lost. */
static inline int pf_core_read_record(const pf_view *v, uint64_t seq, uint32_t *slot, double *price,
                                      uint64_t *time_ns) {
    unsigned char *rec = pf_core_record(v, seq);
    uint64_t *rseq = (uint64_t *)(void *)(rec + PF_REC_SEQ);
    if (PF__LOAD(rseq) != seq) return PF_READ_LAPPED;
    PF__ACQUIRE(); /* pairs with the release store of seq at the end of pf_core_write_record() */
    *slot = PF__LOAD((uint32_t *)(void *)(rec + PF_REC_SLOT));
    *price = pf__load_double((uint64_t *)(void *)(rec + PF_REC_PRICE));
    *time_ns = PF__LOAD((uint64_t *)(void *)(rec + PF_REC_TIME));
    PF__ACQUIRE(); /* pairs with the release fence after the 0 store in pf_core_write_record() */
    if (PF__LOAD(rseq) != seq) return PF_READ_LAPPED; /* overwritten while we copied it */
    if (((uint64_t)*slot >= v->capacity && *slot != PF_SLOT_VOID) || !isfinite(*price)) return PF_READ_DAMAGED;
    return PF_READ_GOT;
}

#endif /* PF_READ_H */
