#!/usr/bin/env python3
"""The PyTorch peer of birkhoff's GPU backend: the mHC stages written in
PyTorch, timed on a CUDA GPU in eager mode and under torch.compile, with the
device's copy bandwidth measured in the same run.

Stages (named after the zoo models they mirror; `docs/design.md` §2):
  mhc-pre       residual [T,n,C], fn [n(n+2),nC], scale [3], base [n(n+2)]
                -> layer_input [T,C], post_mix [T,n], comb_mix [T,n,n]
  mhc-post      layer_output [T,C], residual [T,n,C], post_mix [T,n],
                comb_mix [T,n,n] -> residual_out [T,n,C]
  mhc-sublayer  pre, then post with the layer function F = identity
                (layer_output = layer_input) -> residual_out [T,n,C]
Defaults are the zoo's: Sinkhorn variant `tilekernels`, 20 rounds, eps 1e-6,
norm_eps 1e-6, pre_eps 1e-6, post_mult 2 (flags override them).

Numerics: every tensor is stored in --dtype (bf16 by default, or f32); each
stage widens its inputs to f32, computes in f32 (matrix products at full f32
precision, no TF32) and rounds its results to the storage type, as
birkhoff's `--dtype bf16` fused kernels do. mhc-sublayer composes the two
stages, so its intermediates (layer_input, post_mix, comb_mix) are rounded
too, as in birkhoff's bf16 graph.

Timing: inputs resident on the device, drawn from the zoo's distributions;
--warmup untimed calls, then --runs calls each bracketed by CUDA events; the
median and the minimum are reported. The bandwidth ceiling is a device-to-
device copy, torch.empty_like(x).copy_(x) on --copy-gib GiB, timed the same
way (bytes read + written over the median time).

Output: one JSON object per line on stdout (progress goes to stderr), and
in the file --json OUT names (written afresh):
  {"kind": "env", ...}                       device, versions, settings
  {"kind": "copy", "bytes", "median_s", "min_s", "runs", "gbps"}
  {"kind": "stage", "stage", "shape", "tokens", "streams", "hidden", "dtype",
   "impl": "eager" | "compile" | "compile-max-autotune", "median_s",
   "min_s", "max_s", "runs", "compile_s"?}   or the same keys with "error"
  {"kind": "check", "what", "stage", "shape", "dtype", "output",
   "max_abs", "peak", "rel_to_peak", "units", "bound", "ok"}

Modes:
  python3 benches/torch_mhc.py [--hidden 2560,4096,7168] [--dtype bf16]
        [--max-autotune] [--check] [--json OUT]
      Benchmark on CUDA (T=8192, n=4 by default). With --check: first the
      small-shape checks below, then, at every benchmark shape, the
      compiled outputs against eager's.
  python3 benches/torch_mhc.py --check --device cpu
  python3 benches/torch_mhc.py --check --no-bench
      Only the checks, no benchmark: the float64 NumPy reference against a
      second, per-token implementation written straight from `docs/design.md` §2
      (needs only NumPy), then torch eager at a small shape against the
      reference, in f32 and bf16, on the CPU (and, without --device cpu, on
      CUDA when present). Without PyTorch only the first part runs and the
      exit status is 2.
  python3 benches/torch_mhc.py --save-inputs DIR --save-outputs DIR
        [--tokens 16 --hidden 32] [--npy-dtype f32|native]
      Writes DIR/<stage>/NAME.npy for every input and output of every stage
      (torch eager on CUDA if present, else on the CPU), for
      `birkhoff run <stage> --tokens T --hidden C --dtype D
       --inputs DIR/<stage> --outputs OUT` and --compare-npy. f32 files by
      default (bf16 values are exact in f32: run birkhoff with --dtype f32
      to compute in f32 on the same values); `native` writes bf16 tensors as
      uint16 bit patterns, birkhoff's bf16 .npy convention, for --dtype bf16.
  python3 benches/torch_mhc.py --compare-npy DIR_A DIR_B
      Max error of every NAME.npy present in both (uint16 read as bf16).
  python3 benches/torch_mhc.py --check-birkhoff PATH/TO/birkhoff
        [--birkhoff-backends interp,cpu] [--tokens 16 --hidden 32]
      Needs only NumPy: runs `birkhoff run` (the graph as built, and with
      --optimize) on inputs drawn here and compares its outputs with the
      float64 NumPy reference, per stage, in f32 and bf16. Exit status 1 if
      any comparison is outside its bound.

Check bounds, as a fraction of each output's largest magnitude (its peak):
f32 1e-4 against the float64 reference (`docs/design.md` §3's reduction bound); bf16
4 units of 2^-8 for torch (it rounds at stage boundaries only) and 8 units
for birkhoff (its unfused bf16 graph rounds every intermediate; the bound of
`birkhoff compare`); torch.compile against eager: 1e-4 (f32), 4 units (bf16).
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict

import numpy as np

STAGES = ("mhc-pre", "mhc-post", "mhc-sublayer")
INPUTS = {
    "mhc-pre": ("residual", "fn", "scale", "base"),
    "mhc-post": ("layer_output", "residual", "post_mix", "comb_mix"),
    "mhc-sublayer": ("residual", "fn", "scale", "base"),
}
OUTPUTS = {
    "mhc-pre": ("layer_input", "post_mix", "comb_mix"),
    "mhc-post": ("residual_out",),
    "mhc-sublayer": ("residual_out",),
}
UNIT = 2.0 ** -8  # one bf16 unit (8 significant bits) relative to the peak
BOUNDS = {"f32": 1e-4, "bf16": 4 * UNIT}
BIRKHOFF_BOUNDS = {"f32": 1e-4, "bf16": 8 * UNIT}


@dataclass(frozen=True)
class Config:
    """Model settings, named like birkhoff's model flags."""
    tokens: int
    streams: int
    hidden: int
    sinkhorn: str = "tilekernels"
    iters: int = 20
    eps: float = None  # None: 1e-6 for tilekernels, 0 for paper (the zoo's defaults)
    norm_eps: float = 1e-6
    pre_eps: float = 1e-6
    post_mult: float = 2.0

    @property
    def sinkhorn_eps(self):
        if self.eps is not None:
            return self.eps
        return 1e-6 if self.sinkhorn == "tilekernels" else 0.0

    def shape(self):
        return f"{self.tokens}x{self.streams}x{self.hidden}"

    def birkhoff_flags(self):
        flags = ["--tokens", str(self.tokens), "--streams", str(self.streams), "--hidden", str(self.hidden)]
        return flags

    def birkhoff_mix_flags(self):
        """The flags only the models with a pre-mix take."""
        flags = ["--sinkhorn", self.sinkhorn, "--iters", str(self.iters), "--norm-eps", repr(self.norm_eps),
                 "--pre-eps", repr(self.pre_eps), "--post-mult", repr(self.post_mult)]
        if self.eps is not None:
            flags += ["--eps", repr(self.eps)]
        return flags


