"""TensorBoard curves of the runner: the logged scalars, each step once after a resume; W&B errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from xraygpt.common.config import Config, ConfigError, check_wandb_config
from xraygpt.common.launch import seed_everything
from xraygpt.train.runner import RunnerBase
from xraygpt.train.tasks.image_text_pretrain import ImageTextPretrainTask
from xraygpt.train.tracking import Tracker, evaluation_scalars

TRAIN_TAGS = {
    "train/loss", "train/lr", "train/samples_per_s", "train/grad_norm", "train/bad_images",
    "train/bad_steps",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_cpu_thread: None) -> None:
    pass


def scalars(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


class Crash(RuntimeError):
    pass


class Toy(nn.Module):
    """A linear regression that raises on its ``crash_at``-th forward call."""

    def __init__(self, crash_at: int = 0) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 1)
        self.calls, self.crash_at = 0, crash_at

    def forward(self, samples: dict) -> dict:
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash(f"crash on call {self.calls}")
        x = samples["image"].flatten(1)
        return {"loss": F.mse_loss(self.lin(x).squeeze(-1), x.sum(1).tanh())}


class Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.images = torch.randn(16, 3, 2, 2, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "caption": f"r{i}", "image_id": str(i)}


def runner(tmp_path: Path, crash_at: int = 0, **run) -> RunnerBase:
    run_cfg = {
        "output_dir": str(tmp_path), "job_name": "toy", "device": "cpu", "init_lr": 1e-2,
        "max_epoch": 2, "iters_per_epoch": 6, "save_every_iters": 2, "batch_size_train": 4,
        "num_workers": 0, "log_freq": 1, "seed": 3, **run,
    }  # fmt: skip
    cfg = Config(user_config={"run": run_cfg})
    seed_everything(cfg.run_cfg.seed)
    task = ImageTextPretrainTask.setup_task(cfg)
    return RunnerBase(
        cfg, task, Toy(crash_at), {"toy": {"train": Images()}}, device=torch.device("cpu")
    )


def test_tracker_writes_finite_scalars_on_rank_0_only(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "a")
    tracker.log({"step": 5, "epoch": 0, "loss": 1.5, "grad_norm": float("nan"), "bad_images": 2}, 5)
    tracker.log({"loss": 1.0}, 10)
    tracker.close()
    events = scalars(tmp_path / "a" / "tb")
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/bad_images"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(5, 1.5), (10, 1.0)]
    quiet = Tracker(tmp_path / "b", is_main=False)
    quiet.log({"loss": 1.0}, 1)
    quiet.close()
    assert not (tmp_path / "b").exists()
    off = Tracker(tmp_path / "c", tensorboard=False)
    assert not off.active and not (tmp_path / "c").exists()


def test_runner_curves_hold_the_log_and_a_resume_has_each_step_once(tmp_path: Path) -> None:
    part = runner(tmp_path, crash_at=10)  # dies in iteration 9, after the checkpoint at 8
    with pytest.raises(Crash):
        part.train()
    folder = tmp_path / "toy"
    assert steps(scalars(folder / "tb"), "train/loss") == list(range(1, 10))
    runner(tmp_path, resume="auto").train()
    events = scalars(folder / "tb")
    assert set(events.Tags()["scalars"]) == TRAIN_TAGS
    for tag in ("train/loss", "train/lr", "train/samples_per_s", "train/bad_images"):
        assert steps(events, tag) == list(range(1, 13)), tag
    # the curve is log.jsonl's, the resumed run's line winning for iteration 9
    last = {}
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["step"]] = record
    assert sorted(last) == list(range(1, 13))
    for event in events.Scalars("train/loss"):
        assert event.value == pytest.approx(last[event.step]["loss"], rel=1e-6)
    for event in events.Scalars("train/lr"):
        assert event.value == pytest.approx(last[event.step]["lr"], rel=1e-6)


def test_a_fresh_start_after_a_run_without_checkpoint_has_its_own_curves(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        runner(tmp_path, crash_at=2).train()  # logs iteration 1, dies before the checkpoint at 2
    runner(tmp_path, resume="auto", max_epoch=1).train()
    folder = tmp_path / "toy"
    assert steps(scalars(folder / "tb"), "train/loss") == list(range(1, 7))
    assert steps(scalars(folder / "old_run_1" / "tb"), "train/loss") == [1]


def test_tensorboard_off_writes_no_folder(tmp_path: Path) -> None:
    runner(tmp_path, tensorboard=False, max_epoch=1).train()
    assert (tmp_path / "toy" / "log.jsonl").is_file()
    assert not (tmp_path / "toy" / "tb").exists()


def test_wandb_settings_and_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_wandb_config(None) is None
    assert check_wandb_config({"project": "x"}) == {"project": "x", "mode": "offline"}
    with pytest.raises(ConfigError, match="run.wandb.mode must be one of offline, online"):
        check_wandb_config({"project": "x", "mode": "cloud"})
    with pytest.raises(ConfigError, match="unknown key"):
        check_wandb_config({"project": "x", "entity": "me"})
    with pytest.raises(ConfigError, match="run.wandb.project"):
        runner(tmp_path, wandb={"mode": "offline"})
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match="'wandb' package is not installed"):
        runner(tmp_path, wandb={"project": "x", "mode": "offline"}, max_epoch=1).train()


def test_evaluation_scalars() -> None:
    metrics = {
        "nlg": {"ROUGE-L": 0.3, "ROUGE-L (coco)": 0.2},
        "clinical_variants": {"f1": {"ce5_uncertain1_micro": 0.4}},
    }
    assert evaluation_scalars(metrics) == {
        "ROUGE-L": 0.3, "ROUGE-L_(coco)": 0.2, "ce5_uncertain1_micro": 0.4,
    }  # fmt: skip
