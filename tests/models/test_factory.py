"""The one door in: model + eval processors from a config."""

import logging

import pytest
import torch
from PIL import Image

from xraygpt.common.config import REPO_ROOT, Config, default_yaml_of
from xraygpt.common.registry import registry
from xraygpt.models.factory import build_model, eval_image_processor, load_model_and_processors

# Each registered model class, by a model type of it that builds without weight files.
META_BUILDS = {
    "mini_gpt4": "pretrain_vicuna",
    "causal_lm": "tiny",
    "encoder_classifier": "tiny_cnn",
}


def test_eval_config_names_the_eval_image_processor():
    processor = eval_image_processor(Config(REPO_ROOT / "eval_configs" / "xraygpt_eval.yaml"))
    assert type(processor).__name__ == "Blip2ImageEvalProcessor"
    assert tuple(processor(Image.new("RGB", (300, 200))).shape) == (3, 224, 224)


def test_meta_build_has_the_shapes_and_no_memory():
    cfg = Config(REPO_ROOT / "eval_configs" / "xraygpt_eval.yaml")
    model = build_model(cfg.model_cfg, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.llama_proj.weight.shape == (4096, 768)


def test_load_model_and_processors_gives_an_eval_model(make_phantom, tmp_path):
    data = make_phantom(8)
    cfg = Config(
        REPO_ROOT / "eval_configs" / "xraygpt_tiny_eval.yaml",
        [
            f"datasets.phantom.build_info.storage={data}",
            f"model.tokenizer={data}/tokenizer",
            "model.ckpt=[]",
        ],
    )
    model, processor = load_model_and_processors(cfg)
    assert not model.training
    image = processor(Image.new("RGB", (120, 100)))
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32


def test_every_registered_model_is_built_on_meta_below():
    assert set(registry.names("model")) == set(META_BUILDS)


@pytest.mark.parametrize(("arch", "model_type"), sorted(META_BUILDS.items()))
def test_every_model_builds_on_meta_through_from_config_and_quietly(arch, model_type, caplog):
    """Every model class takes ``from_config(cfg, *, device=None)``; on the meta device it
    loads nothing, so what a real build reports (the LLM it loads, its tokenizer) is no
    news: the validator and the model summary build there without silencing the logs."""
    cfg = default_yaml_of(registry.get_model_class(arch), arch, model_type).model
    with caplog.at_level(logging.DEBUG, logger="xraygpt"):
        model = build_model(cfg, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    reported = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name.startswith("xraygpt") and r.levelno >= logging.INFO
    ]
    assert reported == []
