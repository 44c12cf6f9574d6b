"""``causal_lm``: the LLM alone (``LlamaForCausalLM`` + its tokenizer), for text-only training.

The model of the conversation fine-tuning stage that XrayGPT's LLM went
through before the image stages (Vicuna on medical and radiology
conversations). Attribute names are ``mini_gpt4``'s (``llama_model``,
``llama_tokenizer``), so a full fine-tuning checkpoint (``llama_model.*``
keys) loads into ``mini_gpt4`` as its ``ckpt``, and a ``mini_gpt4`` stage-2
checkpoint (the tiny recipe's text-pretrained LLM) loads here as ``ckpt``.

Model types: ``tiny`` (the tiny preset, random init or a tiny checkpoint) and
``vicuna`` (a HF-format Vicuna / LLaMA folder, ``llama_model``).

An optional ``lora`` section (r, alpha, dropout, target_modules; see
:mod:`xraygpt.models.lora`) puts LoRA adapters on the LLM after ``ckpt`` is
loaded: the base weights freeze and only the adapters train.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from transformers import PreTrainedTokenizerBase

from xraygpt.common.config import ConfigError, default_yaml_of, require_path, resolve_path
from xraygpt.common.errors import CheckpointError
from xraygpt.common.io import load_checkpoint
from xraygpt.common.registry import registry
from xraygpt.models.llm import (
    TINY_TOKENIZER_DIR,
    build_random_llm,
    folder_config,
    load_pretrained_llm,
    load_tokenizer,
    parse_dtype,
    preset_config,
)

log = logging.getLogger(__name__)

LLM_PREFIX = "llama_model."


@dataclass
class CausalLMConfig:
    """Every key the ``model:`` section of a ``causal_lm`` may hold (paths: see ``mini_gpt4``)."""

    arch: str = "causal_lm"
    model_type: str = "tiny"
    llama_model: str = ""  # HF folder of Vicuna / LLaMA; empty = random init from llama_preset
    llama_preset: str | None = None  # llama-7b | llama-13b | tiny: when llama_model is empty
    llama_config: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields over it
    tokenizer: str = ""  # tokenizer folder; empty = llama_model's (the shipped tiny one without)
    llm_dtype: str = "float32"  # the dtype of the weights that train: keep float32 (AMP on top)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    # A checkpoint whose ``llama_model.*`` tensors replace the LLM's before LoRA is put on
    # (a mini_gpt4 stage-2 or causal_lm full fine-tuning checkpoint); empty = none.
    ckpt: str = ""
    lora: dict[str, Any] | None = None  # LoRA settings (xraygpt.models.lora.LoraSettings)


def as_causal_lm_config(cfg: Any) -> DictConfig:
    """A validated :class:`CausalLMConfig` DictConfig; a misspelt key fails here."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.structured(cfg)
    try:
        return OmegaConf.merge(OmegaConf.structured(CausalLMConfig), cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"model config (causal_lm): {getattr(err, 'msg', err)}") from err