def input_shapes(stage, cfg):
    T, n, C = cfg.tokens, cfg.streams, cfg.hidden
    m = n * (n + 2)
    all_shapes = {"residual": (T, n, C), "fn": (m, n * C), "scale": (3,), "base": (m,),
                  "layer_output": (T, C), "post_mix": (T, n), "comb_mix": (T, n, n)}
    return {k: all_shapes[k] for k in INPUTS[stage]}


def draw_inputs(stage, cfg, seed):
    """f32 NumPy inputs from the zoo's suggested distributions."""
    rng = np.random.default_rng(seed)
    n, C = cfg.streams, cfg.hidden
    dist = {
        "residual": lambda s: rng.standard_normal(s),
        "fn": lambda s: rng.standard_normal(s) / np.sqrt(n * C),
        "scale": lambda s: rng.uniform(0.5, 1.5, s),
        "base": lambda s: rng.standard_normal(s),
        "layer_output": lambda s: rng.standard_normal(s),
        "post_mix": lambda s: rng.uniform(0.0, 2.0, s),
        "comb_mix": lambda s: rng.uniform(0.0, 0.5, s),
    }
    return {k: dist[k](s).astype(np.float32) for k, s in input_shapes(stage, cfg).items()}


# ---------------------------------------------------------------- bf16 in NumPy

