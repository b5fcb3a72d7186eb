/*
 * pfcat: the whole C API of pricefeed.h behind a command line, one JSON object per line.
 * The tests run it (also built with -m32, as a 32-bit reader); it doubles as an example.
 *
 *   pfcat check FEED                      open read-only and validate; print the geometry,
 *                                         the schema ("fields": "bid:f64,ask:f64,...") and
 *                                         whether a publisher holds the feed (1, 0, -1)
 *   pfcat get FEED SYMBOL...              each symbol's current record
 *   pfcat follow FEED [SYMBOL...] [--on FIELD,...] [--count N] [--timeout S] [--text]
 *                                         every change from now on (only those that changed
 *                                         one of the --on fields), as `pricefeed subscribe
 *                                         --json` prints them (or, with --text, as it prints
 *                                         them without), then {"event": "ended", ...}
 *   pfcat publish FEED [--fields SPEC] [--capacity N] [--ring N] [--mode OCTAL] [--end]
 *                                         open or create FEED (with the schema SPEC, say
 *                                         "bid:f64,ask:f64,size:i64") as its publisher, print
 *                                         {"ready": ...}, then publish each line of stdin,
 *                                         "SYMBOL PRICE" (a feed of one field) or "SYMBOL
 *                                         NAME=VALUE ..." (a record: those fields, one change),
 *                                         and print {"changed": ..., "seq": ...} (or
 *                                         {"error": ...}) for it
 *
 * A quote is printed as `pricefeed subscribe --json` prints it: the symbol, every field by
 * name, "seq", "time_ns" and "changed" (the names of the fields the change changed):
 *     {"symbol": "AAPL", "price": 187.5, "seq": 42, "time_ns": ..., "changed": ["price"]}
 *     {"symbol": "ES", "bid": 5201.25, "ask": 5201.5, "bid_size": 12, "ask_size": 3,
 *      "seq": 43, "time_ns": ..., "changed": ["bid", "ask"]}
 *
 * An error is printed as {"error": "PF_E...", "code": N, "errno": N, "message": "..."} and
 * ends the program with the `pricefeed` CLI's exit code for it (pf_exit_code).
 *
 *     cc -std=c11 -Wall -Wextra -O2 -o pfcat pfcat.c
 */
#include "pricefeed.h"

#include <inttypes.h>

static void print_double(double d) {
    char buf[40];
    pf_format_price(d, buf, sizeof buf);
    fputs(buf, stdout);
}

