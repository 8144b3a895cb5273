#!/usr/bin/python3
"""Python process pools on invoker's benchmark workloads.

Run with Debian's interpreter (/usr/bin/python3) and its python3-pebble
and python3-joblib packages.  One workload and one pool per invocation:

    pools.py calibrate                       # busy-loop iterations for 1 ms
    pools.py WORKLOAD IMPL [--workers N] [--tasks N] [--iters N] ...

Workloads: trivial cpu payload hang crash restart.
Pools:
    serial       an in-process loop (efficiency figures)
    pool-apply   multiprocessing.Pool.apply_async with a callback per task
    pool-imap1   multiprocessing.Pool.imap_unordered, chunksize 1
    pool-imapN   multiprocessing.Pool.imap_unordered, chunksize N/(4*workers)
    ppe          concurrent.futures.ProcessPoolExecutor.submit per task
    ppe-map      ProcessPoolExecutor.map, chunksize N/(4*workers)
    pebble       pebble.ProcessPool.schedule per task (per-task timeout)
    joblib       joblib.Parallel with the loky backend (automatic batching)

Prints "RESULT workload=... impl=... key=value ..." lines like the C programs.
Timings exclude starting the pool: each pool runs a few tasks first.
"""
import argparse
import concurrent.futures as cf
import faulthandler
from concurrent.futures.process import BrokenProcessPool
import math
import multiprocessing as mp
import os
import signal
import statistics
import sys
import threading
import time

KIND_CPU, KIND_HANG, KIND_KILL, KIND_EXIT, KIND_PROBE = 1, 2, 3, 4, 5

# Shared timing records: created before a pool forks its workers, written by
# the tasks in the workers.  time.monotonic() is CLOCK_MONOTONIC.
REC_START = None
REC_PID = None
# Worker start-ups, noted by the pools' initializer: tells the original
# workers from their replacements.
SPAWN_T = None
SPAWN_PID = None
SPAWN_N = None
SPAWN_MAX = 4096


def spawn_note():
    with SPAWN_N.get_lock():
        i = SPAWN_N.value
        SPAWN_N.value += 1
    if i < SPAWN_MAX:
        SPAWN_PID[i] = os.getpid()
        SPAWN_T[i] = time.monotonic()


def trivial_arg(i):
    b = float(i % 1000)
    return tuple(b + 0.125 * k for k in range(8))


def trivial(v):
    return sum(v)


def busy(iters):
    x = 1.0
    for _ in range(iters):
        x = x * 0.9999999 + 1e-7
    return x


def echo(b):
    return b


def mixed(t):
    kind, idx, iters = t
    if idx >= 0 and REC_START is not None:
        REC_PID[idx] = os.getpid()
        REC_START[idx] = time.monotonic()
    if kind == KIND_HANG:
        while True:
            time.sleep(3600)
    elif kind == KIND_KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == KIND_EXIT:
        os._exit(3)
    return busy(iters)


def calibrate(ms=1.0):
    probe = 20000
    best = 1e30
    for _ in range(7):
        t0 = time.perf_counter()
        busy(probe)
        best = min(best, time.perf_counter() - t0)
    return max(1, int(ms / 1000.0 / (best / probe)))