def bf16_bits(a):
    """float32 array -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_values(bits):
    """bf16 bit patterns (uint16) -> float32 values."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(a):
    return bf16_values(bf16_bits(a))


def load_npy(path):
    """An .npy file as float64; uint16 arrays are bf16 bit patterns."""
    a = np.load(path)
    if a.dtype == np.uint16:
        a = bf16_values(a)
    return a.astype(np.float64)


def save_npy(path, a, dtype, npy_dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "bf16" and npy_dtype == "native":
        np.save(path, bf16_bits(a))
    else:
        np.save(path, a)


# ----------------------------------------------- the float64 NumPy reference

def np_normalize(m, axis, eps):
    s = m.sum(axis=axis, keepdims=True)
    return m / (s + eps if eps != 0.0 else s)


def np_sinkhorn(comb, cfg):
    eps = cfg.sinkhorn_eps
    row, col = 2, 1  # comb [T, n, n]: rows are the last axis
    if cfg.sinkhorn == "paper":
        m = np.exp(comb)
        for _ in range(cfg.iters):
            m = np_normalize(np_normalize(m, row, eps), col, eps)
        return m
    e = np.exp(comb - comb.max(axis=row, keepdims=True))
    m = e / e.sum(axis=row, keepdims=True)
    if eps != 0.0:
        m = m + eps
    m = np_normalize(m, col, eps)
    for _ in range(1, cfg.iters):
        m = np_normalize(np_normalize(m, row, eps), col, eps)
    return m


def np_pre(x, fn, scale, base, cfg):
    T, n, C = x.shape
    xf = x.reshape(T, n * C)
    dots = xf @ fn.T
    ms = (xf * xf).sum(axis=1, keepdims=True) / (n * C)
    mixes = dots / np.sqrt(ms + cfg.norm_eps)
    scale_vec = np.concatenate([np.full(n, scale[0]), np.full(n, scale[1]), np.full(n * n, scale[2])])
    z = mixes * scale_vec + base
    pre = 1.0 / (1.0 + np.exp(-z[:, :n])) + cfg.pre_eps
    post = 1.0 / (1.0 + np.exp(-z[:, n:2 * n])) * cfg.post_mult
    comb = np_sinkhorn(z[:, 2 * n:].reshape(T, n, n), cfg)
    layer_input = np.einsum("ti,tic->tc", pre, x)
    return layer_input, post, comb


def np_post(f, x, post, comb):
    # x_next[t, j, c] = post[t, j] f[t, c] + sum_i comb[t, i, j] x[t, i, c]
    return np.einsum("tij,tic->tjc", comb, x) + post[:, :, None] * f[:, None, :]


def reference(stage, inputs, cfg):
    """float64 outputs of `stage` on `inputs` (exact math, no rounding)."""
    a = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    if stage == "mhc-pre":
        return dict(zip(OUTPUTS[stage], np_pre(a["residual"], a["fn"], a["scale"], a["base"], cfg)))
    if stage == "mhc-post":
        return {"residual_out": np_post(a["layer_output"], a["residual"], a["post_mix"], a["comb_mix"])}
    li, post, comb = np_pre(a["residual"], a["fn"], a["scale"], a["base"], cfg)
    return {"residual_out": np_post(li, a["residual"], post, comb)}


# A second float64 implementation, token by token and element by element,
# written from `docs/design.md` §2 without sharing code with the one above: the
# reference's own check where PyTorch is not installed.

def loop_sinkhorn(comb, cfg):
    """One token's [n, n] logits (lists) -> its projected matrix."""
    n, eps = len(comb), cfg.sinkhorn_eps

    def rows(m):
        return [[v / (sum(r) + eps) for v in r] for r in m]

    def cols(m):
        sums = [sum(m[i][j] for i in range(n)) + eps for j in range(n)]
        return [[m[i][j] / sums[j] for j in range(n)] for i in range(n)]

    if cfg.sinkhorn == "paper":
        m = [[math.exp(v) for v in r] for r in comb]
        for _ in range(cfg.iters):
            m = cols(rows(m))
        return m
    m = []
    for r in comb:
        top = max(r)
        e = [math.exp(v - top) for v in r]
        m.append([v / sum(e) + eps for v in e])
    m = cols(m)
    for _ in range(cfg.iters - 1):
        m = cols(rows(m))
    return m


def loop_pre_token(xt, fn, scale, base, cfg):
    """One token: xt [n][C] -> (layer_input [C], post [n], comb [n][n])."""
    n, C = len(xt), len(xt[0])
    flat = [v for row in xt for v in row]
    rms = 1.0 / math.sqrt(sum(v * v for v in flat) / (n * C) + cfg.norm_eps)
    mixes = [sum(a * b for a, b in zip(flat, fn[k])) * rms for k in range(n * (n + 2))]
    z = [mixes[k] * scale[0 if k < n else 1 if k < 2 * n else 2] + base[k] for k in range(len(mixes))]
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))
    pre = [sig(v) + cfg.pre_eps for v in z[:n]]
    post = [sig(v) * cfg.post_mult for v in z[n:2 * n]]
    comb = loop_sinkhorn([z[2 * n + i * n:2 * n + (i + 1) * n] for i in range(n)], cfg)
    layer_input = [sum(pre[i] * xt[i][c] for i in range(n)) for c in range(C)]
    return layer_input, post, comb


