/*
 * pf_ordering.h: how every shared word of a segment is loaded and stored (docs/layout.md,
 * section 2; docs/protocol.md).
 *
 * Rules of this file:
 *
 * Rule 1. Every word another process may read or write while we look is accessed with one
 *         __atomic load or store of its own width, never with memcpy or a plain access: a
 *         plain access may be split, merged or repeated by the compiler, and tear.
 * Rule 2. Ordering comes from the acquire/release forms and fences below, at the points the
 *         protocol names, each commented with the access it pairs with. On x86-64 they
 *         compile to plain moves; on aarch64 to the barriers the seqlock needs.
 * Rule 3. The __atomic builtins, not <stdatomic.h>: C and C++ share them (C++ cannot include
 *         <stdatomic.h> before C++23), and they need no _Atomic type on the mapped words.
 *
 * Part of the protocol core (clients/c/core/): no Python, no I/O.
 */
#ifndef PF_ORDERING_H
#define PF_ORDERING_H

#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__)
#error "the pricefeed core needs GCC or Clang: it uses the __atomic builtins"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pricefeed segments are little-endian, and the core reads them in place"
#endif

/* A 32-bit process must load and store the u64 words in one access (layout.md, section 2).
 * A target without lock-free 8-byte atomics would call libatomic's locks, which do not work
 * across processes. On i386 the compiler's 8-byte atomic load must also be a plain load:
 * GCC emits an SSE2 movq, or an x87 fild/fistp pair (each one 8-byte access, atomic when
 * aligned on every CPU since the Pentium); with neither unit it calls libatomic, whose
 * load is a lock cmpxchg8b, and cmpxchg8b writes even when it changes nothing: on the
 * subscriber's PROT_READ mapping that is a SIGSEGV. Clang before 11 used cmpxchg8b too. */
#if !defined(__GCC_ATOMIC_LLONG_LOCK_FREE) || __GCC_ATOMIC_LLONG_LOCK_FREE != 2
#error "this target has no lock-free 8-byte atomics: the u64 words would tear"
#endif
#if defined(__i386__) && !defined(__SSE2__) && (defined(_SOFT_FLOAT) || defined(__NO_FPU__))
#error "i386 without SSE2 or x87: 8-byte atomic loads would be lock cmpxchg8b, which faults on a read-only mapping"
#endif
#if defined(__i386__) && defined(__clang__) && __clang_major__ < 11
#error "clang before 11 loads 8-byte atomics on i386 with lock cmpxchg8b, which faults on a read-only mapping"
#endif

#define PF__LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define PF__LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define PF__STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define PF__STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define PF__ACQUIRE() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define PF__RELEASE() __atomic_thread_fence(__ATOMIC_RELEASE)

/* A slot lock's counting bits: bit 63 is never set by a writer, so a damaged word with it set
   is brought back into range rather than wrapped. */
#define PF__LOCK_MASK ((UINT64_C(1) << 63) - 1u)
/* The header's futex word stays below 2^31: FUTEX_WAKE_OP's comparison of it, as an int, with
   >= 0 then always holds (pf_wait.h). */
#define PF__FUTEX_MASK UINT32_C(0x7fffffff)

/* A f64 travels as the bits of an IEEE 754 binary64, in one 8-byte access. */
static inline double pf__load_double(const uint64_t *p) {
    uint64_t bits = PF__LOAD(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}
static inline void pf__store_double(uint64_t *p, double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    PF__STORE(p, bits);
}

#endif /* PF_ORDERING_H */
