#!/usr/bin/env python3
"""CPU benchmark of birkhoff's PyTorch custom ops (`birkhoff.torch.mhc_pre`,
`birkhoff.torch.mhc_post`) against the same math written in plain PyTorch,
run eagerly and under torch.compile.

What it measures, per stage (pre, post) and pass (fwd; fwd+bwd, the
backward of every output against a fixed random gradient):
  birkhoff        the custom op (birkhoff's fused Cranelift kernels)
  eager           the reference below, written from the mHC paper's equations
  torch.compile   the same reference under torch.compile(dynamic=False); its
                  compile time (the first call) is timed separately and printed
Shapes: x [T, n, C] with n=4, T=4096, C=2560 by default, float32; Sinkhorn
"tilekernels" with 20 rounds, eps 1e-6 (the ops' defaults). Each variant runs
--warmup untimed calls, then --runs timed calls (time.perf_counter), the
variants' calls interleaved round-robin; the table gives the median in ms
and torch.compile's median over birkhoff's (above 1: birkhoff is faster).
torch uses --threads threads (inductor compiles in-process); birkhoff's
kernels run on as many (the ops follow torch.get_num_threads()).

Before timing, the reference and birkhoff are checked against each other in
float64 at T=8, C=16 (forward outputs and input gradients, 1e-9 relative to
each tensor's largest magnitude); the script stops if they disagree.

--overhead: at T=16, C=2560 and C=16 (float32, forward; at C=16 the
kernels take little time), the median per-call time of
the public op, of birkhoff.torch's internal call (operands to results,
without torch's dispatcher), and of the compiled program's `run_into` on
prebuilt arrays, in microseconds: the Python side's cost per call is the
op's time minus the program's.

Run:
  python benches/torch_ops.py [--T 4096] [--C 2560] [--runs 10] [--warmup 2]
        [--threads 2]
  python benches/torch_ops.py --overhead
"""

import argparse
import math
import statistics
import sys
import time

import torch
import torch._inductor.config

import birkhoff.torch as bt

N = 4
ATTRS = dict(norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, iters=20, eps=1e-6)


# ---- the reference, plain PyTorch -------------------------------------------
def ref_pre(x, fn, scale, base, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0, iters=20, eps=1e-6):
    t, n, c = x.shape
    xf = x.reshape(t, n * c)
    r = torch.rsqrt((xf * xf).mean(-1, keepdim=True) + norm_eps)
    mixes = (xf @ fn.T) * r
    s = torch.cat([scale[0].expand(n), scale[1].expand(n), scale[2].expand(n * n)])
    z = mixes * s + base
    pre = torch.sigmoid(z[:, :n]) + pre_eps
    post = post_mult * torch.sigmoid(z[:, n : 2 * n])
    m = torch.softmax(z[:, 2 * n :].reshape(t, n, n), -1) + eps
    m = m / (m.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        m = m / (m.sum(-1, keepdim=True) + eps)
        m = m / (m.sum(-2, keepdim=True) + eps)
    layer_input = torch.einsum("tn,tnc->tc", pre, x)
    return layer_input, post, m


def ref_post(f, x, post, comb):
    return post.unsqueeze(-1) * f.unsqueeze(1) + torch.einsum("tij,tic->tjc", comb, x)


def bk_pre(x, fn, scale, base):
    return bt.mhc_pre(x, fn, scale, base, sinkhorn="tilekernels", **ATTRS)


bk_post = bt.mhc_post


# ---- inputs -------------------------------------------------------------------
def pre_inputs(t, c, dtype, gen):
    m = N * (N + 2)
    x = torch.randn(t, N, c, generator=gen, dtype=dtype)
    fn = torch.randn(m, N * c, generator=gen, dtype=dtype) / math.sqrt(N * c)
    scale = 0.5 + torch.rand(3, generator=gen, dtype=dtype)
    base = torch.randn(m, generator=gen, dtype=dtype)
    return [x, fn, scale, base]


def post_inputs(t, c, dtype, gen):
    f = torch.randn(t, c, generator=gen, dtype=dtype)
    x = torch.randn(t, N, c, generator=gen, dtype=dtype)
    post = 2 * torch.rand(t, N, generator=gen, dtype=dtype)
    comb = torch.softmax(torch.randn(t, N, N, generator=gen, dtype=dtype), -1)
    return [f, x, post, comb]


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def grads_for(fn, inputs, gen):
    return [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in as_tuple(fn(*inputs))]


def fwd_bwd(fn, inputs, gs):
    for a in inputs:
        a.grad = None
    outs = as_tuple(fn(*inputs))
    torch.autograd.backward(outs, gs)
    return outs, [a.grad for a in inputs]


# ---- the check ----------------------------------------------------------------
def check(tol=1e-9):
    gen = torch.Generator().manual_seed(1)
    for stage, bk, ref, make in (("pre", bk_pre, ref_pre, pre_inputs), ("post", bk_post, ref_post, post_inputs)):
        inputs = [a.requires_grad_() for a in make(8, 16, torch.float64, gen)]
        gs = grads_for(ref, inputs, gen)
        (ob, gb), (orf, gr) = fwd_bwd(bk, inputs, gs), fwd_bwd(ref, inputs, gs)
        pairs = [(f"output {i}", a.detach(), b.detach()) for i, (a, b) in enumerate(zip(ob, orf))]
        for what, a, b in pairs + [(f"grad of input {i}", a, b) for i, (a, b) in enumerate(zip(gb, gr))]:
            e = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-300)
            if not e <= tol:
                sys.exit(f"check failed: {stage} {what}: birkhoff and the PyTorch reference differ by "
                         f"{e:.3g} relative (float64, T=8, C=16; tolerance {tol:g}); not timing")
    print(f"check: birkhoff matches the PyTorch reference to {tol:g} relative (float64, T=8, C=16)")


