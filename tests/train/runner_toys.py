"""A toy model, data set and loader for runner tests: tiny, CPU, deterministic.

The model has a frozen part (like XrayGPT's encoders and LLM), a trainable
part with matrices, biases and a norm (so both optimizer groups exist),
dropout and a Python ``random`` draw (like the per-batch prompt choice), so
that an exact resume has to restore every RNG stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xraygpt.common.config import Config
from xraygpt.common.launch import seed_everything
from xraygpt.train.runner import RunnerBase
from xraygpt.train.tasks.image_text_pretrain import ImageTextPretrainTask

HERE = Path(__file__).resolve().parent
IN_FEATURES = 12
CPU = torch.device("cpu")
# What a checkpoint's ``model`` key holds for ToyModel: every trainable parameter, not ``frozen``.
TRAINABLE_NAMES = {f"{m}.{p}" for m in ("proj", "norm", "head") for p in ("weight", "bias")}


class ToyCrash(RuntimeError):
    """Raised by the toy model on purpose, to cut a run short."""


class ToyModel(nn.Module):
    def __init__(
        self,
        dropout: float = 0.1,
        nan_ids: tuple[str, ...] = (),
        jitter: bool = True,
        crash_at_call: int = 0,
        nan_calls: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.frozen = nn.Linear(IN_FEATURES, 16)
        self.frozen.requires_grad_(False)
        self.proj = nn.Linear(16, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 1)
        self.drop = nn.Dropout(dropout)
        self.nan_ids = set(nan_ids)
        self.jitter = jitter
        self.calls = 0
        self.crash_at_call = crash_at_call
        self.nan_calls = set(nan_calls)

    def forward(self, samples: dict) -> dict:
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise ToyCrash(f"toy model: crash on forward call {self.calls}")
        x = samples["image"].flatten(1)
        target = x.sum(1).tanh()
        with torch.no_grad():
            h = torch.tanh(self.frozen(x))
        pred = self.head(self.drop(self.norm(self.proj(h)))).squeeze(-1)
        loss = F.mse_loss(pred, target)
        if self.jitter:
            loss = loss * (1.0 + 0.01 * random.random())
        if self.nan_ids.intersection(samples["image_id"]) or self.calls in self.nan_calls:
            loss = loss * float("nan")
        return {"loss": loss}


class ToyDataset(torch.utils.data.Dataset):
    """``n`` fixed samples in the project's sample format (the target is a function of
    the image, computed by the model)."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 2, 2, generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "caption": f"report {index}",
            "image_id": str(index),
        }


def make_runner(tmp_path, *, model=None, model_kw=None, batch=4, data_n=32, **run):
    """A runner on the toy model and the project's real training loader."""
    run_cfg = {
        "output_dir": str(tmp_path / "out"),
        "job_name": "toy",
        "device": "cpu",
        "init_lr": 1e-2,
        "min_lr": 1e-3,
        "warmup_lr": 1e-4,
        "warmup_steps": 2,
        "max_epoch": 2,
        "iters_per_epoch": 4,
        "batch_size_train": batch,
        "num_workers": 0,
        "log_freq": 2,
        "seed": 7,
        **run,
    }
    cfg = Config(user_config={"run": run_cfg})
    seed_everything(cfg.run_cfg.seed)
    model = model if model is not None else ToyModel(**(model_kw or {}))  # after seeding
    task = ImageTextPretrainTask.setup_task(cfg)
    datasets = {"toy": {"train": ToyDataset(data_n)}}
    return RunnerBase(cfg, task, model, datasets, device=CPU)


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class ToyModelConfig:
    arch: str = "toy_runner_model"
    model_type: str = "default"
    dropout: float = 0.1
    jitter: bool = True
    nan_ids: list[str] = field(default_factory=list)


@dataclass
class ToyDataConfig:
    n: int = 32
    data_seed: int = 0
    sample_ratio: float = 1.0


def ddp_worker(rank: int, world: int, port: int, root: str, nan_call: int) -> None:
    """One rank of a gloo DDP run of the toy model (for torch.multiprocessing.spawn).

    Rank 1's loss is NaN on forward call ``nan_call``; rank 0's never is.
    """
    import os

    from xraygpt.common import dist
    from xraygpt.components import register_components

    register_components()  # a spawned process runs no conftest.py
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    dist.init_distributed("cpu")
    try:
        runner = make_runner(
            Path(root),
            model_kw={"nan_calls": (nan_call,) if rank == 1 else ()},
            accum_grad_iters=2,
            max_epoch=1,
            iters_per_epoch=8,
            log_freq=4,
        )
        runner.train()
        torch.save(trainable(runner.unwrapped_model), Path(root) / f"rank{rank}.pth")
    finally:
        dist.cleanup()