static void print_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int report(const pf_error *err) {
    printf("{\"error\": \"%s\", \"code\": %d, \"errno\": %d, \"message\": ", pf_code_name(err->code), err->code,
           err->sys_errno);
    print_string(err->message);
    printf("}\n");
    fflush(stdout);
    return pf_exit_code(err->code);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One JSON line per quote, as `pricefeed subscribe --json` prints it: the symbol, every field
   by name, seq, time_ns, and the names of the fields the change changed. */
static void print_quote(const pf_feed *f, const pf_quote *q) {
    printf("{\"symbol\": ");
    print_string(q->symbol);
    for (uint32_t i = 0; i < pf_field_count(f); i++) {
        char value[40];
        pf_format_value(f, i, q->values[i], value, sizeof value);
        printf(", \"%s\": %s", pf_field_at(f, i)->name, value);
    }
    printf(", \"seq\": %" PRIu64 ", \"time_ns\": %" PRIu64 ", \"changed\": [", q->seq, q->time_ns);
    for (uint32_t i = 0, first = 1; i < pf_field_count(f); i++)
        if (q->changed >> i & 1u) {
            printf("%s\"%s\"", first ? "" : ", ", pf_field_at(f, i)->name);
            first = 0;
        }
    printf("]}\n");
}

/* The text line `pricefeed subscribe` prints: "SEQ SYMBOL PRICE" on a feed of one field,
   "SEQ SYMBOL bid=5201.25 ask=5201.5 bid_size=12 ask_size=3 changed=bid,ask" on a feed of
   more (the sequence right-aligned in 10 columns, the symbol left-aligned in `width`). */
static void print_quote_text(const pf_feed *f, const pf_quote *q, int width) {
    printf("%10" PRIu64 " %-*s", q->seq, width, q->symbol);
    if (pf_field_count(f) == 1) {
        putchar(' ');
        print_double(q->price);
        putchar('\n');
        return;
    }
    for (uint32_t i = 0; i < pf_field_count(f); i++) {
        char value[40];
        pf_format_value(f, i, q->values[i], value, sizeof value);
        printf(" %s=%s", pf_field_at(f, i)->name, value);
    }
    char names[400];
    pf_format_mask(f, q->changed, ",", names, sizeof names);
    printf(" changed=%s\n", names);
}

static int check(const char *feed) {
    pf_feed f;
    pf_error err;
    if (pf_open(&f, feed, &err)) return report(&err);
    char fields[400];
    pf_format_fields(&f, fields, sizeof fields);
    printf("{\"ok\": true, \"capacity\": %" PRIu32 ", \"ring_size\": %" PRIu32 ", \"fields\": \"%s\", \"head_seq\": %" PRIu64
           ", \"size\": %" PRIu64 ", \"pointer_bits\": %u, \"publisher_alive\": %d}\n",
           f.capacity, f.ring_size, fields, pf_head(&f), f.size, (unsigned)(sizeof(void *) * 8), pf_publisher_alive(&f));
    pf_close(&f);
    return 0;
}

static int get(const char *feed, char **symbols, int n) {
    pf_feed f;
    pf_error err;
    if (pf_open(&f, feed, &err)) return report(&err);
    int code = 0;
    for (int i = 0; i < n; i++) {
        pf_quote q;
        if (pf_get(&f, symbols[i], &q, &err))
            code = report(&err);
        else
            print_quote(&f, &q);
    }
    pf_close(&f);
    return code;
}

/* An event as the CLI's text mode writes it: "# gap missed=880 first_seq=1001 last_seq=1900". */
static void print_event(const char *feed, const pf_event *ev, int text) {
    if (ev->kind == PF_EVENT_GAP) {
        printf(text ? "# gap missed=%" PRIu64 " first_seq=%" PRIu64 " last_seq=%" PRIu64 "\n"
                    : "{\"event\": \"gap\", \"missed\": %" PRIu64 ", \"first_seq\": %" PRIu64 ", \"last_seq\": %" PRIu64
                      "}\n",
               ev->missed, ev->first_seq, ev->last_seq);
    } else if (ev->kind == PF_EVENT_PUBLISHER_GONE) {
        printf(text ? "# publisher gone pid=%" PRIu32 " head_seq=%" PRIu64 " clean=%s\n"
                    : "{\"event\": \"publisher_gone\", \"pid\": %" PRIu32 ", \"head_seq\": %" PRIu64 ", \"clean\": %s}\n",
               ev->pid, ev->head_seq, ev->clean ? (text ? "True" : "true") : (text ? "False" : "false"));
    } else if (ev->kind == PF_EVENT_PUBLISHER_RESTARTED) {
        printf(text ? "# publisher restarted pid=%" PRIu32 " epoch=%" PRIu32 " head_seq=%" PRIu64 "\n"
                    : "{\"event\": \"publisher_restarted\", \"pid\": %" PRIu32 ", \"epoch\": %" PRIu32
                      ", \"head_seq\": %" PRIu64 "}\n",
               ev->pid, ev->epoch, ev->head_seq);
    } else if (ev->kind == PF_EVENT_ENDED) {
        if (text) {
            printf("# ended feed=%s\n", feed);
        } else {
            printf("{\"event\": \"ended\", \"feed\": ");
            print_string(feed);
            printf("}\n");
        }
    }
}

static int follow(const char *feed, char **symbols, int n, char *on, long count, double timeout, int text) {
    pf_feed f;
    pf_sub s;
    pf_error err;
    if (pf_open(&f, feed, &err)) return report(&err);
    if (pf_sub_open(&s, &f, n ? (const char *const *)symbols : NULL, (size_t)n, &err)) {
        pf_close(&f);
        return report(&err);
    }
    if (on != NULL) { /* "bid,ask": the fields a change must have changed one of */
        const char *names[PF_MAX_FIELDS + 1];
        size_t k = 0;
        for (char *name = strtok(on, ","); name != NULL && k <= PF_MAX_FIELDS; name = strtok(NULL, ",")) names[k++] = name;
        if (pf_sub_on(&s, names, k, &err)) {
            pf_sub_close(&s);
            pf_close(&f);
            return report(&err);
        }
    }
    int width = 0; /* as the CLI: as wide as the longest symbol asked for, else the longest there can be */
    for (int i = 0; i < n; i++) width = (int)strlen(symbols[i]) > width ? (int)strlen(symbols[i]) : width;
    if (n == 0) width = PF_SYMBOL_MAX;
    int code = 0;
    long seen = 0;
    /* An idle timeout, as in the CLI: only a change restarts the clock. */
    double deadline = now_seconds() + timeout;
    for (;;) {
        pf_event ev;
        double left = deadline - now_seconds();
        if (pf_next(&s, &ev, timeout < 0 ? -1.0 : left > 0 ? left : 0.0, &err)) {
            if (err.code == PF_ETIMEOUT) /* name the whole idle timeout, not this call's share */
                snprintf(err.message, sizeof err.message, "no change on feed '%s' within the timeout of %g s", feed,
                         timeout);
            code = report(&err);
            break;
        }
        if (ev.kind == PF_EVENT_QUOTE) {
            deadline = now_seconds() + timeout;
            if (text)
                print_quote_text(&f, &ev.quote, width);
            else
                print_quote(&f, &ev.quote);
        } else {
            print_event(feed, &ev, text);
            if (ev.kind == PF_EVENT_ENDED) break;
        }
        fflush(stdout);
        if (ev.kind == PF_EVENT_QUOTE && count > 0 && ++seen >= count) break;
    }
    fflush(stdout);
    pf_sub_close(&s);
    pf_close(&f);
    return code;
}

/* A record from "NAME=VALUE ..." words: each value set as its field's type reads it (a
   value that is not a whole number goes in as a double, which an i64 field refuses, and an
   unknown name is kept as a mistake): the API decides what is refused. 0, or -1 for a word
   that is not NAME=VALUE or a value that is not a number. */
static int parse_record(pf_record *r, const pf_feed *f, char *words) {
    for (char *word = strtok(words, " \t\n"); word != NULL; word = strtok(NULL, " \t\n")) {
        char *eq = strchr(word, '='), *rest;
        if (eq == NULL || eq == word || eq[1] == '\0') return -1;
        *eq = '\0';
        const char *text = eq + 1;
        int k = pf_field_index(f, word);
        if (k >= 0 && pf_field_at(f, (uint32_t)k)->type == PF_TYPE_I64) {
            errno = 0;
            long long v = strtoll(text, &rest, 10);
            if (*rest == '\0' && errno == 0) {
                pf_record_i64(r, word, (int64_t)v);
                continue;
            }
        }
        double d = strtod(text, &rest);
        if (*rest != '\0') return -1;
        pf_record_f64(r, word, d);
    }
    return 0;
}

static int publish(const char *feed, const char *fields, uint32_t capacity, uint32_t ring, unsigned mode, int end) {
    pf_feed f;
    pf_error err;
    if (pf_open_or_create_fields(&f, feed, fields, capacity, ring, mode, &err)) return report(&err);
    char schema[400];
    pf_format_fields(&f, schema, sizeof schema);
    printf("{\"ready\": true, \"head_seq\": %" PRIu64 ", \"epoch\": %" PRIu32 ", \"repaired\": %" PRIu32
           ", \"fields\": \"%s\"}\n",
           f.head, f.epoch, f.repaired, schema);
    fflush(stdout);
    char line[1024];
    int code = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        char symbol[64], first[128];
        int used = 0;
        if (line[0] == '\n' || line[0] == '#') continue;
        if (sscanf(line, "%63s %127s%n", symbol, first, &used) != 2) {
            printf("{\"error\": \"bad line\"}\n");
            fflush(stdout);
            continue;
        }
        int changed, rc;
        if (strchr(first, '=') == NULL) { /* SYMBOL PRICE: the one-field call */
            char *rest;
            double price = strtod(first, &rest);
            if (*rest != '\0') {
                printf("{\"error\": \"bad price\"}\n");
                fflush(stdout);
                continue;
            }
            rc = pf_publish(&f, symbol, price, &changed, &err);
        } else { /* SYMBOL NAME=VALUE ...: one record */
            pf_record r;
            pf_record_init(&r, &f);
            char *words = strstr(line, first);
            if (parse_record(&r, &f, words) != 0) {
                printf("{\"error\": \"bad field\"}\n");
                fflush(stdout);
                continue;
            }
            rc = pf_publish_record(&f, symbol, &r, &changed, &err);
        }
        if (rc)
            code = report(&err);
        else
            printf("{\"changed\": %s, \"seq\": %" PRIu64 "}\n", changed ? "true" : "false", f.head);
        fflush(stdout);
    }
    if (end && pf_end(&f, &err)) code = report(&err);
    pf_close(&f);
    return code;
}

