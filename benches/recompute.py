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
    python3 benches/recompute.py --modes none,block=1,block=2,block=3,block=4,block=6 --svg mem.svg

--svg draws the memory against the block size K (predicted and measured,
with `none` and the memory model's analytic optimum sqrt(nL/(n+2)), L the
number of connections, two per layer, marked) as a self-contained SVG.
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


def svg_plot(path, title, points, none, optimum):
    """Writes the memory curve: points are (K, predicted MiB, measured MiB)."""
    w, h, left, right, top, bottom = 640, 400, 70, 20, 40, 50
    ks = [k for k, _, _ in points]
    ys = [y for _, p, m in points for y in (p, m)] + [none]
    k_lo, k_hi = min(ks + [optimum]), max(ks + [optimum])
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.1 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def x(k):
        return left + (k - k_lo) / max(k_hi - k_lo, 1e-9) * (w - left - right)

    def y(v):
        return top + (y_hi - v) / (y_hi - y_lo) * (h - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">block size K (connections)</text>',
        f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" '
        f'text-anchor="middle">peak activation memory (MiB)</text>',
    ]
    for k in ks:
        out.append(f'<text x="{x(k):.1f}" y="{h - bottom + 16}" text-anchor="middle">{k}</text>')
    for i in range(5):
        v = y_lo + (y_hi - y_lo) * i / 4
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    out.append(
        f'<line x1="{left}" y1="{y(none):.1f}" x2="{w - right}" y2="{y(none):.1f}" '
        f'stroke="gray" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{w - right - 4}" y="{y(none) - 4:.1f}" text-anchor="end" fill="gray">none</text>')
    out.append(
        f'<line x1="{x(optimum):.1f}" y1="{top}" x2="{x(optimum):.1f}" y2="{h - bottom}" '
        f'stroke="firebrick" stroke-dasharray="4 3"/>'
    )
    out.append(
        f'<text x="{x(optimum) + 4:.1f}" y="{top + 12}" fill="firebrick">'
        f'sqrt(nL/(n+2)) = {optimum:.2f}</text>'
    )
    for name, idx, color in [("predicted", 1, "steelblue"), ("measured", 2, "darkorange")]:
        pts = " ".join(f"{x(p[0]):.1f},{y(p[idx]):.1f}" for p in points)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in points:
            out.append(f'<circle cx="{x(p[0]):.1f}" cy="{y(p[idx]):.1f}" r="3" fill="{color}"/>')
    for i, (name, color) in enumerate([("predicted", "steelblue"), ("measured", "darkorange")]):
        ly = top + 30 + 16 * i
        out.append(f'<line x1="{w - 150}" y1="{ly}" x2="{w - 130}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{w - 124}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, path)


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
    ap.add_argument("--svg", help="draw memory against the block size here")
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
    if a.svg:
        points = sorted(
            (r["block"], r["predicted_peak_bytes"] / mib, r["peak_live_bytes"] / mib)
            for m, r in rows.items()
            if m.startswith("block=")
        )
        if not points:
            sys.exit("--svg needs block=K modes")
        connections = 2 * a.layers
        optimum = (a.streams * connections / (a.streams + 2)) ** 0.5
        title = (
            f"{a.connection} LM, {a.layers} layers ({connections} connections), "
            f"C={a.hidden}, n={a.streams}, T={a.tokens}"
        )
        svg_plot(a.svg, title, points, rows["none"]["peak_live_bytes"] / mib, optimum)
        print(f"wrote {a.svg}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": vars(a), "modes": rows, "samples": times}, f, indent=1)


if __name__ == "__main__":
    main()
