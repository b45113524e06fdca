"""A tiny language model whose residual connections are mHC, built either
with ``birkhoff.torch.MHC`` or with the reference module, and the training
loop the tests share."""

import torch
from torch import nn

import birkhoff.torch as bt
from reference import MHCRef


class TinyLM(nn.Module):
    """Embedding → ``streams`` copies → ``layers`` mHC-wrapped MLPs → mean
    over streams → logits."""

    def __init__(self, reference=False, vocab=32, hidden=16, streams=4, layers=2, iters=8):
        super().__init__()
        self.streams = streams
        self.embed = nn.Embedding(vocab, hidden)
        wrap = MHCRef if reference else bt.MHC
        self.blocks = nn.ModuleList(
            wrap(nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.Tanh(), nn.Linear(2 * hidden, hidden)),
                 hidden, streams, iters=iters)
            for _ in range(layers)
        )
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        x = bt.expand_streams(self.embed(tokens), self.streams)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(-2))


def batches(steps, batch, seq=8, vocab=32, seed=0):
    """``steps`` (tokens, targets) pairs of ``[batch, seq]``: random tokens,
    each token's target a fixed function of it (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        tokens = torch.randint(vocab, (batch, seq), generator=g)
        out.append((tokens, (3 * tokens + 1) % vocab))
    return out


def loss_of(model, tokens, targets):
    logits = model(tokens)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train(model, data, lr=1e-2, on_step=None):
    """AdamW over ``data``; returns the losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for tokens, targets in data:
        opt.zero_grad()
        loss = loss_of(model, tokens, targets)
        loss.backward()
        if on_step is not None:
            on_step()
        opt.step()
        losses.append(loss.item())
    return losses
