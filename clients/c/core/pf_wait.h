/*
 * pf_wait.h: waiting for a change, and waking those who wait (docs/layout.md, section 9).
 *
 * A waiter spins on head_seq for a bounded time, then sleeps in the kernel on a futex word:
 * the header's word (bumped for every change) or, with futex_waitv, a few words of the wake
 * table (bumped for changes of their slots only). The publisher stores the word, then always
 * calls FUTEX_WAKE(_OP): the kernel's wake path holds the barrier, so no wake-up is lost, and
 * waiters need no write access (a waiter count would need both).
 *
 * Rules of this file:
 *
 * Rule 1. The words are loaded BEFORE the head (pf_core_wait_arm). A change after that load
 *         bumps a word after its head store, so the sleep returns at once (EAGAIN) instead of
 *         missing it.
 * Rule 2. Never FUTEX_PRIVATE_FLAG: a private waiter is never woken by another process.
 * Rule 3. One round is arm, then sleep; the loop around it (timeouts, interrupts, signals, a
 *         mapping closed by another thread) is the caller's, because each caller has its own.
 * Rule 4. The system calls are the only I/O of the core, and Linux only: elsewhere the sleep
 *         and the wake-ups compile to stubs (ENOSYS, and nothing to wake), so the rest of the
 *         core still builds on macOS and FreeBSD, where other wait backends do the sleeping.
 *
 * Part of the protocol core (clients/c/core/).
 */
#ifndef PF_WAIT_H
#define PF_WAIT_H

#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _DEFAULT_SOURCE 1 /* clock_gettime and syscall, which a strict -std=c11 hides */
#endif

#include <errno.h>
#include <limits.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "pf_read.h"
#include "pf_write.h"

/* futex_waitv (Linux 5.16+) takes at most this many words. */
#define PF_WAIT_WORDS_MAX 128

static inline int64_t pf__mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void pf__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Poll head_seq for up to `seconds` (the caller bounds it): 1 once it is not `cursor`. Cheaper
   than a sleep for bursts that come microseconds apart; never unbounded. */
static inline int pf_core_spin_head(const pf_view *v, uint64_t cursor, double seconds) {
    uint64_t *head = pf_core_u64(v, PF_OFF_HEAD_SEQ);
    int64_t end = pf__mono_ns() + (int64_t)(seconds * 1e9);
    for (unsigned k = 0;; k++) {
        if (PF__LOAD(head) != cursor) {
            PF__ACQUIRE(); /* pairs with the release store in pf_core_store_head() */
            return 1;
        }
        if ((k & 63u) == 0 && pf__mono_ns() >= end) return 0;
        pf__cpu_relax();
    }
}

/* What a waiter sleeps on, and the values it found there. */
typedef struct pf_waiter {
    uint32_t nwords;                    /* 0: the header's word; else futex_waitv on these: */
    uint32_t words[PF_WAIT_WORDS_MAX];  /* wake-table indices, each below PF_WAKE_WORDS */
    uint32_t values[PF_WAIT_WORDS_MAX]; /* their values, as pf_core_wait_arm() loaded them */
    uint32_t expected;                  /* the header word's value, as loaded */
} pf_waiter;

enum { PF_ARM_SLEEP = 0, PF_ARM_MOVED = 1, PF_ARM_ENDED = 2 };

/* Load the words, then the head (Rule 1): PF_ARM_MOVED when head_seq is not `cursor`,
   PF_ARM_ENDED when the feed was ended with nothing after `cursor`, else PF_ARM_SLEEP with
   `w` ready for pf_core_wait_sleep(). */
static inline int pf_core_wait_arm(const pf_view *v, uint64_t cursor, pf_waiter *w) {
    w->expected = PF__LOAD(pf_core_u32(v, PF_OFF_FUTEX));
    for (uint32_t k = 0; k < w->nwords; k++) w->values[k] = PF__LOAD(pf_core_wake_word(v, w->words[k]));
    /* The head after the words: pairs with the release fence before the writer bumps them
       (pf_core_announce_slot(), pf_core_announce()). */
    PF__ACQUIRE();
    uint64_t *head = pf_core_u64(v, PF_OFF_HEAD_SEQ);
    if (PF__LOAD(head) != cursor) {
        PF__ACQUIRE(); /* pairs with the release store in pf_core_store_head() */
        return PF_ARM_MOVED;
    }
    if (pf_core_ended(v)) /* its acquire pairs with the release store of closed */
        return PF__LOAD(head) != cursor ? PF_ARM_MOVED : PF_ARM_ENDED;
    return PF_ARM_SLEEP;
}

#ifdef __linux__
/* FUTEX_WAIT takes a struct timespec: a 32-bit process built with 64-bit time_t needs the
   time64 flavour of the system call. */
#if !defined(__LP64__) && defined(__NR_futex_time64)
#define PF__SYS_FUTEX_WAIT (sizeof(time_t) == 8 ? (long)__NR_futex_time64 : (long)SYS_futex)
#else
#define PF__SYS_FUTEX_WAIT ((long)SYS_futex)
#endif
#define PF__SYS_FUTEX_WAITV 449L
#define PF__FUTEX2_SIZE_U32 0x02u

