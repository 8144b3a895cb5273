/*
 * The objective's result: invoker_result_write appends to a buffer with
 * room for the frame header in front, so that the worker sends header and
 * bytes in one write; inline mode uses the same buffer.  Called where the
 * objective runs: in a worker, or in the caller's process inline.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int invoker_result_write(invoker_result *out, const void *data, size_t len)
{
    if (!out || (!data && len > 0))
        return -EINVAL;
    if (out->too_large)
        return -EMSGSIZE;
    if (len > out->max - out->len) {
        /* Sticky: the task fails as TOO_LARGE whatever the objective returns. */
        out->too_large = true;
        return -EMSGSIZE;
    }
    if (len == 0)
        return 0;
    int rc = invoker__result_reserve(out, out->len + len);
    if (rc)
        return rc;
    memcpy(out->buf + INVOKER__FRAME_HDR + out->len, data, len);
    out->len += len;
    return 0;
}

int invoker__result_reserve(struct invoker_result *r, size_t len)
{
    size_t need = len + 16;  /* room to pad the frame to 16 bytes */
    if (need <= r->cap && r->buf)
        return 0;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *p = realloc(r->buf, INVOKER__FRAME_HDR + cap);
    if (!p)
        return -ENOMEM;
    r->buf = p;
    r->cap = cap;
    return 0;
}

void invoker__result_note_child(struct invoker_result *r, long max_rss_kib)
{
    if (max_rss_kib > r->child_rss_kib)
        r->child_rss_kib = max_rss_kib;
}

int invoker_current_task(const invoker_result *out, invoker_id *id, unsigned *attempt,
                         unsigned *worker)
{
    if (!out)
        return -EINVAL;
    if (id)
        *id = out->task_id;
    if (attempt)
        *attempt = out->attempt;
    if (worker)
        *worker = out->worker;
    return 0;
}
