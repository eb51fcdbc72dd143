/* test_threads.c — auto thread count: the policy on made-up load sequences
 * (a competitor that comes and goes, one-sample blips, more cores), and the
 * real /proc sampler against a busy child process of our own. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "tests/test_util.h"

/* Feeds `n` samples of `others`; returns the sample index (from 1) at which
 * the count first became `want`, or 0 if it never did. */
static int feed_until(bg_thread_policy *p, double others, int n, int want) {
    int at = 0;
    for (int i = 1; i <= n; i++)
        if (bg_thread_policy_feed(p, others) == want && !at) at = i;
    return at;
}

static void test_policy_two_cores(void) {
    bg_thread_policy p;
    bg_thread_policy_init(&p, 2, 0);
    CHECK(p.threads == 2 && p.max == 2);
    /* quiet: stays at 2 */
    CHECK(feed_until(&p, 0, 200, 1) == 0);
    CHECK(p.threads == 2 && p.changes == 0);
    /* one-sample blips of one and two other tasks: no change */
    for (int i = 0; i < 20; i++) {
        bg_thread_policy_feed(&p, i % 2 ? 2 : 0);
        for (int k = 0; k < 10; k++) bg_thread_policy_feed(&p, 0);
    }
    CHECK_MSG(p.changes == 0, "blips changed the count %d times", p.changes);
    /* a competitor arrives: one thread within a few samples, and it stays */
    int at = feed_until(&p, 1, 300, 1);
    CHECK_MSG(at >= 2 && at <= 4, "dropped to 1 thread after %d samples", at);
    CHECK(p.threads == 1 && p.changes == 1);
    /* its own blips to zero (it waited for I/O once) do not bring a thread back */
    for (int i = 0; i < 20; i++) {
        bg_thread_policy_feed(&p, 0);
        for (int k = 0; k < 10; k++) bg_thread_policy_feed(&p, 1);
    }
    CHECK(p.threads == 1 && p.changes == 1);
    /* it leaves: two threads again, after the average has fallen */
    at = feed_until(&p, 0, 100, 2);
    CHECK_MSG(at >= 4 && at <= 12, "back to 2 threads after %d samples", at);
    CHECK(p.threads == 2 && p.changes == 2);
    /* a competitor every other sample (half a core): no flapping, at most
     * one change per settling time */
    int before = p.changes;
    for (int i = 0; i < 400; i++) bg_thread_policy_feed(&p, i % 2);
    CHECK_MSG(p.changes - before <= 400 / 8, "%d changes in 400 samples", p.changes - before);
    /* negative samples count as zero */
    bg_thread_policy_init(&p, 2, 2);
    CHECK(feed_until(&p, -5, 50, 1) == 0);
}

static void test_policy_more_cores(void) {
    bg_thread_policy p;
    bg_thread_policy_init(&p, 8, 0);
    CHECK(p.threads == 8);
    /* three other tasks take three cores: 5 threads, one step at a time */
    feed_until(&p, 3, 200, 5);
    CHECK_MSG(p.threads == 5, "8 cores, 3 busy: %d threads", p.threads);
    /* everything busy: never below one thread */
    feed_until(&p, 20, 500, 1);
    CHECK(p.threads == 1);
    feed_until(&p, 0, 500, 8);
    CHECK(p.threads == 8);
    /* a maximum below the cores is never exceeded */
    bg_thread_policy_init(&p, 8, 3);
    CHECK(p.threads == 3);
    feed_until(&p, 0, 100, 4);
    CHECK(p.threads == 3);
    /* one core: nothing to drop */
    bg_thread_policy_init(&p, 1, 0);
    feed_until(&p, 4, 100, 0);
    CHECK(p.threads == 1 && p.changes == 0);
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* The /proc sampler with a real competitor: a child that spins on one core.
 * More load elsewhere only makes the drop more certain; coming back is
 * checked on the policy above, not here, because a loaded CI machine may
 * rightly keep one thread. */
static void test_sampler_with_busy_child(void) {
    bg_set_num_threads(2);
    CHECK(!bg_threads_auto() && bg_get_num_threads() == 2);
    bg_set_num_threads(0);
    CHECK(bg_threads_auto());
    int cores = bg_get_num_threads();
    if (cores < 2) {
        printf("one core: sampler test skipped\n");
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        alarm(30);   // never outlives a crashed parent
        for (volatile unsigned long i = 0;; i++) {
        }
    }
    CHECK(child > 0);
    int n = cores;
    for (int i = 0; i < 200 && n == cores; i++) {
        sleep_ms(6);   // past the 5 ms between samples
        bg_adapt_threads();
        n = bg_get_num_threads();
    }
    CHECK_MSG(n < cores, "a busy child on one of %d cores left %d threads", cores, n);
    CHECK(bg_threads_changes() >= 1);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);

    /* pinned: bg_adapt_threads leaves the count alone */
    bg_set_num_threads(2);
    for (int i = 0; i < 20; i++) {
        sleep_ms(6);
        bg_adapt_threads();
    }
    CHECK(bg_get_num_threads() == 2 && bg_threads_changes() == 0);
}

int main(void) {
    test_policy_two_cores();
    test_policy_more_cores();
    test_sampler_with_busy_child();
    return bg_test_finish();
}
