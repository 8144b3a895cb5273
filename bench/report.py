#!/usr/bin/python3
"""Gathers the RESULT lines of a benchmark run into tables of medians,
ratios and invoker's targets (PASS/MISS; a MISS never fails the run).

    report.py RESULTS_FILE [--out FILE] [--meta KEY=VALUE ...] [--notes FILE]

RESULTS_FILE holds lines "RESULT workload=... impl=... key=value ...",
"FAILED workload=... impl=... rc=..." and "SKIP workload=... reason=...";
other lines are ignored.  Standard library only.
"""
import argparse
import statistics
import sys

PER_TASK_PY = ["py-pool-apply", "py-pool-imap1", "py-ppe", "py-pebble"]
CHUNKED_PY = ["py-pool-imapN", "py-ppe-map", "py-joblib"]

NAMES = {
    "invoker": "invoker (submit all, then wait)",
    "invoker-window": "invoker (window refilled from on_result)",
    "invoker-journal": "invoker with a journal (SYNC_BATCH, on tmpfs)",
    "invoker-journal-disk": "invoker with a journal (SYNC_BATCH, on disk)",
    "serial": "C serial loop",
    "fork": "C naive fork per task",
    "pthread": "C pthread pool (mutex+condvar)",
    "pipe-depth1": "C pipe limit, ping-pong",
    "pipe-depth64": "C pipe limit, 64 in flight/worker",
    "pipe-64k": "C pipe limit, 64 KiB pipes",
    "pipe-1024k": "C pipe limit, 1 MiB pipes",
    "invoker-zerocopy": "invoker, written in place (invoker_arg_alloc)",
    "py-serial": "Python serial loop",
    "py-pool-apply": "mp.Pool apply_async+callback",
    "py-pool-imap1": "mp.Pool imap_unordered, chunksize 1",
    "py-pool-imapN": "mp.Pool imap_unordered, chunksize N/(4W)",
    "py-ppe": "ProcessPoolExecutor submit",
    "py-ppe-map": "ProcessPoolExecutor map, chunksize N/(4W)",
    "py-pebble": "pebble ProcessPool schedule",
    "py-joblib": "joblib Parallel (loky, auto batch)",
}


def parse(path):
    rows, failed, skipped = [], [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] not in ("RESULT", "FAILED", "SKIP"):
                continue
            kv = {}
            for p in parts[1:]:
                if "=" in p:
                    k, v = p.split("=", 1)
                    kv[k] = v
            {"RESULT": rows, "FAILED": failed, "SKIP": skipped}[parts[0]].append(kv)
    return rows, failed, skipped


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Group:
    """The repetitions of one (workload, impl[, mem]) combination."""

    def __init__(self, rows):
        self.rows = rows

    def med(self, key):
        vals = [num(r.get(key)) for r in self.rows]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def lo_hi(self, key):
        vals = [num(r.get(key)) for r in self.rows]
        vals = [v for v in vals if v is not None]
        return (min(vals), max(vals)) if vals else (None, None)

    def first(self, key, default=""):
        for r in self.rows:
            if key in r:
                return r[key]
        return default

    def all_equal(self, key, value):
        return all(r.get(key) == value for r in self.rows)

    def values(self, key):
        return sorted({r.get(key, "") for r in self.rows})

    @property
    def n(self):
        return len(self.rows)


def by_rep(g, key):
    out = {}
    for r in g.rows:
        v = num(r.get(key))
        if v is not None:
            out[r.get("rep")] = v
    return out


def rep_ratio(ga, ka, gb, kb, scale=1.0):
    """Median over repetitions of scale * a/b, pairing the runs of the same
    repetition (they ran a few seconds apart); the ratio of the medians when
    no repetition has both."""
    if ga is None or gb is None:
        return None
    a, b = by_rep(ga, ka), by_rep(gb, kb)
    rs = [scale * a[k] / b[k] for k in a if k in b and b[k]]
    if rs:
        return statistics.median(rs)
    ma, mb = ga.med(ka), gb.med(kb)
    return scale * ma / mb if ma is not None and mb else None


