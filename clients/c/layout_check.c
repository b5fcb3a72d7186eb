/*
 * layout_check: print every layout constant of pricefeed.h as one JSON object, keyed by its
 * name in pricefeed/_protocol/layout.py (the PF_ prefix dropped), plus a few computed geometries
 * (slot and record sizes and offsets for schemas of 1 to 16 fields).
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
    FIELD(STATE_EPOCH_BITS);
    FIELD(STATE_SHIFT);
    FIELD(STATE_BITS);
    FIELD(HANDOVERS_SHIFT);
    FIELD(HANDOVERS_BITS);
    FIELD(PUBLISHER_HOLDS);
    FIELD(PUBLISHER_CLOSED);
    FIELD(MAX_FIELDS);
    FIELD(FIELD_NAME_FIELD);
    FIELD(FIELD_NAME_MAX);
    FIELD(TYPE_F64);
    FIELD(TYPE_I64);
    FIELD(VALUE_SIZE);
    FIELD(MIN_CAPACITY);
    FIELD(MAX_CAPACITY);
    FIELD(DEFAULT_CAPACITY);
    FIELD(MIN_RING);
    FIELD(MAX_RING);
    FIELD(DEFAULT_RING);
    FIELD(HEADER_SIZE);
    FIELD(SCHEMA_ENTRY_SIZE);
    FIELD(SCHEMA_OFFSET);
    FIELD(SCHEMA_SIZE);
    FIELD(WAKE_OFFSET);
    FIELD(WAKE_SIZE);
    FIELD(SYMBOLS_OFFSET);
    FIELD(SLOT_VALUES);
    FIELD(REC_VALUES);
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
    FIELD(OFF_FIELD_COUNT);
    FIELD(OFF_SCHEMA_OFFSET);
    FIELD(OFF_SYMBOLS_OFFSET);
    FIELD(FIELD_NAME);
    FIELD(FIELD_TYPE);
    FIELD(FIELD_RESERVED);
    FIELD(SLOT_LOCK);
    FIELD(SLOT_SEQ);
    FIELD(SLOT_TIME);
    FIELD(SLOT_CHANGED);
    FIELD(SLOT_RESERVED);
    FIELD(REC_SEQ);
    FIELD(REC_SLOT);
    FIELD(REC_CHANGED);
    FIELD(REC_TIME);
    /* The functions, at a few shapes: [capacity, ring_size, fields, slot_size, record_size,
       slots_offset, ring_offset, segment_size]. */
    static const uint32_t shapes[][3] = {{1, 2, 1}, {1024, 65536, 1}, {1000, 16, 4}, {3, 4, 5}, {1u << 20, 1u << 24, 16}};
    printf("  \"geometries\": [");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        uint32_t c = shapes[i][0], r = shapes[i][1], n = shapes[i][2];
        printf("%s[%" PRIu32 ", %" PRIu32 ", %" PRIu32 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "]",
               i ? ", " : "", c, r, n, pf_slot_size(n), pf_record_size(n), pf_slots_offset(c), pf_ring_offset(c, n),
               pf_segment_size(c, r, n));
    }
    printf("],\n");
    /* [slot, capacity, fields, slot_offset, symbol_offset, wake word, wake_offset] */
    static const uint32_t slots[][3] = {{0, 1, 1}, {1, 8, 4}, {127, 1000, 2}, {128, 1000, 16}, {1000, 1024, 1}};
    printf("  \"slots\": [");
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        uint32_t s = slots[i][0], c = slots[i][1], n = slots[i][2];
        printf("%s[%" PRIu32 ", %" PRIu32 ", %" PRIu32 ", %" PRIu64 ", %" PRIu64 ", %" PRIu32 ", %" PRIu64 "]",
               i ? ", " : "", s, c, n, pf_slot_offset(s, c, n), pf_symbol_offset(s), pf_wake_word_of(s),
               pf_wake_offset(pf_wake_word_of(s)));
    }
    printf("],\n");
    /* [field, schema_entry_offset] */
    static const uint32_t entries[] = {0, 1, 15};
    printf("  \"schema\": [");
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        printf("%s[%" PRIu32 ", %" PRIu64 "]", i ? ", " : "", entries[i], pf_schema_entry_offset(entries[i]));
    printf("],\n");
    printf("  \"NAME_MAX\": %u\n}\n", PF_NAME_MAX);
    return 0;
}
