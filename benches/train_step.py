#!/usr/bin/env python3
"""Training-step time of the mHC language model against the residual
baseline at the same width, measured in one run.

Runs `birkhoff train lm` for each connection in turn (residual, mhc, and
hc with --hc), several rounds interleaved so that a noisy machine hurts
both alike, and reads each step's time from metrics.csv (the first
--skip steps of every run are warm-up and dropped). Prints the median
seconds per step, steps per second, and mHC's overhead over residual.

    python3 benches/train_step.py --hidden 1024 --tokens 512 --layers 2
    python3 benches/train_step.py --hidden 256 --tokens 512 --layers 2 --json out.json
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


def run(birkhoff, connection, a, out):
    seq = min(a.seq, a.tokens)
    if a.tokens % seq:
        sys.exit(f"--tokens {a.tokens} must be a multiple of --seq {seq}")
    cmd = [
        birkhoff, "train", "lm", "--connection", connection,
        "--layers", str(a.layers), "--hidden", str(a.hidden),
        "--heads", str(a.heads), "--streams", str(a.streams),
        "--batch", str(a.tokens // seq), "--seq", str(seq),
        "--steps", str(a.steps), "--eval-every", str(a.steps),
        "--checkpoint-every", str(a.steps), "--seed", "0", "--out", out,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return [float(r["seconds"]) for r in rows[a.skip:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--birkhoff", default="target/release/birkhoff")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=512, help="tokens per step (batch x seq)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps dropped from each run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hc", action="store_true", help="time hc as well")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.steps <= a.skip:
        sys.exit("--steps must exceed --skip")
    if not shutil.which(a.birkhoff) and not os.path.exists(a.birkhoff):
        sys.exit(f"no birkhoff binary at {a.birkhoff} (cargo build --release)")
    conns = ["residual", "mhc"] + (["hc"] if a.hc else [])
    times = {c: [] for c in conns}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for c in conns:
                times[c] += run(a.birkhoff, c, a, os.path.join(tmp, f"{c}-{r}"))
    med = {c: statistics.median(t) for c, t in times.items()}
    shape = f"L={a.layers} C={a.hidden} n={a.streams} T={a.tokens}"
    print(f"training step, {shape}, {a.rounds} rounds x {a.steps - a.skip} timed steps")
    for c in conns:
        print(f"  {c:9s} {med[c] * 1e3:9.1f} ms/step  {1 / med[c]:7.2f} steps/s")
    over = {c: med[c] / med["residual"] - 1 for c in conns if c != "residual"}
    for c, o in over.items():
        print(f"  {c} overhead over residual: {o * 100:+.1f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": vars(a), "median_s": med, "overhead": over, "samples": times}, f, indent=1)


if __name__ == "__main__":
    main()
