"""PyTorch models shared by tests/onnx/gen.py (the ONNX fixtures) and
benches/onnx_vs_ort.py (birkhoff against onnxruntime).

mHC follows docs/design.md section 2: a stream x [T, n, C], m = n(n+2),

    mixes[t, k] = (sum_j x[t, j] fn[k, j]) * rsqrt(mean_j x[t, j]^2 + norm_eps)
    z = mixes * [scale0 x n, scale1 x n, scale2 x n^2] + base
    pre = sigmoid(z[0:n]) + pre_eps;  post = sigmoid(z[n:2n]) * 2
    comb = sinkhorn(z[2n:] as [n, n])            (rows = last axis)
    layer_input[t, c] = sum_i pre[t, i] x[t, i, c]
    x_next[t, j, c] = post[t, j] F(layer_input)[t, c] + sum_i comb[t, i, j] x[t, i, c]

Three spellings of that math (MHCPaper, MHCPacked, MHCBatched) write it in
different PyTorch idioms; each has `packed()`, which returns the fn, scale
and base the fused `mhc_pre` op would take, and `mhc_reference` computes the
design's equations from those in float64 NumPy, so gen.py can check that
every spelling computes exactly the documented op.
"""

import math

import numpy as np
import torch
from torch import nn

PRE_EPS = 1e-6
NORM_EPS = 1e-6
POST_MULT = 2.0


# ----------------------------------------------------------------------------
# Transformer pieces


class RMSNorm(nn.Module):
    """RMSNorm with a weight over the last axis."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over the second-to-last axis of a
    [..., S, C] input; the causal mask is built inside forward."""

    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        s = x.shape[-2]
        q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        # [..., S, C] -> [..., H, S, D]
        q = q.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)
        k = k.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)
        v = v.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)
        q = q * (1.0 / math.sqrt(self.head_dim))
        scores = q @ k.transpose(-1, -2)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        o = att @ v
        return self.out(o.transpose(-3, -2).flatten(-2))


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class AttnSublayer(nn.Module):
    """F for the attention sublayer: attention(RMSNorm(h)), no residual."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)

    def forward(self, h):
        return self.attn(self.norm(h))


class FFNSublayer(nn.Module):
    """F for the FFN sublayer: SwiGLU(RMSNorm(h)), no residual."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.ffn = SwiGLU(dim, hidden)

    def forward(self, h):
        return self.ffn(self.norm(h))


