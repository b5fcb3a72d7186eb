/*
 * pf_follow.h: one step of following a feed (docs/protocol.md, "The subscriber algorithm").
 *
 * A follower keeps a cursor (the last change it dealt with) and reads change cursor + 1 from
 * the ring while head_seq is ahead of it. pf_core_follow_step() does what needs no policy:
 * it loads the head, notices a new publisher, reads the next record, skips unwanted changes
 * (of other slots, or of other fields), and hands back either a change or a code saying what
 * the caller must decide (catch up after a lap, learn new symbols, report a lost change, wait,
 * stop). The codes are the ones the Python accelerator's Follow hands to Python, and pf_next()
 * builds on the same step, so the two followers cannot differ.
 *
 * Rules of this file:
 *
 * Rule 1. The epoch is loaded after the head: a new publisher bumps it before any change it
 *         makes, so its takeover is reported before its first change (repairs included).
 * Rule 2. A head below the cursor is reported (PF_F_BEHIND), never waited on: sequences only
 *         grow for a segment's life, and a wait would return at once, forever.
 * Rule 3. The cursor moves past a record only once the caller has what it needs for it: past
 *         a change handed back, an unwanted change, or a lost one (PF_F_VOID); not past a lap,
 *         a record of a slot the caller does not know yet, or damage.
 * Rule 4. At most PF_SKIP_CHECK unwanted records are skipped per step, so that a busy feed
 *         cannot keep a filtered follower from its deadline or its signals.
 * Rule 5. A change is wanted when its slot is (`interest`) and, with a field mask `on` other
 *         than 0, it changed one of those fields (`changed & on`); else it is skipped, whole.
 *
 * Part of the protocol core (clients/c/core/): no Python, no I/O.
 */
#ifndef PF_FOLLOW_H
#define PF_FOLLOW_H

#include "pf_read.h"

/* What a step hands back. 0 to 7 are the codes of the accelerator's Follow (which turns
   PF_F_CHANGE into a Quote, and deals with PF_F_DAMAGED and PF_F_SKIPPED itself). */
enum {
    PF_F_TIMEOUT = 0, /* (the caller's) the deadline or a wait slice passed with nothing wanted */
    PF_F_IDLE = 1,    /* nothing after the cursor, and the feed is not ended */
    PF_F_ENDED = 2,   /* the feed was ended and every change was read */
    PF_F_LAPPED = 3,  /* the record of cursor + 1 was overwritten: catch up, then set the cursor */
    PF_F_NEWSLOT = 4, /* the record names slot out->slot, at or beyond `known`: learn the new
                         symbols, set `known` (and the interest map), step again */
    PF_F_VOID = 5,    /* the record stands for a lost change; the cursor is already past it */
    PF_F_EPOCH = 6,   /* a new publisher took the feed over; st->epoch is updated */
    PF_F_BEHIND = 7,  /* head_seq (st->head) is below the cursor: damage (Rule 2) */
    PF_F_CHANGE = 8,  /* *out holds the next wanted change; the cursor is on it */
    PF_F_DAMAGED = 9, /* the record of out->seq holds values no writer stores (pf_read.h) */
    PF_F_SKIPPED = 10 /* PF_SKIP_CHECK unwanted records skipped: look at the time, step again */
};

#define PF_SKIP_CHECK 4096

typedef struct pf_step {
    uint64_t cursor; /* the last change dealt with */
    uint64_t known;  /* slots below this are known to the caller (names, interest map) */
    uint64_t head;   /* head_seq as loaded last */
    uint32_t epoch;  /* publisher_epoch as seen last */
} pf_step;

typedef struct pf_change {
    uint64_t seq;
    uint32_t slot;
    uint32_t changed; /* bit i: field i changed */
    uint64_t time_ns;
    uint64_t values[PF_MAX_FIELDS]; /* raw words, the view's fields of them (pf_view.h) */
} pf_change;

/* One step (see the codes above). `interest` (NULL: every slot is wanted) has a non-zero byte
   for each wanted slot below `interest_len`; slots at or beyond it are not wanted. `on` (0: any
   change) is a mask of fields: a change that changed none of them is not wanted (Rule 5). */
static inline int pf_core_follow_step(const pf_view *v, pf_step *st, const uint8_t *interest, uint64_t interest_len,
                                      uint32_t on, pf_change *out) {
    for (unsigned skipped = 0;;) {
        uint64_t h = pf_core_head(v); /* its acquire pairs with the release store of the head */
        st->head = h;
        if (h < st->cursor) return PF_F_BEHIND;
        uint32_t epoch = pf_core_epoch(v); /* after the head (Rule 1) */
        if (epoch != st->epoch) {
            st->epoch = epoch;
            return PF_F_EPOCH;
        }
        if (h == st->cursor) {
            if (!pf_core_ended(v)) return PF_F_IDLE;
            if (pf_core_head(v) != st->cursor) continue; /* a last change came before the end */
            return PF_F_ENDED;
        }
        uint64_t seq = st->cursor + 1u;
        out->seq = seq;
        if (h - st->cursor > v->mask + 1u) return PF_F_LAPPED;
        int got = pf_core_read_record(v, seq, &out->slot, &out->changed, &out->time_ns, out->values);
        if (got == PF_READ_LAPPED) return PF_F_LAPPED;
        if (got == PF_READ_DAMAGED) return PF_F_DAMAGED;
        if (out->slot == PF_SLOT_VOID) {
            st->cursor = seq;
            return PF_F_VOID;
        }
        if ((uint64_t)out->slot >= st->known) return PF_F_NEWSLOT;
        st->cursor = seq;
        if ((interest == NULL || ((uint64_t)out->slot < interest_len && interest[out->slot])) &&
            (on == 0 || (out->changed & on) != 0))
            return PF_F_CHANGE;
        if (++skipped == PF_SKIP_CHECK) return PF_F_SKIPPED;
    }
}

#endif /* PF_FOLLOW_H */
