"""Vision encoders, looked up by name (``model.vit_model``) in the registry.

Contract for a vision encoder (follow it to add one, e.g. ``tiny_cnn``)::

    from xraygpt.common.registry import registry

    @registry.register_vision_encoder("my_encoder")
    class MyEncoder(nn.Module):
        num_features: int      # channel width C of the output tokens

        @classmethod
        def from_config(cls, cfg) -> "MyEncoder":
            # ``cfg`` is the whole validated ``model`` section
            # (:class:`xraygpt.models.mini_gpt4.MiniGPT4Config` fields, as a
            # DictConfig or the dataclass). Read ``cfg.image_size``,
            # ``cfg.drop_path_rate``, ``cfg.use_grad_checkpoint`` and the
            # encoder's own options from the dict ``cfg.vision_config``; reject
            # keys you do not know with a ValueError that names them.
            ...

        def forward(self, images: Tensor) -> Tensor:
            # images [B, 3, H, W] (already normalised) -> tokens [B, N, C]
            ...

        # optional: a pretrained file (``model.vit_ckpt``) in a format other
        # than the module's own state dict, e.g. with extra layers to drop.
        # Returns (state dict to load strictly, names of dropped keys).
        def adapt_state_dict(self, state_dict) -> tuple[dict, list[str]]: ...

        # optional: called when ``use_grad_checkpoint`` is true.
        def set_grad_checkpointing(self, enable: bool = True) -> None: ...

The model puts ``ln_vision`` (LayerNorm over C) after the encoder, builds the
Q-Former with ``encoder_hidden_size = num_features``, and casts the encoder
to ``vit_precision``. Construction happens inside the caller's device context
(``torch.device("meta")`` for the parameter summary), so create tensors
without an explicit device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva
from torch import nn

from xraygpt.common.config import ConfigError
from xraygpt.common.errors import CheckpointError
from xraygpt.common.registry import registry

log = logging.getLogger(__name__)


def _options(cfg: Any, allowed: Mapping[str, Any], encoder: str) -> dict[str, Any]:
    """The encoder's options: ``allowed`` defaults overridden by ``cfg.vision_config``."""
    given = dict(getattr(cfg, "vision_config", None) or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model.vision_config has key(s) {', '.join(unknown)} that vision encoder "
            f"{encoder!r} does not take; it takes: {', '.join(sorted(allowed)) or '(none)'}"
        )
    return {**allowed, **given}


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (``ln_vision`` of BLIP-2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class _EvaEncoder(Eva):
    """timm's Eva returning all tokens (CLS + patches) with no final norm or head.

    Subclassing (rather than wrapping) keeps the state-dict names of
    ``eva_vit_g.pth`` (``blocks.N.attn.qkv.weight``, ...) as they are.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_features(images)

    @classmethod
    def _build(cls, cfg: Any, **arch: Any) -> _EvaEncoder:
        return cls(
            img_size=int(cfg.image_size),
            drop_path_rate=float(cfg.drop_path_rate),
            num_classes=0,
            global_pool="",
            use_post_transformer_norm=False,  # BLIP-2 reads the last block's output as is
            use_rot_pos_emb=False,
            init_values=None,
            qkv_fused=True,
            qkv_bias=True,  # q and v biases; timm keeps k's as a zero buffer
            **arch,
        )

    def adapt_state_dict(
        self, state_dict: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Drop what BLIP-2 does not use and resize ``pos_embed`` to this image size.

        EVA-CLIP-g files hold 40 blocks and a final norm (and may hold a head);
        BLIP-2 runs the first 39 blocks and reads their output directly.
        """
        depth = len(self.blocks)
        kept: dict[str, torch.Tensor] = {}
        dropped: list[str] = []
        for key, value in state_dict.items():
            head = key.split(".")[0]
            if head in ("norm", "fc_norm", "head", "rope"):
                dropped.append(key)
            elif head == "blocks" and int(key.split(".")[1]) >= depth:
                dropped.append(key)
            else:
                kept[key] = value
        pos = kept.get("pos_embed")
        if pos is not None and self.pos_embed is not None and pos.shape != self.pos_embed.shape:
            if pos.shape[-1] != self.pos_embed.shape[-1]:
                raise CheckpointError(
                    f"pos_embed width {pos.shape[-1]} does not fit the encoder's "
                    f"{self.pos_embed.shape[-1]}: the file is for another architecture"
                )
            log.info(
                "resampling pos_embed %s -> %s for image size %s",
                tuple(pos.shape),
                tuple(self.pos_embed.shape),
                self.patch_embed.img_size,
            )
            kept["pos_embed"] = resample_abs_pos_embed(
                pos.float(),
                new_size=list(self.patch_embed.grid_size),
                num_prefix_tokens=self.num_prefix_tokens,
            ).to(pos.dtype)
        return kept, dropped


@registry.register_vision_encoder("eva_clip_g")
class EvaClipG(_EvaEncoder):
    """EVA-CLIP ViT-g/14 as BLIP-2 uses it: 39 of 40 blocks, 1408 wide (985.9 M).

    The architecture is fixed, so ``vision_config`` must be empty; only
    ``image_size``, ``drop_path_rate`` and ``use_grad_checkpoint`` apply.
    """

    @classmethod
    def from_config(cls, cfg: Any) -> EvaClipG:
        _options(cfg, {}, "eva_clip_g")
        encoder = cls._build(
            cfg,
            patch_size=14,
            embed_dim=1408,
            depth=39,
            num_heads=16,
            mlp_ratio=6144 / 1408,
        )
        if cfg.use_grad_checkpoint:
            encoder.set_grad_checkpointing(True)
        return encoder


@registry.register_vision_encoder("tiny")
class TinyEva(_EvaEncoder):
    """The same Eva architecture at toy size, for tests and the tiny recipe.

    ``vision_config`` keys: ``embed_dim``, ``depth``, ``num_heads``,
    ``patch_size``, ``mlp_ratio``.
    """

    DEFAULTS = {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 32, "mlp_ratio": 4.0}

    @classmethod
    def from_config(cls, cfg: Any) -> TinyEva:
        opts = _options(cfg, cls.DEFAULTS, "tiny")
        if cfg.image_size % opts["patch_size"]:
            raise ConfigError(
                f"model.image_size {cfg.image_size} is not a multiple of the tiny "
                f"encoder's patch_size {opts['patch_size']}"
            )
        encoder = cls._build(
            cfg,
            patch_size=int(opts["patch_size"]),
            embed_dim=int(opts["embed_dim"]),
            depth=int(opts["depth"]),
            num_heads=int(opts["num_heads"]),
            mlp_ratio=float(opts["mlp_ratio"]),
        )
        if cfg.use_grad_checkpoint:
            encoder.set_grad_checkpointing(True)
        return encoder


def build_vision_encoder(cfg: Any) -> nn.Module:
    """The encoder named by ``cfg.vit_model``, checked against the contract."""
    encoder_cls = registry.get_vision_encoder(cfg.vit_model)
    encoder = encoder_cls.from_config(cfg)
    width = getattr(encoder, "num_features", None)
    if not isinstance(width, int) or width <= 0:
        raise TypeError(
            f"vision encoder {cfg.vit_model!r} ({encoder_cls.__name__}) must set an int "
            f"num_features (the width of its output tokens)"
        )
    return encoder
