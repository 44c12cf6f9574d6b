"""The image_text_pretrain task: what a step returns, which datasets train."""

import pytest
import torch
from torch import nn

from xraygpt.common.config import Config
from xraygpt.common.registry import registry
from xraygpt.train.tasks.image_text_pretrain import ImageTextPretrainTask


def task(**run):
    return ImageTextPretrainTask.setup_task(Config(user_config={"run": run}))


class Returns(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, samples):
        return self.out


def test_registered_under_its_config_name():
    assert registry.get_task_class("image_text_pretrain") is ImageTextPretrainTask


def test_train_step_returns_the_model_output():
    loss = torch.tensor(1.5)
    assert task().train_step(Returns({"loss": loss, "extra": 1}), {})["loss"] is loss


@pytest.mark.parametrize(
    ("out", "hint"),
    [
        (torch.tensor(1.0), "got Tensor"),
        ({"logits": torch.zeros(2)}, "keys \\['logits'\\]"),
        ({"loss": torch.zeros(3)}, "keys \\['loss'\\]"),
        ({"loss": 1.0}, "keys \\['loss'\\]"),
    ],
)
def test_train_step_rejects_output_without_a_scalar_loss(out, hint):
    with pytest.raises(TypeError, match=f"Returns\\(samples\\).*{hint}"):
        task().train_step(Returns(out), {})


def test_train_datasets_picks_the_configured_splits():
    a_train, a_val, b_train = object(), object(), object()
    datasets = {"mimic": {"train": a_train, "val": a_val}, "openi": {"train": b_train}}
    assert task().train_datasets(datasets) == {"mimic": a_train, "openi": b_train}
    both = task(train_splits=["train", "val"]).train_datasets({"mimic": datasets["mimic"]})
    assert both == {"mimic/train": a_train, "mimic/val": a_val}


def test_train_datasets_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="dataset 'openi' has no split 'val'.*it has: train"):
        task(train_splits=["val"]).train_datasets({"openi": {"train": object()}})
    with pytest.raises(ValueError, match="names no datasets"):
        task().train_datasets({})
    with pytest.raises(ValueError, match="train_splits is empty"):
        task(train_splits=[]).train_datasets({"openi": {"train": object()}})
