"""Plain eager calls run their kernels without torch's dispatcher; whatever
must see the op (autograd, fake tensors, dispatch modes, the profiler)
gets the registered ``birkhoff::`` op. Both give the same bits."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import birkhoff.torch as bt
from test_torch_ops import post_operands, pre_operands

T, N, C = 3, 4, 8

OPS = ("_mhc_pre_op", "_mhc_post_op", "_sinkhorn_op", "_mhc_pre_grad_op", "_mhc_post_grad_op", "_sinkhorn_grad_op")


@pytest.fixture
def dispatched(monkeypatch):
    """Counts the calls that go through each registered op."""
    counts = dict.fromkeys(OPS, 0)
    for name in OPS:
        op = getattr(bt, name)

        def counting(*args, _op=op, _name=name):
            counts[_name] += 1
            return _op(*args)

        monkeypatch.setattr(bt, name, counting)
    return counts


def operands():
    pre = [v.detach() for v in pre_operands(T, N, C, torch.float32, seed=5)]
    post = [v.detach() for v in post_operands(T, N, C, torch.float32, seed=6)]
    logits = torch.randn(T, N, N, generator=torch.Generator().manual_seed(7))
    return pre, post, logits


def run_all(pre, post, logits):
    return (*bt.mhc_pre(*pre), bt.mhc_post(*post), bt.sinkhorn(logits, iters=5))


def test_plain_eager_calls_skip_the_dispatcher_and_match_the_op(dispatched):
    pre, post, logits = operands()
    with torch.no_grad():
        fast = run_all(pre, post, logits)
    assert all(n == 0 for n in dispatched.values()), dispatched
    # Operands that need a gradient go through the registered op (its
    # autograd formula), with the same forward bits.
    slow = run_all(*(([v.requires_grad_() for v in vs]) for vs in (pre, post)), logits.requires_grad_())
    assert (dispatched["_mhc_pre_op"], dispatched["_mhc_post_op"], dispatched["_sinkhorn_op"]) == (1, 1, 1)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b.detach())


def test_backward_runs_the_grad_kernels_directly_with_the_same_bits(dispatched):
    pre, post, logits = operands()
    leaves = [v.requires_grad_() for v in (*pre, *post, logits)]
    outs = run_all(pre, post, logits)
    cot = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
    direct = torch.autograd.grad(outs, leaves, cot)
    assert dispatched["_mhc_pre_grad_op"] == dispatched["_mhc_post_grad_op"] == dispatched["_sinkhorn_grad_op"] == 0
    # Under the profiler every call, backward included, is the registered
    # op, so that it shows in the trace.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        outs = run_all(pre, post, logits)
        profiled = torch.autograd.grad(outs, leaves, cot)
    assert dispatched["_mhc_pre_grad_op"] == dispatched["_mhc_post_grad_op"] == dispatched["_sinkhorn_grad_op"] == 1
    names = " ".join(e.name for e in prof.events())
    for op in ("mhc_pre", "mhc_post", "sinkhorn"):
        assert f"birkhoff::{op}" in names or f"birkhoff_{op}_default" in names, op
    for a, b in zip(direct, profiled):
        assert torch.equal(a, b)


def test_no_grad_calls_show_in_the_profiler(dispatched):
    pre, _, _ = operands()
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        bt.mhc_pre(*pre)
    assert dispatched["_mhc_pre_op"] == 1
    assert "birkhoff::mhc_pre" in {e.name for e in prof.events()}


def test_fake_tensors_and_dispatch_modes_see_the_op(dispatched):
    pre, post, _ = operands()
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(v) for v in pre]
        li, p, comb = bt.mhc_pre(*fake)
    assert dispatched["_mhc_pre_op"] == 1
    assert (tuple(li.shape), tuple(p.shape), tuple(comb.shape)) == ((T, C), (T, N), (T, N, N))

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Seen() as seen:
        y = bt.mhc_post(*post)
    assert dispatched["_mhc_post_op"] == 1
    assert any(op.startswith("birkhoff.mhc_post") for op in seen.ops), seen.ops
    with torch.no_grad():
        assert torch.equal(y, bt.mhc_post(*post))


def test_a_device_context_sees_the_op(dispatched):
    pre, _, _ = operands()
    with torch.no_grad(), torch.device("meta"):
        li, _, _ = bt.mhc_pre(*[v.to("meta") for v in pre])
    assert dispatched["_mhc_pre_op"] == 1
    assert li.device.type == "meta"



def test_a_forward_mode_ad_level_sees_the_op(dispatched):
    import torch.autograd.forward_ad as fwAD

    _, post, _ = operands()
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(post[1], torch.ones_like(post[1]))
        bt.mhc_post(post[0], dual, post[2], post[3])
    assert dispatched["_mhc_post_op"] == 1
