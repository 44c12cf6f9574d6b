"""``mini_gpt4``: image -> vision encoder -> ln_vision -> Q-Former -> llama_proj -> LLaMA.

The MiniGPT-4 / XrayGPT model (docs/recipe.md §2-4) assembled from maintained
libraries: timm's ``Eva`` (or any registered vision encoder), transformers'
``Blip2QFormerModel`` and ``LlamaForCausalLM``. Attribute names are the
original's (``visual_encoder``, ``ln_vision``, ``Qformer``, ``query_tokens``,
``llama_proj``, ``llama_model``, ``llama_tokenizer``), so MiniGPT-4 / XrayGPT
checkpoints load by name.

Model types: ``pretrain_vicuna`` (full size; EVA-ViT-g, BLIP-2 Q-Former,
Vicuna from ``llama_model``) and ``tiny`` (the same architecture at toy size,
random init, the shipped tokenizer; for tests and the tiny recipe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from transformers import (
    Blip2QFormerConfig,
    Blip2QFormerModel,
    GenerationConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

import xraygpt.models.convert as convert
import xraygpt.models.hf_blip2 as hf_blip2
from xraygpt.common.config import (
    ConfigError,
    default_yaml_of,
    require_path,
    resolve_path,
)
from xraygpt.common.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from xraygpt.common.errors import CheckpointError, MissingFileError
from xraygpt.common.generation import GenerationOptions
from xraygpt.common.io import load_checkpoint
from xraygpt.common.registry import registry
from xraygpt.models.checkpoint_fit import blip2_targets, fit_state, model_ckpt_keys, shapes_of
from xraygpt.models.llm import (
    TINY_TOKENIZER_DIR,
    EndSymStopping,
    build_random_llm,
    cut_answer,
    folder_config,
    load_pretrained_llm,
    load_tokenizer,
    parse_dtype,
    preset_config,
)
from xraygpt.models.lora import (
    LoraSettings,
    apply_lora,
    quantized_load_kwargs,
    require_qlora_support,
)
from xraygpt.models.vision_encoders import LayerNormFp32, build_vision_encoder

log = logging.getLogger(__name__)

# The Q-Former of BLIP-2 (docs/recipe.md §2); ``model.qformer_config`` overrides these.
QFORMER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "cross_attention_frequency": 2,
    "layer_norm_eps": 1e-12,
}


@dataclass
class MiniGPT4Config:
    """Every key the ``model:`` section may hold. Paths are relative to the repo root."""

    arch: str = "mini_gpt4"
    model_type: str = "pretrain_vicuna"
    # vision encoder
    vit_model: str = "eva_clip_g"  # a registered vision encoder
    vit_ckpt: str = ""  # eva_vit_g.pth-style weights; empty = random init
    vision_config: dict[str, Any] = field(default_factory=dict)  # the encoder's own options
    image_size: int = 224
    drop_path_rate: float = 0.0
    use_grad_checkpoint: bool = False
    vit_precision: str = "fp16"
    freeze_vit: bool = True
    # Q-Former
    q_former_model: str = ""  # LAVIS BLIP-2 checkpoint; empty = random init
    num_query_token: int = 32
    qformer_config: dict[str, Any] = field(default_factory=dict)  # Blip2QFormerConfig overrides
    freeze_qformer: bool = True
    # LLM
    llama_model: str = ""  # HF folder of Vicuna; empty = random init from llama_preset
    llama_preset: str | None = None  # llama-7b | llama-13b | tiny: used when llama_model is empty
    llama_config: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields over the preset
    tokenizer: str = ""  # tokenizer folder; empty = llama_model's
    llm_dtype: str = "float16"
    freeze_llm: bool = True
    low_resource: bool = False  # LLM in 8-bit on GPU device_8bit, ViT kept on the CPU
    device_8bit: int = 0
    # LoRA adapters on the LLM (keys of xraygpt.models.lora.LoraSettings: r, alpha, dropout,
    # target_modules, quantize_4bit); null = none. With adapters the LLM's own weights stay
    # frozen (freeze_llm: true) and llama_proj + the adapters train, as in LLaVA-Rad.
    lora: dict[str, Any] | None = None
    # text
    prompt_path: str = ""
    prompt_template: str = ""
    max_txt_len: int = 32
    end_sym: str = "\n"
    # checkpoints in the MiniGPT-4 format, loaded in order: a path or a list of paths; a
    # folder written by ``xraygpt export hf`` counts as a checkpoint of every weight
    ckpt: Any = ""


def as_model_config(cfg: Any) -> DictConfig:
    """A validated ``MiniGPT4Config`` DictConfig from a DictConfig, dict or the dataclass."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.structured(cfg)
    try:
        return OmegaConf.merge(OmegaConf.structured(MiniGPT4Config), cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"model config: {err}") from err