def build_tokenizer(cfg: Any, *, meta: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer a ``causal_lm`` config names, without building the LLM.

    ``meta``: for a build on the meta device, which only counts: the fallback to the
    shipped tokenizer is no news there.
    """
    cfg = as_causal_lm_config(cfg)
    if cfg.tokenizer:
        return load_tokenizer(require_path(cfg.tokenizer, "tokenizer", folder=True))
    if cfg.llama_model:
        return load_tokenizer(require_path(cfg.llama_model, "llama_model", folder=True))
    (log.debug if meta else log.warning)(
        "no tokenizer folder configured: using the shipped tiny tokenizer"
    )
    return load_tokenizer(TINY_TOKENIZER_DIR)


def llm_tensors(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The ``llama_model.*`` tensors of a checkpoint, prefix removed."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{source}: not a checkpoint (a mapping of tensors, or one under 'model')"
        )
    found = {k[len(LLM_PREFIX) :]: v for k, v in state.items() if k.startswith(LLM_PREFIX)}
    if not found:
        keys = sorted(state)[:5]
        raise CheckpointError(
            f"{source} holds no {LLM_PREFIX}* tensors (first keys: {keys}); model.ckpt of a "
            f"causal_lm takes a checkpoint that trained the LLM (a mini_gpt4 stage-2 or "
            f"causal_lm run with full fine-tuning)"
        )
    return found


@registry.register_model("causal_lm")
class CausalLM(nn.Module):
    """A LLaMA-architecture causal LM and its tokenizer; ``forward`` is the SFT loss."""

    config_class = CausalLMConfig
    PRETRAINED_MODEL_CONFIG_DICT = {
        "tiny": "configs/models/causal_lm_tiny.yaml",
        "vicuna": "configs/models/causal_lm_vicuna.yaml",
    }

    def __init__(self, cfg: Any, *, meta: bool = False) -> None:
        """Build the tokenizer and the LLM (from ``llama_model``, or random from the preset).

        ``meta``: a build on the meta device (the set-up validator's parameter
        count): a folder's architecture is read from its ``config.json`` only.
        """
        super().__init__()
        cfg = as_causal_lm_config(cfg)
        self.cfg = cfg
        dtype = parse_dtype(cfg.llm_dtype, "model.llm_dtype")
        self.llama_tokenizer = build_tokenizer(cfg, meta=meta)
        folder = resolve_path(cfg.llama_model)
        if folder is not None:
            folder = require_path(cfg.llama_model, "llama_model", folder=True)
            if cfg.llama_config:
                raise ConfigError(
                    "model.llama_config overrides a preset; it cannot change a pretrained "
                    f"LLM loaded from model.llama_model={cfg.llama_model}"
                )
            if meta:
                llm = build_random_llm(folder_config(folder), dtype)
            else:
                llm = load_pretrained_llm(folder, dtype, low_resource=False, device_8bit=0)
            self.llm_source = str(folder)
        else:
            # A meta build without a folder (the validator's, when the folder failed) sizes 7B.
            preset = cfg.llama_preset or ("llama-7b" if meta else None)
            if not preset:
                raise ConfigError(
                    "model.llama_model is empty and model.llama_preset is not set: name a "
                    "Vicuna folder, or a preset (llama-7b, llama-13b, tiny)"
                )
            config = preset_config(preset, dict(cfg.llama_config or {}), len(self.llama_tokenizer))
            llm = build_random_llm(config, dtype)
            self.llm_source = f"preset {preset} (random init)"
        if len(self.llama_tokenizer) > llm.config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(self.llama_tokenizer)} tokens but the LLM's "
                f"vocabulary holds {llm.config.vocab_size}: they do not belong together; "
                f"name the LLM's own tokenizer in model.tokenizer (empty: model.llama_model's)"
            )
        self.llama_model: nn.Module = llm
        # What model.ckpt must match: the plain LLM's tensors, whatever adapters come later.
        self.ckpt_shapes = {f"{LLM_PREFIX}{k}": tuple(v.shape) for k, v in llm.state_dict().items()}

    @classmethod
    def default_config(
        cls, model_type: str = "tiny", overrides: Mapping[str, Any] | None = None
    ) -> DictConfig:
        """The validated default config of ``model_type``, with ``overrides`` on top."""
        default = default_yaml_of(cls, "causal_lm", model_type).model
        return as_causal_lm_config(OmegaConf.merge(default, dict(overrides or {})))

    @classmethod
    def from_config(cls, cfg: Any, *, device: str | torch.device | None = None) -> CausalLM:
        """Build the LLM, load ``ckpt``, then put on the LoRA adapters if ``lora`` is set.

        ``device="meta"`` builds without memory and loads nothing (a parameter count).
        """
        cfg = as_causal_lm_config(cfg)
        meta = device is not None and torch.device(device).type == "meta"
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = cls(cfg, meta=meta)
        if cfg.ckpt and not meta:
            path = require_path(cfg.ckpt, "ckpt")
            model.load_llm_state(load_checkpoint(path, "model.ckpt"), str(path))
        if cfg.lora is not None:
            # Imported here: the peft wrapper is needed only when adapters are asked for.
            from xraygpt.models.lora import LoraSettings, apply_lora

            settings = LoraSettings.from_mapping(
                OmegaConf.to_container(cfg.lora) if isinstance(cfg.lora, DictConfig) else cfg.lora,
                "model.lora",
            )
            model.llama_model = apply_lora(model.llama_model, settings)
        if cfg.gradient_checkpointing:
            model.llama_model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
            if cfg.lora is not None:
                # The frozen embeddings' output must need grad, or checkpointed blocks get none.
                model.llama_model.enable_input_require_grads()
        (log.debug if meta else log.info)(  # a meta build loads nothing: no news there
            "causal_lm built: LLM %s%s; trainable %.2f M of %.2f M parameters",
            model.llm_source,
            f", ckpt {cfg.ckpt}" if cfg.ckpt else "",
            model.num_trainable() / 1e6,
            sum(p.numel() for p in model.parameters()) / 1e6,
        )
        return model

    def load_llm_state(self, obj: Any, source: str) -> None:
        """Load a checkpoint's ``llama_model.*`` tensors: every LLM weight, with its shape."""
        tensors = llm_tensors(obj, source)
        own = self.llama_model.state_dict()
        bad = [
            f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in tensors.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if bad:
            raise CheckpointError(
                f"{source}: shapes do not match this LLM ({'; '.join(bad[:3])}): the "
                f"checkpoint belongs to another architecture (model.llama_config)"
            )
        result = self.llama_model.load_state_dict(tensors, strict=False)
        # A tied output head is not saved separately; anything else missing is an error.
        missing = [k for k in result.missing_keys if k != "lm_head.weight" or not self._tied()]
        if missing or result.unexpected_keys:
            raise CheckpointError(
                f"{source}: {LLM_PREFIX}* tensors do not match this LLM: missing "
                f"{missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
            )
        log.info("loaded the LLM's %d tensors from %s", len(tensors), source)

    def _tied(self) -> bool:
        return bool(getattr(self.llama_model.config, "tie_word_embeddings", False))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Mean cross-entropy over the tokens whose ``labels`` are not ignored.

        ``samples``: ``input_ids`` and ``labels`` [B, L]; ``position_ids`` [B, L]
        restarting at 0 where a packed conversation starts (each then attends only
        to itself) or ``attention_mask`` [B, L].
        """
        out = self.llama_model(
            input_ids=samples["input_ids"],
            labels=samples["labels"],
            position_ids=samples.get("position_ids"),
            attention_mask=samples.get("attention_mask"),
            # Without a cache only: transformers reads packing from the position ids when
            # there is neither a cache nor an attention mask (and creates a cache by default).
            use_cache=False,
            return_dict=True,
        )
        return {"loss": out.loss}
