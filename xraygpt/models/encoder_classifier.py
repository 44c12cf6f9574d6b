"""``encoder_classifier``: a vision encoder pretrained by multi-label classification.

Stage 1 of the tiny recipe. XrayGPT starts from a pretrained image encoder
and never trains it on the alignment task; in miniature the encoder is
pretrained here with a direct signal, the findings of each image (as CXR
encoders such as torchxrayvision's are trained on CheXpert labels).

The model is the encoder of ``model.vit_model`` carrying its own head
(``vision_config.num_classes`` = the number of ``label_names``), so that every
trained parameter is named ``visual_encoder.*``: a ``mini_gpt4`` built with
the same ``vit_model`` and ``vision_config`` loads the checkpoint by name
through ``model.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

import xraygpt.models.convert as convert
from xraygpt.common.config import require_path
from xraygpt.common.constants import CHEXPERT_OBSERVATIONS, PHANTOM_FINDINGS
from xraygpt.common.io import load_checkpoint
from xraygpt.common.registry import registry
from xraygpt.models.vision_encoders import build_vision_encoder

log = logging.getLogger(__name__)


@dataclass
class EncoderClassifierConfig:
    """Every key the ``model:`` section of an encoder pretraining job may hold."""

    arch: str = "encoder_classifier"
    model_type: str = "tiny_cnn"
    vit_model: str = "tiny_cnn"  # a registered vision encoder with a classification head
    vision_config: dict[str, Any] = field(default_factory=dict)
    image_size: int = 96
    drop_path_rate: float = 0.0
    use_grad_checkpoint: bool = False
    # The CheXpert observations to predict, in the head's output order.
    label_names: list[str] = field(default_factory=lambda: list(PHANTOM_FINDINGS))
    # Weights to start from: a checkpoint of this model (path or list of paths).
    ckpt: Any = ""


def as_classifier_config(cfg: Any) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(EncoderClassifierConfig), cfg or {})
    except OmegaConfBaseException as err:
        raise ValueError(f"model config: {err}") from err


@registry.register_model("encoder_classifier")
class EncoderClassifier(nn.Module):
    config_class = EncoderClassifierConfig
    PRETRAINED_MODEL_CONFIG_DICT = {"tiny_cnn": "configs/models/encoder_classifier_tiny_cnn.yaml"}

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        cfg = as_classifier_config(cfg)
        names = list(cfg.label_names)
        unknown = [n for n in names if n not in CHEXPERT_OBSERVATIONS]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(
                f"model.label_names must be distinct CheXpert observations, got {names}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        given = dict(cfg.vision_config or {})
        if given.get("num_classes", len(names)) != len(names):
            raise ValueError(
                f"model.vision_config.num_classes={given['num_classes']} but model.label_names "
                f"has {len(names)} names; drop num_classes (it follows label_names) or make them agree"
            )
        # The head lives in the encoder so that its weights are named visual_encoder.*.
        encoder_cfg = OmegaConf.merge(cfg, {"vision_config": {**given, "num_classes": len(names)}})
        self.cfg = cfg
        self.label_names = names
        self.visual_encoder = build_vision_encoder(encoder_cfg)
        if not callable(getattr(self.visual_encoder, "forward_head", None)):
            raise TypeError(
                f"vision encoder {cfg.vit_model!r} has no classification head (forward_head); "
                f"encoder_classifier needs one, e.g. vit_model: tiny_cnn"
            )

    @classmethod
    def from_config(
        cls, cfg: Any, *, device: str | torch.device | None = None
    ) -> EncoderClassifier:
        """Build the encoder and load each ``ckpt``, then move it to ``device`` (default: the
        CPU). ``device="meta"`` builds the structure only and loads nothing."""
        cfg = as_classifier_config(cfg)
        meta = device is not None and torch.device(device).type == "meta"
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = cls(cfg)
        if meta:
            return model
        paths = [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt or [])
        for item in filter(None, paths):
            path = require_path(item, "ckpt")
            model.load_ckpt_state(load_checkpoint(path, "model.ckpt"), str(path))
        return model if device is None else model.to(device)

    def load_ckpt_state(self, obj: Any, source: str) -> None:
        """A checkpoint of this model: every key must be one of its parameters."""
        state = convert.unwrap_checkpoint(obj, source)
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        bad = [k for k in state if k in own and state[k].shape != own[k].shape]
        if unexpected or bad or not state:
            raise ValueError(
                f"{source} (model.ckpt) does not fit this encoder_classifier: unexpected keys "
                f"{unexpected[:5] or 'none'}, shape mismatches {bad[:5] or 'none'}"
                + ("; it holds no tensors" if not state else "")
            )
        self.load_state_dict(state, strict=False)
        log.info("loaded %d tensors from %s", len(state), source)

    def targets(self, labels: Sequence[Mapping[str, int] | None]) -> torch.Tensor:
        """The batch's ``labels`` dicts as a float tensor [B, K] in ``label_names`` order."""
        if any(item is None for item in labels):
            raise ValueError(
                "a batch holds samples without 'labels': encoder pretraining needs an annotation "
                "file whose entries carry labels (e.g. the phantom data set)"
            )
        rows = [[float(item.get(name, 0)) for name in self.label_names] for item in labels]
        return torch.tensor(rows, device=self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual_encoder.forward_head(self.visual_encoder(images.to(self.device)))

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Binary cross-entropy of the findings, averaged over labels and samples."""
        if "labels" not in samples:
            raise ValueError(
                "encoder_classifier needs samples['labels']; the dataset's annotations carry none"
            )
        logits = self.logits(samples["image"])
        loss = F.binary_cross_entropy_with_logits(logits, self.targets(samples["labels"]))
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, K] of the findings in ``label_names`` order."""
        return torch.sigmoid(self.logits(images))
