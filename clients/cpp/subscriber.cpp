// subscriber: follow a pricefeed feed from C++, printing each change once, in feed order.
//
//     g++ -std=c++17 -O2 -Wall -Wextra -I clients/c -o subscriber clients/cpp/subscriber.cpp
//     ./subscriber FEED [SYMBOL...] [--on FIELD,...] [--count N] [--timeout S] [--text]
//
// Output is what `pricefeed subscribe FEED --json` prints, one JSON object per line: the
// symbol, every field of the feed's schema by name, seq, time_ns, and the names of the fields
// the change changed (a symbol's first change changes them all):
//     {"symbol": "AAPL", "price": 187.5, "seq": 42, "time_ns": 1764380000123456789, "changed": ["price"]}
//     {"symbol": "ES", "bid": 5201.25, "ask": 5201.5, "bid_size": 12, "ask_size": 3, "seq": 43,
//      "time_ns": 1764380000123456789, "changed": ["bid", "ask"]}
// and the events:
//     {"event": "gap", "missed": 880, "first_seq": 1001, "last_seq": 1900}
//     {"event": "publisher_gone", "pid": 4242, "head_seq": 1900, "clean": false}
//     {"event": "publisher_restarted", "pid": 4300, "epoch": 3, "head_seq": 1900}
//     {"event": "ended", "feed": "prices"}
// With --text, the lines `pricefeed subscribe FEED` prints instead:
//             42 AAPL    187.5
//             43 ES      bid=5201.25 ask=5201.5 bid_size=12 ask_size=3 changed=bid,ask
//     # gap missed=880 first_seq=1001 last_seq=1900
// --on bid,ask: only the changes that changed one of those fields (Python's updates(on=)).
// Exit codes are the CLI's: 0 when --count changes were printed or the feed ended, 12 when
// --timeout seconds passed with no change, 3 for no such feed, 9 for a bad segment, 7 for a
// field the feed does not have, 130 on Ctrl-C (docs/cli.md).
//
// The class Feed below is a small RAII layer over pricefeed.h; on_change() is where a real
// program acts on a change (a trading strategy would place its order there). Each change
// reaches on_change() exactly once; after a gap, the latest value of every symbol that
// changed meanwhile arrives, once each, so the strategy never acts on a stale price.
#include "pricefeed.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

volatile int g_interrupted = 0;

extern "C" void on_sigint(int) { g_interrupted = 1; }

// A pricefeed error as a C++ exception that keeps the code (and so the exit code).
struct FeedError : std::runtime_error {
    int code;
    explicit FeedError(const pf_error &err) : std::runtime_error(err.message), code(err.code) {}
};

// One feed, read-only, and one subscription to it (RAII over pf_feed and pf_sub).
class Feed {
  public:
    Feed(const std::string &name, const std::vector<std::string> &symbols, const std::vector<std::string> &on) {
        pf_error err;
        if (pf_open(&feed_, name.c_str(), &err) != PF_OK) throw FeedError(err);
        feed_.interrupt = &g_interrupted; // a Ctrl-C ends a wait with PF_EINTR
        std::vector<const char *> names;
        for (const auto &s : symbols) names.push_back(s.c_str());
        if (pf_sub_open(&sub_, &feed_, symbols.empty() ? nullptr : names.data(), names.size(), &err) != PF_OK) {
            pf_close(&feed_);
            throw FeedError(err);
        }
        std::vector<const char *> fields;
        for (const auto &s : on) fields.push_back(s.c_str());
        if (pf_sub_on(&sub_, fields.data(), fields.size(), &err) != PF_OK) {
            pf_sub_close(&sub_);
            pf_close(&feed_);
            throw FeedError(err);
        }
    }
    ~Feed() {
        pf_sub_close(&sub_);
        pf_close(&feed_);
    }
    Feed(const Feed &) = delete;
    Feed &operator=(const Feed &) = delete;

