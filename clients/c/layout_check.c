/*
 * layout_check: print every layout constant of pricefeed.h as one JSON object, keyed by its
 * name in pricefeed/_protocol/layout.py (the PF_ prefix dropped), plus a few computed geometries.
 * The constants are generated from that module (clients/c/core/pf_layout.h, scripts/gen_c.py);
 * tests/interop/test_interop.py compares this output with pricefeed._protocol.layout, built as
 * C, C++ and 32-bit C, so what a compiler makes of the header is checked too.
 *
 *     cc -std=c11 -Wall -Wextra -O2 -o layout_check layout_check.c && ./layout_check
 */
#include "pricefeed.h"

#include <inttypes.h>

#define FIELD(name) printf("  \"%s\": %" PRIu64 ",\n", #name, (uint64_t)(PF_##name))

int main(void) {
    printf("{\n");
    FIELD(LAYOUT_VERSION);
    FIELD(MAGIC);
    FIELD(CACHE_LINE);
    FIELD(SYMBOL_FIELD);
    FIELD(SYMBOL_MAX);
    FIELD(SLOT_VOID);
    FIELD(WAKE_WORDS);
    FIELD(MIN_CAPACITY);
    FIELD(MAX_CAPACITY);
    FIELD(DEFAULT_CAPACITY);
    FIELD(MIN_RING);
    FIELD(MAX_RING);
    FIELD(DEFAULT_RING);
    FIELD(HEADER_SIZE);
    FIELD(WAKE_OFFSET);
    FIELD(WAKE_SIZE);
    FIELD(SLOTS_OFFSET);
    FIELD(SLOT_SIZE);
    FIELD(RECORD_SIZE);
    FIELD(OFF_MAGIC);
    FIELD(OFF_VERSION);
    FIELD(OFF_HEADER_SIZE);
    FIELD(OFF_INCARNATION);
    FIELD(OFF_CAPACITY);
    FIELD(OFF_RING_SIZE);
    FIELD(OFF_SLOT_SIZE);
    FIELD(OFF_RECORD_SIZE);
    FIELD(OFF_CREATED_NS);
    FIELD(OFF_SLOTS_OFFSET);
    FIELD(OFF_RING_OFFSET);
    FIELD(OFF_HEAD_SEQ);
    FIELD(OFF_FUTEX);
    FIELD(OFF_CLOSED);
    FIELD(OFF_SLOT_COUNT);
    FIELD(OFF_PUBLISHER_PID);
    FIELD(OFF_PUBLISHER_EPOCH);
    FIELD(OFF_WAKE_WORDS);
    FIELD(OFF_PUBLISHER_STATE);
    FIELD(STATE_EPOCH_BITS);
    FIELD(STATE_SHIFT);
    FIELD(STATE_BITS);
    FIELD(HANDOVERS_SHIFT);
    FIELD(HANDOVERS_BITS);
    FIELD(PUBLISHER_HOLDS);
    FIELD(PUBLISHER_CLOSED);
    FIELD(SLOT_LOCK);
    FIELD(SLOT_PRICE);
    FIELD(SLOT_TIME);
    FIELD(SLOT_SEQ);
    FIELD(SLOT_SYMBOL);
    FIELD(REC_SEQ);
    FIELD(REC_SLOT);
    FIELD(REC_FLAGS);
    FIELD(REC_PRICE);
    FIELD(REC_TIME);
    /* The functions, at a few geometries: [capacity, ring_size, ring_offset, segment_size]. */
    static const uint32_t shapes[][2] = {{1, 2}, {1024, 65536}, {1000, 16}, {1u << 20, 1u << 24}};
    printf("  \"geometries\": [");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        printf("%s[%" PRIu32 ", %" PRIu32 ", %" PRIu64 ", %" PRIu64 "]", i ? ", " : "", shapes[i][0], shapes[i][1],
               pf_ring_offset(shapes[i][0]), pf_segment_size(shapes[i][0], shapes[i][1]));
    printf("],\n");
    /* [slot, slot_offset, wake word, wake_offset] */
    static const uint32_t slots[] = {0, 1, 127, 128, 1000};
    printf("  \"slots\": [");
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
        printf("%s[%" PRIu32 ", %" PRIu64 ", %" PRIu32 ", %" PRIu64 "]", i ? ", " : "", slots[i],
               pf_slot_offset(slots[i]), pf_wake_word_of(slots[i]), pf_wake_offset(pf_wake_word_of(slots[i])));
    printf("],\n");
    printf("  \"NAME_MAX\": %u\n}\n", PF_NAME_MAX);
    return 0;
}
