/* Constant strings for error values, failure kinds and the version. */
#include "internal.h"

#include <errno.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* One list, as libuv's UV_ERRNO_MAP: the values this library returns. */
#define INVOKER_ERRNO_MAP(X)                                                  \
    X(EINVAL, "invalid argument")                                             \
    X(EMSGSIZE, "argument larger than max_arg_bytes")                         \
    X(ENOENT, "no such task (unknown, finished or already cancelled), or no such journal directory") \
    X(EBUSY, "not allowed inside a callback, or the journal is in use by another invoker") \
    X(EAGAIN, "too many queued tasks (max_queued), or no process could be forked") \
    X(ENOMEM, "out of memory")                                                \
    X(EMFILE, "too many open files in this process")                          \
    X(ENFILE, "too many open files in the system")                            \
    X(ECANCELED, "the invoker is being destroyed")                            \
    X(ENOSYS, "not supported on this system")                                 \
    X(EPROTO, "malformed message from a worker")                              \
    X(EBADMSG, "not an invoker journal of this version (left untouched)")     \
    X(ELOOP, "the journal path is a symbolic link")                           \
    X(EISDIR, "the journal path is a directory")                              \
    X(EACCES, "permission denied (journal)")                                  \
    X(EROFS, "read-only file system (journal)")                               \
    X(ENOSPC, "no space left on the journal's device")                        \
    X(EFBIG, "journal file too large")                                        \
    X(EIO, "I/O error (journal)")

const char *invoker_strerror(int err)
{
    switch (-err) {
#define X(code, text) case code: return text;
        INVOKER_ERRNO_MAP(X)
#undef X
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

const char *invoker_failure_name(invoker_failure failure)
{
    switch (failure) {
    case INVOKER_FAIL_OBJECTIVE: return "objective";
    case INVOKER_FAIL_TIMEOUT:   return "timeout";
    case INVOKER_FAIL_CRASH:     return "crash";
    case INVOKER_FAIL_EXIT:      return "exit";
    case INVOKER_FAIL_CANCELLED: return "cancelled";
    case INVOKER_FAIL_SHUTDOWN:  return "shutdown";
    case INVOKER_FAIL_TOO_LARGE: return "too_large";
    case INVOKER_FAIL_PROTOCOL:  return "protocol";
    case INVOKER_FAIL_NO_WORKER: return "no_worker";
    case INVOKER_FAIL_MEMORY:    return "memory";
    case INVOKER_FAIL_CPU:       return "cpu";
    case INVOKER_FAIL_LOST:      return "lost";
    }
    return "unknown";
}

int invoker_version(void)
{
    return INVOKER_VERSION;
}

const char *invoker_version_string(void)
{
    return STR(INVOKER_VERSION_MAJOR) "." STR(INVOKER_VERSION_MINOR) "." STR(INVOKER_VERSION_PATCH);
}
