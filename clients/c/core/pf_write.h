/*
 * pf_write.h: the single writer's side of the protocol (docs/layout.md, section 8).
 *
 * One change is, in this order: the slot's seqlock write, the ring record, (for a new symbol)
 * slot_count, head_seq, then the words that announce it, then the wake-up (pf_wait.h). Each
 * step is made visible before the next by the release named at it; the reader's functions in
 * pf_read.h carry the acquires they pair with.
 *
 * Rules of this file:
 *
 * Rule 1. Only the process that holds the publisher lock calls these: no word here is ever
 *         written by two processes, so plain stores suffice (no read-modify-write).
 * Rule 2. A slot's lock is odd exactly while its fields change; a record's seq is 0 exactly
 *         while its fields change. Readers retry or give up on those, never use them.
 * Rule 3. head_seq covers a change only once its record and slot are complete, and the words
 *         are bumped only after head_seq: a waiter that sees a word move sees the head.
 *
 * Part of the protocol core (clients/c/core/): no Python, no I/O.
 */
#ifndef PF_WRITE_H
#define PF_WRITE_H

#include "pf_view.h"

/* The slot's seqlock write (section 8, step 2): every field of the change at once, under one
   lock; `values` holds v->fields raw words, `changed` the mask of the fields it changed. */
static inline void pf_core_write_slot(const pf_view *v, uint64_t index, const uint64_t *values, uint32_t changed,
                                      uint64_t time_ns, uint64_t seq) {
    unsigned char *slot = pf_core_slot(v, index);
    uint64_t *lockp = (uint64_t *)(void *)(slot + PF_SLOT_LOCK);
    uint64_t *vals = (uint64_t *)(void *)(slot + PF_SLOT_VALUES);
    uint64_t lock = PF__LOAD(lockp) & PF__LOCK_MASK; /* the mask matters only for a damaged word */
    PF__STORE(lockp, lock + 1u);                      /* odd: a write is in progress */
    PF__RELEASE(); /* pairs with the acquire fence before the second lock load in pf_core_read_slot() */
    PF__STORE((uint64_t *)(void *)(slot + PF_SLOT_SEQ), seq);
    PF__STORE((uint64_t *)(void *)(slot + PF_SLOT_TIME), time_ns);
    PF__STORE((uint32_t *)(void *)(slot + PF_SLOT_CHANGED), changed);
    for (uint32_t k = 0; k < v->fields; k++) PF__STORE(&vals[k], values[k]);
    PF__STORE_REL(lockp, lock + 2u); /* pairs with the acquire load of lock in pf_core_read_slot() */
}

/* The ring record of change `seq` (section 8, step 3). */
static inline void pf_core_write_record(const pf_view *v, uint64_t index, const uint64_t *values, uint32_t changed,
                                        uint64_t time_ns, uint64_t seq) {
    unsigned char *rec = pf_core_record(v, seq);
    uint64_t *rseq = (uint64_t *)(void *)(rec + PF_REC_SEQ);
    uint64_t *vals = (uint64_t *)(void *)(rec + PF_REC_VALUES);
    PF__STORE(rseq, (uint64_t)0);
    PF__RELEASE(); /* pairs with the acquire fence before the second seq load in pf_core_read_record() */
    PF__STORE((uint32_t *)(void *)(rec + PF_REC_SLOT), (uint32_t)index);
    PF__STORE((uint32_t *)(void *)(rec + PF_REC_CHANGED), changed);
    PF__STORE((uint64_t *)(void *)(rec + PF_REC_TIME), time_ns);
    for (uint32_t k = 0; k < v->fields; k++) PF__STORE(&vals[k], values[k]);
    PF__STORE_REL(rseq, seq); /* pairs with the acquire fence after the first seq load in pf_core_read_record() */
}

/* One change into its slot and its ring record (section 8, steps 2 and 3); the caller moves
   the head (a batch moves it once, after its last change). */
static inline void pf_core_write_change(const pf_view *v, uint64_t index, const uint64_t *values, uint32_t changed,
                                        uint64_t time_ns, uint64_t seq) {
    pf_core_write_slot(v, index, values, changed, time_ns, seq);
    pf_core_write_record(v, index, values, changed, time_ns, seq);
}

/* Section 8, step 1, for a slot that slot_count does not cover yet: its symbol into the symbol
   table (NUL-padded; `symbol` is 1 to PF_SYMBOL_MAX bytes, checked by the caller), and the slot
   reset to zero, odd lock and all (a publisher may have died while adding it). No reader looks
   at such a slot, and step 4's release store publishes both. */
static inline void pf_core_write_symbol(const pf_view *v, uint64_t index, const char *symbol) {
    char *entry = pf_core_symbol(v, index);
    size_t len = strlen(symbol);
    if (len > PF_SYMBOL_MAX) len = PF_SYMBOL_MAX;
    memset(entry, 0, PF_SYMBOL_FIELD);
    memcpy(entry, symbol, len);
    uint64_t *words = (uint64_t *)(void *)pf_core_slot(v, index);
    for (uint64_t k = 0; k < v->slot_size / 8u; k++) PF__STORE(&words[k], (uint64_t)0);
}

/* Section 8, step 4: the slots below `count` are named and whole before the count covers
   them; pairs with the acquire load in pf_core_slot_count(). */
static inline void pf_core_store_slot_count(const pf_view *v, uint32_t count) {
    PF__STORE_REL(pf_core_u32(v, PF_OFF_SLOT_COUNT), count);
}

/* Section 8, step 5 (Rule 3): the records and slots up to `seq` are complete before head_seq
   covers them; pairs with the acquire load of head_seq in pf_core_head() and the follow step. */
static inline void pf_core_store_head(const pf_view *v, uint64_t seq) {
    PF__STORE_REL(pf_core_u64(v, PF_OFF_HEAD_SEQ), seq);
}

/* Bump the header's word: kept below 2^31 (see PF__FUTEX_MASK). */
static inline void pf__bump_header_word(const pf_view *v) {
    uint32_t *futex = pf_core_u32(v, PF_OFF_FUTEX);
    PF__STORE(futex, (PF__LOAD(futex) + 1u) & PF__FUTEX_MASK);
}

/* Section 8, step 6, for one change: bump the wake word of slot `index` (it wraps at 2^32)
   and the header's word. */
static inline void pf_core_announce_slot(const pf_view *v, uint64_t index) {
    /* The head is visible before the words that announce it (Rule 3); pairs with the acquire
       fence after the waiter loads its words in pf_core_wait_arm(). */
    PF__RELEASE();
    uint32_t *word = pf_core_wake_word(v, index & (PF_WAKE_WORDS - 1u));
    PF__STORE(word, PF__LOAD(word) + 1u);
    pf__bump_header_word(v);
}

/* Section 8, step 6, for a batch or for news that concerns everyone: bump each wake word whose
   flag is set in `words` (PF_WAKE_WORDS bytes; NULL: every word), then the header's word. */
static inline void pf_core_announce(const pf_view *v, const uint8_t *words) {
    PF__RELEASE(); /* what came before is visible first; pairs as in pf_core_announce_slot() */
    for (uint32_t w = 0; w < PF_WAKE_WORDS; w++) {
        if (words != NULL && !words[w]) continue;
        uint32_t *p = pf_core_wake_word(v, w);
        PF__STORE(p, PF__LOAD(p) + 1u);
    }
    pf__bump_header_word(v);
}

#endif /* PF_WRITE_H */
