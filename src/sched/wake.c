/*
 * What wakes the caller's event loop through invoker_fd (the epoll set):
 * the kick (an eventfd written when an outcome waits for the next poll)
 * and the timer (armed for the earliest deadline, absolute on the
 * monotonic clock).
 */
#include "internal.h"

#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

void invoker__wake_kick(invoker *inv)
{
    if (!inv->kicked) {
        uint64_t one = 1;
        inv->kicked = invoker__fd_write(inv->kickfd, &one, sizeof one) == (ssize_t)sizeof one;
    }
}

void invoker__wake_arm_timer(invoker *inv, uint64_t at_ns)
{
    if (at_ns >= inv->timer_armed_ns && inv->timer_armed_ns != 0)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (at_ns == 0)
        at_ns = 1;
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000ull);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000ull);
    if (timerfd_settime(inv->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        inv->timer_armed_ns = at_ns;
}

void invoker__wake_disarm_timer(invoker *inv)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (inv->timer_armed_ns && timerfd_settime(inv->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        inv->timer_armed_ns = 0;
}
