/*
 * Adaptive timeouts (invoker_config.timeout_factor): a task's timeout from
 * the median run time of the last successes.  A success costs one store in
 * a ring; the median is recomputed only when an adaptive task is seen
 * started and the ring has changed since, by selection over its 100 words
 * (no sort).  Guesses of when a task not yet seen started may time out
 * (to arm the timer) take the median as last computed.
 */
#include "internal.h"

void invoker__adapt_note(invoker *inv, uint64_t run_ns)
{
    invoker__adapt *a = &inv->adapt;
    a->runs[a->seen % INVOKER__ADAPT_RING] = run_ns;
    a->seen++;
    a->stale = true;
}

/* The k-th smallest of v[0..n) (Hoare's selection; v is scratch). */
static uint64_t select_kth(uint64_t *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint64_t pivot = v[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                uint64_t x = v[i];
                v[i] = v[j];
                v[j] = x;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return v[k];
}

double invoker__adapt_timeout(invoker *inv, bool fresh)
{
    invoker__adapt *a = &inv->adapt;
    if (a->seen < INVOKER__ADAPT_MIN_SEEN)
        return inv->cfg.timeout;
    if (a->stale && (fresh || !a->median_ns)) {
        size_t n = a->seen < INVOKER__ADAPT_RING ? (size_t)a->seen : INVOKER__ADAPT_RING;
        uint64_t v[INVOKER__ADAPT_RING];
        for (size_t i = 0; i < n; i++)
            v[i] = a->runs[i];
        /* Of an even count, the upper middle one. */
        a->median_ns = select_kth(v, n, n / 2);
        a->stale = false;
    }
    double s = inv->cfg.timeout_factor * ((double)a->median_ns / 1e9);
    double floor = inv->cfg.timeout_min > 0 ? inv->cfg.timeout_min : 1.0;
    if (s < floor)
        s = floor;
    if (inv->cfg.timeout > 0 && s > inv->cfg.timeout)
        s = inv->cfg.timeout;
    return s;
}
