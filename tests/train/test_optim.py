"""Optimizer parameter groups (decided by shape) and the run's precision."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.train.runner_toys import make_runner
from xraygpt.common.config import Config, ConfigError, RunConfig
from xraygpt.train.optim import build_optimizer, param_groups, resolve_precision


class Odd(nn.Module):
    """Names that would fool a name-based rule: a matrix called "bias", a vector "weight"."""

    def __init__(self):
        super().__init__()
        self.bias_matrix = nn.Parameter(torch.zeros(3, 3))
        self.ln_weight = nn.Parameter(torch.zeros(3, 3))
        self.weight = nn.Parameter(torch.zeros(3))
        self.query_tokens = nn.Parameter(torch.zeros(1, 4, 3))
        self.scale = nn.Parameter(torch.zeros(()))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def ids(params):
    return {id(p) for p in params}


def test_decay_is_decided_by_shape_and_frozen_params_are_left_out():
    model = Odd()
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert ids(decay["params"]) == ids([model.bias_matrix, model.ln_weight, model.query_tokens])
    assert ids(no_decay["params"]) == ids([model.weight, model.scale])


def test_build_optimizer_uses_the_recipe():
    run = OmegaConf.structured(RunConfig(init_lr=3e-5, weight_decay=0.05, beta1=0.9, beta2=0.999))
    opt = build_optimizer(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), run)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["lr"] == 3e-5


def test_a_fully_frozen_model_is_an_error():
    with pytest.raises(ConfigError, match="no trainable parameters.*model.freeze_"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.05)


CPU = torch.device("cpu")


def test_cpu_runs_fp32_unless_asked():
    assert resolve_precision(CPU, amp=True).dtype is None
    assert resolve_precision(CPU, amp=False, amp_dtype="bf16").dtype is None
    bf16 = resolve_precision(CPU, amp=True, amp_dtype="bf16")
    assert bf16.dtype is torch.bfloat16 and bf16.scaler is None
    fp16 = resolve_precision(CPU, amp=True, amp_dtype="fp16")
    assert fp16.dtype is torch.float16 and fp16.scaler is not None
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with resolve_precision(CPU, amp=True).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
def test_cuda_prefers_bf16_then_fp16_with_a_scaler(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision(cuda, amp=True).dtype is torch.bfloat16
    assert resolve_precision(cuda, amp=True).scaler is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    fp16 = resolve_precision(cuda, amp=True)
    assert fp16.dtype is torch.float16 and fp16.scaler is not None
    assert "scaler" in fp16.describe()
    with pytest.raises(ConfigError, match="bf16"):
        resolve_precision(cuda, amp=True, amp_dtype="bf16")


def test_unknown_amp_dtype_is_an_error():
    with pytest.raises(ConfigError, match="run.amp_dtype='fp8': choose one of auto, bf16, fp16"):
        Config(user_config={"run": {"amp_dtype": "fp8"}})


def test_fp16_with_scaler_trains_on_cpu(tmp_path):
    # the scaler path of the runner end to end, on the CPU
    runner = make_runner(tmp_path, max_epoch=1, amp_dtype="fp16")
    stats = runner.train()
    assert stats["step"] == 4 and runner.precision.scaler is not None