    // The next event; throws FeedError (PF_ETIMEOUT after `seconds`, < 0: wait forever).
    pf_event next(double seconds) {
        pf_event ev;
        pf_error err;
        if (pf_next(&sub_, &ev, seconds, &err) != PF_OK) throw FeedError(err);
        return ev;
    }

    // The schema: how many fields, and field i (its name, and whether it is a f64 or an i64).
    uint32_t fields() const { return pf_field_count(&feed_); }
    const pf_field &field(uint32_t i) const { return *pf_field_at(&feed_, i); }
    // A value of field i as the CLI writes it (a f64 as Python's repr(), an i64 in decimal).
    std::string format(uint32_t i, pf_value value) const {
        char text[40];
        pf_format_value(&feed_, i, value, text, sizeof text);
        return text;
    }

  private:
    pf_feed feed_;
    pf_sub sub_;
};

std::string json_string(const char *s) {
    std::string out = "\"";
    for (; *s; ++s) {
        if (*s == '"' || *s == '\\') out += '\\';
        out += *s; // symbols are printable ASCII: nothing else needs escaping
    }
    return out + "\"";
}

void emit(const std::string &line) {
    std::fputs(line.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

// Act on one change. Here: print it, as JSON (`pricefeed subscribe --json`) or as text.
void on_change(const Feed &feed, const pf_quote &q, bool text, int width) {
    std::string line;
    if (text) {
        char head[80];
        std::snprintf(head, sizeof head, "%10llu %-*s", static_cast<unsigned long long>(q.seq), width, q.symbol);
        line = head;
        if (feed.fields() == 1) {
            line += " " + feed.format(0, q.values[0]);
        } else {
            std::string changed;
            for (uint32_t i = 0; i < feed.fields(); ++i) {
                line += std::string(" ") + feed.field(i).name + "=" + feed.format(i, q.values[i]);
                if (q.changed >> i & 1u) changed += (changed.empty() ? "" : ",") + std::string(feed.field(i).name);
            }
            line += " changed=" + changed;
        }
    } else {
        line = "{\"symbol\": " + json_string(q.symbol);
        std::string changed;
        for (uint32_t i = 0; i < feed.fields(); ++i) {
            line += ", " + json_string(feed.field(i).name) + ": " + feed.format(i, q.values[i]);
            if (q.changed >> i & 1u) changed += (changed.empty() ? "" : ", ") + json_string(feed.field(i).name);
        }
        line += ", \"seq\": " + std::to_string(q.seq) + ", \"time_ns\": " + std::to_string(q.time_ns) +
                ", \"changed\": [" + changed + "]}";
    }
    emit(line);
}

std::string pid_json(uint32_t pid) { return pid ? std::to_string(pid) : "null"; }
std::string pid_text(uint32_t pid) { return pid ? std::to_string(pid) : "None"; }

// An event, as JSON or as the CLI's text mode writes it ("# gap missed=880 ...").
void on_event(const pf_event &ev, const std::string &name, bool text) {
    switch (ev.kind) {
    case PF_EVENT_GAP:
        emit(text ? "# gap missed=" + std::to_string(ev.missed) + " first_seq=" + std::to_string(ev.first_seq) +
                        " last_seq=" + std::to_string(ev.last_seq)
                  : "{\"event\": \"gap\", \"missed\": " + std::to_string(ev.missed) +
                        ", \"first_seq\": " + std::to_string(ev.first_seq) +
                        ", \"last_seq\": " + std::to_string(ev.last_seq) + "}");
        break;
    case PF_EVENT_PUBLISHER_GONE:
        emit(text ? "# publisher gone pid=" + pid_text(ev.pid) + " head_seq=" + std::to_string(ev.head_seq) +
                        " clean=" + (ev.clean ? "True" : "False")
                  : "{\"event\": \"publisher_gone\", \"pid\": " + pid_json(ev.pid) +
                        ", \"head_seq\": " + std::to_string(ev.head_seq) +
                        ", \"clean\": " + (ev.clean ? "true" : "false") + "}");
        break;
    case PF_EVENT_PUBLISHER_RESTARTED:
        emit(text ? "# publisher restarted pid=" + pid_text(ev.pid) + " epoch=" + std::to_string(ev.epoch) +
                        " head_seq=" + std::to_string(ev.head_seq)
                  : "{\"event\": \"publisher_restarted\", \"pid\": " + pid_json(ev.pid) +
                        ", \"epoch\": " + std::to_string(ev.epoch) +
                        ", \"head_seq\": " + std::to_string(ev.head_seq) + "}");
        break;
    case PF_EVENT_ENDED:
        emit(text ? "# ended feed=" + name : "{\"event\": \"ended\", \"feed\": " + json_string(name.c_str()) + "}");
        break;
    }
}

int usage() {
    std::fprintf(stderr,
                 "usage: subscriber FEED [SYMBOL...] [--on FIELD,...] [--count N] [--timeout S] [--text]\n");
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    std::string name = argv[1];
    std::vector<std::string> symbols, on;
    long count = 0;
    double timeout = -1;
    bool text = false;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--count" && i + 1 < argc) {
            count = std::strtol(argv[++i], nullptr, 10);
            if (count < 1) return usage();
        } else if (a == "--timeout" && i + 1 < argc) {
            timeout = std::strtod(argv[++i], nullptr);
            if (!(timeout >= 0)) return usage();
        } else if (a == "--on" && i + 1 < argc) {
            std::string list = argv[++i];
            for (size_t start = 0; start <= list.size();) {
                size_t comma = list.find(',', start);
                if (comma == std::string::npos) comma = list.size();
                on.push_back(list.substr(start, comma - start));
                start = comma + 1;
            }
        } else if (a == "--text") {
            text = true;
        } else if (a.rfind("--", 0) == 0) {
            return usage();
        } else {
            symbols.push_back(a);
        }
    }
    // As the CLI: the symbol column is as wide as the longest symbol asked for, else as the
    // longest there can be.
    int width = symbols.empty() ? static_cast<int>(PF_SYMBOL_MAX) : 0;
    for (const auto &s : symbols) width = std::max(width, static_cast<int>(s.size()));
    struct sigaction sa {};
    sa.sa_handler = on_sigint; // no SA_RESTART: the futex wait returns EINTR
    sigaction(SIGINT, &sa, nullptr);

    try {
        Feed feed(name, symbols, on);
        long seen = 0;
        // --timeout is an idle timeout, as in the CLI: only a change restarts the clock (a gap
        // or another event does not), so each wait gets the time that is left.
        using clock = std::chrono::steady_clock;
        auto deadline = clock::now() + std::chrono::duration<double>(timeout);
        for (;;) {
            double left = timeout < 0 ? -1.0 : std::chrono::duration<double>(deadline - clock::now()).count();
            pf_event ev = feed.next(timeout < 0 ? -1.0 : (left > 0 ? left : 0.0));
            if (ev.kind == PF_EVENT_QUOTE) {
                on_change(feed, ev.quote, text, width);
                if (count && ++seen >= count) return 0;
                deadline = clock::now() + std::chrono::duration<double>(timeout);
                continue;
            }
            on_event(ev, name, text);
            if (ev.kind == PF_EVENT_ENDED) return 0;
        }
    } catch (const FeedError &e) {
        if (e.code == PF_ETIMEOUT) {
            std::fprintf(stderr, "subscriber: no change on feed '%s' within the timeout of %g s\n", name.c_str(),
                         timeout);
            return pf_exit_code(e.code);
        }
        std::fprintf(stderr, "subscriber: %s (%s)\n", e.what(), pf_code_name(e.code));
        return pf_exit_code(e.code);
    }
}
