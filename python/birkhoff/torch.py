"""birkhoff's fused mHC kernels as PyTorch custom ops, with autograd.

* :func:`mhc_pre` (``birkhoff::mhc_pre``): the pre-mix of the mHC paper,
  ``x [..., n, C]`` with ``fn [n(n+2), n·C]``, ``scale [3]`` and
  ``base [n(n+2)]`` to ``(layer_input [..., C], post [..., n],
  comb [..., n, n])``. Its backward is birkhoff's fused ``mhc_pre_grad``.
* :func:`mhc_post` (``birkhoff::mhc_post``): ``x_next[t, j, c] = post[t, j]
  · f[t, c] + Σ_i comb[t, i, j] · x[t, i, c]``; backward ``mhc_post_grad``.
* :func:`sinkhorn` (``birkhoff::sinkhorn``): the Sinkhorn-Knopp projection
  of ``[..., n, n]`` logits; backward ``sinkhorn_grad``.
* :class:`MHC`: an ``nn.Module`` that wraps any sublayer ``F`` in an mHC
  connection (pre → F → post), initialized as the paper does.

The ops are registered with ``torch.library`` (fake implementations
included, so ``torch.compile`` traces through them as single nodes). Each
distinct shape, dtype and setting compiles once per process; later calls
reuse the compiled program (the :data:`MAX_PROGRAMS` most recently used
are kept). They run on CPU tensors through birkhoff's Cranelift backend,
on as many threads as ``torch.get_num_threads()``, in float32, float64,
or bfloat16 storage (float32 arithmetic inside, rounded once on store).
Operands are read in place and results are not copied. A call that nothing
needs to see (plain CPU tensors, no gradient needed, no tracing, mode or
profiler) runs its kernel without torch's dispatcher. CUDA tensors raise
``NotImplementedError`` in this release.
"""

from __future__ import annotations

import collections
import functools
import math
import operator
import threading

import numpy as np
import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor, nn

from . import _native, _tensor_array

__all__ = [
    "mhc_pre",
    "mhc_post",
    "sinkhorn",
    "MHC",
    "expand_streams",
    "amax_gain",
    "gate_bias",
    "plan_blocks",
    "CheckpointedStack",
    "keep_matmuls",
]

_IR_DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}

#: Compiled programs kept, least recently used dropped first: each holds
#: its intermediate buffers, sized for its token count.
MAX_PROGRAMS = 64

_programs: collections.OrderedDict = collections.OrderedDict()
_programs_lock = threading.Lock()


def _ir_dtype(name: str, *tensors: Tensor) -> str:
    dt = tensors[0].dtype
    for t in tensors:
        if t.dtype != dt:
            raise TypeError(f"birkhoff.torch.{name}: operands must share one dtype, got {dt} and {t.dtype}")
        if t.device.type != "cpu":
            raise NotImplementedError(
                f"birkhoff.torch.{name}: tensors on {t.device} are not supported in this "
                "release (CPU tensors run birkhoff's Cranelift kernels)"
            )
    if dt not in _IR_DTYPES:
        raise TypeError(f"birkhoff.torch.{name}: dtype {dt} is not float32, float64 or bfloat16")
    return _IR_DTYPES[dt]


def _check_float(name: str, x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name}={x} is not finite")
    return x


@functools.lru_cache(maxsize=256)
def _sinkhorn_attrs(sinkhorn: str, iters: int, eps: float):
    if sinkhorn not in ("paper", "tilekernels"):
        raise ValueError(f"sinkhorn must be 'paper' or 'tilekernels', got {sinkhorn!r}")
    if int(iters) < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    return (("variant", sinkhorn), ("iters", int(iters)), ("eps", _check_float("eps", eps)))


@functools.lru_cache(maxsize=256)
def _pre_attrs(norm_eps, pre_eps, post_mult, sinkhorn, iters, eps):
    return (
        ("norm_eps", _check_float("norm_eps", norm_eps)),
        ("pre_eps", _check_float("pre_eps", pre_eps)),
        ("post_mult", _check_float("post_mult", post_mult)),
    ) + _sinkhorn_attrs(sinkhorn, iters, eps)


