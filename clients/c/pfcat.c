/*
 * pfcat: the whole C API of pricefeed.h behind a command line, one JSON object per line.
 * The tests run it (also built with -m32, as a 32-bit reader); it doubles as an example.
 *
 *   pfcat check FEED                      open read-only and validate; print the geometry
 *                                         and whether a publisher holds the feed (1, 0, -1)
 *   pfcat get FEED SYMBOL...              each symbol's current value
 *   pfcat follow FEED [SYMBOL...] [--count N] [--timeout S]
 *                                         every change from now on, as `pricefeed subscribe
 *                                         --json` prints them, then {"event": "ended", ...}
 *   pfcat publish FEED [--capacity N] [--ring N] [--mode OCTAL] [--end]
 *                                         open or create FEED as its publisher, print
 *                                         {"ready": ...}, then publish each "SYMBOL PRICE"
 *                                         line of stdin and print {"changed": ..., "seq": ...}
 *                                         (or {"error": ...}) for it
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

static void print_quote(const pf_quote *q) {
    printf("{\"symbol\": ");
    print_string(q->symbol);
    printf(", \"price\": ");
    print_double(q->price);
    printf(", \"seq\": %" PRIu64 ", \"time_ns\": %" PRIu64 "}\n", q->seq, q->time_ns);
}

static int check(const char *feed) {
    pf_feed f;
    pf_error err;
    if (pf_open(&f, feed, &err)) return report(&err);
    printf("{\"ok\": true, \"capacity\": %" PRIu32 ", \"ring_size\": %" PRIu32 ", \"head_seq\": %" PRIu64
           ", \"size\": %" PRIu64 ", \"pointer_bits\": %u, \"publisher_alive\": %d}\n",
           f.capacity, f.ring_size, pf_head(&f), f.size, (unsigned)(sizeof(void *) * 8), pf_publisher_alive(&f));
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
            print_quote(&q);
    }
    pf_close(&f);
    return code;
}

static int follow(const char *feed, char **symbols, int n, long count, double timeout) {
    pf_feed f;
    pf_sub s;
    pf_error err;
    if (pf_open(&f, feed, &err)) return report(&err);
    if (pf_sub_open(&s, &f, n ? (const char *const *)symbols : NULL, (size_t)n, &err)) {
        pf_close(&f);
        return report(&err);
    }
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
            print_quote(&ev.quote);
        } else if (ev.kind == PF_EVENT_GAP) {
            printf("{\"event\": \"gap\", \"missed\": %" PRIu64 ", \"first_seq\": %" PRIu64 ", \"last_seq\": %" PRIu64
                   "}\n",
                   ev.missed, ev.first_seq, ev.last_seq);
        } else if (ev.kind == PF_EVENT_PUBLISHER_GONE) {
            printf("{\"event\": \"publisher_gone\", \"pid\": %" PRIu32 ", \"head_seq\": %" PRIu64
                   ", \"clean\": %s}\n",
                   ev.pid, ev.head_seq, ev.clean ? "true" : "false");
        } else if (ev.kind == PF_EVENT_PUBLISHER_RESTARTED) {
            printf("{\"event\": \"publisher_restarted\", \"pid\": %" PRIu32 ", \"epoch\": %" PRIu32
                   ", \"head_seq\": %" PRIu64 "}\n",
                   ev.pid, ev.epoch, ev.head_seq);
        } else if (ev.kind == PF_EVENT_ENDED) {
            printf("{\"event\": \"ended\", \"feed\": ");
            print_string(feed);
            printf("}\n");
            break;
        }
        fflush(stdout);
        if (ev.kind == PF_EVENT_QUOTE && count > 0 && ++seen >= count) break;
    }
    fflush(stdout);
    pf_sub_close(&s);
    pf_close(&f);
    return code;
}

static int publish(const char *feed, uint32_t capacity, uint32_t ring, unsigned mode, int end) {
    pf_feed f;
    pf_error err;
    if (pf_open_or_create(&f, feed, capacity, ring, mode, &err)) return report(&err);
    printf("{\"ready\": true, \"head_seq\": %" PRIu64 ", \"epoch\": %" PRIu32 ", \"repaired\": %" PRIu32 "}\n", f.head,
           f.epoch, f.repaired);
    fflush(stdout);
    char line[256];
    int code = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        char symbol[64], price_text[64];
        if (line[0] == '\n' || line[0] == '#') continue;
        if (sscanf(line, "%63s %63s", symbol, price_text) != 2) {
            printf("{\"error\": \"bad line\"}\n");
            fflush(stdout);
            continue;
        }
        char *rest;
        double price = strtod(price_text, &rest);
        int changed;
        if (*rest != '\0') {
            printf("{\"error\": \"bad price\"}\n");
        } else if (pf_publish(&f, symbol, price, &changed, &err)) {
            code = report(&err);
        } else {
            printf("{\"changed\": %s, \"seq\": %" PRIu64 "}\n", changed ? "true" : "false", f.head);
        }
        fflush(stdout);
    }
    if (end && pf_end(&f, &err)) code = report(&err);
    pf_close(&f);
    return code;
}

static int usage(void) {
    fprintf(stderr, "usage: pfcat check FEED | get FEED SYMBOL... | follow FEED [SYMBOL...] [--count N] "
                    "[--timeout S] | publish FEED [--capacity N] [--ring N] [--mode OCTAL] [--end]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const char *cmd = argv[1], *feed = argv[2];
    char *symbols[64];
    int n = 0, end = 0;
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
        else if (strcmp(a, "--end") == 0)
            end = 1;
        else if (a[0] == '-' && a[1] == '-')
            return usage();
        else if (n < 64)
            symbols[n++] = argv[i];
    }
    if (strcmp(cmd, "check") == 0) return check(feed);
    if (strcmp(cmd, "get") == 0) return get(feed, symbols, n);
    if (strcmp(cmd, "follow") == 0) return follow(feed, symbols, n, count, timeout);
    if (strcmp(cmd, "publish") == 0)
        return publish(feed, (uint32_t)(capacity > UINT32_MAX ? 0 : capacity), (uint32_t)(ring > UINT32_MAX ? 0 : ring),
                       (unsigned)mode, end);
    return usage();
}
