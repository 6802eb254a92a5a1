#!/usr/bin/env python
"""Two nnlayers installs side by side, in one run.

    python benchmarks/compare.py --baseline /path/to/other/python [--rounds 9]
           [--min-time 0.1] [--cases small,medium,...] [--threads 2]

Starts one worker process per interpreter (this one, "new", and the
baseline, "old"; each imports its own nnlayers) and, for every case, asks
them in alternating rounds for a timed loop of at least --min-time
seconds, with a pause between them so the other side's threads go idle.
Prints per case the median time of each side and the median over rounds
of the paired ratio old / new (> 1: the new install is faster). This 2-core
VM changes speed by tens of percent from one second to the next, so only
times taken next to each other are compared.

Cases: every training step of benchmarks/run.py (small, mnist-128,
medium, large, xl), predict at batch 1 and 1024, one fit epoch, and, for
the graph engine, "residual" (784-256-256-10 with a skip around the
middle layer) and "chain-graph" (the same size without the skip).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_compare_worker.py")
CASES = ["small", "mnist-128", "medium", "large", "xl", "predict-b1", "predict-b1024", "fit"]


class Worker:
    def __init__(self, python, threads):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        # from a folder outside the repository, so each imports its install
        self.p = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        self.where = self.p.stdout.readline().strip()

    def time(self, case, min_time):
        self.p.stdin.write(f"{case} {min_time}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline().strip()
        if line.startswith("error") or not line:
            raise RuntimeError(line or "worker died")
        return float(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="python of the other install")
    ap.add_argument("--new", default=sys.executable, help="python of this install")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--settle", type=float, default=0.05,
                    help="pause between the two sides' loops (s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args(argv)
    new, old = Worker(args.new, args.threads), Worker(args.baseline, args.threads)
    print(f"new: {new.where}\nold: {old.where}\n")
    print(f"{'case':<16}{'old ms':>12}{'new ms':>12}{'old/new':>10}   per-round ratios")
    results = {}
    for case in args.cases.split(","):
        t_new, t_old, ratios = [], [], []
        try:
            for r in range(args.rounds):
                pair = {}
                for side, w in ((("new", new), ("old", old)) if r % 2 else
                                (("old", old), ("new", new))):
                    pair[side] = w.time(case, args.min_time)
                    time.sleep(args.settle)
                t_new.append(pair["new"])
                t_old.append(pair["old"])
                ratios.append(pair["old"] / pair["new"])
        except RuntimeError as exc:
            print(f"{case:<16}  {exc}")
            continue
        med = statistics.median(ratios)
        results[case] = med
        print(f"{case:<16}{1e3 * statistics.median(t_old):12.4f}{1e3 * statistics.median(t_new):12.4f}"
              f"{med:10.3f}   {' '.join(f'{x:.2f}' for x in ratios)}", flush=True)
    new.close()
    old.close()
    return results


if __name__ == "__main__":
    main()
