#!/usr/bin/env python3
"""Side-by-side benchmark: birkhoff's CPU backend against the peer harness
(eager NumPy and jax.jit on XLA:CPU) on the same mHC stages and shapes, with
the machine's ceilings measured in the same run.

Usage:
  python3 benches/peers.py --peers-dir DIR [--shapes 4096x2560,...] [--runs 10]
                           [--birkhoff target/release/birkhoff] [--out results.json]

DIR is a checkout of the peer harness (bench_peers.py, numpy_mhc.py,
jax_mhc.py, stream_triad.c). Requirements: numpy, jax, jaxlib, gcc.

Stages follow the harness: n = 4, f32, `tilekernels` Sinkhorn with 10 rounds,
post_mult 1, eps 1e-6; `fused` = pre then post with F = identity
(`mhc-sublayer`). Bytes are the harness's minimal-bytes model (every input
read once, every output written once), so GB/s columns compare directly.

Ceilings (measured first): STREAM triad bandwidth (gcc -O3 -march=native
-fopenmp, all cores) and f32 FMA throughput at 128- and 256-bit width
(benches/fma_peak.c). A kernel's roofline floor is
max(bytes / triad bandwidth, flops / 128-bit FMA peak): Cranelift emits
128-bit vectors, so that is the ceiling its code can reach.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

STAGES = {
    # stage: (zoo model, extra flags)
    "pre": ("mhc-pre", ["--iters", "10", "--post-mult", "1"]),
    "post": ("mhc-post", []),
    "fused": ("mhc-sublayer", ["--iters", "10", "--post-mult", "1"]),
}


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def ceilings(peers_dir, tmp):
    out = {}
    exe = os.path.join(tmp, "fma_peak")
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", os.path.join(HERE, "fma_peak.c"), "-o", exe], check=True)
    out["fma"] = run_json([exe])
    triad = os.path.join(tmp, "stream_triad")
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", os.path.join(peers_dir, "stream_triad.c"), "-o", triad], check=True)
    for th in (os.cpu_count(), 1):
        env = dict(os.environ, OMP_NUM_THREADS=str(th))
        out[f"stream_{th}thread"] = run_json([triad, "67108864", "20"], env=env)
    return out


def triad_gbps(stream):
    # The median, not the best pass: kernels are reported by their median too.
    return stream["triad_median_GBs"]


def birkhoff_bench(exe, stage, T, C, runs, extra):
    model, flags = STAGES[stage]
    cmd = [exe, "bench", model, "--tokens", str(T), "--streams", "4", "--hidden", str(C), *flags,
           "--target", "cpu", "--runs", str(runs), "--warmup", "2", "--json", *extra]
    return run_json(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", required=True)
    ap.add_argument("--shapes", default="1024x1280,1024x2560,4096x1280,4096x2560,16384x1280,16384x2560")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--birkhoff", default=os.path.join(ROOT, "target", "release", "birkhoff"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    result = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), machine=platform.processor() or platform.machine(),
                  cores=os.cpu_count(), shapes=[], ceilings=None)
    with tempfile.TemporaryDirectory() as tmp:
        result["ceilings"] = ceilings(a.peers_dir, tmp)
        c = result["ceilings"]
        bw = triad_gbps(c[f"stream_{os.cpu_count()}thread"])
        peak128 = c["fma"]["gflops_128bit"]
        print(f"ceilings: STREAM triad {bw:.1f} GB/s; FMA {peak128:.0f} GFLOP/s (128-bit), "
              f"{c['fma']['gflops_256bit']:.0f} GFLOP/s (256-bit), {c['fma']['threads']} threads", flush=True)
        for T, C in shapes:
            row = dict(T=T, C=C, birkhoff={}, peers={})
            pj = os.path.join(tmp, f"peers_{T}_{C}.json")
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            subprocess.run([sys.executable, os.path.join(a.peers_dir, "bench_peers.py"), "bench", "--T", str(T), "--C", str(C),
                            "--runs", str(a.runs), "--out", pj], check=True, env=env, stdout=subprocess.DEVNULL)
            row["peers"] = json.load(open(pj))["peers"]
            for stage in STAGES:
                row["birkhoff"][stage] = dict(
                    fused=birkhoff_bench(a.birkhoff, stage, T, C, a.runs, []),
                    fused_1thread=birkhoff_bench(a.birkhoff, stage, T, C, a.runs, ["--threads", "1"]),
                    unfused=birkhoff_bench(a.birkhoff, stage, T, C, max(3, a.runs // 3), ["--unfused"]),
                )
                if stage in ("pre", "fused"):
                    row["birkhoff"][stage]["in_kernel_projection"] = birkhoff_bench(a.birkhoff, stage, T, C, a.runs, ["--projection", "in-kernel"])
            result["shapes"].append(row)
            print_row(row, bw, peak128)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def print_row(row, bw, peak128):
    T, C = row["T"], row["C"]
    print(f"\nT={T} C={C}")
    print("| stage | birkhoff ms | GB/s | % STREAM | roofline floor ms | % of floor | unfused ms | 1 thread ms | "
          "numpy ms | xla ms | vs best peer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage, b in row["birkhoff"].items():
        f = b["fused"]
        best = f
        if "in_kernel_projection" in b and b["in_kernel_projection"]["median_s"] < f["median_s"]:
            best = b["in_kernel_projection"]
        ms = best["median_s"] * 1e3
        floor = max(best["bytes"] / (bw * 1e9), best["flops"] / (peak128 * 1e9)) * 1e3
        numpy = row["peers"].get("numpy", {}).get(stage, {}).get("median_s")
        xla = min((v[stage]["median_s"] for k, v in row["peers"].items() if k.startswith("jax")), default=None)
        peer = min(x for x in (numpy, xla) if x is not None)
        print(f"| {stage}{' (in-kernel)' if best is not f else ''} | {ms:.2f} | {best['gbps']:.1f} | {100 * best['gbps'] / bw:.0f}% | "
              f"{floor:.2f} | {100 * floor / ms:.0f}% | {b['unfused']['median_s'] * 1e3:.1f} | {b['fused_1thread']['median_s'] * 1e3:.1f} | "
              f"{numpy * 1e3:.1f} | {xla * 1e3:.1f} | {peer / best['median_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
