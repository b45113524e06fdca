"""One rank of the two-process training test (``test_distributed.py``):
trains ``TinyLM`` on its half of each global batch under DDP or FSDP and,
on rank 0, saves the averaged losses and the full final parameters."""

import os
import sys

import torch
import torch.distributed as dist

from models import TinyLM, batches, loss_of

STEPS = 6
GLOBAL_BATCH = 8


def single_process(seed=0):
    """The same training on the whole global batch in one process."""
    torch.manual_seed(seed)
    model = TinyLM().double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for tokens, targets in batches(STEPS, GLOBAL_BATCH):
        opt.zero_grad()
        loss = loss_of(model, tokens, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(rank, world, mode, port, out, seed=0):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(seed)
        model = TinyLM().double()
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model)
        elif mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (world,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        else:
            raise ValueError(mode)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        share = GLOBAL_BATCH // world
        for tokens, targets in batches(STEPS, GLOBAL_BATCH):
            mine = slice(rank * share, (rank + 1) * share)
            opt.zero_grad()
            loss = loss_of(model, tokens[mine], targets[mine])
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        state = {}
        for k, v in model.state_dict().items():
            v = v.full_tensor() if hasattr(v, "full_tensor") else v
            state[k.removeprefix("module.")] = v.detach().clone()
        if rank == 0:
            torch.save({"losses": losses, "state": state}, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, mode, port, out = sys.argv[1:]
    run(int(rank), int(world), mode, int(port), out)
    sys.stdout.flush()
    sys.stderr.flush()
    # A collective's work object can still be on a gloo thread when Python
    # tears down; its destructor then takes the GIL and aborts the process
    # (a torch issue, seen with any custom op whose backward is Python:
    # docs/distributed.md). Everything is saved; skip the teardown.
    os._exit(0)
