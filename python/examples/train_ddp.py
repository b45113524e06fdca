"""An MLP wrapped in an mHC connection, trained with DDP: run with
``torchrun --nproc-per-node 2 train_ddp.py`` (gloo, CPU)."""
import os, torch, torch.distributed as dist
from torch import nn
import birkhoff.torch as bt

dist.init_process_group("gloo")
torch.manual_seed(0)  # the same initial weights on every rank
C, n = 64, 4
mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))
model = nn.parallel.DistributedDataParallel(bt.MHC(mlp, hidden=C, streams=n))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
torch.manual_seed(1 + dist.get_rank())  # each rank its own data
for step in range(5):
    x = bt.expand_streams(torch.randn(32, C), n)  # [tokens, n, C]
    loss = (model(x) - x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if dist.get_rank() == 0:
        print(f"step {step}: loss {loss.item():.4f}")
dist.destroy_process_group()
os._exit(0)  # torch's gloo threads can outlive Python's teardown: docs/distributed.md
