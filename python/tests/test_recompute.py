"""birkhoff's recomputation plan as torch.utils.checkpoint regions: the
gradients do not change, the mHC ops are recomputed, the matmuls are not."""

import pytest
import torch
from torch import nn

import birkhoff.torch as bt


def stack(layers=6, hidden=16, streams=4):
    torch.manual_seed(0)
    return [
        bt.MHC(nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.Tanh(), nn.Linear(2 * hidden, hidden)),
               hidden, streams, iters=6).double()
        for _ in range(layers)
    ]


def test_the_plan_is_birkhoffs():
    plan = bt.plan_blocks(60, streams=4, hidden=2560, tokens=4096, bytes_per_element=2)
    assert plan["block"] == 6 and plan["blocks"][0] == (0, 6) and len(plan["blocks"]) == 10
    staged = bt.plan_blocks(60, streams=4, hidden=2560, tokens=4096, boundaries=[0, 15, 30, 45])
    assert all(not (s < b < e) for s, e in staged["blocks"] for b in (15, 30, 45))
    with pytest.raises(ValueError, match="budget"):
        bt.plan_blocks(60, streams=4, hidden=2560, tokens=4096, budget=1)


def count_runs(monkeypatch):
    """Counts the one-op programs birkhoff.torch runs, by op."""
    counts = {}
    call = bt._call

    def counting(op, *args):
        counts[op] = counts.get(op, 0) + 1
        return call(op, *args)

    monkeypatch.setattr(bt, "_call", counting)
    return counts


def count_matmuls(fn):
    """How many aten.addmm / aten.mm calls ``fn`` makes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default):
                calls.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return len(calls)


def test_checkpointed_blocks_give_the_same_gradients(monkeypatch):
    layers = stack()
    plan = bt.plan_blocks(len(layers), streams=4, hidden=16, tokens=24)
    x = torch.randn(24, 4, 16, dtype=torch.float64)

    def step(model):
        model.zero_grad()
        model(x).pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = nn.Sequential(*layers)
    want = step(plain)
    plain_matmuls = count_matmuls(lambda: step(plain))
    checkpointed = bt.CheckpointedStack(layers, plan["blocks"])
    counts = count_runs(monkeypatch)
    got = step(checkpointed)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    # Every layer's pre-mix ran twice: once forward, once recomputed.
    assert counts["mhc_pre"] == 2 * len(layers)
    assert counts["mhc_pre_grad"] == len(layers)
    # The matmuls were kept, not re-run.
    assert count_matmuls(lambda: step(checkpointed)) == plain_matmuls


def test_blocks_must_cover_the_layers_in_order():
    with pytest.raises(ValueError, match="do not cover"):
        bt.CheckpointedStack(stack(3), [(0, 2)])
