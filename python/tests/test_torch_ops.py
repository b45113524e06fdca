"""birkhoff.torch's custom ops against the pure-PyTorch reference
(reference.py) and torch.autograd.gradcheck, in float64, float32 and
bfloat16 storage."""

import pytest
import torch

import birkhoff.torch as bt
from reference import close, mhc_post_ref, mhc_pre_ref, sinkhorn_ref

VARIANTS = [("paper", 1e-3), ("tilekernels", 1e-6)]


def pre_operands(t, n, c, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    m = n * (n + 2)
    x = torch.randn(t, n, c, generator=g, dtype=torch.float64) * 2
    fn = torch.randn(m, n * c, generator=g, dtype=torch.float64) / (n * c) ** 0.5
    scale = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    base = torch.randn(m, generator=g, dtype=torch.float64) * 0.5
    return [v.to(dtype).requires_grad_() for v in (x, fn, scale, base)]


def post_operands(t, n, c, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(t, c), (t, n, c), (t, n), (t, n, n)]
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize("variant,eps", VARIANTS)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 2, 3), (5, 3, 1)])
def test_mhc_pre_gradcheck(variant, eps, shape):
    ops = pre_operands(*shape, torch.float64, seed=sum(shape))
    f = lambda *a: bt.mhc_pre(*a, sinkhorn=variant, iters=4, eps=eps, pre_eps=0.01)  # noqa: E731
    assert torch.autograd.gradcheck(f, ops)


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 1, 7), (4, 2, 3)])
def test_mhc_post_gradcheck(shape):
    assert torch.autograd.gradcheck(bt.mhc_post, post_operands(*shape, torch.float64, seed=7))


@pytest.mark.parametrize("variant,eps", VARIANTS)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_sinkhorn_gradcheck(variant, eps, n):
    logits = torch.randn(3, n, n, dtype=torch.float64, requires_grad=True)
    f = lambda l: bt.sinkhorn(l, variant=variant, iters=5, eps=eps)  # noqa: E731
    assert torch.autograd.gradcheck(f, (logits,))


def forward_and_grads(fn, ops, seed):
    """The outputs of ``fn(*ops)`` and the gradients of a random linear
    function of them with respect to ``ops``. The function's weights are
    drawn in float64 and rounded to the first operand's dtype, so a
    float64 reference run on the same seed uses the same values."""
    outs = fn(*ops)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    dtype = ops[0].dtype
    cot = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, ops, cot)
    return [o.detach() for o in outs], list(grads), cot


