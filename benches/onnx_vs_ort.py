#!/usr/bin/env python3
"""birkhoff against onnxruntime on exported mHC models (CPU).

    python benches/onnx_vs_ort.py --birkhoff target/release/birkhoff \\
        [--tokens 4096 --hidden 2560 --streams 4 --threads 2 --runs 10]
    python benches/onnx_vs_ort.py --skip-birkhoff --tokens 256 --hidden 256

Exports two float32 models with the dynamo exporter (the model classes of
tests/onnx/models.py, which the ONNX fixtures use too) into a temporary
directory (--keep DIR to keep them):

  mhc_sublayer  an mHC sublayer in the paper's spelling (three projections,
                scalar alphas, biases, einsum mixes), paper Sinkhorn with
                --iters rounds (20), layer function F = identity
  mhc_block     a pre-norm transformer block (RMSNorm, causal --heads-head
                attention, SwiGLU FFN of width --ffn) with both sublayers
                inside mHC connections (the same spelling)

x is [T, n, C] = [--tokens, --streams, --hidden]. Each model is timed in
onnxruntime (CPUExecutionProvider, intra_op_num_threads = --threads,
inter_op_num_threads = 1, all graph optimizations, the CPU memory arena on
and the memory pattern off; --warmup untimed runs, then the median of
--runs) and with
`<birkhoff> bench <model.onnx> --threads T --runs R --json` (its JSON has
median_s, min_s, max_s). If the birkhoff command fails, its stderr is
printed and the table shows no birkhoff time. Progress goes to stderr; the
markdown table to stdout.

Memory: the exports and the onnxruntime timings each run in a child process
(their peak RSS is logged). mhc_block's attention scores are
heads x T x T floats (1.07 GB at 16 heads and T = 4096); onnxruntime's
memory pattern (its default, --ort-mem-pattern) preallocates several such
buffers at once: at T = 4096, C = 1280 its peak RSS was 6.2 GiB with the
pattern and 3.8 GiB without, at no measurable cost in time on a 2-core
machine (at T = 2048, C = 2560: 2.2 GiB against 1.7 GiB).
"""

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "onnx"))
sys.dont_write_bytecode = True  # no __pycache__ beside models.py


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_gib():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not
    carried over from the parent across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def export(name, path, shape, heads, ffn, iters, seed, threads, opset=20):
    """Build the model `name` with random weights and export it to `path`.
    Runs in a child process, so its memory is gone before the timing."""
    import torch

    from models import MHCBlock, MHCPaper, randomize

    torch.set_num_threads(threads)
    T, n, C = shape
    if name == "mhc_sublayer":
        module = randomize(MHCPaper(n, C, None, iters=iters), seed + 1)
    else:
        module = randomize(MHCBlock(n, C, heads=heads, hidden=ffn, iters=iters), seed + 2)
    module.eval()
    x = torch.zeros(T, n, C)
    buf = io.StringIO()
    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), path, dynamo=True, opset_version=opset, external_data=True,
                          input_names=["x"], output_names=["y"])
    return {"export_s": time.perf_counter() - t0, "peak_rss_gib": peak_rss_gib()}