def loop_post_token(ft, xt, post, comb):
    n, C = len(xt), len(ft)
    return [[post[j] * ft[c] + sum(comb[i][j] * xt[i][c] for i in range(n)) for c in range(C)] for j in range(n)]


def loop_reference(stage, inputs, cfg):
    a = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in inputs.items()}
    out = {k: [] for k in OUTPUTS[stage]}
    T = len(a["residual"])
    for t in range(T):
        xt = a["residual"][t]
        if stage == "mhc-post":
            out["residual_out"].append(loop_post_token(a["layer_output"][t], xt, a["post_mix"][t], a["comb_mix"][t]))
            continue
        li, post, comb = loop_pre_token(xt, a["fn"], a["scale"], a["base"], cfg)
        if stage == "mhc-pre":
            out["layer_input"].append(li)
            out["post_mix"].append(post)
            out["comb_mix"].append(comb)
        else:
            out["residual_out"].append(loop_post_token(li, xt, post, comb))
    return {k: np.array(v) for k, v in out.items()}


def reference_checks(base_cfg, emit):
    """The NumPy reference against the loop implementation, both float64,
    for both Sinkhorn variants, at a small shape (bound 1e-12 of the peak)."""
    for variant in ("tilekernels", "paper"):
        cfg = Config(**{**asdict(base_cfg), "tokens": 5, "hidden": 12, "sinkhorn": variant})
        for i, stage in enumerate(STAGES):
            inputs = draw_inputs(stage, cfg, seed=200 + i)
            want = loop_reference(stage, inputs, cfg)
            got = reference(stage, inputs, cfg)
            for name in OUTPUTS[stage]:
                emit(check_record(f"numpy-reference-vs-loops-{variant}", stage, cfg, "f64", name,
                                  got[name], want[name], 1e-12))