def reference_run(fn, ops, seed):
    """``forward_and_grads`` of the reference in float64 on the values of
    ``ops``, with the cotangents the op under test got (same seed, rounded
    to its dtype)."""
    dtype = ops[0].dtype
    ref_ops = [o.detach().double().requires_grad_() for o in ops]
    outs = fn(*ref_ops)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype).double() for o in outs]
    grads = torch.autograd.grad(outs, ref_ops, cot)
    return [o.detach() for o in outs], list(grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("variant,eps", VARIANTS)
def test_mhc_pre_matches_the_reference(dtype, variant, eps):
    kw = dict(sinkhorn=variant, iters=20, eps=eps)
    ops = pre_operands(6, 4, 48, dtype, seed=1)
    outs, grads, _ = forward_and_grads(lambda *a: bt.mhc_pre(*a, **kw), ops, seed=2)
    # The reference in float64 on the same (rounded) inputs.
    want, want_grads = reference_run(lambda *a: mhc_pre_ref(*a, **kw), ops, seed=2)
    # bf16: the fused op keeps f32 inside and rounds once; four times the
    # reduction row against the output's peak (the contract's rule for
    # programs that round at different points).
    scale = 4.0 if dtype == torch.bfloat16 else 1.0
    for name, got, w in zip(["layer_input", "post", "comb", "d_x", "d_fn", "d_scale", "d_base"],
                            outs + grads, want + want_grads):
        ok, worst = close(got, w, dtype, scale=scale)
        assert ok, f"{name} ({dtype}, {variant}): worst error {worst:.2f}x the bound"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mhc_post_matches_the_reference(dtype):
    ops = post_operands(5, 4, 40, dtype, seed=3)
    outs, grads, _ = forward_and_grads(bt.mhc_post, ops, seed=4)
    want, want_grads = reference_run(mhc_post_ref, ops, seed=4)
    scale = 4.0 if dtype == torch.bfloat16 else 1.0
    for name, got, w in zip(["out", "d_f", "d_x", "d_post", "d_comb"], outs + grads, want + want_grads):
        ok, worst = close(got, w, dtype, scale=scale)
        assert ok, f"{name} ({dtype}): worst error {worst:.2f}x the bound"
        assert got.dtype == dtype


@pytest.mark.parametrize("variant,eps", VARIANTS)
def test_sinkhorn_matches_the_reference(variant, eps):
    logits = (torch.randn(9, 4, 4, dtype=torch.float64) * 2).float().requires_grad_()
    outs, grads, _ = forward_and_grads(lambda l: bt.sinkhorn(l, variant=variant, iters=20, eps=eps), [logits], 5)
    want, want_grads = reference_run(lambda l: sinkhorn_ref(l, variant, 20, eps), [logits], 5)
    for name, got, w in zip(["projected", "d_logits"], outs + grads, want + want_grads):
        ok, worst = close(got, w, torch.float32)
        assert ok, f"{name}: worst error {worst:.2f}x the bound"


def test_leading_dimensions_are_tokens():
    x, fn, scale, base = pre_operands(6, 4, 8, torch.float32, seed=9)
    li, post, comb = bt.mhc_pre(x.reshape(2, 3, 4, 8), fn, scale, base)
    flat = bt.mhc_pre(x, fn, scale, base)
    assert li.shape == (2, 3, 8) and post.shape == (2, 3, 4) and comb.shape == (2, 3, 4, 4)
    assert torch.equal(li.reshape(6, 8), flat[0])
    y = bt.mhc_post(li, x.reshape(2, 3, 4, 8), post, comb)
    assert y.shape == (2, 3, 4, 8)


def test_unused_outputs_get_zero_cotangents():
    ops = pre_operands(3, 2, 4, torch.float64, seed=11)
    li, _, _ = bt.mhc_pre(*ops, iters=3)
    li.sum().backward()
    ref = [o.detach().clone().requires_grad_() for o in ops]
    mhc_pre_ref(*ref, iters=3)[0].sum().backward()
    for got, want in zip(ops, ref):
        assert close(got.grad, want.grad, torch.float64)[0]


def test_bad_operands_raise_clear_errors():
    x, fn, scale, base = pre_operands(3, 4, 5, torch.float32, seed=0)
    with pytest.raises(ValueError, match="fn must be"):
        bt.mhc_pre(x, fn[:, :-1], scale, base)
    with pytest.raises(TypeError, match="share one dtype"):
        bt.mhc_pre(x, fn.double(), scale, base)
    with pytest.raises(ValueError, match="sinkhorn must be"):
        bt.mhc_pre(x, fn, scale, base, sinkhorn="greedy")
    with pytest.raises(TypeError, match="not float32"):
        bt.sinkhorn(torch.zeros(2, 3, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"\[\.\.\., n, n\]"):
        bt.sinkhorn(torch.zeros(2, 3, 4))


def test_opcheck_and_torch_compile():
    ops = [o.detach() for o in post_operands(4, 4, 8, torch.float32, seed=12)]
    torch.library.opcheck(torch.ops.birkhoff.mhc_post.default, ops)
    x, fn, scale, base = [o.detach() for o in pre_operands(4, 4, 8, torch.float32, seed=13)]
    torch.library.opcheck(
        torch.ops.birkhoff.mhc_pre.default, (x, fn, scale, base, 1e-6, 1e-6, 2.0, "tilekernels", 5, 1e-6)
    )

    def sublayer(x, fn, scale, base):
        li, post, comb = bt.mhc_pre(x, fn, scale, base, iters=5)
        return bt.mhc_post(torch.tanh(li), x, post, comb)

    compiled = torch.compile(sublayer, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(x, fn, scale, base), sublayer(x, fn, scale, base), atol=1e-6)


def test_every_element_of_every_result_is_written(monkeypatch):
    """The ops write their results into memory torch allocates; filled with
    NaN first, nothing of it may survive."""
    import birkhoff.torch as module

    def run_all():
        x, fn, scale, base = pre_operands(5, 4, 12, torch.float32, seed=21)
        li, post, comb = bt.mhc_pre(x, fn, scale, base, iters=4)
        (li.sum() + post.sum() + (comb * comb).sum()).backward()
        f, xx, p, c = post_operands(5, 4, 12, torch.float32, seed=22)
        bt.mhc_post(f, xx, p, c).pow(2).sum().backward()
        logits = torch.randn(6, 4, 4, generator=torch.Generator().manual_seed(23)).requires_grad_()
        bt.sinkhorn(logits, iters=4).pow(2).sum().backward()
        return [li, post, comb, x.grad, fn.grad, scale.grad, base.grad, f.grad, xx.grad, p.grad, c.grad, logits.grad]

    want = run_all()
    monkeypatch.setattr(module, "_new_output", lambda shape, dtype: torch.full(shape, float("nan"), dtype=dtype))
    got = run_all()
    for g, w in zip(got, want):
        assert not g.isnan().any()
        assert torch.equal(g, w)
