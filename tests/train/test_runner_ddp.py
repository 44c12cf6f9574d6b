"""The runner under real DDP (two gloo processes on the CPU) with the toy model."""

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.train.runner_toys import ddp_worker
from xraygpt.train.checkpoint import LAST_NAME


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ranks_stay_in_step_and_skip_a_nan_together(tmp_path):
    # accumulation over 2 micro-steps (no_sync on the first); rank 1 alone sees a NaN loss
    # on its 3rd forward (iteration 2): both ranks must skip that window without hanging
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path), 3), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pth", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pth", weights_only=True)
    for name, value in rank0.items():
        assert torch.equal(rank1[name], value), name
    out = tmp_path / "out" / "toy"
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8]
    assert [x["bad_steps"] for x in lines] == [1, 0]  # counted once, not once per rank
    ckpt = torch.load(out / LAST_NAME, weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    for name, value in rank0.items():
        assert torch.equal(ckpt["model"][name], value)
