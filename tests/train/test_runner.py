"""The training loop on a toy model, in process: logs, checkpoints, accumulation,
non-finite losses, exact resume, configuration errors."""

import json
from contextlib import nullcontext

import pytest
import torch

from tests.train.runner_toys import TRAINABLE_NAMES, ToyCrash, ToyModel, make_runner, trainable
from xraygpt.common.config import ConfigError
from xraygpt.common.io import load_checkpoint
from xraygpt.train import runner as runner_mod
from xraygpt.train.checkpoint import LAST_NAME, numbered_checkpoints
from xraygpt.train.runner import NonFiniteLossError

CPU = torch.device("cpu")


def test_training_writes_log_config_and_checkpoints(tmp_path):
    runner = make_runner(tmp_path, save_every_iters=2, keep_last_checkpoints=2)
    before = trainable(runner.model)
    frozen_before = runner.model.frozen.weight.detach().clone()
    stats = runner.train()

    out = tmp_path / "out" / "toy"
    assert stats["step"] == 8 and stats["samples_per_s"] > 0
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6, 8]
    assert {"epoch", "loss", "lr", "samples_per_s", "grad_norm", "bad_steps"} <= set(lines[0])
    assert (out / "config.yaml").read_text().count("iters_per_epoch: 4") == 1
    # numbered checkpoints every 2 iterations, only the newest 2 kept, plus checkpoint_last
    assert [s for s, _ in numbered_checkpoints(out)] == [6, 8]
    last = load_checkpoint(out / LAST_NAME)
    assert last["step"] == 8 and last["epoch"] == 1 and last["world_size"] == 1
    assert last["lr_sched"] == {"name": "linear_warmup_cosine_lr", "last_step": 7}
    assert set(last["model"]) == TRAINABLE_NAMES
    assert last["config"]["run"]["iters_per_epoch"] == 4
    assert len(last["rng"]) == 1 and set(last["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    for name, value in trainable(runner.model).items():
        assert torch.equal(last["model"][name], value)
        assert not torch.equal(before[name], value), f"{name} did not train"
    assert torch.equal(runner.model.frozen.weight, frozen_before)


def test_loss_goes_down(tmp_path):
    runner = make_runner(
        tmp_path,
        max_epoch=6,
        iters_per_epoch=8,
        log_freq=8,
        init_lr=3e-2,
        min_lr=3e-2,
        warmup_steps=0,
        model=ToyModel(dropout=0.0),
    )
    runner.train()
    losses = [
        json.loads(x)["loss"]
        for x in (tmp_path / "out" / "toy" / "log.jsonl").read_text().splitlines()
    ]
    assert losses[-1] < 0.5 * losses[0], losses


def test_scheduler_sets_the_learning_rate_of_each_iteration(tmp_path, monkeypatch):
    runner = make_runner(tmp_path)
    seen = []
    real_step = runner_mod.RunnerBase._optimizer_step

    def spy(self, params):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return real_step(self, params)

    monkeypatch.setattr(runner_mod.RunnerBase, "_optimizer_step", spy)
    runner.train()
    assert seen == pytest.approx([runner.lr_sched.lr_at(s) for s in range(8)], rel=0, abs=0)
    assert seen[0] == 1e-4  # warmup_lr


def test_gradient_accumulation_matches_a_big_batch(tmp_path):
    # constant lr, no dropout, no jitter: 2 x 4 accumulated must equal 1 x 8. The loader's
    # batch k of 4 holds stream positions 4k..4k+3, so two of them make one batch of 8.
    common = dict(max_epoch=1, warmup_steps=0, min_lr=1e-2)
    torch.manual_seed(0)
    model_big = ToyModel(dropout=0.0, jitter=False)
    model_acc = ToyModel(dropout=0.0, jitter=False)
    model_acc.load_state_dict(model_big.state_dict())
    start = trainable(model_big)
    make_runner(tmp_path / "a", model=model_big, batch=8, iters_per_epoch=2, **common).train()
    make_runner(
        tmp_path / "b", model=model_acc, batch=4, iters_per_epoch=4, accum_grad_iters=2, **common
    ).train()
    for name, value in trainable(model_big).items():
        torch.testing.assert_close(trainable(model_acc)[name], value, rtol=0, atol=1e-6)
        assert not torch.equal(value, start[name])


def test_accumulation_skips_the_all_reduce_until_the_last_micro_step(tmp_path, monkeypatch):
    runner = make_runner(tmp_path, accum_grad_iters=2, max_epoch=1)
    calls = []

    class FakeDDP:  # records which micro-steps run under no_sync
        def __init__(self, module, device_ids=None):
            self.module = module

        def __call__(self, samples):
            return self.module(samples)

        def train(self):
            self.module.train()

        def no_sync(self):
            calls.append("no_sync")
            return nullcontext()

    steps = []
    monkeypatch.setattr(runner_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(runner_mod, "DistributedDataParallel", FakeDDP)
    monkeypatch.setattr(runner_mod.dist, "all_gather_objects", lambda obj: [obj, obj])
    real_step = runner_mod.RunnerBase._optimizer_step

    def spy(self, params):
        steps.append(len(calls))
        return real_step(self, params)

    monkeypatch.setattr(runner_mod.RunnerBase, "_optimizer_step", spy)
    runner.train()
    # 4 iterations, windows of 2: no_sync on iterations 0 and 2, optimizer after 1 and 3
    assert calls == ["no_sync", "no_sync"] and steps == [1, 2]


def test_grad_clip_is_applied(tmp_path, monkeypatch):
    runner = make_runner(tmp_path, grad_clip=0.5, max_epoch=1)
    norms = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils,
        "clip_grad_norm_",
        lambda params, max_norm: norms.append(max_norm) or real(params, max_norm),
    )
    runner.train()
    assert norms == [0.5] * 4


def test_a_non_finite_loss_skips_the_step(tmp_path, monkeypatch):
    model = ToyModel(nan_ids=("5",))
    runner = make_runner(
        tmp_path, model=model, batch=4, max_epoch=1, iters_per_epoch=8, max_bad_steps=3
    )
    optimizer_steps = []
    real_step = runner_mod.RunnerBase._optimizer_step

    def spy(self, params):
        optimizer_steps.append(1)
        return real_step(self, params)

    monkeypatch.setattr(runner_mod.RunnerBase, "_optimizer_step", spy)
    runner.train()
    lines = [json.loads(x) for x in (tmp_path / "out/toy/log.jsonl").read_text().splitlines()]
    assert sum(x["bad_steps"] for x in lines) == 1  # sample 5 is in one batch of the 8
    assert len(optimizer_steps) == 7
    for value in trainable(model).values():
        assert torch.isfinite(value).all()


def test_too_many_bad_steps_stop_and_keep_the_last_good_checkpoint(tmp_path):
    everything = tuple(str(i) for i in range(32))
    model = ToyModel()
    runner = make_runner(
        tmp_path, model=model, max_epoch=1, iters_per_epoch=8, save_every_iters=2, max_bad_steps=3
    )
    good = runner.train()
    assert good["step"] == 8
    out = tmp_path / "out" / "toy"
    last_bytes = (out / LAST_NAME).read_bytes()

    model.nan_ids = set(everything)  # every loss is NaN from now on
    again = make_runner(
        tmp_path,
        model=model,
        max_epoch=2,
        iters_per_epoch=8,
        save_every_iters=2,
        max_bad_steps=3,
        resume="auto",
    )
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        again.train()
    assert (out / LAST_NAME).read_bytes() == last_bytes
    assert [s for s, _ in numbered_checkpoints(out)] == [6, 8]


def test_resume_continues_exactly(tmp_path):
    kw = dict(max_epoch=2, iters_per_epoch=6, save_every_iters=2, warmup_steps=3)
    full = make_runner(tmp_path / "full", **kw)
    full.train()

    # dies in iteration 9 (the 10th forward), after the checkpoint at 8
    part = make_runner(tmp_path / "part", model_kw={"crash_at_call": 10}, **kw)
    with pytest.raises(ToyCrash):
        part.train()
    assert load_checkpoint(tmp_path / "part/out/toy" / LAST_NAME)["step"] == 8

    # a fresh process would re-seed and re-build the model from scratch
    resumed = make_runner(tmp_path / "part", resume="auto", **kw)
    resumed.train()
    for name, value in trainable(full.model).items():
        assert torch.equal(trainable(resumed.model)[name], value), name
    a = load_checkpoint(tmp_path / "full/out/toy" / LAST_NAME)
    b = load_checkpoint(tmp_path / "part/out/toy" / LAST_NAME)
    for key in ("step", "epoch", "lr_sched"):
        assert a[key] == b[key]
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_resume_from_an_explicit_path_and_errors(tmp_path):
    runner = make_runner(tmp_path, max_epoch=1)
    runner.train()
    path = tmp_path / "out" / "toy" / "checkpoint_4.pth"
    done = make_runner(tmp_path, max_epoch=1, resume_ckpt_path=str(path)).train()
    assert done == {"step": 4}  # already finished: nothing to do

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        make_runner(tmp_path, resume_ckpt_path=str(tmp_path / "missing.pth")).train()

    weights_only = tmp_path / "weights.pth"
    torch.save({"model": trainable(runner.model)}, weights_only)
    with pytest.raises(ValueError, match="model.ckpt"):
        make_runner(tmp_path, resume_ckpt_path=str(weights_only)).train()

    torch.save({**load_checkpoint(path), "model": {}}, weights_only)
    with pytest.raises(ValueError, match="missing: .*head.weight"):
        make_runner(tmp_path, resume_ckpt_path=str(weights_only)).train()


def test_resume_auto_without_checkpoint_starts_afresh(tmp_path):
    stats = make_runner(tmp_path, resume="auto", max_epoch=1).train()
    assert stats["step"] == 4


def test_a_fresh_start_sets_the_log_of_a_run_without_checkpoint_aside(tmp_path, caplog):
    """Killed before its first checkpoint, twice: each start afresh begins its own log."""
    kw = dict(max_epoch=1, iters_per_epoch=4, log_freq=1, resume="auto")
    out = tmp_path / "out" / "toy"
    for _ in range(2):  # dies in iteration 3, before the checkpoint at 4
        with pytest.raises(ToyCrash):
            make_runner(tmp_path, model_kw={"crash_at_call": 3}, **kw).train()
    (out / "wandb_run_id.txt").write_text("killedrun01\n")  # as a W&B run leaves it
    with caplog.at_level("WARNING"):
        assert make_runner(tmp_path, **kw).train()["step"] == 4

    def steps(path):
        return [json.loads(x)["step"] for x in path.read_text().splitlines()]

    assert steps(out / "log.jsonl") == [1, 2, 3, 4]
    assert steps(out / "old_run_1" / "log.jsonl") == [1, 2]  # the first killed run's lines
    assert steps(out / "old_run_2" / "log.jsonl") == [1, 2]  # the second's, not appended
    for folder in ("old_run_1", "old_run_2"):
        assert (out / folder / "config.yaml").is_file() and (out / folder / "tb").is_dir()
    assert (out / "old_run_2" / "wandb_run_id.txt").read_text() == "killedrun01\n"
    assert not (out / "wandb_run_id.txt").exists()  # a new W&B run, not the killed one's
    assert f"moved log.jsonl, config.yaml, tb, wandb_run_id.txt to {out / 'old_run_2'}" in (
        caplog.text
    )
    # a resume keeps appending to its own log: nothing more is set aside
    make_runner(tmp_path, **{**kw, "max_epoch": 2}).train()
    assert steps(out / "log.jsonl") == list(range(1, 9))
    assert not (out / "old_run_3").exists()


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"accum_grad_iters": 3}, "multiple of run.accum_grad_iters"),
        ({"accum_grad_iters": 2, "save_every_iters": 3}, "save_every_iters=3"),
        ({"max_bad_steps": 0}, "max_bad_steps"),
        ({"resume": "yes"}, "run.resume='yes'"),
        ({"keep_last_checkpoints": -1}, "keep_last_checkpoints"),
        ({"batch_size_train": 0}, "batch_size_train"),
    ],
)
def test_bad_run_settings_fail_early(tmp_path, run, message):
    with pytest.raises(ConfigError, match=message):
        make_runner(tmp_path, **run)


