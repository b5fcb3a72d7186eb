/*
 * futex_pingpong: the physical limit of a blocking wake-up between processes, for bench.py.
 *
 *     futex_pingpong WAITERS          then, one command a line on stdin:
 *     run N LO_NS HI_NS SEED          N paced wake-ups, LO..HI ns apart (uniform)
 *     quit                            (or end of input)
 *
 * The waker (this process) and WAITERS forked processes share an anonymous MAP_SHARED mapping:
 * the same shmem the kernel uses for /dev/shm, so the futex is keyed by (inode, offset) exactly
 * as for a pricefeed segment. FUTEX_PRIVATE_FLAG is never set, as in pricefeed.
 *
 * For each wake-up the waker takes t0, stores it, stores the new word and calls FUTEX_WAKE for
 * everyone; each waiter, blocked in FUTEX_WAIT, takes its own time as it returns. After each
 * "run" the waker prints one line: "ok" then, per wake-up, "LAST CALL" where LAST is the time
 * from t0 until the last waiter woke and CALL the time from t0 until FUTEX_WAKE returned, both
 * in ns of CLOCK_MONOTONIC.
 *
 * The waker paces by sleeping, never by spinning, so that, as in bench.py's Python senders,
 * the waiter's CPU is found idle. It reads the results of a wake-up only after the pause that
 * follows it, and waits longer only if some waiter has not recorded yet.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WAITERS 1024
#define LINE 64 /* keep every shared word on its own cache line: no false sharing */

struct padded {
    _Alignas(LINE) int64_t v;
};

struct shared {
    _Alignas(LINE) uint32_t word; /* the futex word: number of the current wake-up */
    _Alignas(LINE) int64_t t0;    /* when the waker started the current wake-up */
    _Alignas(LINE) uint32_t quit;
    _Alignas(LINE) uint32_t acked; /* waiters that recorded the current wake-up, all rounds */
    struct padded woke[MAX_WAITERS];
};

static struct shared *sh;
static int waiters;
static pid_t pids[MAX_WAITERS];
static uint32_t wakes; /* wake-ups sent so far, all runs: each waiter acks each one once */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long futex(uint32_t *addr, int op, uint32_t val) {
    return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static void sleep_ns(int64_t ns) {
    if (ns <= 0) return;
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void waiter(int me) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the waker */
    uint32_t seen = __atomic_load_n(&sh->word, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t w = __atomic_load_n(&sh->word, __ATOMIC_ACQUIRE);
        if (w == seen) {
            futex(&sh->word, FUTEX_WAIT, seen);
            continue;
        }
        int64_t t = now_ns();
        if (__atomic_load_n(&sh->quit, __ATOMIC_ACQUIRE)) _exit(0);
        sh->woke[me].v = t;
        seen = w;
        __atomic_fetch_add(&sh->acked, 1, __ATOMIC_RELEASE);
    }
}

static void stop_waiters(void) {
    __atomic_store_n(&sh->quit, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&sh->word, ++wakes, __ATOMIC_RELEASE);
    futex(&sh->word, FUTEX_WAKE, INT_MAX);
    for (int i = 0; i < waiters; i++) waitpid(pids[i], NULL, 0);
}

/* When the last waiter woke for the newest wake-up; waits (sleeping) until all have recorded
 * it. Every wake-up is acked by every waiter before the next one is sent, so none coalesce. */
static int64_t last_wake(void) {
    uint32_t expected = wakes * (uint32_t)waiters;
    while (__atomic_load_n(&sh->acked, __ATOMIC_ACQUIRE) < expected) sleep_ns(20000);
    int64_t last = 0;
    for (int i = 0; i < waiters; i++)
        if (sh->woke[i].v > last) last = sh->woke[i].v;
    return last;
}

static void run(long n, int64_t lo, int64_t hi, unsigned seed) {
    int64_t *last = calloc((size_t)n, sizeof *last), *call = calloc((size_t)n, sizeof *call);
    if (!last || !call) {
        printf("error out of memory\n");
        fflush(stdout);
        exit(1);
    }
    srand(seed);
    int64_t t0 = 0;
    for (long i = 0; i < n; i++) {
        sleep_ns(lo + (int64_t)((double)rand() / RAND_MAX * (double)(hi - lo)));
        if (i > 0) last[i - 1] = last_wake() - t0;
        t0 = now_ns();
        sh->t0 = t0;
        __atomic_store_n(&sh->word, ++wakes, __ATOMIC_RELEASE); /* pairs with the waiter's acquire load */
        futex(&sh->word, FUTEX_WAKE, INT_MAX);
        call[i] = now_ns() - t0;
    }
    last[n - 1] = last_wake() - t0;
    fputs("ok", stdout);
    for (long i = 0; i < n; i++) printf(" %lld %lld", (long long)last[i], (long long)call[i]);
    fputc('\n', stdout);
    fflush(stdout);
    free(last);
    free(call);
}

int main(int argc, char **argv) {
    waiters = argc > 1 ? atoi(argv[1]) : 1;
    if (waiters < 1 || waiters > MAX_WAITERS) {
        fprintf(stderr, "usage: futex_pingpong WAITERS (1 to %d)\n", MAX_WAITERS);
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* bench.py kills us by pid; this covers its kill -9 */
    prctl(PR_SET_TIMERSLACK, 1000UL); /* the same pacing precision as bench.py's senders */
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(sh, 0, sizeof *sh);
    for (int i = 0; i < waiters; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            waiters = i;
            stop_waiters();
            return 1;
        }
        if (pid == 0) waiter(i);
        pids[i] = pid;
    }
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        long n;
        long long lo, hi;
        unsigned seed;
        if (sscanf(line, "run %ld %lld %lld %u", &n, &lo, &hi, &seed) == 4 && n > 0) {
            run(n, lo, hi, seed);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            printf("error bad command: %s", line);
            fflush(stdout);
        }
    }
    stop_waiters();
    return 0;
}