def _ty(dtype: str, shape) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _text(op, dtype, in_shapes, outs, attrs) -> str:
    """IR text of a graph ``@op`` whose inputs ``%a0, %a1, ...`` have
    ``in_shapes``, computing one ``op`` with ``attrs`` and returning its
    results ``outs`` = ((name, shape), ...)."""
    ins = [_ty(dtype, s) for s in in_shapes]
    params = ", ".join(f"%a{i}: {t}" for i, t in enumerate(ins))
    out_types = [_ty(dtype, shape) for _, shape in outs]
    results = ", ".join(f"{name}: {t}" for (name, _), t in zip(outs, out_types))
    operands = ", ".join(f"%a{i}" for i in range(len(ins)))
    attr_text = "".join(f", {k}={repr(v) if isinstance(v, float) else v}" for k, v in attrs)
    if len(outs) == 1:
        body = [f"  %r = {op} {operands}{attr_text} : {out_types[0]}"]
        ret = "%r"
    else:
        body = [f"  %r = {op} {operands}{attr_text} : ({', '.join(out_types)})"]
        body += [f"  %g{i} = get %r, index={i} : {t}" for i, t in enumerate(out_types)]
        ret = ", ".join(f"%g{i}" for i in range(len(outs)))
    return f"graph @{op}({params}) -> ({results}) {{\n" + "\n".join(body) + f"\n  return {ret}\n}}\n"


def _program(op, dtype, in_shapes, outs, attrs, check=None):
    """The compiled one-op program, compiled on first use for this shape,
    dtype, setting and torch's thread count (birkhoff runs on as many
    threads as ``torch.get_num_threads()``). ``check`` validates the
    operands' shapes before a compile: a program found under these shapes
    was checked when it was compiled."""
    threads = torch.get_num_threads()
    key = (op, dtype, in_shapes, outs, attrs, threads)
    # A hit takes no lock: each dict operation is atomic under the
    # interpreter lock, and a program another thread evicted meanwhile is
    # still ours to run.
    prog = _programs.get(key)
    if prog is not None:
        try:
            _programs.move_to_end(key)
        except KeyError:
            pass
        return prog
    if check is not None:
        check()
    # Compiled without the lock, so calls of other programs go on; two
    # threads that miss at once both compile, and one result is kept.
    prog = _native.compile(_text(op, dtype, in_shapes, outs, attrs), "cpu", True, {"threads": threads})
    with _programs_lock:
        prog = _programs.setdefault(key, prog)
        while len(_programs) > MAX_PROGRAMS:
            _programs.popitem(last=False)
    return prog


_array = _tensor_array


_shape = operator.attrgetter("shape")

#: Allocates an op's results (a hook for tests: every element is written).
_new_output = torch.empty


def _call(op, attrs, tensors, outs, check=None):
    """Runs the one-op graph of ``op`` on ``tensors`` (its operands, in
    order) and returns its results: tensors that torch allocates and the
    program writes in place. The operands are read in place while the call
    runs, with Python's lock released: they must not change meanwhile.
    ``check`` validates the operands' shapes (see :func:`_program`).

    The common case costs a few microseconds over the kernels: the program
    reads and writes the tensors' memory directly. What that path refuses
    (mixed dtypes, another device, non-contiguous operands, tensor
    subclasses) takes the checked path, which raises a clear error or
    copies what must be copied."""
    dt = tensors[0].dtype
    dtype = _IR_DTYPES.get(dt)
    if dtype is not None and tensors[0].is_cpu:
        prog = _program(op, dtype, tuple(map(_shape, tensors)), outs, attrs, check)
        results = [_new_output(shape, dtype=dt) for _, shape in outs]
        if prog.run_tensors(tensors, results) is None:
            return results
    dtype = _ir_dtype(op, *tensors)
    if check is not None:
        check()
    prog = _program(op, dtype, tuple(tuple(t.shape) for t in tensors), outs, attrs)
    results = [_new_output(shape, dtype=dt) for _, shape in outs]
    prog.run_into([(f"a{i}", _array(t)) for i, t in enumerate(tensors)], [_array(r) for r in results])
    return results


