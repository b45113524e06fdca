#!/usr/bin/env python3
"""Side-by-side benchmark: birkhoff's CPU backend against the peer harness
(eager NumPy, jax.jit on XLA:CPU, PyTorch eager and torch.compile) on the
same mHC stages and shapes, with the machine's ceilings measured in the same
run.

Usage:
  python3 benches/peers.py --peers-dir DIR [--shapes 4096x2560,...] [--runs 10]
                           [--peers numpy,jax-einsum,jax-explicit,torch-eager,torch-compile]
                           [--birkhoff target/release/birkhoff] [--out results.json]

DIR is a checkout of the peer harness (bench_peers.py, numpy_mhc.py,
jax_mhc.py, torch_mhc_cpu.py, stream_triad.c). Requirements: numpy, jax,
jaxlib, torch (CPU), gcc.

birkhoff is timed with its outputs reused between calls (`bench`'s default)
and with fresh outputs (`--fresh-outputs`, allocated every call as the
peers' are); the table's two ratios are the best peer over each.

With --train L1xC1,L2xC2 it also times a training step of the byte-level
LM at T = 512 tokens a step (batch 8 × 64) for each depth × width: birkhoff
(`benches/train_step.py`: residual and mhc, interleaved) against the peer
harness's PyTorch replica (`torch_lm.py bench`, mhc, eager and
torch.compile, with as many threads as birkhoff).

Stages follow the harness: n = 4, f32, `tilekernels` Sinkhorn with 10 rounds,
post_mult 1, eps 1e-6; `fused` = pre then post with F = identity
(`mhc-sublayer`). Bytes are the harness's minimal-bytes model (every input
read once, every output written once), so GB/s columns compare directly.

Ceilings (measured first): STREAM triad bandwidth (gcc -O3 -march=native
-fopenmp, all cores) and f32 FMA throughput at 128-, 256- and (with AVX-512) 512-bit width
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
    ap.add_argument("--peers", default="numpy,jax-einsum,jax-explicit,torch-eager,torch-compile")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count())
    ap.add_argument("--birkhoff", default=os.path.join(ROOT, "target", "release", "birkhoff"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--train", default="", help="training-step sizes, LAYERSxHIDDEN,... (e.g. 2x256,4x512)")
    ap.add_argument("--train-steps", type=int, default=12)
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
              f"{c['fma']['gflops_256bit']:.0f} GFLOP/s (256-bit), "
              f"{c['fma'].get('gflops_512bit') or '-'} GFLOP/s (512-bit), {c['fma']['threads']} threads", flush=True)
        for T, C in shapes:
            row = dict(T=T, C=C, birkhoff={}, peers={})
            pj = os.path.join(tmp, f"peers_{T}_{C}.json")
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            subprocess.run([sys.executable, os.path.join(a.peers_dir, "bench_peers.py"), "bench", "--T", str(T), "--C", str(C),
                            "--runs", str(a.runs), "--peers", a.peers, "--torch-threads", str(a.torch_threads),
                            "--out", pj], check=True, env=env, stdout=subprocess.DEVNULL)
            row["peers"] = json.load(open(pj))["peers"]
            for stage in STAGES:
                row["birkhoff"][stage] = dict(
                    fused=birkhoff_bench(a.birkhoff, stage, T, C, a.runs, []),
                    fused_1thread=birkhoff_bench(a.birkhoff, stage, T, C, a.runs, ["--threads", "1"]),
                    fresh=birkhoff_bench(a.birkhoff, stage, T, C, a.runs, ["--fresh-outputs"]),
                    unfused=birkhoff_bench(a.birkhoff, stage, T, C, max(3, a.runs // 3), ["--unfused"]),
                )
                if stage in ("pre", "fused"):
                    row["birkhoff"][stage]["in_kernel_projection"] = birkhoff_bench(a.birkhoff, stage, T, C, a.runs, ["--projection", "in-kernel"])
            result["shapes"].append(row)
            print_row(row, bw, peak128)
        if a.train:
            result["train"] = [train_row(a, tmp, *(int(v) for v in size.split("x"))) for size in a.train.split(",")]
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def train_row(a, tmp, layers, hidden):
    """One training-step comparison: birkhoff's residual and mhc steps and
    the PyTorch replica's mhc step, eager and compiled."""
    out = os.path.join(tmp, f"train_{layers}_{hidden}.json")
    subprocess.run([sys.executable, os.path.join(HERE, "train_step.py"), "--birkhoff", a.birkhoff, "--layers", str(layers),
                    "--hidden", str(hidden), "--tokens", "512", "--seq", "64", "--steps", str(a.train_steps),
                    "--json", out], check=True, stdout=subprocess.DEVNULL)
    row = dict(layers=layers, hidden=hidden, birkhoff=json.load(open(out)), torch={})
    for mode in ("eager", "compile"):
        tj = os.path.join(tmp, f"torch_{mode}_{layers}_{hidden}.json")
        subprocess.run([sys.executable, os.path.join(a.peers_dir, "torch_lm.py"), "bench", "--connection", "mhc",
                        "--layers", str(layers), "--hidden", str(hidden), "--batch", "8", "--seq", "64",
                        "--threads", str(a.torch_threads), "--mode", mode, "--steps", str(a.train_steps), "--json", tj],
                       check=True, stdout=subprocess.DEVNULL)
        row["torch"][mode] = json.load(open(tj))
    b = row["birkhoff"]["median_s"]
    te, tc = row["torch"]["eager"]["median_s"], row["torch"]["compile"]["median_s"]
    print(f"\ntraining step, {layers} layers x C={hidden}, T=512: birkhoff mhc {b['mhc'] * 1e3:.1f} ms, "
          f"residual {b['residual'] * 1e3:.1f} ms (mHC overhead {100 * (b['mhc'] / b['residual'] - 1):+.1f}%); "
          f"torch eager {te * 1e3:.1f} ms ({te / b['mhc']:.2f}x), torch.compile {tc * 1e3:.1f} ms ({tc / b['mhc']:.2f}x)",
          flush=True)
    return row


