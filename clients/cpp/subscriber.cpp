// subscriber: follow a pricefeed feed from C++, printing each change once, in feed order.
//
//     g++ -std=c++17 -O2 -Wall -Wextra -I clients/c -o subscriber clients/cpp/subscriber.cpp
//     ./subscriber FEED [SYMBOL...] [--count N] [--timeout S]
//
// Output is what `pricefeed subscribe FEED --json` prints, one JSON object per line:
//     {"symbol": "AAPL", "price": 187.5, "seq": 42, "time_ns": 1764380000123456789}
//     {"event": "gap", "missed": 880, "first_seq": 1001, "last_seq": 1900}
//     {"event": "publisher_gone", "pid": 4242, "head_seq": 1900, "clean": false}
//     {"event": "publisher_restarted", "pid": 4300, "epoch": 3, "head_seq": 1900}
//     {"event": "ended", "feed": "prices"}
// Exit codes are the CLI's: 0 when --count changes were printed or the feed ended, 12 when
// --timeout seconds passed with no change, 3 for no such feed, 9 for a bad segment, 130 on
// Ctrl-C (docs/cli.md).
//
// The class Feed below is a small RAII layer over pricefeed.h; on_change() is where a real
// program acts on a change (a trading strategy would place its order there). Each change
// reaches on_change() exactly once; after a gap, the latest value of every symbol that
// changed meanwhile arrives, once each, so the strategy never acts on a stale price.
#include "pricefeed.h"

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
    Feed(const std::string &name, const std::vector<std::string> &symbols) {
        pf_error err;
        if (pf_open(&feed_, name.c_str(), &err) != PF_OK) throw FeedError(err);
        feed_.interrupt = &g_interrupted; // a Ctrl-C ends a wait with PF_EINTR
        std::vector<const char *> names;
        for (const auto &s : symbols) names.push_back(s.c_str());
        if (pf_sub_open(&sub_, &feed_, symbols.empty() ? nullptr : names.data(), names.size(), &err) != PF_OK) {
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

// Act on one change. Here: print it.
void on_change(const pf_quote &q) {
    char price[40];
    pf_format_price(q.price, price, sizeof price);
    emit("{\"symbol\": " + json_string(q.symbol) + ", \"price\": " + price + ", \"seq\": " + std::to_string(q.seq) +
         ", \"time_ns\": " + std::to_string(q.time_ns) + "}");
}

std::string pid_json(uint32_t pid) { return pid ? std::to_string(pid) : "null"; }

int usage() {
    std::fprintf(stderr, "usage: subscriber FEED [SYMBOL...] [--count N] [--timeout S]\n");
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    std::string name = argv[1];
    std::vector<std::string> symbols;
    long count = 0;
    double timeout = -1;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--count" && i + 1 < argc) {
            count = std::strtol(argv[++i], nullptr, 10);
            if (count < 1) return usage();
        } else if (a == "--timeout" && i + 1 < argc) {
            timeout = std::strtod(argv[++i], nullptr);
            if (!(timeout >= 0)) return usage();
        } else if (a.rfind("--", 0) == 0) {
            return usage();
        } else {
            symbols.push_back(a);
        }
    }
    struct sigaction sa {};
    sa.sa_handler = on_sigint; // no SA_RESTART: the futex wait returns EINTR
    sigaction(SIGINT, &sa, nullptr);

    try {
        Feed feed(name, symbols);
        long seen = 0;
        // --timeout is an idle timeout, as in the CLI: only a change restarts the clock (a gap
        // or another event does not), so each wait gets the time that is left.
        using clock = std::chrono::steady_clock;
        auto deadline = clock::now() + std::chrono::duration<double>(timeout);
        for (;;) {
            double left = timeout < 0 ? -1.0 : std::chrono::duration<double>(deadline - clock::now()).count();
            pf_event ev = feed.next(timeout < 0 ? -1.0 : (left > 0 ? left : 0.0));
            switch (ev.kind) {
            case PF_EVENT_QUOTE:
                on_change(ev.quote);
                if (count && ++seen >= count) return 0;
                deadline = clock::now() + std::chrono::duration<double>(timeout);
                break;
            case PF_EVENT_GAP:
                emit("{\"event\": \"gap\", \"missed\": " + std::to_string(ev.missed) +
                     ", \"first_seq\": " + std::to_string(ev.first_seq) +
                     ", \"last_seq\": " + std::to_string(ev.last_seq) + "}");
                break;
            case PF_EVENT_PUBLISHER_GONE:
                emit("{\"event\": \"publisher_gone\", \"pid\": " + pid_json(ev.pid) +
                     ", \"head_seq\": " + std::to_string(ev.head_seq) +
                     ", \"clean\": " + (ev.clean ? "true" : "false") + "}");
                break;
            case PF_EVENT_PUBLISHER_RESTARTED:
                emit("{\"event\": \"publisher_restarted\", \"pid\": " + pid_json(ev.pid) +
                     ", \"epoch\": " + std::to_string(ev.epoch) + ", \"head_seq\": " + std::to_string(ev.head_seq) +
                     "}");
                break;
            case PF_EVENT_ENDED:
                emit("{\"event\": \"ended\", \"feed\": " + json_string(name.c_str()) + "}");
                return 0;
            }
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
