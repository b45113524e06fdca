#!/usr/bin/env python3
"""Memory and step time of training with recomputation, measured in one run.

Runs `birkhoff train lm --recompute MODE` for each mode in turn (several
rounds interleaved, so a noisy machine hurts every mode alike) and reads
from each run's metrics.json the planner's predicted peak, the compiled
step's peak of live temporaries and its arena (measured: what the step
allocates), and from metrics.csv the seconds per step (the first --skip
steps of every run dropped). Prints one row per mode: memory against the
prediction, and step time against --recompute none.

    python3 benches/recompute.py --connection mhc --layers 8 --hidden 256
    python3 benches/recompute.py --modes none,block=1,block=2,block=4,auto --json out.json
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


def run(a, mode, out):
    seq = min(a.seq, a.tokens)
    if a.tokens % seq:
        sys.exit(f"--tokens {a.tokens} must be a multiple of --seq {seq}")
    cmd = [
        a.birkhoff, "train", "lm", "--connection", a.connection,
        "--layers", str(a.layers), "--hidden", str(a.hidden),
        "--heads", str(a.heads), "--streams", str(a.streams),
        "--batch", str(a.tokens // seq), "--seq", str(seq),
        "--steps", str(a.steps), "--eval-every", str(a.steps),
        "--checkpoint-every", str(a.steps), "--seed", "0",
        "--recompute", mode, "--out", out,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    with open(os.path.join(out, "metrics.csv")) as f:
        secs = [float(r["seconds"]) for r in list(csv.DictReader(f))[a.skip:]]
    with open(os.path.join(out, "metrics.json")) as f:
        memory = json.load(f)["memory"]
    return secs, memory


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--birkhoff", default="target/release/birkhoff")
    ap.add_argument("--connection", default="mhc")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=512, help="tokens per step (batch x seq)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--modes", default="none,block=1,block=2,block=4,auto")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps dropped from each run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.steps <= a.skip:
        sys.exit("--steps must exceed --skip")
    if not shutil.which(a.birkhoff) and not os.path.exists(a.birkhoff):
        sys.exit(f"no birkhoff binary at {a.birkhoff} (cargo build --release)")
    modes = a.modes.split(",")
    if modes[0] != "none":
        modes = ["none"] + [m for m in modes if m != "none"]
    times = {m: [] for m in modes}
    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for m in modes:
                secs, mem = run(a, m, os.path.join(tmp, f"{m}-{r}"))
                times[m] += secs
                memory[m] = mem
    med = {m: statistics.median(t) for m, t in times.items()}
    # The fastest step is the one least disturbed by whatever else the
    # machine ran; on a shared machine it is the steadier comparison.
    fast = {m: min(t) for m, t in times.items()}
    mib = 1 << 20
    print(
        f"{a.connection} LM, L={a.layers} C={a.hidden} n={a.streams} T={a.tokens}, "
        f"{a.rounds} rounds x {a.steps - a.skip} timed steps"
    )
    print(
        f"  {'mode':9s} {'block':>5s} {'predicted':>10s} {'live peak':>10s} {'error':>7s} "
        f"{'arena':>10s} {'ms/step':>9s} {'vs none':>8s} {'fastest':>8s} {'vs none':>8s}"
    )
    rows = {}
    for m in modes:
        mem = memory[m]
        pred, live, arena = mem["predicted_peak_bytes"], mem["peak_live_bytes"], mem["arena_bytes"]
        err = (pred - live) / live
        over = med[m] / med["none"] - 1
        over_fast = fast[m] / fast["none"] - 1
        rows[m] = {
            **mem,
            "error": err,
            "median_s": med[m],
            "overhead": over,
            "fastest_s": fast[m],
            "fastest_overhead": over_fast,
        }
        print(
            f"  {m:9s} {str(mem['block'] or '-'):>5s} {pred / mib:8.2f}Mi {live / mib:8.2f}Mi "
            f"{err * 100:+6.1f}% {arena / mib:8.2f}Mi {med[m] * 1e3:9.1f} {over * 100:+7.1f}% "
            f"{fast[m] * 1e3:8.1f} {over_fast * 100:+7.1f}%"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": vars(a), "modes": rows, "samples": times}, f, indent=1)


if __name__ == "__main__":
    main()
