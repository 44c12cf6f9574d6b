"""Fixtures of the validator tests: phantom data, the tiny job, the full-size layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.validate.helpers import (
    SMALL_MODEL,
    proj_ckpt,
    run,
    write_llm_folder,
    write_yaml,
    zeros_like_shapes,
)
from xraygpt.models.convert import blip2_checkpoint_from_model
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.validate.checklist import Checklist

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="package")
def phantom_data(make_phantom) -> Path:
    return make_phantom(10)


@pytest.fixture
def data_copy(phantom_data, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_data, tmp_path / "phantom_copy"))


@pytest.fixture(scope="package")
def tiny_job(phantom_data, tmp_path_factory) -> Path:
    """The tiny recipe: the tiny model on phantom data (96 px images)."""
    root = tmp_path_factory.mktemp("tiny")
    return write_yaml(
        root / "tiny.yaml",
        {
            "model": {"arch": "mini_gpt4", "model_type": "tiny", "image_size": 96},
            "datasets": {"phantom": {"build_info": {"storage": str(phantom_data)}}},
            "run": {"device": "cuda", "batch_size_train": 4, "output_dir": str(root / "output")},
        },
    )


@pytest.fixture(scope="package")
def full(phantom_data, tmp_path_factory) -> dict:
    """The full-size layout: Vicuna-7B folder, ViT / BLIP-2 / stage-1 checkpoints."""
    root = tmp_path_factory.mktemp("full")
    vicuna = write_llm_folder(root / "vicuna_weights")
    meta = MiniGPT4.from_config(
        MiniGPT4.default_config("pretrain_vicuna", {**SMALL_MODEL, "llama_model": str(vicuna)}),
        device="meta",
    )
    # Files in the original formats: visual_encoder.* names, LAVIS BLIP-2 names.
    vit = zeros_like_shapes(
        {f"visual_encoder.{k}": v for k, v in meta.visual_encoder.state_dict().items()}
    )
    torch.save(vit, root / "eva_vit_g.pth")
    # (only the Q-Former side: zeros for the whole meta state would be a 7B model)
    qformer_side = {
        k: v for k, v in meta.state_dict().items() if not k.startswith(("llama_", "visual_"))
    }
    blip2 = blip2_checkpoint_from_model(zeros_like_shapes(qformer_side))
    torch.save({"model": blip2}, root / "blip2.pth")
    proj_ckpt(root / "stage1.pth", 4096)
    model = {
        **SMALL_MODEL,
        "llama_model": str(vicuna),
        "vit_ckpt": str(root / "eva_vit_g.pth"),
        "q_former_model": str(root / "blip2.pth"),
        "ckpt": str(root / "stage1.pth"),
    }
    job = write_yaml(
        root / "stage2.yaml",
        {
            "model": model,
            "datasets": {"openi": {"build_info": {"storage": str(phantom_data)}}},
            "run": {"device": "cpu", "batch_size_train": 1, "output_dir": str(root / "output")},
        },
    )
    return {"root": root, "job": job, "vicuna": vicuna, "vit": vit, "blip2": blip2}


@pytest.fixture(scope="package")
def full_result(full) -> Checklist:
    return run(full["job"])


@pytest.fixture
def fake_gpus(monkeypatch):
    """``count`` visible GPUs with ``free`` bytes each."""

    def install(count: int, free: int, total: int = 80 * 1024**3):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free, total))

    return install