# ---- timing -------------------------------------------------------------------
def medians_s(calls, runs, warmup):
    """Median seconds per call of each of ``calls`` (name -> callable), the
    timed calls interleaved round-robin so that the machine's slow spells
    fall on every variant alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench(args):
    gen = torch.Generator().manual_seed(0)
    rows, compile_times = [], []
    for stage, bk, ref, make in (("pre", bk_pre, ref_pre, pre_inputs), ("post", bk_post, ref_post, post_inputs)):
        base_inputs = make(args.T, args.C, torch.float32, gen)
        gs = grads_for(ref, base_inputs, gen)
        for pas, grad in (("fwd", False), ("fwd+bwd", True)):
            inputs = [a.detach().clone().requires_grad_(grad) for a in base_inputs]
            if grad:
                runner = lambda fn: lambda: fwd_bwd(fn, inputs, gs)  # noqa: E731
            else:
                runner = lambda fn: lambda: fn(*inputs)  # noqa: E731
            with torch.set_grad_enabled(grad):
                torch._dynamo.reset()
                compiled = torch.compile(ref, dynamic=False)
                t0 = time.perf_counter()
                runner(compiled)()
                compile_times.append((stage, pas, time.perf_counter() - t0))
                print(f"  timing {stage} {pas} ...", file=sys.stderr, flush=True)
                calls = {"birkhoff": runner(bk), "eager": runner(ref), "compile": runner(compiled)}
                ms = {k: 1e3 * v for k, v in medians_s(calls, args.runs, args.warmup).items()}
            rows.append((stage, pas, ms))
    print(f"\nT={args.T}, C={args.C}, n={N}, float32, tilekernels Sinkhorn ({ATTRS['iters']} rounds); "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"median of {args.runs} runs after {args.warmup} warm-up\n")
    print("| stage | pass | birkhoff ms | eager ms | torch.compile ms | compile/birkhoff |")
    print("|---|---|---:|---:|---:|---:|")
    for stage, pas, ms in rows:
        print(f"| {stage} | {pas} | {ms['birkhoff']:.2f} | {ms['eager']:.2f} | {ms['compile']:.2f} "
              f"| {ms['compile'] / ms['birkhoff']:.2f} |")
    print("\ntorch.compile time (first call, excluded above):")
    for stage, pas, s in compile_times:
        print(f"  {stage} {pas}: {s:.2f} s")


# ---- per-call overhead ----------------------------------------------------------
def one_op(stage, inputs):
    """`birkhoff.torch`'s internal call for this stage: (op, attrs, result
    names and shapes), as the public op builds it."""
    t, n, c = inputs[1].shape if stage == "post" else inputs[0].shape
    if stage == "pre":
        attrs = bt._pre_attrs(ATTRS["norm_eps"], ATTRS["pre_eps"], ATTRS["post_mult"], "tilekernels",
                              ATTRS["iters"], ATTRS["eps"])
        return "mhc_pre", attrs, (("layer_input", (t, c)), ("post_mix", (t, n)), ("comb_mix", (t, n, n)))
    return "mhc_post", (), (("residual_out", (t, n, c)),)


def overhead(args):
    t = 16
    runs = max(args.runs, 500)
    gen = torch.Generator().manual_seed(0)
    print(f"per-call time, T={t}, n={N}, float32, forward; median of {runs} calls after {args.warmup} "
          "warm-up (µs)\n")
    print("| stage | C | op call µs | internal call µs | program run µs | op − program µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in (2560, 16):
        for stage, bk, make in (("pre", bk_pre, pre_inputs), ("post", bk_post, post_inputs)):
            inputs = make(t, c, torch.float32, gen)
            with torch.no_grad():
                bk(*inputs)
            op, attrs, outs = one_op(stage, inputs)
            key = (op, "f32", tuple(tuple(a.shape) for a in inputs), outs, attrs, torch.get_num_threads())
            if key not in bt._programs:
                sys.exit(f"overhead: the {stage} op compiled a program under another key than {key[:2]}")
            prog = bt._programs[key]
            arrays = [(f"a{i}", bt._array(a)) for i, a in enumerate(inputs)]
            results = [bt._array(torch.empty(shape)) for _, shape in outs]
            calls = {
                "op": lambda: bk(*inputs),
                "call": lambda: bt._call(op, attrs, inputs, outs),
                "prog": lambda: prog.run_into(arrays, results),
            }
            with torch.no_grad():
                us = {k: 1e6 * v for k, v in medians_s(calls, runs, args.warmup).items()}
            print(f"| {stage} | {c} | {us['op']:.1f} | {us['call']:.1f} | {us['prog']:.1f} | "
                  f"{us['op'] - us['prog']:.1f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=4096, help="tokens")
    p.add_argument("--C", type=int, default=2560, help="hidden size")
    p.add_argument("--runs", type=int, default=10, help="timed calls per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--overhead", action="store_true", help="Python-side cost per op call at T=16, C=2560 and 16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Compile in this process: inductor's pool of compile workers otherwise
    # keeps the cores busy for seconds after the first compile, into the
    # timed calls that follow it.
    torch._inductor.config.compile_threads = 1
    check()
    if args.overhead:
        overhead(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