def groups(rows, workload, extra=None):
    out = {}
    for r in rows:
        if r.get("workload") != workload:
            continue
        key = r.get("impl") if extra is None else (r.get("impl"), r.get(extra))
        out.setdefault(key, []).append(r)
    return {k: Group(v) for k, v in out.items()}


def fmt(v, digits=3):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    if abs(v) >= 100:
        return "%.1f" % v
    return ("%." + str(digits) + "f") % v


def spread(g, key):
    lo, hi = g.lo_hi(key)
    m = g.med(key)
    if g.n < 2 or not m:
        return ""
    return "±%.0f%%" % (50.0 * (hi - lo) / m)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def name(impl):
    return NAMES.get(impl, impl)


def late_reports(g):
    """(rep, [lateness, rq, gap, oncpu, ...]) for each report of the
    hang workload more than 1 ms late (bench_invoker's late_detail)."""
    out = []
    for r in g.rows:
        d = r.get("late_detail", "-")
        if d == "-":
            continue
        for item in d.split(","):
            try:
                out.append((r.get("rep"), [float(v) for v in item.split(":")[1].split("/")]))
            except (IndexError, ValueError):
                pass
    return out


def cpu_wait(v):
    """The parent thread sat on the run queue for all but 0.6 ms of the
    lateness, or the report came in the same pass as the callback before it."""
    return v[0] - v[1] < 0.6 or (len(v) > 2 and v[2] < 0.3)