def crash_kind(i, total, crashes):
    """Same placement as crash_kind() in common.c."""
    if crashes == 0 or total == 0:
        return KIND_CPU
    step = max(1, total // crashes)
    if i % step == step // 2 and i // step < crashes:
        return KIND_EXIT if (i // step) % 2 else KIND_KILL
    return KIND_CPU


def emit(o, workload, impl, **kv):
    parts = ["RESULT", "workload=" + workload, "impl=" + impl,
             "workers=%d" % o.workers, "rep=%d" % o.rep]
    for k, v in kv.items():
        if isinstance(v, float):
            v = "%.6f" % v if abs(v) < 1e6 else "%.1f" % v
        parts.append("%s=%s" % (k, str(v).replace(" ", "_")))
    print(" ".join(parts), flush=True)


def touch(mib):
    """mib MiB of the parent's own memory, every page written."""
    if not mib:
        return None
    import mmap
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    buf = mmap.mmap(-1, mib << 20, flags=flags)
    mv = memoryview(buf)
    mv[::4096] = b"\x01" * len(mv[::4096])
    mv.release()
    return buf


# ---------------------------------------------------------------------------
# The pools, behind one interface: start(), run(fn, args) -> results, close().
# ---------------------------------------------------------------------------

class Counter:
    """Counts callbacks; wait() returns when n came or the bound passed."""

    def __init__(self, n):
        self.n, self.ok, self.err, self.errors = n, 0, 0, []
        self.results = []
        self.lock = threading.Lock()
        self.event = threading.Event()
        if n == 0:
            self.event.set()

    def _tick(self):
        if self.ok + self.err >= self.n:
            self.event.set()

    def on_result(self, r):
        with self.lock:
            self.results.append(r)
            self.ok += 1
            self._tick()

    def on_error(self, e):
        with self.lock:
            self.err += 1
            self.errors.append(e)
            self._tick()

    def on_future(self, f):
        e = f.exception()
        if e is None:
            self.on_result(f.result())
        else:
            self.on_error(e)

    def wait(self, bound=None):
        return self.event.wait(bound)


def initializer():
    return spawn_note if SPAWN_N is not None else None


class PoolApply:
    def __init__(self, w):
        self.w = w
        self.pool = mp.Pool(w, initializer=initializer())

    def submit(self, fn, args, counter):
        for a in args:
            self.pool.apply_async(fn, (a,), callback=counter.on_result,
                                  error_callback=counter.on_error)

    def run(self, fn, args):
        c = Counter(len(args))
        self.submit(fn, args, c)
        c.wait()
        return c.results

    def kill(self):
        self.pool.terminate()

    def close(self):
        self.pool.terminate()
        self.pool.join()


class PoolImap(PoolApply):
    def __init__(self, w, chunked):
        super().__init__(w)
        self.chunked = chunked

    def run(self, fn, args):
        cs = max(1, len(args) // (4 * self.w)) if self.chunked else 1
        return list(self.pool.imap_unordered(fn, args, chunksize=cs))


class PPE:
    def __init__(self, w, chunked=False):
        self.w, self.chunked = w, chunked
        self.ex = cf.ProcessPoolExecutor(w, mp_context=mp.get_context("fork"))

    def submit(self, fn, args, counter, timeout=None):
        futs = []
        for a in args:
            try:
                f = self.ex.submit(fn, a)
            except BrokenProcessPool as e:
                # broken while we were still submitting: the rest fail too
                counter.on_error(e)
                continue
            f.add_done_callback(counter.on_future)
            futs.append(f)
        return futs

    def run(self, fn, args):
        if self.chunked:
            cs = max(1, len(args) // (4 * self.w))
            return list(self.ex.map(fn, args, chunksize=cs))
        c = Counter(len(args))
        self.submit(fn, args, c)
        c.wait()
        return c.results

    def kill(self):
        procs = getattr(self.ex, "_processes", None) or {}
        for p in list(procs.values()):
            try:
                p.kill()
            except Exception:
                pass
        self.ex.shutdown(wait=False, cancel_futures=True)

    def close(self):
        self.ex.shutdown(wait=True, cancel_futures=True)


class Pebble:
    def __init__(self, w):
        import pebble
        self.pool = pebble.ProcessPool(max_workers=w, initializer=initializer())

    def submit(self, fn, args, counter, timeout=None):
        futs = []
        for a in args:
            f = self.pool.schedule(fn, args=(a,), timeout=timeout)
            f.add_done_callback(counter.on_future)
            futs.append(f)
        return futs

    def run(self, fn, args):
        c = Counter(len(args))
        self.submit(fn, args, c)
        c.wait()
        return c.results

    def kill(self):
        self.pool.stop()
        self.pool.join(timeout=5)

    def close(self):
        self.pool.close()
        self.pool.join()


class Joblib:
    def __init__(self, w):
        from joblib import Parallel
        self.w = w
        self.par = Parallel(n_jobs=w, backend="loky")

    def run(self, fn, args, timeout=None):
        from joblib import Parallel, delayed
        par = self.par if timeout is None else Parallel(
            n_jobs=self.w, backend="loky", timeout=timeout)
        return par(delayed(fn)(a) for a in args)

    def kill(self):
        pass

    def close(self):
        pass


def make_pool(impl, w):
    if impl == "pool-apply":
        return PoolApply(w)
    if impl == "pool-imap1":
        return PoolImap(w, False)
    if impl == "pool-imapN":
        return PoolImap(w, True)
    if impl == "ppe":
        return PPE(w)
    if impl == "ppe-map":
        return PPE(w, chunked=True)
    if impl == "pebble":
        return Pebble(w)
    if impl == "joblib":
        return Joblib(w)
    raise SystemExit("unknown pool " + impl)


def warm(pool, w):
    pool.run(trivial, [trivial_arg(i) for i in range(4 * w)])


def chunk_note(impl, o):
    if impl in ("pool-imapN", "ppe-map"):
        return "chunksize=%d" % max(1, o.tasks // (4 * o.workers))
    if impl == "joblib":
        return "batch_size=auto"
    return "per_task"


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------

def throughput(o, impl):
    w = o.workload
    if w == "trivial":
        fn, args = trivial, [trivial_arg(i) for i in range(o.tasks)]
    elif w == "cpu":
        fn, args = busy, [o.iters] * o.tasks
    else:
        payload = bytes(range(256)) * (o.bytes // 256)
        fn, args = echo, [payload] * o.tasks
    if impl == "serial":
        t0 = time.monotonic()
        res = [fn(a) for a in args]
        s = time.monotonic() - t0
    else:
        pool = make_pool(impl, o.workers)
        warm(pool, o.workers)
        t0 = time.monotonic()
        res = pool.run(fn, args)
        s = time.monotonic() - t0
        pool.close()
    n = o.tasks
    if w == "trivial":
        bad = abs(sum(res) - sum(trivial(a) for a in args)) > 1e-6 * n
        emit(o, w, "py-" + impl, tasks=n, seconds=s, tasks_per_s=n / s,
             us_per_task=s * 1e6 / n, bad=int(bad) + (len(res) != n),
             mode=chunk_note(impl, o))
    elif w == "cpu":
        emit(o, w, "py-" + impl, tasks=n, iters=o.iters, seconds=s,
             ms_per_task=s * 1e3 / n, bad=int(len(res) != n))
    else:
        bad = sum(1 for r in res if len(r) != o.bytes) + (len(res) != n)
        emit(o, w, "py-" + impl, tasks=n, bytes=o.bytes, seconds=s,
             mib_per_s=n * o.bytes / 2**20 / s, bad=bad)


def setup_records(n):
    global REC_START, REC_PID, SPAWN_T, SPAWN_PID, SPAWN_N
    REC_START = mp.RawArray("d", n)
    REC_PID = mp.RawArray("i", n)
    SPAWN_T = mp.RawArray("d", SPAWN_MAX)
    SPAWN_PID = mp.RawArray("i", SPAWN_MAX)
    SPAWN_N = mp.Value("i", 0)


def restart_latencies(is_crash, offset):
    """As restart_latencies() in common.c: crash events paired in time order
    with the first task of each replacement process (one that came up after
    the first crash event)."""
    n = len(REC_START)
    crashes = sorted(REC_START[i] + offset for i in range(n)
                     if is_crash[i] and REC_START[i])
    if not crashes:
        return []
    first_crash = crashes[0]
    first = {}
    for i in range(n):
        t, pid = REC_START[i], REC_PID[i]
        if t and (pid not in first or t < first[pid]):
            first[pid] = t
    ns = min(SPAWN_N.value, SPAWN_MAX)
    orig = {SPAWN_PID[j] for j in range(ns) if SPAWN_T[j] < first_crash}
    repl = sorted(t for pid, t in first.items() if pid not in orig)
    return [r - c for c, r in zip(crashes, repl)]


def ms(x):
    return x * 1e3


def hang(o, impl):
    nh, w, T = o.tasks, o.workers, o.timeout
    n = nh + w
    tasks = [(KIND_HANG if i < nh else KIND_PROBE, i, 0) for i in range(n)]
    ideal = math.ceil(nh / w) * T
    if impl == "joblib":
        # joblib has a timeout for the whole call, not per task: the first
        # hung task aborts the whole call; the next call needs new workers.
        pool = Joblib(w)
        warm(pool, w)
        t0 = time.monotonic()
        outcome, note = "reports", ""
        try:
            pool.run(mixed, tasks, timeout=T)
        except Exception as e:
            outcome, note = "breaks", type(e).__name__
        t1 = time.monotonic()
        pool.run(trivial, [trivial_arg(i) for i in range(w)])
        t2 = time.monotonic()
        emit(o, "hang", "py-joblib", outcome=outcome, tasks=nh, timeout=T,
             reported=0, seconds=t2 - t0, ideal=ideal, whole=1,
             note="%s_after_%.0f_ms:_whole_call_aborted,_pool_back_%.0f_ms_later"
             % (note, ms(t1 - t0), ms(t2 - t1)))
        return
    setup_records(n)  # not for joblib: loky workers are not forks
    pool = make_pool(impl, w)
    warm(pool, w)
    report = [0.0] * n
    c = Counter(n)

    def stamp(i):
        def cb(_f):
            report[i] = time.monotonic()
            c.on_future(_f)
        return cb

    t0 = time.monotonic()
    if impl == "pebble":
        for i, t in enumerate(tasks):
            f = pool.pool.schedule(mixed, args=(t,), timeout=T if i < nh else None)
            f.add_done_callback(stamp(i))
    elif impl == "ppe":
        for i, t in enumerate(tasks):
            pool.ex.submit(mixed, t).add_done_callback(stamp(i))
    else:  # pool-apply: no per-task timeout; AsyncResult.get(timeout) kills nothing
        for i, t in enumerate(tasks):
            pool.pool.apply_async(mixed, (t,), callback=c.on_result,
                                  error_callback=c.on_error)
    done = c.wait(max(o.bound, ideal + 1.0))
    t1 = time.monotonic()
    if not done:
        got = c.ok + c.err
        pool.kill()
        emit(o, "hang", "py-" + impl, outcome="hangs", tasks=nh, reported=got,
             seconds=t1 - t0, whole=0,
             note="no_per-task_timeout:_workers_stay_stuck;_gave_up_after_bound")
        return
    rep = [report[i] - (REC_START[i] + T) for i in range(nh) if REC_START[i] and report[i]]
    rst = restart_latencies([i < nh for i in range(n)], T)
    emit(o, "hang", "py-" + impl, outcome="reports", tasks=nh, timeout=T,
         reported=len(rep), seconds=t1 - t0, ideal=ideal,
         excess_ms=ms(t1 - t0 - ideal),
         report_ms_med=ms(statistics.median(rep)) if rep else -1,
         report_ms_max=ms(max(rep)) if rep else -1,
         restart_ms_med=ms(statistics.median(rst)) if rst else -1,
         restart_ms_max=ms(max(rst)) if rst else -1, whole=1)
    pool.close()


def crash(o, impl):
    w = o.workers
    bound = o.bound
    outcome, note, reported, crashed = "reports", "", 0, 0
    cleans, dirties, extras = [], [], []
    pool = make_pool(impl, w)
    warm(pool, w)
    # (normal, crashing) pairs of runs; only pebble survives a crash, so
    # only it gets more than one pair.
    passes = o.passes if impl == "pebble" else 1
    for p in range(passes):
        secs = [0.0, 0.0]
        for rnd in range(2):
            ncr = o.crashes if rnd else 0
            total = o.tasks + ncr
            tasks = [(crash_kind(i, total, ncr), -1, o.iters) for i in range(total)]
            t0 = time.monotonic()
            if impl == "joblib":
                try:
                    res = pool.run(mixed, tasks)
                    reported = len(res)
                except Exception as e:
                    outcome, note = "breaks", type(e).__name__ + ":_whole_call_aborted"
                    reported = 0
                secs[rnd] = time.monotonic() - t0
                continue
            c = Counter(total)
            pool.submit(mixed, tasks, c)
            done = c.wait(bound if rnd else None)
            secs[rnd] = time.monotonic() - t0
            if rnd:
                reported = c.ok + c.err
                crashed = c.err
                kinds = {type(e).__name__ for e in c.errors}
                if not done:
                    outcome = "hangs"
                    note = "lost_tasks_never_reported;_gave_up_after_bound"
                    pool.kill()
                    pool = None
                elif "BrokenProcessPool" in kinds:
                    outcome = "breaks"
                    note = "BrokenProcessPool:_%d_good_tasks_failed_too" % (c.err - o.crashes)
                else:
                    note = "+".join(sorted(kinds))
        cleans.append(secs[0])
        dirties.append(secs[1])
        extras.append((secs[1] - secs[0]) * 1e3 / max(1, o.crashes))
        if outcome != "reports":
            break
    if pool is not None:
        pool.close()
    kv = dict(outcome=outcome, tasks=o.tasks, crashes=o.crashes, reported=reported,
              crashes_reported=crashed, passes=len(cleans),
              clean_seconds=statistics.median(cleans), seconds=statistics.median(dirties))
    if outcome == "reports":
        kv["extra_ms_per_crash"] = statistics.median(extras)
    if note:
        kv["note"] = note
    emit(o, "crash", "py-" + impl, **kv)


def restart(o, impl):
    # ~1 ms probes between two crashes, ~50 ms of work per worker: longer
    # than a fork of a 4 GiB parent, so that restarts are timed one at a time.
    w, k, per = o.workers, o.crashes, 50 * o.workers
    warmn = 4 * w
    # Each crash comes after `per` probes (once everything is submitted);
    # `per` more close the run, for the last replacement to take.
    tasks = [(KIND_PROBE, i, o.iters) for i in range(warmn)]
    for c in range(k + 1):
        for _ in range(per):
            tasks.append((KIND_PROBE, len(tasks), o.iters))
        if c < k:
            tasks.append((KIND_KILL, len(tasks), 0))
    n = len(tasks)
    setup_records(n)
    pool = make_pool(impl, w)
    warm(pool, w)
    pool.run(mixed, tasks[:warmn])
    mem = touch(o.mem_mib)
    probes = [t for t in tasks[warmn:] if t[0] == KIND_PROBE]
    c = Counter(len(probes) + (k if impl == "pebble" else 0))
    t0 = time.monotonic()
    if impl == "pebble":
        pool.submit(mixed, tasks[warmn:], c)
    else:  # pool-apply: a crashed task is never reported; wait for the probes
        for t in tasks[warmn:]:
            if t[0] == KIND_PROBE:
                pool.pool.apply_async(mixed, (t,), callback=c.on_result,
                                      error_callback=c.on_error)
            else:
                pool.pool.apply_async(mixed, (t,))
    done = c.wait(o.bound)
    s = time.monotonic() - t0
    rst = restart_latencies([t[0] == KIND_KILL for t in tasks], 0.0)
    emit(o, "restart", "py-" + impl, mem_mib=o.mem_mib, restarts=len(rst),
         restart_ms_med=ms(statistics.median(rst)) if rst else -1,
         restart_ms_max=ms(max(rst)) if rst else -1,
         seconds=s, complete=int(done))
    if done:
        pool.close()
    else:
        pool.kill()
    del mem


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "calibrate":
        print(statistics.median(calibrate() for _ in range(3)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("impl")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=0.1)
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--mem-mib", type=int, default=0)
    ap.add_argument("--rep", type=int, default=1)
    ap.add_argument("--bound", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=3)
    o = ap.parse_args()
    # run.sh's timeout sends SIGTERM: leave a traceback of the hang in its log.
    faulthandler.register(signal.SIGTERM, chain=True)
    if not o.iters:
        o.iters = calibrate()
    if o.workload in ("trivial", "cpu", "payload"):
        throughput(o, o.impl)
    elif o.workload == "hang":
        hang(o, o.impl)
    elif o.workload == "crash":
        crash(o, o.impl)
    elif o.workload == "restart":
        restart(o, o.impl)
    else:
        raise SystemExit("unknown workload " + o.workload)


if __name__ == "__main__":
    main()