def time_ort(path, shape, seed, threads, warmup, runs, mem_pattern):
    """Time onnxruntime on `path` (in a child process: its peak memory is
    its own)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = mem_pattern
    so.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    feeds = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "load_s": load_s,
            "peak_rss_gib": peak_rss_gib()}


def in_child(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def time_birkhoff(birkhoff, path, threads, runs):
    cmd = [birkhoff, "bench", path, "--threads", str(threads), "--runs", str(runs), "--json"]
    log("  $ " + " ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        log(f"  birkhoff could not run: {e}")
        return None
    if p.returncode != 0:
        log(f"  birkhoff exited with status {p.returncode}; its stderr:")
        log("    " + (p.stderr.strip() or "(empty)").replace("\n", "\n    "))
        return None
    # The JSON object: the whole stdout, or else its last line that parses.
    candidates = [p.stdout] + p.stdout.strip().splitlines()[::-1]
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict) and "median_s" in obj:
            return obj
    log("  birkhoff printed no JSON object with median_s; its stdout and stderr:")
    log("    " + (p.stdout.strip() + "\n" + p.stderr.strip()).strip().replace("\n", "\n    "))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--birkhoff", default="target/release/birkhoff", help="the birkhoff binary")
    ap.add_argument("--skip-birkhoff", action="store_true", help="time onnxruntime only")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16, help="attention heads of mhc_block (head dim = hidden/heads)")
    ap.add_argument("--ffn", type=int, default=None,
                    help="SwiGLU width of mhc_block (default: 8*hidden/3 rounded up to a multiple of 256)")
    ap.add_argument("--iters", type=int, default=20, help="Sinkhorn rounds (paper variant)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="mhc_sublayer,mhc_block", help="comma-separated subset")
    ap.add_argument("--keep", metavar="DIR", help="export into DIR and keep the models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ort-mem-pattern", action="store_true",
                    help="turn onnxruntime's memory pattern on (its default; more memory, see above)")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    T, n, C = args.tokens, args.streams, args.hidden
    if C % args.heads:
        ap.error(f"--hidden {C} is not a multiple of --heads {args.heads}")
    ffn = args.ffn or -(-(8 * C // 3) // 256) * 256
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in ("mhc_sublayer", "mhc_block"):
            ap.error(f"unknown model {m!r}")
    log(f"onnxruntime {ort.__version__}, torch {torch.__version__}; T={T} n={n} C={C} heads={args.heads} "
        f"ffn={ffn} iters={args.iters} threads={args.threads} runs={args.runs} warmup={args.warmup} "
        f"ort_mem_pattern={args.ort_mem_pattern}")

    tmp = None
    if args.keep:
        outdir = os.path.abspath(args.keep)
        os.makedirs(outdir, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="onnx_vs_ort.")
        outdir = tmp.name

    rows = []
    for name in models:
        d = os.path.join(outdir, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        r_exp = in_child(export, name, path, (T, n, C), args.heads, ffn, args.iters, args.seed, args.threads)
        log(f"{name}: exported in {r_exp['export_s']:.1f} s to {path} (exporter peak RSS {r_exp['peak_rss_gib']:.2f} GiB)")
        r_ort = in_child(time_ort, path, (T, n, C), args.seed, args.threads, args.warmup, args.runs,
                         args.ort_mem_pattern)
        log(f"  onnxruntime: median {r_ort['median_s'] * 1e3:.2f} ms (min {r_ort['min_s'] * 1e3:.2f}, "
            f"max {r_ort['max_s'] * 1e3:.2f}; session load {r_ort['load_s']:.1f} s, peak RSS "
            f"{r_ort['peak_rss_gib']:.2f} GiB)")
        r_b = None
        if not args.skip_birkhoff:
            r_b = time_birkhoff(args.birkhoff, path, args.threads, args.runs)
            if r_b:
                log(f"  birkhoff: median {r_b['median_s'] * 1e3:.2f} ms (min {r_b.get('min_s', float('nan')) * 1e3:.2f}, "
                    f"max {r_b.get('max_s', float('nan')) * 1e3:.2f})")
        rows.append((name, r_ort, r_b))

    print(f"| model | T×C | onnxruntime median ms | birkhoff median ms | ratio (ort/birkhoff) |")
    print("|---|---|---:|---:|---:|")
    for name, r_ort, r_b in rows:
        o = r_ort["median_s"] * 1e3
        if r_b:
            b = r_b["median_s"] * 1e3
            bs, ratio = f"{b:.2f}", f"{o / b:.2f}"
        else:
            bs, ratio = "—", "—"
        print(f"| {name} | {T}×{C} (n={n}) | {o:.2f} | {bs} | {ratio} |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
