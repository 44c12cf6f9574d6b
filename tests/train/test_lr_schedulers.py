"""The learning-rate curves of docs/recipe.md §5, pinned numerically."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from xraygpt.common.config import Config, ConfigError, RunConfig
from xraygpt.common.registry import registry
from xraygpt.train.lr_schedulers import (
    LinearWarmupCosineLRScheduler,
    LinearWarmupStepLRScheduler,
)


def optimizer(groups=2):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    return torch.optim.AdamW([{"params": [p]} for p in params], lr=0.0)


def stage1(**over):
    # the stage-1 recipe: 1e-4 -> 8e-5, warm-up 500 from 1e-6, 4 x 5000 iterations
    kw = dict(
        max_epoch=4,
        iters_per_epoch=5000,
        init_lr=1e-4,
        min_lr=8e-5,
        warmup_lr=1e-6,
        warmup_steps=500,
    )
    return LinearWarmupCosineLRScheduler(optimizer(), **{**kw, **over})


def test_both_schedulers_are_registered():
    assert registry.get_lr_scheduler_class("linear_warmup_cosine_lr") is (
        LinearWarmupCosineLRScheduler
    )
    assert registry.get_lr_scheduler_class("linear_warmup_step_lr") is LinearWarmupStepLRScheduler


@pytest.mark.parametrize(
    ("step", "lr"),
    [
        (0, 1e-6),
        (1, 1e-6 + 99e-6 / 500),
        (250, 5.05e-5),  # half-way up the ramp
        (499, 1e-6 + 99e-6 * 499 / 500),
        # from 500 on: the cosine at the global step over all 20000 iterations
        (500, 8e-5 + 1e-5 * (1 + math.cos(math.pi * 500 / 20000))),
        (10000, 9e-5),  # half-way down: the midpoint of init_lr and min_lr
        (15000, 8e-5 + 1e-5 * (1 - math.sqrt(0.5))),
        (19999, 8e-5 + 1e-5 * (1 + math.cos(math.pi * 19999 / 20000))),
        (20000, 8e-5),
    ],
)
def test_cosine_curve_of_stage_1(step, lr):
    assert stage1().lr_at(step) == pytest.approx(lr, rel=1e-12, abs=0)


def test_cosine_curve_of_stage_2_and_shape():
    sched = LinearWarmupCosineLRScheduler(
        optimizer(),
        max_epoch=1,
        iters_per_epoch=2501,
        init_lr=3e-5,
        min_lr=1e-5,
        warmup_lr=1e-6,
        warmup_steps=200,
    )
    curve = [sched.lr_at(s) for s in range(2501)]
    assert curve[0] == 1e-6
    assert curve[200] == pytest.approx(1e-5 + 1e-5 * (1 + math.cos(math.pi * 200 / 2501)))
    assert all(a < b for a, b in zip(curve[:200], curve[1:200], strict=False))  # rising
    assert all(a >= b for a, b in zip(curve[200:], curve[201:], strict=False))  # falling
    assert max(curve) <= 3e-5 and min(curve[200:]) > 1e-5


def test_no_warmup_starts_at_init_lr():
    assert stage1(warmup_steps=0).lr_at(0) == 1e-4


def test_step_curve():
    sched = LinearWarmupStepLRScheduler(
        optimizer(),
        decay_rate=0.5,
        max_epoch=5,
        iters_per_epoch=10,
        init_lr=1e-3,
        min_lr=2e-4,
        warmup_lr=1e-5,
        warmup_steps=4,
    )
    expected = {
        0: 1e-5,
        2: 1e-5 + (1e-3 - 1e-5) * 2 / 4,
        4: 1e-3,  # warm-up done, still epoch 0
        9: 1e-3,
        10: 5e-4,  # epoch 1: 1e-3 * 0.5
        19: 5e-4,
        20: 2.5e-4,
        30: 2e-4,  # 1.25e-4 is below min_lr
        49: 2e-4,
    }
    for step, lr in expected.items():
        assert sched.lr_at(step) == pytest.approx(lr, rel=1e-12), step


def test_step_scheduler_needs_a_decay_rate():
    # checked when the config loads, so the scheduler always gets one
    with pytest.raises(ConfigError, match="run.decay_rate"):
        Config(user_config={"run": {"lr_sched": "linear_warmup_step_lr"}})
    run = Config(user_config={"run": {"lr_sched": "linear_warmup_step_lr", "decay_rate": 0.9}})
    assert LinearWarmupStepLRScheduler.from_config(optimizer(), run.run_cfg).decay_rate == 0.9


def test_step_writes_every_group_and_state_round_trips():
    sched = stage1()
    assert sched.step(250) == pytest.approx(5.05e-5)
    assert [g["lr"] for g in sched.optimizer.param_groups] == [sched.lr_at(250)] * 2
    state = sched.state_dict()
    assert state == {"name": "linear_warmup_cosine_lr", "last_step": 250}

    other = stage1()
    other.load_state_dict(state)
    assert other.last_step == 250
    assert other.optimizer.param_groups[0]["lr"] == sched.lr_at(250)
    with pytest.raises(ConfigError, match="resume with run.lr_sched=linear_warmup_step_lr"):
        other.load_state_dict({"name": "linear_warmup_step_lr", "last_step": 3})


def test_from_config_reads_the_run_section():
    run = OmegaConf.structured(
        RunConfig(max_epoch=4, iters_per_epoch=5000, init_lr=1e-4, min_lr=8e-5, warmup_steps=500)
    )
    sched = LinearWarmupCosineLRScheduler.from_config(optimizer(), run)
    assert sched.total_steps == 20000 and sched.lr_at(0) == run.warmup_lr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_epoch", 0),
        ("iters_per_epoch", 0),
        ("warmup_steps", -1),
        ("init_lr", 0.0),
        ("min_lr", -1e-5),
    ],
)
def test_invalid_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"run.{key}={value}: .*must be"):
        Config(user_config={"run": {key: value}})
