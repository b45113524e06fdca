"""A pure-PyTorch reference of the mHC equations (the paper's, with
DeepSeek's TileKernels Sinkhorn as the second variant), written from the
math and independent of birkhoff; the tests hold birkhoff's fused ops and
modules to it."""

import math

import torch
from torch import nn


def sinkhorn_ref(logits, variant="tilekernels", iters=20, eps=None):
    """Rows are the last axis, columns the one before."""
    if eps is None:
        eps = 1e-6 if variant == "tilekernels" else 0.0
    rows = lambda m: m / (m.sum(-1, keepdim=True) + eps)  # noqa: E731
    cols = lambda m: m / (m.sum(-2, keepdim=True) + eps)  # noqa: E731
    if variant == "paper":
        m = logits.exp()
        for _ in range(iters):
            m = cols(rows(m))
        return m
    m = torch.softmax(logits, -1) + eps
    m = cols(m)
    for _ in range(iters - 1):
        m = cols(rows(m))
    return m


def mhc_pre_ref(x, fn, scale, base, *, norm_eps=1e-6, pre_eps=1e-6, post_mult=2.0,
                sinkhorn="tilekernels", iters=20, eps=None):
    """``x [T, n, C]`` → ``(layer_input [T, C], post [T, n], comb [T, n, n])``."""
    t, n, c = x.shape
    xf = x.reshape(t, n * c)
    r = torch.rsqrt((xf * xf).mean(-1, keepdim=True) + norm_eps)
    mixes = (xf @ fn.T) * r
    s = torch.cat([scale[0].expand(n), scale[1].expand(n), scale[2].expand(n * n)])
    z = mixes * s + base
    pre = torch.sigmoid(z[:, :n]) + pre_eps
    post = post_mult * torch.sigmoid(z[:, n:2 * n])
    comb = sinkhorn_ref(z[:, 2 * n:].reshape(t, n, n), sinkhorn, iters, eps)
    return torch.einsum("tn,tnc->tc", pre, x), post, comb


def mhc_post_ref(f, x, post, comb):
    """``x_next[t, j, c] = post[t, j] f[t, c] + Σ_i comb[t, i, j] x[t, i, c]``."""
    return post[:, :, None] * f[:, None, :] + torch.einsum("tij,tic->tjc", comb, x)


class MHCRef(nn.Module):
    """The same connection as ``birkhoff.torch.MHC``, in reference ops."""

    def __init__(self, sublayer, hidden, streams=4, *, iters=20, sinkhorn="tilekernels"):
        super().__init__()
        n, c = streams, hidden
        m = n * (n + 2)
        self.sublayer = sublayer
        self.iters, self.sinkhorn = iters, sinkhorn
        self.fn = nn.Parameter(torch.randn(m, n * c) / math.sqrt(n * c))
        self.scale = nn.Parameter(torch.full((3,), 0.01))
        self.base = nn.Parameter(torch.zeros(m))

    def forward(self, x):
        lead, (n, c) = x.shape[:-2], x.shape[-2:]
        xt = x.reshape(-1, n, c)
        li, post, comb = mhc_pre_ref(xt, self.fn, self.scale, self.base,
                                     iters=self.iters, sinkhorn=self.sinkhorn)
        return mhc_post_ref(self.sublayer(li), xt, post, comb).reshape(*lead, n, c)


def close(got, want, dtype, kind="reduction", scale=1.0):
    """Whether ``got`` matches ``want`` within the numerics contract's
    tolerance for ``dtype`` (``kind``: "elementwise" or "reduction"), on a
    whole output: the relative part is taken against at least a thousandth
    of the output's peak. ``scale`` multiplies both parts."""
    table = {
        torch.float32: {"elementwise": (1e-6, 1e-5), "reduction": (1e-5, 1e-4)},
        torch.bfloat16: {"elementwise": (2**-15, 2**-8), "reduction": (2**-14, 2**-7)},
        torch.float64: {"elementwise": (1e-12, 1e-12), "reduction": (1e-10, 1e-10)},
    }
    atol, rtol = table[dtype][kind]
    got, want = got.double(), want.double()
    floor = 1e-3 * want.abs().max().item() if want.numel() else 0.0
    bound = scale * (atol + rtol * want.abs().clamp(min=floor))
    err = (got - want).abs()
    ok = bool((err <= bound).all())
    worst = (err / bound).max().item() if err.numel() else 0.0
    return ok, worst