def _ckpt_paths(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"model.ckpt must be a path or a list of paths, got {value!r}")
    return items


def _dotted(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


@registry.register_model("mini_gpt4")
class MiniGPT4(nn.Module):
    config_class = MiniGPT4Config
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_vicuna": "configs/models/minigpt4_vicuna.yaml",
        "tiny": "configs/models/minigpt4_tiny.yaml",
        "tiny_phantom": "configs/models/minigpt4_tiny_phantom.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_vicuna"  # as the original's configs assume

    def __init__(self, cfg: Any, *, meta: bool = False) -> None:
        """Build every module (random init, or Vicuna from ``llama_model``); load nothing else.

        Use :meth:`from_config`, which also loads the weights the config names.
        ``meta`` marks a build on the meta device: the LLM's architecture is
        read from its folder's ``config.json`` (or the preset) instead of loading it.
        """
        super().__init__()
        cfg = as_model_config(cfg)
        self.cfg = cfg
        self.freeze_vit = bool(cfg.freeze_vit)
        self.freeze_qformer = bool(cfg.freeze_qformer)
        self.freeze_llm = bool(cfg.freeze_llm)
        self.low_resource = bool(cfg.low_resource)
        self.lora = self._lora_settings(cfg)
        self.max_txt_len = int(cfg.max_txt_len)
        self.end_sym = str(cfg.end_sym)
        if not self.end_sym:
            raise ConfigError("model.end_sym must not be empty")

        # --- vision encoder + ln_vision
        vit_dtype = parse_dtype(cfg.vit_precision, "model.vit_precision")
        if self.low_resource:
            vit_dtype = torch.float32  # it runs on the CPU then, as in the original
        if vit_dtype != torch.float32 and not self.freeze_vit:
            raise ConfigError(
                f"model.vit_precision={cfg.vit_precision} with freeze_vit=false would train "
                f"half-precision weights; use vit_precision=fp32 (AMP still applies)"
            )
        self.visual_encoder = build_vision_encoder(cfg).to(vit_dtype)
        width = self.visual_encoder.num_features
        self.ln_vision = LayerNormFp32(width)

        # --- Q-Former + query tokens
        qcfg = self._qformer_config(cfg, width)
        self.Qformer = Blip2QFormerModel(qcfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, int(cfg.num_query_token), qcfg.hidden_size))
        nn.init.normal_(self.query_tokens, std=qcfg.initializer_range)

        # --- tokenizer + LLM
        llm_parts = self._build_llm(cfg, meta)
        self.llama_tokenizer, self.llama_model, self.llm_source, self.llm_pretrained = llm_parts
        self.llama_proj = nn.Linear(qcfg.hidden_size, self.llama_model.config.hidden_size)

        # --- prompts
        self.prompt_template = str(cfg.prompt_template or "{}")
        if self.prompt_template.count("{}") != 1:
            raise ConfigError(
                f"model.prompt_template={cfg.prompt_template!r} must hold exactly one '{{}}' "
                f"(where the prompt goes)"
            )
        self.prompt_list = self._load_prompts(cfg)

        self._freeze()
        log.info(
            "mini_gpt4 built: %s, %d query tokens, LLM %s; trainable %.2f M parameters",
            cfg.vit_model,
            cfg.num_query_token,
            self.llm_source,
            self.num_trainable() / 1e6,
        )

    # ------------------------------------------------------------------ build

    @staticmethod
    def _qformer_config(cfg: DictConfig, width: int) -> Blip2QFormerConfig:
        overrides = dict(cfg.qformer_config or {})
        reference = Blip2QFormerConfig()
        unknown = sorted(k for k in overrides if not hasattr(reference, k))
        if unknown or "encoder_hidden_size" in overrides:
            bad = unknown + (["encoder_hidden_size"] if "encoder_hidden_size" in overrides else [])
            raise ConfigError(
                f"model.qformer_config: key(s) {bad} not allowed (encoder_hidden_size comes "
                f"from the vision encoder; others must be Blip2QFormerConfig fields)"
            )
        return Blip2QFormerConfig(**{**QFORMER_DEFAULTS, **overrides, "encoder_hidden_size": width})

    def _build_llm(
        self, cfg: DictConfig, meta: bool
    ) -> tuple[PreTrainedTokenizerBase, LlamaForCausalLM, str, bool]:
        """(tokenizer, LLM, where the LLM came from, whether its weights are pretrained)."""
        dtype = parse_dtype(cfg.llm_dtype, "model.llm_dtype")
        if dtype != torch.float32 and not cfg.freeze_llm:
            raise ConfigError(
                f"model.llm_dtype={cfg.llm_dtype} with freeze_llm=false would train "
                f"half-precision weights; use llm_dtype=float32"
            )
        folder = resolve_path(cfg.llama_model)
        hint = (
            "Put the Vicuna weights (HF format) there, or set model.llama_model to empty "
            "and model.llama_preset (llama-7b, llama-13b, tiny) for a randomly initialised LLM."
        )
        if folder is not None and not folder.is_dir():
            if not meta:
                require_path(cfg.llama_model, "llama_model", folder=True, hint=hint)
            log.info("model.llama_model %s not found: the meta build uses a preset", folder)
            folder = None

        tok_path = resolve_path(cfg.tokenizer)
        if tok_path is not None:
            tok_path = require_path(cfg.tokenizer, "tokenizer", folder=True)
        elif folder is not None:
            tok_path = folder
        else:
            # A random LLM has no tokenizer of its own; any LLaMA-layout one will do.
            (log.info if meta else log.warning)(
                "no tokenizer folder configured: using the shipped tiny tokenizer"
            )
            tok_path = TINY_TOKENIZER_DIR
        tokenizer = load_tokenizer(tok_path)

        if folder is not None and not meta:
            if cfg.llama_config:
                raise ConfigError(
                    "model.llama_config overrides a preset; it cannot change a pretrained "
                    f"LLM loaded from model.llama_model={cfg.llama_model}"
                )
            if self.lora is not None and self.lora.quantize_4bit:
                log.info("loading the LLM from %s in 4-bit NF4 (QLoRA)", folder)
                llm = LlamaForCausalLM.from_pretrained(
                    str(folder),
                    dtype=dtype,
                    local_files_only=True,
                    **quantized_load_kwargs(self.lora, compute_dtype=dtype),
                )
            else:
                llm = load_pretrained_llm(folder, dtype, self.low_resource, int(cfg.device_8bit))
            source, pretrained = str(folder), True
        else:
            if self.low_resource and not meta:
                raise ConfigError("model.low_resource=true needs a pretrained model.llama_model")
            if self.lora is not None and self.lora.quantize_4bit and not meta:
                raise ConfigError(
                    "model.lora.quantize_4bit=true needs a pretrained model.llama_model: a "
                    "randomly initialised LLM is not quantized"
                )
            if folder is not None:
                config = folder_config(folder)
                source = f"{folder} (architecture only)"
            else:
                preset = cfg.llama_preset or ("llama-7b" if meta else None)
                if preset is None:
                    raise ConfigError(
                        "model.llama_model is empty and model.llama_preset is not set: "
                        "name a Vicuna folder, or a preset (llama-7b, llama-13b, tiny) "
                        "for a randomly initialised LLM"
                    )
                config = preset_config(preset, dict(cfg.llama_config or {}), len(tokenizer))
                source = f"preset {preset} (random init)"
            llm = build_random_llm(config, dtype)
            pretrained = False
        if len(tokenizer) > llm.config.vocab_size:
            raise ConfigError(
                f"the tokenizer ({tok_path}) has {len(tokenizer)} tokens but the LLM's "
                f"vocabulary holds {llm.config.vocab_size}: they do not belong together"
            )
        if self.lora is not None:
            llm = apply_lora(llm, self.lora, "model.lora")
            source += f" + LoRA r={self.lora.r} on {', '.join(self.lora.target_modules)}"
        return tokenizer, llm, source, pretrained

    @staticmethod
    def _lora_settings(cfg: DictConfig) -> LoraSettings | None:
        if cfg.lora is None:
            return None
        settings = LoraSettings.from_mapping(cfg.lora, "model.lora")
        if not cfg.freeze_llm:
            raise ValueError(
                "model.lora is set with freeze_llm=false: LoRA trains adapters on a frozen "
                "LLM; set model.freeze_llm=true (or model.lora=null for full fine-tuning)"
            )
        if settings.quantize_4bit:
            if cfg.low_resource:
                raise ValueError(
                    "model.lora.quantize_4bit=true and model.low_resource=true both quantize "
                    "the LLM (4-bit vs 8-bit): choose one"
                )
            require_qlora_support("model.lora.quantize_4bit")
        return settings

    @staticmethod
    def _load_prompts(cfg: DictConfig) -> list[str]:
        if not cfg.prompt_path:
            return []
        path = require_path(cfg.prompt_path, "prompt_path")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        usable = [line for line in lines if IMAGE_PLACEHOLDER in line]
        if not usable:
            raise ConfigError(
                f"model.prompt_path {path} has no line with {IMAGE_PLACEHOLDER}; each prompt "
                f"must say where the image goes"
            )
        template = cfg.prompt_template or "{}"
        prompts = [template.format(line) for line in usable]
        log.info("loaded %d prompts from %s", len(prompts), path)
        return prompts

    def _frozen_modules(self) -> list[nn.Module]:
        frozen: list[nn.Module] = []
        if self.freeze_vit:
            frozen += [self.visual_encoder, self.ln_vision]
        if self.freeze_qformer:
            frozen.append(self.Qformer)
        if self.freeze_llm and self.lora is None:
            # With adapters the LLM stays in train mode (LoRA dropout); peft froze its base.
            frozen.append(self.llama_model)
        return frozen

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.requires_grad_(False)
            module.eval()
        if self.freeze_qformer:
            self.query_tokens.requires_grad_(False)

    def train(self, mode: bool = True) -> MiniGPT4:
        """As ``nn.Module.train``, but frozen parts stay in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    # ---------------------------------------------------------- constructors

    @classmethod
    def default_config(
        cls, model_type: str = "tiny", overrides: Mapping[str, Any] | None = None
    ) -> DictConfig:
        """The validated default config of ``model_type``, with ``overrides`` on top."""
        default = default_yaml_of(cls, "mini_gpt4", model_type).model
        return as_model_config(OmegaConf.merge(default, dict(overrides or {})))

    @classmethod
    def from_config(cls, cfg: Any, *, device: str | torch.device | None = None) -> MiniGPT4:
        """Build the model and load every weight file the config names.

        ``device`` is the device the modules are created on (``"meta"`` for a
        parameter count without memory: nothing is loaded then; ``"cuda"`` to
        initialise a large random model on the GPU). Default: the CPU.
        """
        cfg = as_model_config(cfg)
        meta = device is not None and torch.device(device).type == "meta"
        context = torch.device(device) if device is not None else contextlib.nullcontext()
        with context:
            model = cls(cfg, meta=meta)
        if not meta:
            model.load_pretrained()
        return model

    # ------------------------------------------------------------- loading

    def load_pretrained(self) -> None:
        """Load ``vit_ckpt``, ``q_former_model`` and each ``ckpt`` in order; report the result."""
        cfg = self.cfg
        got: dict[str, str] = {}
        if self.llm_pretrained:
            got["llama_model"] = self.llm_source
        if cfg.vit_ckpt:
            path = require_path(cfg.vit_ckpt, "vit_ckpt")
            self.load_vit_state(load_checkpoint(path, "model.vit_ckpt"), str(path))
            got["visual_encoder"] = str(path)
        if cfg.q_former_model:
            path = require_path(cfg.q_former_model, "q_former_model")
            self.load_blip2_state(load_checkpoint(path, "model.q_former_model"), str(path))
            got.update(Qformer=str(path), query_tokens=str(path), ln_vision=str(path))
        for item in _ckpt_paths(cfg.ckpt):
            path = resolve_path(item)
            if path is not None and path.is_dir():  # a folder of xraygpt export hf
                modules = self.load_hf_folder(path)
            else:
                path = require_path(item, "ckpt")
                modules = self.load_ckpt_state(load_checkpoint(path, "model.ckpt"), str(path))
            for module in modules:
                got[module] = str(path)
        modules = ("visual_encoder", "ln_vision", "Qformer", "query_tokens", "llama_proj")
        random_init = [name for name in modules + ("llama_model",) if name not in got]
        if random_init:
            log.info("random init (no weights loaded): %s", ", ".join(random_init))
        frozen_random = self._frozen_random(random_init)
        if frozen_random:
            log.warning(
                "frozen but randomly initialised: %s; set the weight paths in the config "
                "(vit_ckpt, q_former_model, llama_model, ckpt) unless this is intended",
                ", ".join(frozen_random),
            )

    def _frozen_random(self, names: list[str]) -> list[str]:
        out = []
        for name in names:
            part = getattr(self, name)
            params = [part] if isinstance(part, nn.Parameter) else list(part.parameters())
            if params and not any(p.requires_grad for p in params):
                out.append(name)
        return out

    def load_vit_state(self, obj: Any, source: str = "vision weights") -> None:
        """An ``eva_vit_g.pth``-style state dict into ``visual_encoder``: every key must fit."""
        state = convert.strip_vit_prefix(convert.unwrap_checkpoint(obj, source))
        adapt = getattr(self.visual_encoder, "adapt_state_dict", None)
        dropped: list[str] = []
        if adapt is not None:
            state, dropped = adapt(state)
        fit = fit_state(shapes_of(state), shapes_of(self.visual_encoder.state_dict()))
        if not fit.ok:
            raise CheckpointError(
                f"{source} does not fit vision encoder {self.cfg.vit_model!r}: "
                + "; ".join(fit.problems())
            )
        self.visual_encoder.load_state_dict(state, strict=True)
        log.info(
            "visual_encoder: loaded %d tensors from %s%s",
            len(state),
            source,
            f" ({len(dropped)} unused by BLIP-2 dropped: {_dotted(dropped, 3)})" if dropped else "",
        )

    def load_blip2_state(self, obj: Any, source: str = "BLIP-2 checkpoint") -> None:
        """A LAVIS BLIP-2 checkpoint into ``Qformer``, ``query_tokens`` and ``ln_vision``."""
        converted = convert.convert_blip2_checkpoint(convert.unwrap_checkpoint(obj, source))
        fit = fit_state(
            shapes_of(converted.tensors),
            blip2_targets(shapes_of(self.state_dict())),
            dropped=converted.dropped,
            unused=converted.unused,
        )
        if not fit.ok:
            raise CheckpointError(
                f"{source} (model.q_former_model) does not fit the Q-Former (after the LAVIS "
                "-> HF key mapping): " + "; ".join(fit.problems())
            )
        # Only the Q-Former side is in the file; every one of its keys was checked above.
        self.load_state_dict(converted.tensors, strict=False)
        log.info(
            "Qformer/query_tokens/ln_vision: loaded %d tensors from %s; %d text-side keys "
            "dropped by design; %d keys unused",
            len(converted.tensors),
            source,
            len(converted.dropped),
            len(converted.unused),
        )
        if converted.unused:
            log.info("unused keys of %s: %s", source, _dotted(converted.unused, 20))

    def load_ckpt_state(self, obj: Any, source: str = "checkpoint") -> list[str]:
        """A MiniGPT-4/XrayGPT checkpoint (``{"model": {...}}``, a subset of this model's keys).

        Returns the top-level modules that received tensors. Keys the model does
        not have, and shapes that do not fit, are errors; a file that loads
        nothing is an error.
        """
        tensors = model_ckpt_keys(convert.unwrap_checkpoint(obj, source))
        if not tensors:
            raise CheckpointError(f"{source} (model.ckpt) holds no tensor of this model")
        own = self.state_dict()
        # A checkpoint holds the trained subset by design.
        self._load_fitting(
            tensors, own, source, "it was saved from a different model configuration"
        )
        loaded = convert.group_counts(tensors)
        totals = convert.group_counts(own)
        log.info(
            "loaded %d tensors from %s: %s",
            len(tensors),
            source,
            ", ".join(f"{m} {n}/{totals[m]}" for m, n in loaded.items()),
        )
        return list(loaded)

    def load_hf_folder(self, folder: Path) -> list[str]:
        """A folder written by ``xraygpt export hf`` (transformers' BLIP-2 layout).

        It holds the whole model, so every tensor of this model must be there
        (the names mapped back by :mod:`xraygpt.models.hf_blip2`); shapes must fit.
        """
        if not hf_blip2.is_exported_folder(folder):
            raise MissingFileError(
                f"model.ckpt: {folder} is a folder but not one written by "
                f"'xraygpt export hf' (no {hf_blip2.EXPORT_INFO} and "
                f"{hf_blip2.CONFIG_FILE}); give a checkpoint file or an exported folder"
            )
        if hasattr(self.llama_model, "peft_config"):
            raise CheckpointError(
                f"model.ckpt: {folder} holds plain LLM weights (LoRA merged); load it before "
                f"wrapping the LLM with adapters"
            )
        vocab = int(self.llama_model.config.vocab_size)
        own = self.state_dict()
        seen: list[str] = []
        for tensors in hf_blip2.iter_folder_state(folder, vocab):  # one shard in memory at a time
            # One shard at a time: the missing keys are checked once all shards are read.
            self._load_fitting(
                tensors, own, str(folder), "it was exported from another configuration"
            )
            seen += tensors
        missing = sorted(set(own) - set(seen))
        if missing:
            raise CheckpointError(
                f"model.ckpt: {folder} lacks {len(missing)} tensor(s) of this model "
                f"[{_dotted(missing)}]; it was exported from another configuration"
            )
        log.info("loaded %d tensors from the exported folder %s", len(seen), folder)
        return list(convert.group_counts(seen))

    def _load_fitting(
        self,
        tensors: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor],
        source: str,
        origin: str,
    ) -> None:
        """Load ``tensors``, some of this model's, once every name and shape fits.

        The errors name ``source`` (model.ckpt) and say where a misfit comes from
        (``origin``); the keys ``tensors`` lacks are the caller's to judge.
        """
        fit = fit_state(shapes_of(tensors), shapes_of(own), subset=True)
        if fit.unexpected:
            raise CheckpointError(
                f"{source} (model.ckpt) has {len(fit.unexpected)} tensor(s) this model does not "
                f"have: {_dotted(list(fit.unexpected))}; {origin}"
            )
        self._check_llama_proj(tensors, source)
        if fit.mismatched:
            raise CheckpointError(
                f"{source}: shapes do not fit the model: " + "; ".join(fit.problems())
            )
        self.load_state_dict(tensors, strict=False)

    def _check_llama_proj(self, tensors: Mapping[str, torch.Tensor], source: str) -> None:
        """A projection for an LLM of another size gets its own message: the usual mistake."""
        own = self.state_dict()
        proj = tensors.get("llama_proj.weight")
        if proj is not None and proj.shape != own["llama_proj.weight"].shape:
            raise CheckpointError(
                f"{source}: llama_proj maps {proj.shape[1]} -> {proj.shape[0]} but this model "
                f"needs {own['llama_proj.weight'].shape[1]} -> "
                f"{own['llama_proj.weight'].shape[0]} (the LLM's hidden size). The checkpoint "
                f"belongs to an LLM of another size (4096 = 7B, 5120 = 13B): use the matching "
                f"model.llama_model / model.llama_preset"
            )

    # ------------------------------------------------------------- helpers

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only: what a MiniGPT-4-format checkpoint's ``model`` holds."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llama_model.get_input_embeddings()(ids)

    def tokenize(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` without special tokens, as a 1-D tensor on the model's device."""
        ids = self.llama_tokenizer(text, add_special_tokens=False).input_ids
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def bos_ids(self) -> torch.Tensor:
        return torch.tensor([self.llama_tokenizer.bos_token_id], device=self.device)

    @staticmethod
    def _frozen_context(frozen: bool):
        """Frozen parts run under inference mode: no autograd bookkeeping at all."""
        return torch.inference_mode() if frozen else contextlib.nullcontext()

    @staticmethod
    def _leave_inference_mode(tensor: torch.Tensor) -> torch.Tensor:
        """A copy that autograd may save for backward (an inference tensor may not be)."""
        if tensor.is_inference() and not torch.is_inference_mode_enabled():
            return tensor.clone()
        return tensor

    # ------------------------------------------------------------- forward

    def encode_img(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> LLM-space embeddings [B, Q, H_llm] and their mask [B, Q]."""
        device = self.device
        if self.low_resource:
            # Keep the ViT on the CPU next to an 8-bit LLM, as the original does.
            self.visual_encoder.to("cpu")
        vit_param = next(self.visual_encoder.parameters())
        with self._frozen_context(self.freeze_vit):
            feats = self.visual_encoder(images.to(vit_param.device, vit_param.dtype))
            feats = self.ln_vision(feats).to(device)
        qformer_frozen = self.freeze_vit and self.freeze_qformer
        if not qformer_frozen:  # the Q-Former's weights need these for their gradients
            feats = self._leave_inference_mode(feats)
        query = self.query_tokens.expand(feats.shape[0], -1, -1)
        with self._frozen_context(qformer_frozen):
            out = self.Qformer(query_embeds=query, encoder_hidden_states=feats)
        hidden = self._leave_inference_mode(out.last_hidden_state)
        embeds = self.llama_proj(hidden)
        atts = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        return embeds, atts

    def prompt_wrap(
        self, img_embeds: torch.Tensor, atts: torch.Tensor, prompt: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the image embeddings at the prompt's ``<ImageHere>``; one prompt for the batch."""
        before, after = self._split_prompt(prompt)
        batch = img_embeds.shape[0]
        pieces = [
            self.embed_tokens(self.tokenize(before)).expand(batch, -1, -1),
            img_embeds.to(self._llm_dtype()),
            self.embed_tokens(self.tokenize(after)).expand(batch, -1, -1),
        ]
        wrapped = torch.cat(pieces, dim=1)
        return wrapped, torch.ones(wrapped.shape[:2], dtype=atts.dtype, device=atts.device)

    @staticmethod
    def _split_prompt(prompt: str) -> tuple[str, str]:
        parts = prompt.split(IMAGE_PLACEHOLDER)
        if len(parts) != 2:
            raise ValueError(
                f"a prompt must hold {IMAGE_PLACEHOLDER} exactly once, got {len(parts) - 1} "
                f"in {prompt!r}"
            )
        return parts[0], parts[1]

    def _llm_dtype(self) -> torch.dtype:
        return self.llama_model.get_input_embeddings().weight.dtype

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The training loss of docs/recipe.md §3 for a batch ``{"image": [B,3,H,W], "caption": [str]}``."""
        images, captions = samples["image"], samples["caption"]
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions in the batch")
        img_embeds, atts = self.encode_img(images.to(self.device))
        if self.prompt_list:
            img_embeds, atts = self.prompt_wrap(img_embeds, atts, random.choice(self.prompt_list))
        img_embeds = img_embeds.to(self._llm_dtype())

        text = self.llama_tokenizer(
            [caption + self.end_sym for caption in captions],
            return_tensors="pt",
            padding="longest",
            padding_side="right",
            truncation=True,
            max_length=self.max_txt_len,
            add_special_tokens=False,
        ).to(self.device)
        targets = text.input_ids.masked_fill(text.attention_mask == 0, IGNORE_INDEX)

        batch = images.shape[0]
        bos = self.embed_tokens(self.bos_ids()).expand(batch, 1, -1)
        inputs_embeds = torch.cat([bos, img_embeds, self.embed_tokens(text.input_ids)], dim=1)
        attention_mask = torch.cat([atts[:, :1], atts, text.attention_mask], dim=1)
        prefix = torch.full(
            (batch, 1 + img_embeds.shape[1]), IGNORE_INDEX, dtype=torch.long, device=self.device
        )
        labels = torch.cat([prefix, targets], dim=1)
        out = self.llama_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            labels=labels,
            return_dict=True,
        )
        return {"loss": out.loss}

    # ---------------------------------------------------------- generation

    def _question_embeds(self, img_embeds: torch.Tensor, prompt: str) -> torch.Tensor:
        """[bos] + template-wrapped prompt with the image in place, as one [L, H] sequence."""
        before, after = self._split_prompt(self.prompt_template.format(prompt))
        before_ids = torch.cat([self.bos_ids(), self.tokenize(before)])
        return torch.cat(
            [
                self.embed_tokens(before_ids),
                img_embeds.to(self._llm_dtype()),
                self.embed_tokens(self.tokenize(after)),
            ]
        )

    def left_pad(self, seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack [L_i, H] sequences into [B, L, H] padded on the left, with the attention mask."""
        length = max(s.shape[0] for s in seqs)
        embeds = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])
        mask = torch.zeros(len(seqs), length, dtype=torch.long, device=seqs[0].device)
        for i, seq in enumerate(seqs):
            embeds[i, length - seq.shape[0] :] = seq
            mask[i, length - seq.shape[0] :] = 1
        return embeds, mask

    def _generation_kwargs(self, end_sym: str | None, opts: GenerationOptions) -> dict[str, Any]:
        tok = self.llama_tokenizer
        options: dict[str, Any] = {
            "max_new_tokens": int(opts.max_new_tokens),
            "min_new_tokens": int(opts.min_new_tokens),
            "num_beams": int(opts.num_beams),
            "do_sample": bool(opts.do_sample),
            "repetition_penalty": float(opts.repetition_penalty),
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
        if opts.do_sample:
            options.update(temperature=float(opts.temperature), top_p=float(opts.top_p))
        if opts.num_beams > 1:
            options["length_penalty"] = float(opts.length_penalty)
        stop = EndSymStopping(tok, end_sym or self.end_sym)
        # A fresh GenerationConfig, so a Vicuna folder's sampling defaults never leak in.
        return {
            "generation_config": GenerationConfig(**options),
            "stopping_criteria": StoppingCriteriaList([stop]),
        }

    @torch.no_grad()
    def generate_from_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        end_sym: str | None = None,
        streamer: Any = None,
        extra_stopping: Sequence[Any] = (),
        **options: Any,
    ) -> torch.Tensor:
        """New token ids [B, T] from prepared LLM inputs, stopping each row at ``end_sym``.

        ``options``: the fields of :class:`GenerationOptions`.
        """
        opts = GenerationOptions(**options)
        inputs_embeds = inputs_embeds.to(self.device, self._llm_dtype())
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
        kwargs = self._generation_kwargs(end_sym, opts)
        kwargs["stopping_criteria"].extend(extra_stopping)
        return self.llama_model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask.to(self.device),
            streamer=streamer,
            **kwargs,
        )

    def stream_from_embeds(
        self, inputs_embeds: torch.Tensor, *, end_sym: str | None = None, **options: Any
    ) -> Iterator[str]:
        """Yield the growing answer text (batch of one) while it is generated."""
        if inputs_embeds.shape[0] != 1:
            raise ValueError("streaming generates for one sequence at a time")
        end_sym = end_sym or self.end_sym
        streamer = TextIteratorStreamer(
            self.llama_tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        failure: list[BaseException] = []
        cancel = threading.Event()  # set when the consumer stops listening

        def cancelled(input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), device=input_ids.device)

        def run() -> None:
            try:
                self.generate_from_embeds(
                    inputs_embeds,
                    end_sym=end_sym,
                    streamer=streamer,
                    extra_stopping=[cancelled],
                    **options,
                )
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                text += piece
                yield text.split(end_sym, 1)[0]
                if end_sym in text:
                    break
        finally:
            cancel.set()
            thread.join()
        if failure:
            raise failure[0]

    @torch.no_grad()
    def generate(
        self, images: torch.Tensor, prompts: str | Sequence[str], **options: Any
    ) -> list[str]:
        """Answers for a batch: each prompt (one ``<ImageHere>``) wrapped in ``prompt_template``.

        ``options``: the fields of :class:`GenerationOptions` (greedy, at most
        160 new tokens by default). Rows are padded on the left, so a batch
        gives the same greedy / beam answers as its samples one at a time.
        Answers are cut at ``end_sym``.
        """
        opts = GenerationOptions(**options)  # a misspelt option fails before any work
        if isinstance(prompts, str):
            prompts = [prompts] * images.shape[0]
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        img_embeds, _ = self.encode_img(images.to(self.device))
        seqs = [self._question_embeds(img_embeds[i], p) for i, p in enumerate(prompts)]
        inputs_embeds, attention_mask = self.left_pad(seqs)
        ids = self.generate_from_embeds(inputs_embeds, attention_mask, **dataclasses.asdict(opts))
        texts = self.llama_tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [cut_answer(text, self.end_sym) for text in texts]