def order(keys, first=("invoker", "invoker-window")):
    ks = list(keys)
    head = [k for k in first if k in ks]
    c = sorted(k for k in ks if k not in head and not str(k).startswith("py-"))
    p = sorted(k for k in ks if k not in head and str(k).startswith("py-"))
    return head + c + p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--out")
    ap.add_argument("--meta", action="append", default=[])
    ap.add_argument("--notes", help="a Markdown file appended after the tables")
    a = ap.parse_args()
    rows, failed, skipped = parse(a.results)
    meta = dict(m.split("=", 1) for m in a.meta if "=" in m)
    workers = int(meta.get("workers", "2"))
    md = []
    targets = []

    def target(what, value, ok, detail):
        targets.append((what, value, "PASS" if ok else "MISS", detail))

    md.append("# invoker benchmark results\n")
    md.append("Generated by `bash bench/run.sh` (%s mode). Medians of %s repetitions "
              "(± is half the min–max range, relative to the median). All figures come "
              "from one run, so ratios compare alternatives under the same conditions.\n"
              % (meta.get("mode", "?"), meta.get("reps", "?")))
    md.append(table(["", ""], [(k, v) for k, v in meta.items()]))
    md.append("")

    # ---- 1. trivial ------------------------------------------------------
    g = groups(rows, "trivial")
    inv = g.get("invoker")
    md.append("## 1. Trivial objective (sum of 8 doubles)\n")
    md.append("\"invoker is\" = invoker's tasks/s over the row's, the median of the "
              "per-repetition ratios.\n")
    t = []
    for k in order(g):
        rate = g[k].med("tasks_per_s")
        r = rep_ratio(inv, "tasks_per_s", g[k], "tasks_per_s")
        t.append((name(k), g[k].first("tasks"), fmt(rate), spread(g[k], "tasks_per_s"),
                  fmt(g[k].med("us_per_task"), 3),
                  fmt(r, 2) + "x" if r else "–"))
    md.append(table(["implementation", "tasks", "tasks/s", "±", "µs/task",
                     "invoker is"], t))
    md.append("")
    if inv:
        best_pt = max(((g[k].med("tasks_per_s"), k) for k in PER_TASK_PY if k in g),
                      default=(None, None))
        if best_pt[0]:
            r = rep_ratio(inv, "tasks_per_s", g[best_pt[1]], "tasks_per_s")
            target("trivial: ≥30x the best per-task Python pool", "%.1fx" % r, r >= 30,
                   "vs %s (%s tasks/s); invoker %s tasks/s"
                   % (best_pt[1], fmt(best_pt[0]), fmt(inv.med("tasks_per_s"))))
        best_ch = max(((g[k].med("tasks_per_s"), k) for k in CHUNKED_PY if k in g),
                      default=(None, None))
        if best_ch[0]:
            r = rep_ratio(inv, "tasks_per_s", g[best_ch[1]], "tasks_per_s")
            target("trivial: faster than the best chunked Python map", "%.2fx" % r, r > 1,
                   "vs %s (%s tasks/s)" % (best_ch[1], fmt(best_ch[0])))
        if "py-joblib" in g:
            r = rep_ratio(inv, "tasks_per_s", g["py-joblib"], "tasks_per_s")
            target("trivial: faster than loky/joblib map", "%.2fx" % r, r > 1,
                   "vs py-joblib (%s tasks/s)" % fmt(g["py-joblib"].med("tasks_per_s")))
        if "pipe-depth64" in g:
            r = rep_ratio(inv, "tasks_per_s", g["pipe-depth64"], "tasks_per_s")
            target("trivial: ≥60% of the pipe limit, 64 in flight/worker",
                   "%.0f%%" % (100 * r), r >= 0.60,
                   "pipe-depth64 %s tasks/s" % fmt(g["pipe-depth64"].med("tasks_per_s")))

    # ---- 2. cpu ----------------------------------------------------------
    g = groups(rows, "cpu")
    md.append("## 2. CPU-bound ~1 ms objective (calibrated busy loop)\n")
    md.append("Efficiency = serial time / (workers × wall), against the serial loop "
              "of the same language (C iterations: %s, Python iterations: %s per task).\n"
              % (meta.get("c_iters", "?"), meta.get("py_iters", "?")))
    md.append("Each repetition's efficiency uses that repetition's serial run; the "
              "median is shown.  The pthread pool has no per-task overhead worth "
              "the name: its efficiency shows what the machine gave this run, and "
              "\"vs pthread\" = pthread wall / this wall, per repetition.  Busy = "
              "the time the tasks themselves recorded / (workers × wall): the share "
              "of the workers' time spent in tasks, which a slow spell of the "
              "machine does not move (C only).  Parent µs/task = the CPU time of "
              "invoker's calling thread over the batch, per task.\n")
    ser_c, ser_py, thr = g.get("serial"), g.get("py-serial"), g.get("pthread")
    t = []
    inv_eff = None
    for k in order(g):
        wall = g[k].med("seconds")
        ser = ser_py if k.startswith("py-") else ser_c
        eff = vs = None
        if k not in ("serial", "py-serial"):
            eff = rep_ratio(ser, "seconds", g[k], "seconds", 1.0 / workers)
            vs = rep_ratio(thr, "seconds", g[k], "seconds")
        if k == "invoker":
            inv_eff = eff
        t.append((name(k), g[k].first("tasks"), fmt(wall, 3), spread(g[k], "seconds"),
                  fmt(eff, 3), fmt(vs, 3), fmt(g[k].med("busy"), 3),
                  fmt(g[k].med("parent_us_per_task"), 1)))
    md.append(table(["implementation", "tasks", "wall s", "±", "efficiency",
                     "vs pthread", "busy", "parent µs/task"], t))
    md.append("")
    if inv_eff is not None:
        target("1 ms tasks: efficiency ≥0.97", "%.3f" % inv_eff, inv_eff >= 0.97,
               "serial %.3f s, invoker wall %.3f s, %d workers; in the same run the "
               "pthread pool's efficiency was %s; invoker's busy fraction %s, "
               "its parent's CPU %s µs per task"
               % (ser_c.med("seconds"), g["invoker"].med("seconds"), workers,
                  fmt(rep_ratio(ser_c, "seconds", thr, "seconds", 1.0 / workers), 3),
                  fmt(g["invoker"].med("busy"), 3),
                  fmt(g["invoker"].med("parent_us_per_task"), 1)))

    # ---- 3. payload ------------------------------------------------------
    g = groups(rows, "payload")
    md.append("## 3. 1 MiB argument echoed as a 1 MiB result\n")
    md.append("MiB/s counts task payloads (each task moves 1 MiB each way).\n")
    inv = g.get("invoker")
    t = []
    for k in order(g):
        v = g[k].med("mib_per_s")
        r = rep_ratio(inv, "mib_per_s", g[k], "mib_per_s")
        t.append((name(k), g[k].first("tasks"), fmt(v), spread(g[k], "mib_per_s"),
                  fmt(r, 2) + "x" if r else "–"))
    md.append(table(["implementation", "tasks", "MiB/s", "±", "invoker is"], t))
    md.append("")
    if inv and "pipe-1024k" in g:
        r = rep_ratio(inv, "mib_per_s", g["pipe-1024k"], "mib_per_s")
        target("1 MiB payloads: ≥75% of the pipe limit with 1 MiB pipes",
               "%.0f%%" % (100 * r), r >= 0.75,
               "pipe-1024k %s MiB/s" % fmt(g["pipe-1024k"].med("mib_per_s")))

    # ---- 4. hang ---------------------------------------------------------
    g = groups(rows, "hang")
    md.append("## 4. Hanging tasks with a 0.1 s timeout\n")
    md.append("Report = callback time − (task start + timeout), the start being "
              "recorded by the task itself.  Restart = the replacement's first task "
              "start − the deadline.  Excess = wall − ideal (ceil(tasks/workers) × "
              "timeout), until all are reported and probe tasks ran on the "
              "replacements.\n")
    t = []
    for k in order(g):
        x = g[k]
        note = x.first("note")
        if k == "invoker":
            late = late_reports(x)
            if late:
                note = ("%d report(s) >1 ms late in %d run(s), worst %.2f ms; %d with the "
                        "parent waiting for a CPU all but 0.6 ms of it (or in the pass of "
                        "one that did)" % (len(late), len({r for r, _ in late}),
                                           max(v[0] for _, v in late),
                                           sum(1 for _, v in late if cpu_wait(v))))
        t.append((name(k), "/".join(x.values("outcome")),
                  "%s/%s" % (x.first("reported"), x.first("tasks")),
                  fmt(x.med("seconds"), 3), fmt(x.med("excess_ms"), 1),
                  fmt(x.med("report_ms_med"), 2), fmt(x.med("report_ms_max"), 2),
                  fmt(x.med("restart_ms_med"), 2), fmt(x.med("restart_ms_max"), 2),
                  note))
    md.append(table(["implementation", "outcome", "reported", "wall s", "excess ms",
                     "report ms (med)", "report ms (max)", "restart ms (med)",
                     "restart ms (max)", "note"], t))
    md.append("")
    if "invoker" in g:
        x = g["invoker"]
        whole = x.all_equal("whole", "1") and x.all_equal("outcome", "reports")
        rmax = x.med("report_ms_max")
        worst = x.lo_hi("report_ms_max")[1]
        late = late_reports(x)
        target("hang: each hung task reported ≤1 ms after its deadline (max per run)",
               "%.2f ms" % rmax, rmax is not None and rmax <= 1.0 and whole,
               "median of per-run maxima; worst run %.2f ms; median %.2f ms; pool whole "
               "after: %s; reports >1 ms late: %d, of which the parent sat waiting for a "
               "CPU: %d" % (worst, x.med("report_ms_med"), "yes" if whole else "NO",
                            len(late), sum(1 for _, v in late if cpu_wait(v))))
        smax = x.med("restart_ms_max")
        target("hang: replacement serving ≤1 ms after the deadline (max per run)",
               "%.2f ms" % smax, smax is not None and smax <= 1.0 and whole,
               "median of per-run maxima; median restart %.2f ms"
               % x.med("restart_ms_med"))

    # ---- 5. crash --------------------------------------------------------
    g = groups(rows, "crash")
    md.append("## 5. Tasks that kill their worker (raise(SIGKILL) / _exit(3)) among "
              "normal 1 ms tasks\n")
    md.append("Extra = (wall with the crashing tasks − wall of the normal tasks alone) "
              "/ crashes, the median over several (normal, crashing) pairs of runs in "
              "one process (one pair for the pools a crash breaks); a negative value "
              "is noise.  reports: every task gets its own outcome; breaks: the pool "
              "or the whole call fails; hangs: lost tasks are never reported (bounded "
              "wait); killed: the whole process dies.\n")
    t = []
    for k in order(g):
        x = g[k]
        t.append((name(k), "/".join(x.values("outcome")),
                  "%s/%s" % (x.first("reported"),
                             int(num(x.first("tasks")) + num(x.first("crashes")))),
                  fmt(x.med("clean_seconds"), 3), fmt(x.med("seconds"), 3),
                  fmt(x.med("extra_ms_per_crash"), 3), x.first("note")))
    md.append(table(["implementation", "outcome", "reported", "normal only s",
                     "with crashes s", "extra ms/crash", "note"], t))
    md.append("")
    if "invoker" in g:
        x = g["invoker"]
        e = x.med("extra_ms_per_crash")
        ok = x.all_equal("outcome", "reports")
        target("crashes: ≤0.5 ms extra wall time per crashed task", "%.3f ms" % e,
               ok and e <= 0.5, "all reported as crash/exit: %s" % ("yes" if ok else "NO"))

    # ---- 6. restart ------------------------------------------------------
    g = groups(rows, "restart", "mem_mib")
    md.append("## 6. Restart cost as the parent grows\n")
    md.append("Time from a worker's death (the crashing task's start) to its "
              "replacement starting a task, with the parent holding touched memory "
              "allocated after the pool started.  For the naive fork loop, the time "
              "from fork() to the child running.  Median (max) over the restarts of "
              "one run.\n")
    mems = sorted({int(num(m)) for (_, m) in g})
    impls = order({k for (k, _) in g})
    t = []
    for k in impls:
        row = [name(k)]
        for m in mems:
            x = g.get((k, str(m)))
            if x is None:
                row.append("–")
            else:
                cell = "%s (%s)" % (fmt(x.med("restart_ms_med"), 2),
                                    fmt(x.med("restart_ms_max"), 2))
                if any(r.get("complete") == "0" for r in x.rows):
                    cell += ", did not finish"
                row.append(cell)
        t.append(row)
    md.append(table(["implementation"] + ["%s MiB: ms" % m for m in mems], t))
    md.append("")
    for s in skipped:
        md.append("- skipped: %s" % " ".join("%s=%s" % kv for kv in s.items()))
    if skipped:
        md.append("")

    # ---- 7. journal and cache ---------------------------------------------
    md.append("## 7. Journal and cache\n")
    md.append("The journal's cost: the same workloads with `journal` set (a fresh "
              "file, SYNC_BATCH, every task evaluated and written; on a tmpfs when the "
              "machine has one, so that the figure is invoker's cost, not the disk's: "
              "the disk row is the same on the bench's /tmp directory; the trivial "
              "ratio is the median of several interleaved pairs a repetition); its "
              "size per task "
              "beyond argument and result bytes; the cache's lookup (inline mode, so "
              "a submit makes no syscall: the difference with the cache on is the "
              "hash, the lookup and the twin bookkeeping; in an invoker that already "
              "ran as many tasks, so its tables have grown) and a submit answered from "
              "memory; the time `invoker_create` takes to read a journal (inline mode, "
              "no worker forked) and to answer every task from it.\n")
    gt, gc = groups(rows, "trivial"), groups(rows, "cpu")
    t = []
    rj = rep_ratio(gt.get("invoker-journal"), "tasks_per_s", gt.get("invoker"), "tasks_per_s")
    if rj is not None:
        t.append(("trivial tasks/s with a journal / without",
                  "%s / %s = %s" % (fmt(gt["invoker-journal"].med("tasks_per_s")),
                                    fmt(gt["invoker"].med("tasks_per_s")), fmt(rj, 3))))
        target("journal: trivial tasks ≥0.5x the rate without", "%.2fx" % rj, rj >= 0.5,
               "SYNC_BATCH, a fresh journal per run, every task written; median of "
               "%d interleaved pairs" % len(gt["invoker-journal"].rows))
    rd = rep_ratio(gt.get("invoker-journal-disk"), "tasks_per_s", gt.get("invoker"), "tasks_per_s")
    if rd is not None:
        t.append(("the same with the journal on disk (fdatasync every 100 ms and at "
                  "the wait, included)",
                  "%s / %s = %s" % (fmt(gt["invoker-journal-disk"].med("tasks_per_s")),
                                    fmt(gt["invoker"].med("tasks_per_s")), fmt(rd, 3))))
    ser = gc.get("serial")
    ej = rep_ratio(ser, "seconds", gc.get("invoker-journal"), "seconds", 1.0 / workers)
    if ej is not None:
        e0 = rep_ratio(ser, "seconds", gc.get("invoker"), "seconds", 1.0 / workers)
        t.append(("1 ms tasks: efficiency with a journal (without)",
                  "%s (%s)" % (fmt(ej, 3), fmt(e0, 3))))
        target("journal: 1 ms tasks efficiency ≥0.97", "%.3f" % ej, ej >= 0.97,
               "without a journal in the same run: %s" % fmt(e0, 3))
    for k, x in sorted(groups(rows, "journal-size").items()):
        t.append(("journal bytes per task beyond argument + result (%s: %s + %s bytes)"
                  % (k, x.first("arg_bytes"), x.first("result_bytes")),
                  "%s (%s in all)" % (fmt(x.med("overhead_bytes"), 1),
                                      fmt(x.med("bytes_per_task"), 1))))
    g = groups(rows, "cache").get("invoker")
    if g is not None:
        lk = g.med("lookup_ns")
        t.append(("submit with the cache off / on, ns (%s new distinct arguments, as "
                  "many run before)" % g.first("tasks"),
                  "%s / %s" % (fmt(g.med("submit_ns_off"), 1), fmt(g.med("submit_ns_on"), 1))))
        t.append(("submit answered from memory, ns", fmt(g.med("answered_submit_ns"), 1)))
        target("cache: lookup adds <0.2 µs to a submit", "%.0f ns" % lk,
               lk is not None and lk < 200,
               "median of 5 interleaved runs of %s submits each" % g.first("tasks"))
    g = groups(rows, "replay").get("invoker")
    if g is not None:
        t.append(("invoker_create reading a journal of %s records, s" % g.first("records"),
                  "%s (%s µs per record)" % (fmt(g.med("create_s"), 3),
                                             fmt(g.med("create_us_per_record"), 3))))
        t.append(("then every task answered from it, µs per task",
                  fmt(g.med("answer_us_per_task"), 3)))
    if t:
        md.append(table(["", "measured"], t))
    md.append("")

    # ---- 8. large arguments -------------------------------------------------
    g = groups(rows, "bigarg", "bytes")
    md.append("## 8. Large arguments, all queued, timed from the first submit\n")
    md.append("Each task's argument in a buffer of its own (filled before the clock "
              "starts; never reused), echoed back as the result: every task is "
              "submitted, then invoker_wait, timed from the first submit to the "
              "end of the wait.  \"Later\" = the same batch again on the same "
              "invoker (the median of two more), as an optimizer's next "
              "generations.  Zero-copy: each argument written in place with "
              "invoker_arg_alloc (a memcpy from a pattern, inside the clock) and "
              "handed over with invoker_submit_arg.  \"vs pipe\" = the pipe "
              "limit's time / this time, per repetition.  Submit s: the submits "
              "alone (first batch).\n")
    sizes = sorted({int(num(b)) for (_, b) in g if num(b)})
    t = []
    big_first = big_later = None
    for b in sizes:
        pipe = g.get(("pipe-1024k", str(b)))
        for k in ("invoker", "invoker-zerocopy", "pipe-1024k"):
            x = g.get((k, str(b)))
            if x is None:
                continue
            r1 = rep_ratio(pipe, "seconds", x, "seconds") if k != "pipe-1024k" else None
            r2 = rep_ratio(pipe, "seconds", x, "later_seconds") if k != "pipe-1024k" else None
            if k == "invoker" and b == 1 << 20:
                big_first, big_later = r1, r2
            label = "%d KiB" % (b >> 10) if b < 1 << 20 else "%d MiB" % (b >> 20)
            t.append((label, name(k), x.first("tasks"), fmt(x.med("mib_per_s")),
                      spread(x, "mib_per_s"), fmt(x.med("submit_s"), 3),
                      fmt(r1, 2) + "x" if r1 else "–", fmt(r2, 2) + "x" if r2 else "–"))
    md.append(table(["size", "implementation", "tasks", "MiB/s (first)", "±", "submit s",
                     "vs pipe (first)", "vs pipe (later)"], t))
    md.append("")
    if big_first is not None:
        target("1 MiB fresh arguments, all queued: ≥0.75x the pipe limit (first batch)",
               "%.2fx" % big_first, big_first >= 0.75,
               "timed from the first submit; later batches %s" % (
                   fmt(big_later, 2) + "x" if big_later else "–"))
    g = groups(rows, "argmem")
    if g:
        md.append("Memory: arguments of 1 MiB all queued at once (the workers wait "
                  "until the last submit; a new user's buffer each, freed after its "
                  "submit).  HWM = the parent's VmHWM; base = its VmRSS before the "
                  "submits; arena = the memory the argument arena's file holds "
                  "(mapped or not: pages written with pwrite are not in the "
                  "parent's RSS).\n")
        t = []
        for k in order(g):
            x = g[k]
            t.append((name(k), x.first("tasks"), fmt(x.med("queued_mib"), 1),
                      fmt(x.med("base_mib"), 1), fmt(x.med("hwm_mib"), 1),
                      fmt(x.med("arena_mib"), 1), fmt(x.med("hwm_over_queued"), 3)))
        md.append(table(["implementation", "tasks", "queued MiB", "base MiB", "HWM MiB",
                         "arena MiB", "(HWM − base) / queued"], t))
        md.append("")
        x = g.get("invoker")
        if x:
            q, ar = x.med("queued_mib"), x.med("arena_mib")
            over = max(x.med("hwm_over_queued") or 0, (ar or 0) / q if q else 0)
            target("%s queued 1 MiB arguments: memory ≤1.1x the queued bytes"
                   % x.first("tasks"), "%.3fx" % over, over <= 1.1,
                   "the larger of (HWM − base) / queued and arena / queued; "
                   "HWM %s MiB, arena %s MiB for %s MiB queued"
                   % (fmt(x.med("hwm_mib"), 1), fmt(ar, 1), fmt(q, 1)))

    # ---- targets ---------------------------------------------------------
    md.append("## Targets for invoker\n")
    md.append(table(["target", "measured", "", "detail"], targets))
    md.append("")
    if failed:
        md.append("## Runs that did not complete\n")
        for f in failed:
            md.append("- " + " ".join("%s=%s" % kv for kv in f.items()))
        md.append("")

    if a.notes:
        try:
            with open(a.notes) as f:
                md.append(f.read().rstrip("\n"))
                md.append("")
        except OSError:
            pass
    text = "\n".join(md) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