def compare(got, want):
    """(max |got - want|, peak |want|) of two arrays."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} != {want.shape}")
    diff = np.abs(got - want)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(got).all():
        max_abs = float("inf")
    peak = float(np.abs(want).max()) if want.size else 0.0
    return max_abs, peak


def check_record(what, stage, cfg, dtype, output, got, want, bound):
    max_abs, peak = compare(got, want)
    rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else float("inf"))
    return dict(kind="check", what=what, stage=stage, shape=cfg.shape(), dtype=dtype, output=output,
                max_abs=max_abs, peak=peak, rel_to_peak=rel, units=rel / UNIT, bound=bound, ok=bool(rel <= bound))


# ------------------------------------------------------------------ PyTorch

def torch_stages(torch, cfg, dtype):
    """The three stages as functions of device tensors, returning tuples of
    tensors in the storage type `dtype`."""
    n = cfg.streams
    eps = float(cfg.sinkhorn_eps)
    iters, variant = cfg.iters, cfg.sinkhorn
    norm_eps, pre_eps, post_mult = float(cfg.norm_eps), float(cfg.pre_eps), float(cfg.post_mult)

    def normalize(m, dim):
        s = m.sum(dim=dim, keepdim=True)
        return m / (s + eps if eps != 0.0 else s)

    def sinkhorn(comb):
        if variant == "paper":
            m = torch.exp(comb)
            for _ in range(iters):
                m = normalize(normalize(m, 2), 1)
            return m
        m = torch.softmax(comb, dim=-1)
        if eps != 0.0:
            m = m + eps
        m = normalize(m, 1)
        for _ in range(1, iters):
            m = normalize(normalize(m, 2), 1)
        return m

    def pre(x, fn, scale, base):
        T, _, C = x.shape
        x32 = x.float()
        xf = x32.reshape(T, n * C)
        dots = xf @ fn.float().t()
        ms = (xf * xf).sum(dim=1, keepdim=True) * (1.0 / (n * C))
        mixes = dots * torch.rsqrt(ms + norm_eps)
        s = scale.float()
        scale_vec = torch.cat([s[0:1].expand(n), s[1:2].expand(n), s[2:3].expand(n * n)])
        z = mixes * scale_vec + base.float()
        pre_mix = torch.sigmoid(z[:, :n]) + pre_eps
        post_mix = torch.sigmoid(z[:, n:2 * n]) * post_mult
        comb_mix = sinkhorn(z[:, 2 * n:].reshape(T, n, n))
        layer_input = torch.bmm(pre_mix.unsqueeze(1), x32).squeeze(1)
        return layer_input.to(dtype), post_mix.to(dtype), comb_mix.to(dtype)

    def post(layer_output, x, post_mix, comb_mix):
        mixed = torch.bmm(comb_mix.float().transpose(1, 2), x.float())
        out = mixed + post_mix.float().unsqueeze(2) * layer_output.float().unsqueeze(1)
        return (out.to(dtype),)

    def sublayer(x, fn, scale, base):
        layer_input, post_mix, comb_mix = pre(x, fn, scale, base)
        return post(layer_input, x, post_mix, comb_mix)

    return {"mhc-pre": pre, "mhc-post": post, "mhc-sublayer": sublayer}


def torch_dtype(torch, name):
    return {"bf16": torch.bfloat16, "f32": torch.float32}[name]


def to_device(torch, arrays, names, dtype, device):
    return [torch.from_numpy(np.ascontiguousarray(arrays[k])).to(device=device, dtype=torch_dtype(torch, dtype))
            for k in names]


def as_numpy(t):
    return t.detach().float().cpu().numpy()


def time_cuda(torch, fn, args, warmup, runs):
    """Per-call device times (s) of `fn(*args)`, bracketed by CUDA events."""
    for _ in range(warmup):
        fn(*args)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in events:
        start.record()
        fn(*args)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def summary(times):
    return dict(median_s=statistics.median(times), min_s=min(times), max_s=max(times), runs=len(times))


def copy_bandwidth(torch, gib, warmup, runs):
    nbytes = int(gib * (1 << 30))
    x = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    x.fill_(1)
    times = time_cuda(torch, lambda: torch.empty_like(x).copy_(x), (), warmup, runs)
    del x
    s = summary(times)
    return dict(kind="copy", bytes=nbytes, **s, gbps=2 * nbytes / s["median_s"] / 1e9)


# ---------------------------------------------------------------- the modes

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Emitter:
    """Writes JSON lines to stdout and, optionally, a file."""

    def __init__(self, path):
        self.file = open(path, "w") if path else None
        self.failures = []

    def __call__(self, rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()
        if rec.get("kind") == "check" and not rec["ok"]:
            self.failures.append(rec)
        if "error" in rec:
            self.failures.append(rec)


def small_checks(torch, base_cfg, emit, devices):
    """torch eager against the float64 reference at a small shape."""
    cfg = Config(**{**asdict(base_cfg), "tokens": 16, "hidden": 32})
    for device in devices:
        for dtype in ("f32", "bf16"):
            fns = torch_stages(torch, cfg, torch_dtype(torch, dtype))
            for i, stage in enumerate(STAGES):
                inputs = draw_inputs(stage, cfg, seed=100 + i)
                if dtype == "bf16":
                    inputs = {k: round_bf16(v) for k, v in inputs.items()}
                want = reference(stage, inputs, cfg)
                with torch.no_grad():
                    got = fns[stage](*to_device(torch, inputs, INPUTS[stage], dtype, device))
                for name, g in zip(OUTPUTS[stage], got):
                    emit(check_record(f"torch-eager-{device}-vs-numpy", stage, cfg, dtype, name,
                                      as_numpy(g), want[name], BOUNDS[dtype]))


def bench(torch, a, emit):
    dev = torch.cuda.get_device_properties(0)
    emit(dict(kind="env", device=dev.name, sms=dev.multi_processor_count, memory_bytes=dev.total_memory,
              torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
              dtype=a.dtype, warmup=a.warmup, runs=a.runs))
    log(f"copy bandwidth ({a.copy_gib} GiB)")
    emit(copy_bandwidth(torch, a.copy_gib, a.warmup, a.runs))
    impls = [("eager", None)]
    if not a.no_compile:
        impls.append(("compile", dict(dynamic=False)))
    if a.max_autotune:
        impls.append(("compile-max-autotune", dict(dynamic=False, mode="max-autotune-no-cudagraphs")))
    stages = [s for s in a.stages.split(",") if s]
    for C in a.hidden_list:
        cfg = a.config(C)
        fns = torch_stages(torch, cfg, torch_dtype(torch, a.dtype))
        for i, stage in enumerate(stages):
            args = to_device(torch, draw_inputs(stage, cfg, seed=i), INPUTS[stage], a.dtype, "cuda")
            eager_out = None
            for impl, opts in impls:
                rec = dict(kind="stage", stage=stage, shape=cfg.shape(), tokens=cfg.tokens, streams=cfg.streams,
                           hidden=C, dtype=a.dtype, impl=impl)
                log(f"{stage} {cfg.shape()} {a.dtype} {impl}")
                try:
                    fn = fns[stage] if opts is None else torch.compile(fns[stage], **opts)
                    with torch.no_grad():
                        t0 = time.perf_counter()
                        out = fn(*args)
                        torch.cuda.synchronize()
                        first = time.perf_counter() - t0
                        times = time_cuda(torch, fn, args, a.warmup, a.runs)
                    rec.update(summary(times))
                    if opts is not None:
                        rec["compile_s"] = first
                    emit(rec)
                    if opts is None:
                        eager_out = out
                    elif a.check and eager_out is not None:
                        for name, g, w in zip(OUTPUTS[stage], out, eager_out):
                            emit(check_record(f"torch-{impl}-vs-eager", stage, cfg, a.dtype, name,
                                              as_numpy(g), as_numpy(w), BOUNDS[a.dtype]))
                except Exception as e:  # a failing peer is reported, not fatal
                    rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
                    emit(rec)
            del args
            torch.cuda.empty_cache()


def save(torch, a):
    cfg = a.config(a.hidden_list[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fns = torch_stages(torch, cfg, torch_dtype(torch, a.dtype))
    for i, stage in enumerate(STAGES):
        inputs = draw_inputs(stage, cfg, seed=a.seed + i)
        if a.dtype == "bf16":
            inputs = {k: round_bf16(v) for k, v in inputs.items()}
        with torch.no_grad():
            outs = fns[stage](*to_device(torch, inputs, INPUTS[stage], a.dtype, device))
        din, dout = os.path.join(a.save_inputs, stage), os.path.join(a.save_outputs, stage)
        os.makedirs(din, exist_ok=True)
        os.makedirs(dout, exist_ok=True)
        for k, v in inputs.items():
            save_npy(os.path.join(din, f"{k}.npy"), v, a.dtype, a.npy_dtype)
        for k, t in zip(OUTPUTS[stage], outs):
            save_npy(os.path.join(dout, f"{k}.npy"), as_numpy(t), a.dtype, a.npy_dtype)
        flags = cfg.birkhoff_flags() + (cfg.birkhoff_mix_flags() if stage != "mhc-post" else [])
        bdtype = a.dtype if a.npy_dtype == "native" else "f32"
        log(f"{stage}: birkhoff run {stage} {' '.join(flags)} --dtype {bdtype} --inputs {din} --outputs OUT"
            f" && {sys.argv[0]} --compare-npy OUT {dout}")


def compare_dirs(dir_a, dir_b, emit):
    names = sorted(set(f for f in os.listdir(dir_a) if f.endswith(".npy")) &
                   set(f for f in os.listdir(dir_b) if f.endswith(".npy")))
    if not names:
        raise SystemExit(f"no NAME.npy in both {dir_a} and {dir_b}")
    for f in names:
        max_abs, peak = compare(load_npy(os.path.join(dir_a, f)), load_npy(os.path.join(dir_b, f)))
        rel = max_abs / peak if peak > 0 else 0.0
        emit(dict(kind="compare", file=f, max_abs=max_abs, peak=peak, rel_to_peak=rel, units=rel / UNIT))


def check_birkhoff(a, emit):
    """The float64 reference against `birkhoff run` on the same inputs."""
    cfg = a.config(a.hidden_list[0])
    backends = [b for b in a.birkhoff_backends.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("f32", "bf16"):
            for i, stage in enumerate(STAGES):
                inputs = draw_inputs(stage, cfg, seed=a.seed + i)
                if dtype == "bf16":
                    inputs = {k: round_bf16(v) for k, v in inputs.items()}
                din = os.path.join(tmp, f"{stage}-{dtype}-in")
                os.makedirs(din, exist_ok=True)
                for k, v in inputs.items():
                    save_npy(os.path.join(din, f"{k}.npy"), v, dtype, "native")
                want = reference(stage, inputs, cfg)
                flags = cfg.birkhoff_flags() + (cfg.birkhoff_mix_flags() if stage != "mhc-post" else [])
                for backend, fused in [(b, f) for b in backends for f in (False, True)]:
                    variant = f"{backend}-{'fused' if fused else 'unfused'}"
                    dout = os.path.join(tmp, f"{stage}-{dtype}-{variant}-out")
                    cmd = [a.check_birkhoff, "run", stage, *flags, "--dtype", dtype, "--inputs", din,
                           "--outputs", dout, "--target", backend] + (["--optimize"] if fused else [])
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    what = f"birkhoff-{variant}-vs-numpy"
                    if p.returncode != 0:
                        emit(dict(kind="check", what=what, stage=stage, shape=cfg.shape(), dtype=dtype,
                                  ok=False, error=(p.stderr.strip() or p.stdout.strip())[-500:]))
                        continue
                    for name in OUTPUTS[stage]:
                        got = load_npy(os.path.join(dout, f"{name}.npy"))
                        emit(check_record(what, stage, cfg, dtype, name, got, want[name], BIRKHOFF_BOUNDS[dtype]))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=None, help="T (default 8192; 16 for --save-inputs/--check-birkhoff)")
    ap.add_argument("--streams", type=int, default=4, help="n (default 4)")
    ap.add_argument("--hidden", default=None,
                    help="comma-separated C values (default 2560,4096,7168; 32 for --save-inputs/--check-birkhoff)")
    ap.add_argument("--dtype", choices=("bf16", "f32"), default="bf16", help="storage type (default bf16)")
    ap.add_argument("--stages", default=",".join(STAGES), help="stages to benchmark (default: all three)")
    ap.add_argument("--sinkhorn", choices=("tilekernels", "paper"), default="tilekernels")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--eps", type=float, default=None, help="Sinkhorn eps (default 1e-6 tilekernels, 0 paper)")
    ap.add_argument("--norm-eps", type=float, default=1e-6)
    ap.add_argument("--pre-eps", type=float, default=1e-6)
    ap.add_argument("--post-mult", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=20, help="timed calls per measurement (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    ap.add_argument("--copy-gib", type=float, default=1.0, help="size of the bandwidth copy (default 1 GiB)")
    ap.add_argument("--no-compile", action="store_true", help="time eager only")
    ap.add_argument("--max-autotune", action="store_true",
                    help='also torch.compile(mode="max-autotune-no-cudagraphs") (slow to compile)')
    ap.add_argument("--check", action="store_true", help="check numerics (see above)")
    ap.add_argument("--no-bench", action="store_true", help="with --check: only the small-shape checks")
    ap.add_argument("--json", metavar="OUT", default=None,
                    help="also write the JSON lines to this file (replacing it)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda (default): checks on the CPU and CUDA, benchmarks on CUDA; "
                         "cpu: checks on the CPU only, no benchmark")
    ap.add_argument("--seed", type=int, default=0, help="seed of the saved / checked inputs")
    ap.add_argument("--save-inputs", metavar="DIR")
    ap.add_argument("--save-outputs", metavar="DIR")
    ap.add_argument("--npy-dtype", choices=("f32", "native"), default="f32",
                    help="saved .npy element type: f32, or native (bf16 as uint16 bit patterns)")
    ap.add_argument("--compare-npy", nargs=2, metavar=("DIR_A", "DIR_B"))
    ap.add_argument("--check-birkhoff", metavar="BIRKHOFF")
    ap.add_argument("--birkhoff-backends", default="interp,cpu",
                    help="backends for --check-birkhoff (default interp,cpu)")
    a = ap.parse_args(argv)
    small = bool(a.save_inputs or a.check_birkhoff)
    if a.tokens is None:
        a.tokens = 16 if small else 8192
    a.hidden_list = [int(c) for c in (a.hidden or ("32" if small else "2560,4096,7168")).split(",") if c]
    if a.device == "cpu" and not (a.check or a.save_inputs or a.compare_npy or a.check_birkhoff):
        ap.error("--device cpu only runs checks: add --check")
    if bool(a.save_inputs) != bool(a.save_outputs):
        ap.error("--save-inputs and --save-outputs go together")
    for s in a.stages.split(","):
        if s and s not in STAGES:
            ap.error(f"unknown stage {s!r} (choose from {', '.join(STAGES)})")

    def config(C):
        return Config(tokens=a.tokens, streams=a.streams, hidden=C, sinkhorn=a.sinkhorn, iters=a.iters,
                      eps=a.eps, norm_eps=a.norm_eps, pre_eps=a.pre_eps, post_mult=a.post_mult)

    a.config = config
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    emit = Emitter(a.json)
    if a.compare_npy:
        compare_dirs(*a.compare_npy, emit)
        return 0
    if a.check_birkhoff:
        check_birkhoff(a, emit)
        return report(emit)
    if a.check:
        log("the float64 NumPy reference against its per-token loop twin")
        reference_checks(a.config(a.hidden_list[0]), emit)
    try:
        import torch  # only the modes below need PyTorch
    except ImportError as e:
        log(f"PyTorch is not importable ({e}): pip install torch"
            + ("; only the NumPy reference was checked" if a.check else ""))
        report(emit)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if a.save_inputs:
        save(torch, a)
        return 0
    cuda = a.device == "cuda" and torch.cuda.is_available()
    if a.device == "cuda" and not cuda and not (a.check and a.no_bench):
        log("no CUDA device (torch.cuda.is_available() is False): pass --device cpu for the CPU checks")
        report(emit)
        return 2
    if a.check:
        log("small-shape checks against the float64 reference")
        small_checks(torch, a.config(a.hidden_list[0]), emit, ["cpu"] + (["cuda"] if cuda else []))
    if a.device == "cpu" and not a.no_bench:
        log("--device cpu: no benchmark (the timings are CUDA events)")
    if cuda and not a.no_bench:
        for key in ("cache_size_limit", "recompile_limit"):
            # Every (stage, shape) compiles once; the default limit is 8.
            if hasattr(torch._dynamo.config, key):
                setattr(torch._dynamo.config, key, 64)
        bench(torch, a, emit)
    return report(emit)


def report(emit):
    if emit.failures:
        log(f"{len(emit.failures)} failed:")
        for f in emit.failures:
            log(f"  {json.dumps(f)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
