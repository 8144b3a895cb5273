#!/usr/bin/env python3
"""Counts the late hang reports of `bench_invoker hang --control` by class.

Reads RESULT lines (files named on the command line, or stdin) and sorts
each report more than 1 ms late (late_detail, see bench/README.md) into
the first class it fits, as bench/NOTES.md ("The hang-report spikes")
does:

  A  the parent thread runnable, waiting for a CPU, for all but < 0.6 ms
     of the lateness (rq >= late - 0.6)
  B  reported in the same pass as a report that was late (gap < 0.3 ms)
  C  the control thread as late (control >= late - 0.6): the wake-up
     itself was late, for every thread
  D  the rest, where the lateness since the callback before it (the
     window: the lateness, or the gap when shorter) is the parent's
     run-queue wait and time on a CPU, in parts, but for < 0.6 ms
  E  asleep past the deadline: >= 0.6 ms of the window neither queued
     nor running, while the control thread woke on time: held up
     inside the parent (a blocking call)

Prints runs, runs with a late report, late reports, and each class with
its count and worst lateness (ms).
"""
import sys

TOL = 0.6


def classify(late, rq, gap, oncpu, control):
    if rq >= late - TOL:
        return "A"
    if gap < 0.3:
        return "B"
    if control >= late - TOL:
        return "C"
    if min(late, gap) - rq - oncpu < TOL:
        return "D"
    return "E"


def main():
    files = [open(p) for p in sys.argv[1:]] or [sys.stdin]
    runs = late_runs = 0
    counts = {c: [0, 0.0] for c in "ABCDE"}
    e_list = []
    for f in files:
        for line in f:
            if not line.startswith("RESULT") or "workload=hang" not in line:
                continue
            fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            runs += 1
            detail = fields.get("late_detail", "-")
            if detail == "-":
                continue
            late_runs += 1
            for item in detail.split(","):
                task, rest = item.split(":", 1)
                v = [float(x) for x in rest.split("/")]
                if len(v) < 8:
                    sys.exit("late_detail without --control fields: " + item)
                late, rq, gap, oncpu, _steal, control = v[:6]
                c = classify(late, rq, gap, oncpu, control)
                counts[c][0] += 1
                counts[c][1] = max(counts[c][1], late)
                if c == "E":
                    e_list.append(item)
    total = sum(n for n, _ in counts.values())
    print(f"runs={runs} runs_late={late_runs} late_reports={total}")
    for c, (n, worst) in counts.items():
        print(f"{c}={n} worst_ms={worst:.2f}")
    for item in e_list:
        print("E:", item)


if __name__ == "__main__":
    main()