struct pf__futex_waitv { /* the kernel's struct futex_waitv */
    uint64_t val, uaddr;
    uint32_t flags, reserved;
};
struct pf__kernel_timespec { /* the kernel's __kernel_timespec: 64-bit on every target */
    int64_t tv_sec;
    long long tv_nsec;
};
#endif

/* Sleep once on what `w` was armed with, until `deadline_ns` (CLOCK_MONOTONIC; INT64_MAX:
   none). Returns 0 when woken or when a word had moved already (look again), ETIMEDOUT,
   EINTR (a signal: the caller decides), or the errno of a failed call (ENOSYS from
   futex_waitv before Linux 5.16, or anywhere but Linux). */
static inline int pf_core_wait_sleep(const pf_view *v, const pf_waiter *w, int64_t deadline_ns) {
#ifdef __linux__
    long r;
    if (w->nwords == 0) {
        struct timespec left, *timeout = NULL;
        if (deadline_ns != INT64_MAX) {
            int64_t ns = deadline_ns - pf__mono_ns();
            if (ns <= 0) return ETIMEDOUT;
            left.tv_sec = (time_t)(ns / 1000000000LL);
            left.tv_nsec = (long)(ns % 1000000000LL);
            timeout = &left;
        }
        r = syscall(PF__SYS_FUTEX_WAIT, pf_core_u32(v, PF_OFF_FUTEX), FUTEX_WAIT, w->expected, timeout, NULL, 0);
    } else {
        struct pf__futex_waitv wv[PF_WAIT_WORDS_MAX];
        struct pf__kernel_timespec end, *timeout = NULL;
        uint32_t n = w->nwords > PF_WAIT_WORDS_MAX ? PF_WAIT_WORDS_MAX : w->nwords;
        for (uint32_t k = 0; k < n; k++) {
            wv[k].val = w->values[k];
            wv[k].uaddr = (uint64_t)(uintptr_t)pf_core_wake_word(v, w->words[k]);
            wv[k].flags = PF__FUTEX2_SIZE_U32;
            wv[k].reserved = 0;
        }
        if (deadline_ns != INT64_MAX) { /* futex_waitv's timeout is absolute */
            end.tv_sec = deadline_ns / 1000000000LL;
            end.tv_nsec = deadline_ns % 1000000000LL;
            timeout = &end;
        }
        r = syscall(PF__SYS_FUTEX_WAITV, wv, (unsigned)n, 0u, timeout, (long)CLOCK_MONOTONIC);
    }
    if (r >= 0) return 0; /* woken (futex_waitv returns the index of the word) */
    return errno == EAGAIN ? 0 : errno;
#else
    (void)v;
    (void)w;
    (void)deadline_ns;
    return ENOSYS;
#endif
}

/* FUTEX_WAKE every waiter of `word`: 0 or an errno. */
static inline int pf_core_wake(uint32_t *word) {
#ifdef __linux__
    return syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0) < 0 ? errno : 0;
#else
    (void)word;
    return 0;
#endif
}

/* Wake every waiter of `word`, then OR 0 into `futex` (no change) and wake its waiters too if
   its old value, as an int, is >= 0: always, since it stays below 2^31. One system call; the
   fourth argument, INT_MAX waiters of the second word, travels in the timeout's place. */
static inline int pf_core_wake_op(uint32_t *word, uint32_t *futex) {
#ifdef __linux__
    long r = syscall(SYS_futex, word, FUTEX_WAKE_OP, INT_MAX, (void *)(uintptr_t)INT_MAX, futex,
                     FUTEX_OP(FUTEX_OP_OR, 0, FUTEX_OP_CMP_GE, 0));
    return r < 0 ? errno : 0;
#else
    (void)word;
    (void)futex;
    return 0;
#endif
}

/* Section 8, step 7, after pf_core_announce_slot(): the slot's word and the header's word, in
   one call. Always: the publisher keeps no count of waiters. */
static inline int pf_core_wake_slot(const pf_view *v, uint64_t index) {
    return pf_core_wake_op(pf_core_wake_word(v, index & (PF_WAKE_WORDS - 1u)), pf_core_u32(v, PF_OFF_FUTEX));
}

/* Section 8, step 7, after pf_core_announce(v, words): the first flagged word together with
   the header's word, then each other flagged word (NULL: every word). 0 or the first errno. */
static inline int pf_core_wake_words(const pf_view *v, const uint8_t *words) {
    uint32_t *futex = pf_core_u32(v, PF_OFF_FUTEX);
    int first = 1;
    for (uint32_t w = 0; w < PF_WAKE_WORDS; w++) {
        if (words != NULL && !words[w]) continue;
        uint32_t *word = pf_core_wake_word(v, w);
        int e = first ? pf_core_wake_op(word, futex) : pf_core_wake(word);
        if (e) return e;
        first = 0;
    }
    return first ? pf_core_wake(futex) : 0;
}

#endif /* PF_WAIT_H */
