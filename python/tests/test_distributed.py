"""Two processes (gloo, CPU) train a model built on birkhoff.torch.MHC
under DDP and under FSDP; losses and final parameters equal a
single-process run on the same global batches."""

import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

import dist_worker

HERE = pathlib.Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(mode, tmp_path):
    out = tmp_path / "rank0.pt"
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "dist_worker.py"), str(r), "2", mode, str(port), str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{mode}: a rank did not finish in 300 s")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"{mode} rank {r} failed:\n{log}"
    got = torch.load(out)
    want_losses, want_state = dist_worker.single_process()
    assert len(got["losses"]) == dist_worker.STEPS
    for step, (g, w) in enumerate(zip(got["losses"], want_losses)):
        assert abs(g - w) <= 1e-9 * abs(w), f"{mode} step {step}: {g!r} against one process's {w!r}"
    assert got["state"].keys() == want_state.keys()
    for name, w in want_state.items():
        assert torch.allclose(got["state"][name], w, rtol=1e-8, atol=1e-10), f"{mode}: parameter {name}"


def test_the_readme_example_runs_under_torchrun():
    example = HERE.parent / "examples" / "train_ddp.py"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(example)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    losses = [float(line.rsplit(" ", 1)[1]) for line in run.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 5 and all(l == l and l < 1.0 for l in losses), run.stdout


def test_the_readme_shows_the_example_as_it_is():
    readme = (HERE.parents[1] / "README.md").read_text()
    shown = readme.split("```python\n", 1)[1].split("```", 1)[0]
    example = (HERE.parent / "examples" / "train_ddp.py").read_text()
    body = example.split('"""', 2)[2].lstrip("\n")
    assert shown == body
