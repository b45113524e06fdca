"""The ops read and write torch tensors' memory in place
(``Module.run_tensors``). What cannot be used in place is refused before
anything runs, and the op then takes the checked path, which copies what it
must and gives the same results."""

import re

import pytest
import torch

import birkhoff.torch as bt
from test_torch_ops import post_operands, pre_operands

T, N, C = 3, 4, 8


def post_program():
    shapes = ((T, C), (T, N, C), (T, N), (T, N, N))
    return bt._program("mhc_post", "f32", shapes, (("residual_out", (T, N, C)),), ())


def nan_filled(*shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype)


def count_copies(monkeypatch):
    """Counts the operands and results that go through NumPy (the checked
    path) rather than in place."""
    copies = []
    array = bt._array

    def counting(t):
        copies.append(tuple(t.shape))
        return array(t)

    monkeypatch.setattr(bt, "_array", counting)
    return copies


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_plain_tensors_and_parameters_run_in_place(monkeypatch, dtype):
    copies = count_copies(monkeypatch)
    x, fn, scale, base = pre_operands(T, N, C, dtype, seed=31)
    fn = torch.nn.Parameter(fn.detach())
    li, post, comb = bt.mhc_pre(x, fn, scale, base, iters=4)
    y = bt.mhc_post(torch.tanh(li), x, post, comb)
    y.pow(2).sum().backward()
    assert copies == []
    assert all(v.grad is not None for v in (x, fn, scale, base))


def test_what_cannot_run_in_place_is_refused_and_nothing_is_written():
    prog = post_program()
    f, x, post, comb = [o.detach() for o in post_operands(T, N, C, torch.float32, seed=32)]

    class Sub(torch.Tensor):
        pass

    shrunk = torch.empty(T, N, C)
    shrunk.untyped_storage().resize_(0)
    shared = torch.empty(T * N * C + T * C)
    cases = [
        ("not contiguous", [f, torch.randn(N, T, C).transpose(0, 1), post, comb], None),
        ("dtype torch.float64 is not f32", [f.double(), x, post, comb], None),
        (r"shape \[2, 8\] is not \[3, 8\]", [f[:2], x, post, comb], None),
        ("Sub is not a plain torch.Tensor", [f.as_subclass(Sub), x, post, comb], None),
        ("ndarray is not a plain torch.Tensor", [f.numpy(), x, post, comb], None),
        ("not the CPU", [f.to("meta"), x, post, comb], None),
        ("negation", [torch._neg_view(f), x, post, comb], None),
        ("storage holds 0 bytes", [f, x, post, comb], [shrunk]),
        ("output 0 shares memory with input 1", [f, x, post, comb], [x]),
        ("takes 4 inputs and 1 outputs, 3 and 1", [f, x, post], None),
    ]
    for why, inputs, outputs in cases:
        out = outputs or [nan_filled(T, N, C)]
        refusal = prog.run_tensors(inputs, out)
        assert refusal is not None, why
        assert re.search(why, refusal), (why, refusal)
        if outputs is None:
            assert out[0].isnan().all(), why
    # Overlapping outputs of one program: d_f ends where d_x begins, less one element.
    grad = bt._program(
        "mhc_post_grad",
        "f32",
        ((T, C), (T, N, C), (T, N), (T, N, N), (T, N, C)),
        (("d_f", (T, C)), ("d_x", (T, N, C)), ("d_post", (T, N)), ("d_comb", (T, N, N))),
        (),
    )
    d_f = shared[: T * C].view(T, C)
    d_x = shared[T * C - 1 : T * C - 1 + T * N * C].view(T, N, C)
    refusal = grad.run_tensors([f, x, post, comb, x], [d_f, d_x, nan_filled(T, N), nan_filled(T, N, N)])
    assert refusal == "output 1 shares memory with output 0"
    assert prog.run_tensors([f, x, post, comb], [y := nan_filled(T, N, C)]) is None
    assert not y.isnan().any()


def test_refused_operands_take_the_checked_path_with_the_same_results(monkeypatch):
    x, fn, scale, base = [o.detach() for o in pre_operands(T, N, C, torch.float32, seed=33)]
    want = bt.mhc_pre(x, fn, scale, base, iters=4)
    want_y = bt.mhc_post(want[0], x, want[1], want[2])

    class Sub(torch.Tensor):
        pass

    copies = count_copies(monkeypatch)
    strided = torch.empty(N, T, C).transpose(0, 1)
    strided.copy_(x)
    got = bt.mhc_pre(strided, fn.as_subclass(Sub), scale, base, iters=4)
    got_y = bt.mhc_post(got[0], strided, got[1], got[2])
    assert len(copies) > 0
    for g, w in zip((*got, got_y), (*want, want_y)):
        assert torch.equal(g.as_subclass(torch.Tensor), w)
