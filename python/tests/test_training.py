"""A model built on birkhoff.torch.MHC trains to the same losses as the
same model in pure-PyTorch reference ops."""

import pytest
import torch

import birkhoff.torch as bt
from models import TinyLM, batches, train


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_fifty_steps_match_the_reference(dtype, rtol):
    torch.manual_seed(0)
    model = TinyLM().to(dtype)
    ref = TinyLM(reference=True).to(dtype)
    ref.load_state_dict(model.state_dict())
    data = batches(50, batch=4)
    got = train(model, data)
    want = train(ref, data)
    assert got[-1] < got[0] - 0.5, f"the model did not learn: {got[0]:.3f} -> {got[-1]:.3f}"
    for step, (g, w) in enumerate(zip(got, want)):
        assert abs(g - w) <= rtol * abs(w), f"step {step}: loss {g!r} against the reference's {w!r}"
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=100 * rtol, atol=100 * rtol), name


def test_h_res_hooks_see_every_forward_pass():
    torch.manual_seed(1)
    model = TinyLM()
    seen = []
    handle = model.blocks[0].register_h_res_hook(lambda m, h: seen.append(h))
    tokens, targets = batches(1, batch=2)[0]
    model(tokens)
    model(tokens)
    handle.remove()
    model(tokens)
    assert len(seen) == 2 and seen[0].shape == (2, 8, 4, 4)
    # At initialization H_res is near 0.95·I and doubly stochastic, so the
    # composite gain stays near 1.
    h = model.blocks[0].last_h_res
    assert torch.allclose(h.diagonal(dim1=-2, dim2=-1), torch.full((2, 8, 4), 0.95), atol=0.02)
    gain = bt.amax_gain([b.last_h_res for b in model.blocks])
    assert abs(gain.item() - 1.0) < 1e-3
