"""The language model side: LLaMA presets, the tokenizer, loading, stopping at ``end_sym``.

:func:`build_llm` is mini_gpt4's LLM: Vicuna from a folder (in 4-bit for QLoRA), or a
random one from a preset, with the tokenizer that belongs to it and the LoRA adapters.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    StoppingCriteria,
)

from xraygpt.common.config import PACKAGE_ROOT, ConfigError, require_path, resolve_path
from xraygpt.common.errors import MissingFileError
from xraygpt.models.lora import LoraSettings, apply_lora, quantized_load_kwargs

log = logging.getLogger(__name__)

TINY_TOKENIZER_DIR = PACKAGE_ROOT / "models" / "assets" / "tiny_tokenizer"

# Architecture only (no weights): enough to build the full model on the meta
# device or with random weights when no Vicuna folder is at hand. Values of
# the released LLaMA-1 / Vicuna v1 config.json files.
_LLAMA_COMMON = {
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    "llama-7b": {
        **_LLAMA_COMMON,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "llama-13b": {
        **_LLAMA_COMMON,
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
    },
    # vocab_size is taken from the tokenizer when the preset is built.
    "tiny": {
        **_LLAMA_COMMON,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}

# The LLaMA size each hidden width belongs to: how a projection's shape names its LLM.
LLAMA_SIZE_BY_HIDDEN = {4096: "7B", 5120: "13B", 6656: "33B", 8192: "65B/70B"}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def llama_size(hidden: int) -> str:
    """``"hidden 4096, a 7B LLaMA"``; just the width for a size without a release."""
    size = LLAMA_SIZE_BY_HIDDEN.get(hidden)
    return f"hidden {hidden}, a {size} LLaMA" if size else f"hidden {hidden}"


def parse_dtype(name: str, key: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"{key}={name!r} is not a dtype; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def preset_config(
    preset: str, overrides: dict[str, Any] | None = None, vocab_size: int | None = None
) -> LlamaConfig:
    """A ``LlamaConfig`` from a named preset, with ``model.llama_config`` overrides."""
    if preset not in LLAMA_PRESETS:
        raise ConfigError(
            f"model.llama_preset={preset!r} is unknown; presets: {', '.join(LLAMA_PRESETS)}"
        )
    values = dict(LLAMA_PRESETS[preset])
    if preset == "tiny" and vocab_size is not None:
        values["vocab_size"] = vocab_size
    reference = LlamaConfig()
    unknown = sorted(k for k in (overrides or {}) if not hasattr(reference, k))
    if unknown:
        raise ConfigError(f"model.llama_config has key(s) LlamaConfig does not know: {unknown}")
    values.update(overrides or {})
    return LlamaConfig(**values)


def folder_config(folder: Path) -> LlamaConfig:
    """The architecture of a HF LLaMA folder, read from its ``config.json`` only."""
    path = folder / "config.json"
    if not path.is_file():
        raise MissingFileError(
            f"model.llama_model={folder} has no config.json; it must be a HF-format "
            f"LLaMA/Vicuna folder (config.json, weights, tokenizer files)"
        )
    return LlamaConfig(**json.loads(path.read_text()))


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A LLaMA tokenizer with MiniGPT-4's settings: pad = eos, right padding."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the folder named
        raise RuntimeError(f"cannot load a tokenizer from {path}: {err}") from err
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(tokenizer, name) is None:
            raise ConfigError(f"tokenizer at {path} has no {name.removesuffix('_id')} token")
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def build_random_llm(config: LlamaConfig, dtype: torch.dtype) -> LlamaForCausalLM:
    """A randomly initialised LLaMA in the current device context (meta for summaries)."""
    return LlamaForCausalLM._from_config(config, dtype=dtype)


def load_pretrained_llm(
    folder: Path, dtype: torch.dtype, low_resource: bool, device_8bit: int
) -> LlamaForCausalLM:
    """Vicuna from a local HF folder; in 8-bit on GPU ``device_8bit`` when ``low_resource``."""
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if low_resource:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "model.low_resource=true loads the LLM in 8-bit, which needs a CUDA GPU; "
                "none is available. Set model.low_resource=false."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError(
                "model.low_resource=true loads the LLM in 8-bit through bitsandbytes, "
                "which is not installed (pip install bitsandbytes), or set "
                "model.low_resource=false"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device_8bit}
    log.info("loading the LLM from %s (%s%s)", folder, dtype, ", 8-bit" if low_resource else "")
    return LlamaForCausalLM.from_pretrained(str(folder), **kwargs)


class LLMParts(NamedTuple):
    """What :func:`build_llm` gives: the tokenizer, the LLM, where the LLM came from, and
    whether its weights are pretrained (loaded from ``model.llama_model``)."""

    tokenizer: PreTrainedTokenizerBase
    llm: LlamaForCausalLM
    source: str
    pretrained: bool


def build_llm(cfg: DictConfig, lora: LoraSettings | None, *, meta: bool) -> LLMParts:
    """mini_gpt4's tokenizer and LLM from its ``model:`` section (``cfg``), adapters on.

    ``meta`` marks a build on the meta device: a folder's architecture is read from its
    ``config.json``, a missing folder falls back to a preset, and what a real build
    would load is logged at DEBUG only.
    """
    dtype = parse_dtype(cfg.llm_dtype, "model.llm_dtype")
    if dtype != torch.float32 and not cfg.freeze_llm:
        raise ConfigError(
            f"model.llm_dtype={cfg.llm_dtype} with freeze_llm=false would train "
            f"half-precision weights; use llm_dtype=float32"
        )
    low_resource = bool(cfg.low_resource)
    quantize_4bit = lora is not None and lora.quantize_4bit
    folder = resolve_path(cfg.llama_model)
    hint = (
        "Put the Vicuna weights (HF format) there, or set model.llama_model to empty "
        "and model.llama_preset (llama-7b, llama-13b, tiny) for a randomly initialised LLM."
    )
    if folder is not None and not folder.is_dir():
        if not meta:
            require_path(cfg.llama_model, "llama_model", folder=True, hint=hint)
        log.debug("model.llama_model %s not found: the meta build uses a preset", folder)
        folder = None

    tok_path = resolve_path(cfg.tokenizer)
    if tok_path is not None:
        tok_path = require_path(cfg.tokenizer, "tokenizer", folder=True)
    elif folder is not None:
        tok_path = folder
    else:
        # A random LLM has no tokenizer of its own; any LLaMA-layout one will do.
        (log.debug if meta else log.warning)(
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
        if quantize_4bit:
            log.info("loading the LLM from %s in 4-bit NF4 (QLoRA)", folder)
            llm = LlamaForCausalLM.from_pretrained(
                str(folder),
                dtype=dtype,
                local_files_only=True,
                **quantized_load_kwargs(lora, compute_dtype=dtype),
            )
        else:
            llm = load_pretrained_llm(folder, dtype, low_resource, int(cfg.device_8bit))
        source, pretrained = str(folder), True
    else:
        if low_resource and not meta:
            raise ConfigError("model.low_resource=true needs a pretrained model.llama_model")
        if quantize_4bit and not meta:
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
    if lora is not None:
        llm = apply_lora(llm, lora, "model.lora")
        source += f" + LoRA r={lora.r} on {', '.join(lora.target_modules)}"
    return LLMParts(tokenizer, llm, source, pretrained)


class EndSymStopping(StoppingCriteria):
    """Per-sequence stop once the generated text contains ``end_sym``.

    Works on text, not on fixed ids: the same string tokenizes differently by
    context (``###`` may be one piece or ``##`` + ``#``), so the tail of each
    sequence is decoded through the tokenizer and searched. The tail is just
    long enough to hold ``end_sym`` even at one byte per token.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, end_sym: str) -> None:
        if not end_sym:
            raise ValueError("end_sym must be a non-empty string")
        self.tokenizer = tokenizer
        self.end_sym = end_sym
        self.window = len(end_sym.encode("utf-8")) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [self.end_sym in text for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_answer(text: str, end_sym: str) -> str:
    """The answer part of generated text: before ``end_sym``, stripped."""
    return text.split(end_sym, 1)[0].strip()
