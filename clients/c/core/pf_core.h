/*
 * pf_core.h: the pricefeed protocol in C, once: what both the Python accelerator
 * (pricefeed/_protocol/_speedups.c) and the single-file header users copy
 * (clients/c/pricefeed.h, generated from clients/c/src/pricefeed_api.h) compile.
 *
 *   pf_layout.h    every offset and constant (generated from pricefeed/_protocol/layout.py)
 *   pf_ordering.h  the atomic loads and stores, the fences, the 8-byte guards
 *   pf_view.h      a mapped segment and its geometry (schema included); values as raw words
 *   pf_write.h     the single writer: symbol, slot seqlock, ring record, slot_count, head, announce
 *   pf_read.h      the readers: head, slot seqlock copy, ring record (got / lapped / damaged)
 *   pf_wait.h      spin, futex wait (one word, or futex_waitv on several), FUTEX_WAKE(_OP)
 *   pf_follow.h    one step of following the feed, with the accelerator's Follow codes
 *
 * Everything is `static inline`; no Python.h, no allocation, no I/O but the futex system
 * calls (Linux only: elsewhere they compile to stubs). C11 or C++17, GCC or Clang. Include
 * it before any system header, or define _GNU_SOURCE / _DEFAULT_SOURCE yourself.
 */
#ifndef PF_CORE_H
#define PF_CORE_H

#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _DEFAULT_SOURCE 1 /* clock_gettime and syscall, which a strict -std=c11 hides */
#endif

#include "pf_layout.h"
#include "pf_ordering.h"
#include "pf_view.h"
#include "pf_write.h"
#include "pf_read.h"
#include "pf_wait.h"
#include "pf_follow.h"

#endif /* PF_CORE_H */