static int usage(void) {
    fprintf(stderr, "usage: pfcat check FEED | get FEED SYMBOL... | follow FEED [SYMBOL...] [--on FIELD,...] "
                    "[--count N] [--timeout S] [--text] | publish FEED [--fields SPEC] [--capacity N] [--ring N] "
                    "[--mode OCTAL] [--end]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const char *cmd = argv[1], *feed = argv[2], *fields = NULL;
    char *symbols[64], *on = NULL;
    int n = 0, end = 0, text = 0;
    long count = 0;
    double timeout = -1;
    unsigned long capacity = PF_DEFAULT_CAPACITY, ring = PF_DEFAULT_RING, mode = 0600;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "--count") == 0 && more)
            count = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--timeout") == 0 && more)
            timeout = strtod(argv[++i], NULL);
        else if (strcmp(a, "--capacity") == 0 && more)
            capacity = strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--ring") == 0 && more)
            ring = strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--mode") == 0 && more)
            mode = strtoul(argv[++i], NULL, 8);
        else if (strcmp(a, "--fields") == 0 && more)
            fields = argv[++i];
        else if (strcmp(a, "--on") == 0 && more)
            on = argv[++i];
        else if (strcmp(a, "--text") == 0)
            text = 1;
        else if (strcmp(a, "--end") == 0)
            end = 1;
        else if (a[0] == '-' && a[1] == '-')
            return usage();
        else if (n < 64)
            symbols[n++] = argv[i];
    }
    if (strcmp(cmd, "check") == 0) return check(feed);
    if (strcmp(cmd, "get") == 0) return get(feed, symbols, n);
    if (strcmp(cmd, "follow") == 0) return follow(feed, symbols, n, on, count, timeout, text);
    if (strcmp(cmd, "publish") == 0)
        return publish(feed, fields, (uint32_t)(capacity > UINT32_MAX ? 0 : capacity),
                       (uint32_t)(ring > UINT32_MAX ? 0 : ring), (unsigned)mode, end);
    return usage();
}