class Block(nn.Module):
    """Pre-norm transformer block with plain residuals: [T, C] or [B, S, C]."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.attn = AttnSublayer(dim, heads)
        self.ffn = FFNSublayer(dim, hidden)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ffn(x)


class TinyGPT(nn.Module):
    """Token ids [B, S] (int64) -> logits [B, S, vocab]."""

    def __init__(self, vocab, dim, heads, hidden, layers, max_seq):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(max_seq, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        h = self.tok(ids) + self.pos[: ids.shape[-1]]
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h))


class LinearTanh(nn.Module):
    """The small layer function F of the mHC fixtures: tanh(Linear(h))."""

    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, h):
        return torch.tanh(self.lin(h))


class MLP(nn.Module):
    """Linear -> SiLU -> Linear -> tanh."""

    def __init__(self, dim, hidden, out):
        super().__init__()
        self.l1 = nn.Linear(dim, hidden)
        self.l2 = nn.Linear(hidden, out)

    def forward(self, x):
        return torch.tanh(self.l2(nn.functional.silu(self.l1(x))))


# ----------------------------------------------------------------------------
# mHC spellings


def _scalar(v):
    return nn.Parameter(torch.tensor(float(v)))


class MHCPaper(nn.Module):
    """Spelling a: the paper's equations literally. RMSNorm (no weight) of
    the flattened token row, three bias-free projections phi_pre, phi_post,
    phi_res with scalar alphas and separate biases, sigmoid gates, paper
    Sinkhorn as a Python loop, einsum for both mixes. x [T, n, C]."""

    sinkhorn = "paper"

    def __init__(self, n, dim, layer=None, iters=20):
        super().__init__()
        self.n, self.dim, self.iters = n, dim, iters
        self.phi_pre = nn.Linear(n * dim, n, bias=False)
        self.phi_post = nn.Linear(n * dim, n, bias=False)
        self.phi_res = nn.Linear(n * dim, n * n, bias=False)
        self.alpha_pre = _scalar(0.8)
        self.alpha_post = _scalar(0.6)
        self.alpha_res = _scalar(0.9)
        self.b_pre = nn.Parameter(torch.zeros(n))
        self.b_post = nn.Parameter(torch.zeros(n))
        self.b_res = nn.Parameter(torch.zeros(n, n))
        self.layer = layer if layer is not None else nn.Identity()

    def forward(self, x):
        n = self.n
        xf = x.flatten(-2)
        xt = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS)
        h_pre = torch.sigmoid(self.alpha_pre * self.phi_pre(xt) + self.b_pre) + PRE_EPS
        h_post = 2 * torch.sigmoid(self.alpha_post * self.phi_post(xt) + self.b_post)
        h_res = self.alpha_res * self.phi_res(xt).unflatten(-1, (n, n)) + self.b_res
        m = torch.exp(h_res)
        for _ in range(self.iters):
            m = m / m.sum(-1, keepdim=True)
            m = m / m.sum(-2, keepdim=True)
        layer_in = torch.einsum("ti,tic->tc", h_pre, x)
        out = self.layer(layer_in)
        return torch.einsum("tj,tc->tjc", h_post, out) + torch.einsum("tij,tic->tjc", m, x)

    def packed(self):
        fn = torch.cat([self.phi_pre.weight, self.phi_post.weight, self.phi_res.weight])
        scale = torch.stack([self.alpha_pre, self.alpha_post, self.alpha_res])
        base = torch.cat([self.b_pre, self.b_post, self.b_res.flatten()])
        return _np(fn), _np(scale), _np(base)


class MHCPacked(nn.Module):
    """Spelling b: one packed projection nC -> n(n+2), the scale vector built
    with cat/expand, torch.split, RMS as proj(x) / sqrt(mean + eps) (project
    first, scale second), tilekernels Sinkhorn, matmul / broadcasting for the
    mixes. x [T, n, C]."""

    sinkhorn = "tilekernels"

    def __init__(self, n, dim, layer=None, iters=10, eps=1e-6):
        super().__init__()
        self.n, self.dim, self.iters, self.eps = n, dim, iters, eps
        m = n * (n + 2)
        self.proj = nn.Linear(n * dim, m, bias=False)
        self.scale = nn.Parameter(torch.tensor([0.7, 0.9, 0.6]))
        self.base = nn.Parameter(torch.zeros(m))
        self.layer = layer if layer is not None else nn.Identity()

    def forward(self, x):
        n = self.n
        xf = x.reshape(x.shape[0], n * self.dim)
        r = torch.sqrt((xf * xf).mean(dim=-1, keepdim=True) + NORM_EPS)
        mixes = self.proj(xf) / r
        s = torch.cat([self.scale[0].expand(n), self.scale[1].expand(n), self.scale[2].expand(n * n)])
        z = mixes * s + self.base
        zp, zq, zr = torch.split(z, [n, n, n * n], dim=-1)
        pre = torch.sigmoid(zp) + PRE_EPS
        post = torch.sigmoid(zq) * POST_MULT
        comb = zr.reshape(-1, n, n)
        m = torch.softmax(comb, dim=-1) + self.eps
        m = m / (m.sum(dim=-2, keepdim=True) + self.eps)
        for _ in range(self.iters - 1):
            m = m / (m.sum(dim=-1, keepdim=True) + self.eps)
            m = m / (m.sum(dim=-2, keepdim=True) + self.eps)
        layer_in = (pre.unsqueeze(1) @ x).squeeze(1)  # [T,1,n] @ [T,n,C]
        out = self.layer(layer_in)
        return post.unsqueeze(-1) * out.unsqueeze(1) + m.transpose(1, 2) @ x

    def packed(self):
        return _np(self.proj.weight), _np(self.scale), _np(self.base)


class MHCBatched(nn.Module):
    """Spelling c: batch axes x [B, S, n, C]; H_res kept in the paper's
    orientation (x_next = H_res x, i.e. H_res is comb transposed), so its
    Sinkhorn normalizes columns first; the norm written as sum / (nC) and
    rsqrt via a method; mixes as broadcast products summed with .sum; the
    final sum with the residual term first. Paper Sinkhorn."""

    sinkhorn = "paper"

    def __init__(self, n, dim, layer=None, iters=12):
        super().__init__()
        self.n, self.dim, self.iters = n, dim, iters
        self.w_pre = nn.Parameter(torch.zeros(n, n * dim))
        self.w_post = nn.Parameter(torch.zeros(n, n * dim))
        self.w_res = nn.Parameter(torch.zeros(n * n, n * dim))  # rows in H_res[j, i] order
        self.a = nn.Parameter(torch.tensor([0.75, 0.55, 0.95]))
        self.b_pre = nn.Parameter(torch.zeros(n))
        self.b_post = nn.Parameter(torch.zeros(n))
        self.b_res = nn.Parameter(torch.zeros(n, n))  # H_res orientation
        self.layer = layer if layer is not None else nn.Identity()

    def forward(self, x):
        n, c = self.n, self.dim
        xf = x.reshape(*x.shape[:-2], n * c)
        ms = (xf * xf).sum(-1, keepdim=True) / (n * c)
        xt = xf * (ms + NORM_EPS).rsqrt()
        pre = (xt @ self.w_pre.t() * self.a[0] + self.b_pre).sigmoid() + PRE_EPS
        post = 2.0 * (xt @ self.w_post.t() * self.a[1] + self.b_post).sigmoid()
        h = (xt @ self.w_res.t() * self.a[2]).reshape(*x.shape[:-2], n, n) + self.b_res
        h = h.exp()
        for _ in range(self.iters):
            h = h / h.sum(dim=-2, keepdim=True)  # columns of H_res = rows of comb
            h = h / h.sum(dim=-1, keepdim=True)
        layer_in = (pre.unsqueeze(-1) * x).sum(dim=-2)
        out = self.layer(layer_in)
        mixed = (h.unsqueeze(-1) * x.unsqueeze(-3)).sum(dim=-2)  # [.., j, i, 1] * [.., 1, i, C]
        return mixed + out.unsqueeze(-2) * post.unsqueeze(-1)

    def packed(self):
        n = self.n
        # comb[i, j] = H_res[j, i]: permute the res rows and the res bias.
        w_res = self.w_res.reshape(n, n, -1).transpose(0, 1).reshape(n * n, -1)
        fn = torch.cat([self.w_pre, self.w_post, w_res])
        base = torch.cat([self.b_pre, self.b_post, self.b_res.t().flatten()])
        return _np(fn), _np(self.a), _np(base)


class MHCLogDomain(nn.Module):
    """Spelling e: torch's nn.RMSNorm (with its weight) on the flat row, one
    nn.Linear with a bias, the alphas applied after the bias (alpha * (xW + b):
    the bias is scaled too), a log-domain paper Sinkhorn written with
    torch.logsumexp, torch.bmm mixes. x [T, n, C]. No packed(): its weights
    do not map one to one onto mhc_pre's operands."""

    sinkhorn = "paper"

    def __init__(self, n, dim, layer=None, iters=15):
        super().__init__()
        self.n, self.dim, self.iters = n, dim, iters
        self.norm = nn.RMSNorm(n * dim, eps=NORM_EPS)
        self.proj = nn.Linear(n * dim, n * (n + 2), bias=True)
        self.alpha = nn.Parameter(torch.tensor([0.8, 0.6, 0.9]))
        self.layer = layer if layer is not None else nn.Identity()

    def forward(self, x):
        n, t = self.n, x.shape[0]
        h = self.proj(self.norm(x.reshape(t, n * self.dim)))
        pre = torch.sigmoid(self.alpha[0] * h[:, :n])
        post = POST_MULT * torch.sigmoid(self.alpha[1] * h[:, n:2 * n])
        logm = (self.alpha[2] * h[:, 2 * n:]).view(t, n, n)
        for _ in range(self.iters):
            logm = logm - torch.logsumexp(logm, dim=-1, keepdim=True)
            logm = logm - torch.logsumexp(logm, dim=-2, keepdim=True)
        m = logm.exp()
        layer_in = torch.bmm(pre.unsqueeze(1), x).squeeze(1)
        out = self.layer(layer_in)
        return torch.bmm(m.transpose(1, 2), x) + post.unsqueeze(2) * out.unsqueeze(1)