#: Tensor types the ops may run without torch's dispatcher (exact types:
#: a subclass may reinterpret its memory or expect to see the op).
_PLAIN_TYPES = (Tensor, nn.Parameter)


def _plain_eager(tensors) -> bool:
    """Whether a call may run its kernel directly, without going through
    torch's dispatcher: plain CPU tensors of which none needs a gradient
    here, and nothing about that must see the op — no ``torch.compile``
    tracing or TorchScript tracing, no torch function or dispatch mode
    (fake tensors, a ``torch.device`` context), no functorch transform, no
    forward-mode AD level, no profiler. The dispatcher costs about as much
    as the rest of a small call; whatever this refuses takes the registered
    op, which computes the same bits."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if (
        torch.compiler.is_compiling()
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._are_functorch_transforms_active()
        or torch._C._autograd._profiler_enabled()
        or torch._C._is_tracing()
        or _forward_ad._current_level >= 0
    ):
        return False
    return all(type(t) in _PLAIN_TYPES and t.is_cpu for t in tensors)


# ---- the pre-mix ------------------------------------------------------------


def _tnc(op: str, x: Tensor):
    """``x``'s ``(T, n, C)``; fails unless it has three dimensions."""
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be [T, n, C], got {list(x.shape)}")
    return x.shape


def _pre_dims(x: Tensor, fn: Tensor, scale: Tensor, base: Tensor):
    if x.dim() != 3:
        raise ValueError(f"mhc_pre: x must be [T, n, C], got {list(x.shape)}")
    t, n, c = x.shape
    m = n * (n + 2)
    want = {"fn": [m, n * c], "scale": [3], "base": [m]}
    for name, v in (("fn", fn), ("scale", scale), ("base", base)):
        if list(v.shape) != want[name]:
            raise ValueError(f"mhc_pre: {name} must be {want[name]} for x {list(x.shape)}, got {list(v.shape)}")
    return t, n, c, m