def peer_medians(row, stage):
    """Each peer's median seconds for `stage`: numpy, xla (the faster JAX
    form), torch eager and torch.compile; None for a peer not run."""
    peers = row["peers"]
    get = lambda name: peers.get(name, {}).get(stage, {}).get("median_s")
    xla = [v for v in (get("jax-einsum"), get("jax-explicit")) if v is not None]
    return dict(numpy=get("numpy"), xla=min(xla) if xla else None,
                torch_eager=get("torch-eager"), torch_compile=get("torch-compile"))


def print_row(row, bw, peak128):
    T, C = row["T"], row["C"]
    ms = lambda v: "-" if v is None else f"{v * 1e3:.1f}"
    print(f"\nT={T} C={C}")
    print("| stage | birkhoff ms | GB/s | % STREAM | roofline floor ms | % of floor | fresh ms | unfused ms | 1 thread ms | "
          "numpy ms | xla ms | torch ms | torch.compile ms | vs best peer | fresh vs best peer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage, b in row["birkhoff"].items():
        f = b["fused"]
        best = f
        if "in_kernel_projection" in b and b["in_kernel_projection"]["median_s"] < f["median_s"]:
            best = b["in_kernel_projection"]
        floor = max(best["bytes"] / (bw * 1e9), best["flops"] / (peak128 * 1e9)) * 1e3
        p = peer_medians(row, stage)
        peer = min(v for v in p.values() if v is not None)
        fresh = b["fresh"]["median_s"]
        print(f"| {stage}{' (in-kernel)' if best is not f else ''} | {best['median_s'] * 1e3:.2f} | {best['gbps']:.1f} | "
              f"{100 * best['gbps'] / bw:.0f}% | {floor:.2f} | {100 * floor / (best['median_s'] * 1e3):.0f}% | {fresh * 1e3:.2f} | "
              f"{b['unfused']['median_s'] * 1e3:.1f} | {b['fused_1thread']['median_s'] * 1e3:.1f} | "
              f"{ms(p['numpy'])} | {ms(p['xla'])} | {ms(p['torch_eager'])} | {ms(p['torch_compile'])} | "
              f"{peer / best['median_s']:.2f}x | {peer / fresh:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