class MHCEinsumBS(nn.Module):
    """Spelling f: x [B, S, n, C]; torch.nn.functional.rms_norm, one packed
    weight used as `xf @ w.T + b`, the gates without alphas, the Sinkhorn on
    exp(logits) with x / x.sum(...), einsum mixes with batch labels and the
    post term as an outer-product einsum; F = GELU(Linear)."""

    sinkhorn = "paper"

    def __init__(self, n, dim, iters=10):
        super().__init__()
        self.n, self.dim, self.iters = n, dim, iters
        self.w = nn.Parameter(torch.zeros(n * (n + 2), n * dim))
        self.b = nn.Parameter(torch.zeros(n * (n + 2)))
        self.f = nn.Linear(dim, dim)

    def forward(self, x):
        n = self.n
        xf = torch.nn.functional.rms_norm(x.flatten(-2), (n * self.dim,), eps=NORM_EPS)
        z = xf @ self.w.T + self.b
        pre = z[..., :n].sigmoid() + PRE_EPS
        post = z[..., n:2 * n].sigmoid() * POST_MULT
        h = z[..., 2 * n:].unflatten(-1, (n, n)).exp()
        for _ in range(self.iters):
            h = h / h.sum(-1, keepdim=True)
            h = h / h.sum(-2, keepdim=True)
        layer_in = torch.einsum("bsi,bsic->bsc", pre, x)
        out = torch.nn.functional.gelu(self.f(layer_in))
        return torch.einsum("bsij,bsic->bsjc", h, x) + torch.einsum("bsj,bsc->bsjc", post, out)