def _pre_impl(
    x: Tensor,
    fn: Tensor,
    scale: Tensor,
    base: Tensor,
    norm_eps: float,
    pre_eps: float,
    post_mult: float,
    sinkhorn: str,
    iters: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    t, n, c = _tnc("mhc_pre", x)
    attrs = _pre_attrs(norm_eps, pre_eps, post_mult, sinkhorn, iters, eps)
    outs = (("layer_input", (t, c)), ("post_mix", (t, n)), ("comb_mix", (t, n, n)))
    li, post, comb = _call("mhc_pre", attrs, (x, fn, scale, base), outs, lambda: _pre_dims(x, fn, scale, base))
    return li, post, comb


_mhc_pre_op = torch.library.custom_op("birkhoff::mhc_pre", mutates_args=())(_pre_impl)


@_mhc_pre_op.register_fake
def _(x, fn, scale, base, norm_eps, pre_eps, post_mult, sinkhorn, iters, eps):
    t, n, c = x.shape
    return x.new_empty((t, c)), x.new_empty((t, n)), x.new_empty((t, n, n))


def _pre_grad_impl(
    x: Tensor,
    fn: Tensor,
    scale: Tensor,
    base: Tensor,
    d_li: Tensor,
    d_post: Tensor,
    d_comb: Tensor,
    norm_eps: float,
    pre_eps: float,
    post_mult: float,
    sinkhorn: str,
    iters: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _tnc("mhc_pre_grad", x)

    def check():
        t, n, c, _ = _pre_dims(x, fn, scale, base)
        for name, v, want in (("d_li", d_li, (t, c)), ("d_post", d_post, (t, n)), ("d_comb", d_comb, (t, n, n))):
            if tuple(v.shape) != want:
                raise ValueError(f"mhc_pre_grad: {name} must be {list(want)}, got {list(v.shape)}")

    attrs = _pre_attrs(norm_eps, pre_eps, post_mult, sinkhorn, iters, eps)
    outs = tuple((k, tuple(v.shape)) for k, v in (("d_x", x), ("d_fn", fn), ("d_scale", scale), ("d_base", base)))
    operands = (x, fn, scale, base, d_li, d_post, d_comb)
    dx, dfn, dscale, dbase = _call("mhc_pre_grad", attrs, operands, outs, check)
    return dx, dfn, dscale, dbase


_mhc_pre_grad_op = torch.library.custom_op("birkhoff::mhc_pre_grad", mutates_args=())(_pre_grad_impl)


@_mhc_pre_grad_op.register_fake
def _(x, fn, scale, base, d_li, d_post, d_comb, norm_eps, pre_eps, post_mult, sinkhorn, iters, eps):
    return torch.empty_like(x), torch.empty_like(fn), torch.empty_like(scale), torch.empty_like(base)


def _pre_setup(ctx, inputs, output):
    x, fn, scale, base, *attrs = inputs
    ctx.save_for_backward(x, fn, scale, base)
    ctx.attrs = attrs


def _pre_backward(ctx, d_li, d_post, d_comb):
    x, fn, scale, base = ctx.saved_tensors
    t, n, c = x.shape
    zeros = lambda shape: x.new_zeros(shape)  # noqa: E731
    d_li = zeros((t, c)) if d_li is None else d_li
    d_post = zeros((t, n)) if d_post is None else d_post
    d_comb = zeros((t, n, n)) if d_comb is None else d_comb
    operands = (x, fn, scale, base, d_li, d_post, d_comb)
    grad = _pre_grad_impl if _plain_eager(operands) else _mhc_pre_grad_op
    grads = grad(*operands, *ctx.attrs)
    return (*grads, None, None, None, None, None, None)


_mhc_pre_op.register_autograd(_pre_backward, setup_context=_pre_setup)


def mhc_pre(
    x: Tensor,
    fn: Tensor,
    scale: Tensor,
    base: Tensor,
    *,
    norm_eps: float = 1e-6,
    pre_eps: float = 1e-6,
    post_mult: float = 2.0,
    sinkhorn: str = "tilekernels",
    iters: int = 20,
    eps: float | None = None,
):
    """The mHC pre-mix, fused: returns ``(layer_input [..., C], post
    [..., n], comb [..., n, n])`` for ``x [..., n, C]``.

    ``layer_input = Σ_i pre_i · x_i`` with ``pre = sigmoid(...) + pre_eps``,
    ``post = post_mult · sigmoid(...)``, and ``comb`` the Sinkhorn
    projection (``sinkhorn="tilekernels"``: a row softmax, then ``iters``
    column/row rounds as DeepSeek's kernels do; ``"paper"``: exp, then
    ``iters`` row/column rounds). ``eps`` defaults to the variant's (1e-6
    for tilekernels, 0 for paper). Leading dimensions of ``x`` are
    flattened into tokens and restored.
    """
    if x.dim() < 3:
        raise ValueError(f"mhc_pre: x must be [..., n, C], got {list(x.shape)}")
    if eps is None:
        eps = 1e-6 if sinkhorn == "tilekernels" else 0.0
    op = _pre_impl if _plain_eager((x, fn, scale, base)) else _mhc_pre_op
    if x.dim() == 3:
        return op(x, fn, scale, base, norm_eps, pre_eps, post_mult, sinkhorn, iters, eps)
    lead, (n, c) = x.shape[:-2], x.shape[-2:]
    li, post, comb = op(x.reshape(-1, n, c), fn, scale, base, norm_eps, pre_eps, post_mult, sinkhorn, iters, eps)
    return li.reshape(*lead, c), post.reshape(*lead, n), comb.reshape(*lead, n, n)


# ---- the post-mix -----------------------------------------------------------


def _post_dims(f: Tensor, x: Tensor, post: Tensor, comb: Tensor):
    if x.dim() != 3:
        raise ValueError(f"mhc_post: x must be [T, n, C], got {list(x.shape)}")
    t, n, c = x.shape
    want = {"f": [t, c], "post": [t, n], "comb": [t, n, n]}
    for name, v in (("f", f), ("post", post), ("comb", comb)):
        if list(v.shape) != want[name]:
            raise ValueError(f"mhc_post: {name} must be {want[name]} for x {list(x.shape)}, got {list(v.shape)}")
    return t, n, c


def _post_impl(f: Tensor, x: Tensor, post: Tensor, comb: Tensor) -> Tensor:
    _tnc("mhc_post", x)
    operands = (f, x, post, comb)
    (y,) = _call("mhc_post", (), operands, (("residual_out", tuple(x.shape)),), lambda: _post_dims(*operands))
    return y


_mhc_post_op = torch.library.custom_op("birkhoff::mhc_post", mutates_args=())(_post_impl)


@_mhc_post_op.register_fake
def _(f, x, post, comb):
    return torch.empty_like(x)


def _post_grad_impl(
    f: Tensor, x: Tensor, post: Tensor, comb: Tensor, d_out: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _tnc("mhc_post_grad", x)

    def check():
        _post_dims(f, x, post, comb)
        if d_out.shape != x.shape:
            raise ValueError(f"mhc_post_grad: d_out must be {list(x.shape)}, got {list(d_out.shape)}")

    operands = (f, x, post, comb, d_out)
    outs = tuple((k, tuple(v.shape)) for k, v in (("d_f", f), ("d_x", x), ("d_post", post), ("d_comb", comb)))
    df, dx, dpost, dcomb = _call("mhc_post_grad", (), operands, outs, check)
    return df, dx, dpost, dcomb


_mhc_post_grad_op = torch.library.custom_op("birkhoff::mhc_post_grad", mutates_args=())(_post_grad_impl)


@_mhc_post_grad_op.register_fake
def _(f, x, post, comb, d_out):
    return torch.empty_like(f), torch.empty_like(x), torch.empty_like(post), torch.empty_like(comb)


def _post_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _post_backward(ctx, d_out):
    operands = (*ctx.saved_tensors, d_out)
    grad = _post_grad_impl if _plain_eager(operands) else _mhc_post_grad_op
    return grad(*operands)


_mhc_post_op.register_autograd(_post_backward, setup_context=_post_setup)


def mhc_post(f: Tensor, x: Tensor, post: Tensor, comb: Tensor) -> Tensor:
    """The mHC post-mix, fused: ``x_next[..., j, c] = post[..., j] ·
    f[..., c] + Σ_i comb[..., i, j] · x[..., i, c]`` for ``f [..., C]``,
    ``x [..., n, C]``, ``post [..., n]``, ``comb [..., n, n]``."""
    if x.dim() < 3:
        raise ValueError(f"mhc_post: x must be [..., n, C], got {list(x.shape)}")
    op = _post_impl if _plain_eager((f, x, post, comb)) else _mhc_post_op
    if x.dim() == 3:
        return op(f, x, post, comb)
    lead, (n, c) = x.shape[:-2], x.shape[-2:]
    y = op(f.reshape(-1, c), x.reshape(-1, n, c), post.reshape(-1, n), comb.reshape(-1, n, n))
    return y.reshape(*lead, n, c)


# ---- Sinkhorn on its own ----------------------------------------------------


def _sinkhorn_impl(logits: Tensor, variant: str, iters: int, eps: float) -> Tensor:
    attrs = _sinkhorn_attrs(variant, iters, eps)
    (y,) = _call("sinkhorn", attrs, (logits,), (("projected", tuple(logits.shape)),))
    return y


_sinkhorn_op = torch.library.custom_op("birkhoff::sinkhorn", mutates_args=())(_sinkhorn_impl)


@_sinkhorn_op.register_fake
def _(logits, variant, iters, eps):
    return torch.empty_like(logits)


def _sinkhorn_grad_impl(logits: Tensor, dy: Tensor, variant: str, iters: int, eps: float) -> Tensor:
    def check():
        if dy.shape != logits.shape:
            raise ValueError(f"sinkhorn_grad: dy must be {list(logits.shape)}, got {list(dy.shape)}")

    attrs = _sinkhorn_attrs(variant, iters, eps)
    (dx,) = _call("sinkhorn_grad", attrs, (logits, dy), (("d_logits", tuple(logits.shape)),), check)
    return dx


_sinkhorn_grad_op = torch.library.custom_op("birkhoff::sinkhorn_grad", mutates_args=())(_sinkhorn_grad_impl)


@_sinkhorn_grad_op.register_fake
def _(logits, dy, variant, iters, eps):
    return torch.empty_like(logits)


def _sinkhorn_setup(ctx, inputs, output):
    logits, *attrs = inputs
    ctx.save_for_backward(logits)
    ctx.attrs = attrs


def _sinkhorn_backward(ctx, dy):
    (logits,) = ctx.saved_tensors
    grad = _sinkhorn_grad_impl if _plain_eager((logits, dy)) else _sinkhorn_grad_op
    return grad(logits, dy, *ctx.attrs), None, None, None


_sinkhorn_op.register_autograd(_sinkhorn_backward, setup_context=_sinkhorn_setup)


def sinkhorn(logits: Tensor, *, variant: str = "tilekernels", iters: int = 20, eps: float | None = None) -> Tensor:
    """The Sinkhorn-Knopp projection of ``logits [..., n, n]`` (rows are
    the last axis) onto doubly stochastic matrices, fused; its backward
    recomputes the rounds from ``logits`` (birkhoff's ``sinkhorn_grad``)."""
    if logits.dim() < 2 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"sinkhorn: logits must be [..., n, n], got {list(logits.shape)}")
    if eps is None:
        eps = 1e-6 if variant == "tilekernels" else 0.0
    op = _sinkhorn_impl if _plain_eager((logits,)) else _sinkhorn_op
    return op(logits, variant, iters, eps)


# ---- the module -------------------------------------------------------------

#: The paper's initial gate scale α.
GATE_SCALE_INIT = 0.01
#: The diagonal of the residual mix at initialization (the rest of each row
#: splits 0.05 evenly).
RES_DIAGONAL_INIT = 0.95


def gate_bias(n: int) -> list[float]:
    """The initial ``base [n(n+2)]``: pre gates ``ln(1/(n-1))`` so that
    ``sigmoid = 1/n``, post gates 0 so that ``2·sigmoid = 1``, and residual
    logits ``ln(19(n-1))`` on the diagonal (0 elsewhere) so that the
    projected ``H_res`` starts near ``0.95·I``."""
    if n < 2:
        raise ValueError(f"mHC needs at least 2 streams, got {n}")
    rest = n - 1.0
    diag = math.log(RES_DIAGONAL_INIT / (1 - RES_DIAGONAL_INIT) * rest)
    b = [-math.log(rest)] * n + [0.0] * n + [0.0] * (n * n)
    for i in range(n):
        b[2 * n + i * n + i] = diag
    return b


def expand_streams(h: Tensor, n: int) -> Tensor:
    """``h [..., C]`` copied into ``n`` residual streams: ``[..., n, C]``."""
    return h.unsqueeze(-2).expand(*h.shape[:-1], n, h.shape[-1]).contiguous()


def amax_gain(h_res) -> Tensor:
    """The paper's Amax gain magnitude of a stack of residual mixes
    ``[..., n, n]`` (applied in order): the largest absolute row sum and
    column sum of their product, per token, maximized over tokens. 1 for
    doubly stochastic mixes; HC's unconstrained mixes let it grow."""
    prod = None
    for h in h_res:
        h = h.detach().double()
        prod = h if prod is None else prod @ h
    rows = prod.abs().sum(-1).amax()
    cols = prod.abs().sum(-2).amax()
    return torch.maximum(rows, cols)


class MHC(nn.Module):
    """An mHC connection around ``sublayer``: ``x [..., n, C]`` →
    ``mhc_post(sublayer(layer_input), x, post, comb)`` with
    ``(layer_input, post, comb) = mhc_pre(x, fn, scale, base)``.

    Parameters ``fn [n(n+2), n·C]`` (normal, std ``1/sqrt(n·C)·init_std``),
    ``scale [3]`` (the paper's α = 0.01) and ``base [n(n+2)]``
    (:func:`gate_bias`), in the layout the ops take. Every forward pass
    hands the residual mix ``comb`` (detached) to the hooks registered with
    :meth:`register_h_res_hook` and keeps the last one in ``last_h_res``,
    for the Amax gain metric (:func:`amax_gain`).
    """

    def __init__(
        self,
        sublayer: nn.Module,
        hidden: int,
        streams: int = 4,
        *,
        sinkhorn: str = "tilekernels",
        iters: int = 20,
        eps: float | None = None,
        norm_eps: float = 1e-6,
        pre_eps: float = 1e-6,
        post_mult: float = 2.0,
        init_std: float = 1.0,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        n, c = streams, hidden
        m = n * (n + 2)
        self.sublayer = sublayer
        self.streams, self.hidden = n, c
        self.settings = dict(
            norm_eps=norm_eps, pre_eps=pre_eps, post_mult=post_mult, sinkhorn=sinkhorn, iters=iters, eps=eps
        )
        dtype = dtype or torch.get_default_dtype()
        self.fn = nn.Parameter(torch.randn(m, n * c, dtype=dtype) * (init_std / math.sqrt(n * c)))
        self.scale = nn.Parameter(torch.full((3,), GATE_SCALE_INIT, dtype=dtype))
        self.base = nn.Parameter(torch.tensor(gate_bias(n), dtype=dtype))
        self.last_h_res: Tensor | None = None
        self._h_res_hooks = []

    def register_h_res_hook(self, hook):
        """Calls ``hook(module, comb)`` with each forward pass's residual
        mix ``[..., n, n]`` (detached). Returns a handle with ``remove()``."""
        self._h_res_hooks.append(hook)
        hooks = self._h_res_hooks

        class _Handle:
            def remove(self):
                if hook in hooks:
                    hooks.remove(hook)

        return _Handle()

    def forward(self, x: Tensor) -> Tensor:
        li, post, comb = mhc_pre(x, self.fn, self.scale, self.base, **self.settings)
        self.last_h_res = comb.detach()
        for hook in list(self._h_res_hooks):
            hook(self, self.last_h_res)
        return mhc_post(self.sublayer(li), x, post, comb)


# ---- recomputation ----------------------------------------------------------

#: Ops whose results selective checkpointing keeps: the layer functions'
#: matrix products, which birkhoff's plan never re-runs.
_MATMULS = tuple(
    getattr(torch.ops.aten, name).default
    for name in ("mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name)
)


def keep_matmuls(ctx, op, *args, **kwargs):
    """A selective-checkpoint policy: keep matrix products, recompute the
    rest (the mHC ops, norms, activations), as birkhoff's planner does."""
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


def plan_blocks(layers, *, streams, hidden, tokens, bytes_per_element=4, budget=None, boundaries=None):
    """birkhoff's recomputation plan for ``layers`` mHC layers (the plan
    ``birkhoff plan`` prints): a dict with ``block``, ``blocks`` (``(start,
    end)`` layer ranges) and the predicted ``resident_bytes``,
    ``transient_bytes`` and ``peak_bytes`` of activations. ``budget`` is in
    bytes; ``boundaries`` are layers where a block must start (pipeline
    stages)."""
    return _native.plan_blocks(layers, streams, hidden, tokens, bytes_per_element, budget, boundaries)


class CheckpointedStack(nn.Module):
    """Runs ``layers`` (each ``[..., n, C]`` → ``[..., n, C]``, such as
    :class:`MHC`) in order, each block of ``blocks`` (``(start, end)``
    ranges, e.g. ``plan_blocks(...)["blocks"]``) under
    ``torch.utils.checkpoint``: a block keeps only the stream at its start
    for the backward pass and recomputes the rest. With ``keep_matmuls``
    (the default), matrix products are kept, so the sublayers' matmuls are
    not re-run and only the cheap mHC work is, as in birkhoff's plan."""

    def __init__(self, layers, blocks, keep_matmuls=True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        ranges = [tuple(b) for b in blocks]
        covered = [i for s, e in ranges for i in range(s, e)]
        if covered != list(range(len(self.layers))):
            raise ValueError(f"blocks {ranges} do not cover layers 0..{len(self.layers)} once, in order")
        self.blocks = ranges
        self.keep_matmuls = keep_matmuls

    def _run(self, start, end, x):
        for layer in self.layers[start:end]:
            x = layer(x)
        return x

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

        kwargs = {"use_reentrant": False}
        if self.keep_matmuls:
            kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, keep_matmuls)
        for start, end in self.blocks:
            x = checkpoint(self._run, start, end, x, **kwargs)
        return x