def test_model_without_trainable_parameters_is_an_error(tmp_path):
    model = ToyModel().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_runner(tmp_path, model=model).train()


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    make_runner(tmp_path, max_epoch=1).train()
    with pytest.raises(FileExistsError, match="run.resume=auto"):
        make_runner(tmp_path, max_epoch=1).train()


def test_resume_drops_the_log_lines_the_resumed_run_repeats(tmp_path):
    kw = dict(max_epoch=2, iters_per_epoch=6, save_every_iters=4, log_freq=1)
    part = make_runner(tmp_path, model_kw={"crash_at_call": 11}, **kw)
    with pytest.raises(ToyCrash):
        part.train()
    log_path = tmp_path / "out" / "toy" / "log.jsonl"
    assert [json.loads(x)["step"] for x in log_path.read_text().splitlines()] == list(range(1, 11))
    with open(log_path, "a") as handle:
        handle.write('{"step": 11, "lo')  # a line cut off by the kill
    make_runner(tmp_path, resume="auto", **kw).train()  # resumes from the checkpoint at 8
    steps = [json.loads(x)["step"] for x in log_path.read_text().splitlines()]
    assert steps == list(range(1, 13))  # each iteration once


def test_extending_a_finished_run_warns_how_the_schedule_is_recomputed(tmp_path, caplog):
    kw = dict(iters_per_epoch=4, warmup_steps=2, init_lr=1e-2, min_lr=1e-5)
    make_runner(tmp_path, max_epoch=2, **kw).train()
    with caplog.at_level("WARNING"):
        make_runner(tmp_path, max_epoch=4, resume="auto", **kw).train()
    text = caplog.text
    assert "run.max_epoch=2; this run has run.max_epoch=4" in text
    assert "recomputed from the global iteration with the new settings over 16 iterations" in text
    # the old curve ended near min_lr; the new one is back near the middle of the cosine
    assert "last rate of the checkpoint was 0.000" in text and "next is 0.005" in text
    caplog.clear()
    with caplog.at_level("WARNING"):
        make_runner(tmp_path / "b", max_epoch=2, **kw).train()
        make_runner(tmp_path / "b", max_epoch=2, resume="auto", **kw).train()
    assert "recomputed" not in caplog.text