class MHCBlock(nn.Module):
    """The transformer block with both sublayers inside mHC connections
    (spelling a): x [T, n, C] -> x [T, n, C]."""

    def __init__(self, n, dim, heads, hidden, iters=20):
        super().__init__()
        self.attn = MHCPaper(n, dim, AttnSublayer(dim, heads), iters)
        self.ffn = MHCPaper(n, dim, FFNSublayer(dim, hidden), iters)

    def forward(self, x):
        return self.ffn(self.attn(x))


# ----------------------------------------------------------------------------
# Initialization and the reference


def _np(t):
    return t.detach().double().cpu().numpy()


@torch.no_grad()
def randomize(module, seed):
    """Small random values in every parameter, so every term matters: weights
    of Linear/Embedding ~ U(+-1/sqrt(fan_in)) (Embedding N(0,1)), RMSNorm
    weights ~ 1 + N(0, 0.1), mHC alphas ~ U(0.5, 1), mHC biases ~ N(0, 0.5),
    other biases ~ N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g)

    def ru(*shape):
        return torch.rand(*shape, generator=g)

    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            bound = 1.0 / math.sqrt(mod.in_features)
            mod.weight.copy_((ru(*mod.weight.shape) * 2 - 1) * bound)
            if mod.bias is not None:
                mod.bias.copy_(rn(*mod.bias.shape) * 0.1)
        elif isinstance(mod, nn.Embedding):
            mod.weight.copy_(rn(*mod.weight.shape))
        elif isinstance(mod, RMSNorm):
            mod.weight.copy_(1 + 0.1 * rn(*mod.weight.shape))
        elif isinstance(mod, TinyGPT):
            mod.pos.copy_(0.5 * rn(*mod.pos.shape))
        elif isinstance(mod, MHCPaper):
            for a in (mod.alpha_pre, mod.alpha_post, mod.alpha_res):
                a.copy_(0.5 + 0.5 * ru(()))
            for b in (mod.b_pre, mod.b_post, mod.b_res):
                b.copy_(0.5 * rn(*b.shape))
        elif isinstance(mod, MHCPacked):
            mod.scale.copy_(0.5 + 0.5 * ru(3))
            mod.base.copy_(0.5 * rn(*mod.base.shape))
        elif isinstance(mod, nn.RMSNorm):
            mod.weight.copy_(1 + 0.1 * rn(*mod.weight.shape))
        elif isinstance(mod, MHCLogDomain):
            mod.alpha.copy_(0.5 + 0.5 * ru(3))
        elif isinstance(mod, MHCEinsumBS):
            bound = 1.0 / math.sqrt(mod.w.shape[1])
            mod.w.copy_((ru(*mod.w.shape) * 2 - 1) * bound)
            mod.b.copy_(0.5 * rn(*mod.b.shape))
        elif isinstance(mod, MHCBatched):
            bound = 1.0 / math.sqrt(mod.w_pre.shape[1])
            for w in (mod.w_pre, mod.w_post, mod.w_res):
                w.copy_((ru(*w.shape) * 2 - 1) * bound)
            mod.a.copy_(0.5 + 0.5 * ru(3))
            for b in (mod.b_pre, mod.b_post, mod.b_res):
                b.copy_(0.5 * rn(*b.shape))
    return module


def sinkhorn_reference(comb, variant, iters, eps):
    """float64 Sinkhorn of [..., n, n] per docs/design.md section 2."""
    if variant == "paper":
        m = np.exp(comb)
        for _ in range(iters):
            m = m / (m.sum(-1, keepdims=True) + eps)
            m = m / (m.sum(-2, keepdims=True) + eps)
        return m
    e = np.exp(comb - comb.max(-1, keepdims=True))
    m = e / e.sum(-1, keepdims=True) + eps
    m = m / (m.sum(-2, keepdims=True) + eps)
    for _ in range(iters - 1):
        m = m / (m.sum(-1, keepdims=True) + eps)
        m = m / (m.sum(-2, keepdims=True) + eps)
    return m


def mhc_reference(x, fn, scale, base, layer, variant, iters, eps=0.0):
    """x [..., n, C] float64 -> x_next, with `layer` a float64 function of
    [..., C]: the equations of docs/design.md section 2, nothing else."""
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[-2], x.shape[-1]
    xf = x.reshape(*x.shape[:-2], n * c)
    mixes = (xf @ fn.T) / np.sqrt((xf * xf).sum(-1, keepdims=True) / (n * c) + NORM_EPS)
    s = np.concatenate([np.full(n, scale[0]), np.full(n, scale[1]), np.full(n * n, scale[2])])
    z = mixes * s + base
    sig = 1.0 / (1.0 + np.exp(-z))
    pre = sig[..., :n] + PRE_EPS
    post = sig[..., n:2 * n] * POST_MULT
    comb = sinkhorn_reference(z[..., 2 * n:].reshape(*z.shape[:-1], n, n), variant, iters, eps)
    layer_in = np.einsum("...i,...ic->...c", pre, x)
    out = layer(layer_in)
    return np.einsum("...j,...c->...jc", post, out) + np.einsum("...ij,...ic->...jc", comb, x)


def torch_layer_as_numpy(layer):
    """Run a torch layer function in float64 on NumPy arrays."""
    import copy

    l64 = copy.deepcopy(layer).double()

    def f(a):
        with torch.no_grad():
            return l64(torch.from_numpy(np.ascontiguousarray(a))).numpy()

    return f
