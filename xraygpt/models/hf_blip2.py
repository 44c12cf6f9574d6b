"""``mini_gpt4`` <-> transformers' ``Blip2ForConditionalGeneration``: names, tensors, config.

The network is the same one (docs: README, "The model in plain transformers"):

====================================  ===============================================
this model                            ``Blip2ForConditionalGeneration``
====================================  ===============================================
``visual_encoder.cls_token``          ``vision_model.embeddings.class_embedding``
``visual_encoder.pos_embed``          ``vision_model.embeddings.position_embedding``
``visual_encoder.patch_embed.proj.*`` ``vision_model.embeddings.patch_embedding.*``
``visual_encoder.blocks.N.norm1/2.*`` ``vision_model.encoder.layers.N.layer_norm1/2.*``
``...blocks.N.attn.qkv.weight``       ``...layers.N.self_attn.qkv.weight``
``...attn.q_bias``, ``...attn.v_bias`` ``...self_attn.qkv.bias`` = [q_bias, 0, v_bias]
``...blocks.N.attn.proj.*``           ``...layers.N.self_attn.projection.*``
``...blocks.N.mlp.fc1/fc2.*``         ``...layers.N.mlp.fc1/fc2.*``
``ln_vision.*``                       ``vision_model.post_layernorm.*``
``query_tokens``                      ``query_tokens``
``Qformer.*``                         ``qformer.*``
``llama_proj.*``                      ``language_projection.*``
``llama_model.*``                     ``language_model.*``
====================================  ===============================================

One inexactness: transformers applies the vision config's single
``layer_norm_eps`` (1e-6, the blocks') to ``post_layernorm`` as well, while
``ln_vision`` uses 1e-5, so image embeddings differ slightly (tiny-model
tests bound the difference).

The exported LLM has one more vocabulary row than the model when the image
token needs a new id: the image token's rows are zero (its input embedding is
replaced by the image, and ``generation_config.json`` suppresses it as an
output). Importing drops those rows again, so export -> import -> export gives
the same tensors.

Both directions work on *plans* (target name -> how to compute it from source
tensors), so the exporter can compute and write one tensor at a time.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xraygpt.common.constants import EXPORT_INFO
from xraygpt.common.errors import CheckpointError, MissingFileError

IMAGE_TOKEN = "<image>"  # transformers' BLIP-2 image token
# Vision encoders that are timm Eva models, i.e. that Blip2VisionModel reproduces.
EXPORTABLE_ENCODERS = ("eva_clip_g", "tiny")
# The project's files inside an exported folder (transformers ignores them).
CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# The vision encoder's names, (this model, transformers): one table read both ways.
# ``{i}`` is a block index, ``{p}`` weight or bias, ``{fc}`` one of the MLP's layers.
_VISION_NAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
    ("blocks.{i}.norm1.{p}", "encoder.layers.{i}.layer_norm1.{p}"),
    ("blocks.{i}.norm2.{p}", "encoder.layers.{i}.layer_norm2.{p}"),
    ("blocks.{i}.attn.qkv.weight", "encoder.layers.{i}.self_attn.qkv.weight"),
    ("blocks.{i}.attn.proj.{p}", "encoder.layers.{i}.self_attn.projection.{p}"),
    ("blocks.{i}.mlp.{fc}.{p}", "encoder.layers.{i}.mlp.{fc}.{p}"),
)
_NAME_FIELDS = {"i": r"\d+", "p": "weight|bias", "fc": "fc1|fc2"}


def _name_pattern(template: str) -> re.Pattern[str]:
    """``template`` as a regex whose named groups are its ``{field}`` placeholders."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, ...
    return re.compile(
        "".join(
            re.escape(part) if index % 2 == 0 else f"(?P<{part}>{_NAME_FIELDS[part]})"
            for index, part in enumerate(parts)
        )
    )


_VISION_RULES = tuple((_name_pattern(ours), theirs) for ours, theirs in _VISION_NAMES)
_VISION_RULES_BACK = tuple((_name_pattern(theirs), ours) for ours, theirs in _VISION_NAMES)


def _renamed(name: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    """``name`` under the first rule whose pattern it matches whole; None if none does."""
    for pattern, template in rules:
        match = pattern.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None


_PREFIXES = (  # (this model, transformers) for the modules whose inner names agree
    ("Qformer.", "qformer."),
    ("llama_proj.", "language_projection."),
    ("llama_model.", "language_model."),
    ("ln_vision.", "vision_model.post_layernorm."),
)
_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias$")
_QKV_BIAS = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$")
_EMBED_ROWS = ("model.embed_tokens.weight", "lm_head.weight")  # inside the LLM

Getter = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class Entry:
    """One target tensor: ``combine`` applied to the ``sources`` tensors."""

    target: str
    sources: tuple[str, ...]
    combine: str = "copy"  # copy | qkv_bias | q_of_qkv | v_of_qkv | rows
    rows: int = 0  # for "rows": the target's number of rows

    def compute(self, get: Getter) -> torch.Tensor:
        tensors = [get(s) for s in self.sources]
        if self.combine == "copy":
            return tensors[0]
        if self.combine == "qkv_bias":
            q, v = tensors
            return torch.cat([q, torch.zeros_like(q), v])
        if self.combine in ("q_of_qkv", "v_of_qkv"):
            q, k, v = tensors[0].chunk(3)
            if torch.count_nonzero(k):
                raise CheckpointError(
                    f"{self.sources[0]} has a non-zero key bias, which timm's Eva cannot hold "
                    f"(its k_bias is a zero buffer)"
                )
            return q if self.combine == "q_of_qkv" else v
        if self.combine == "rows":
            (full,) = tensors
            if full.shape[0] >= self.rows:
                return full[: self.rows]
            out = full.new_zeros((self.rows, *full.shape[1:]))
            out[: full.shape[0]] = full
            return out
        raise ValueError(f"unknown combine {self.combine!r}")


def hf_name(key: str) -> str:
    """The transformers name of one of this model's keys (not ``q_bias``/``v_bias``)."""
    if key == "query_tokens":
        return key
    if key.startswith("visual_encoder."):
        inner = _renamed(key[len("visual_encoder.") :], _VISION_RULES)
        if inner is not None:
            return "vision_model." + inner
    for ours, theirs in _PREFIXES:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise CheckpointError(
        f"{key}: no Blip2ForConditionalGeneration counterpart (is the vision encoder one of "
        f"{', '.join(EXPORTABLE_ENCODERS)}?)"
    )


def model_name(key: str) -> str:
    """The inverse of :func:`hf_name` (not ``qkv.bias``)."""
    if key == "query_tokens":
        return key
    for ours, theirs in _PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    if key.startswith("vision_model."):
        inner = _renamed(key[len("vision_model.") :], _VISION_RULES_BACK)
        if inner is not None:
            return "visual_encoder." + inner
    raise CheckpointError(f"{key}: not a Blip2ForConditionalGeneration weight this project knows")


def to_hf_plan(keys: Iterable[str], *, vocab_rows: int | None = None) -> list[Entry]:
    """How to compute every ``Blip2ForConditionalGeneration`` tensor from this model's keys.

    ``vocab_rows``: the exported vocabulary size when it exceeds the model's
    (the image token's new rows are zero).
    """
    keys = list(keys)
    plan: list[Entry] = []
    for key in keys:
        qv = _QV_BIAS.match(key)
        if qv:
            if qv.group(2) == "q":
                v_key = key[: -len("q_bias")] + "v_bias"
                if v_key not in keys:
                    raise CheckpointError(f"{key} has no matching {v_key}")
                target = f"vision_model.encoder.layers.{qv.group(1)}.self_attn.qkv.bias"
                plan.append(Entry(target, (key, v_key), "qkv_bias"))
            continue
        target = hf_name(key)
        if vocab_rows is not None and key.removeprefix("llama_model.") in _EMBED_ROWS:
            plan.append(Entry(target, (key,), "rows", vocab_rows))
        else:
            plan.append(Entry(target, (key,)))
    return plan


def from_hf_plan(keys: Iterable[str], *, vocab_rows: int | None = None) -> list[Entry]:
    """The inverse: this model's tensors from a folder's keys (``vocab_rows``: the model's)."""
    plan: list[Entry] = []
    for key in keys:
        qkv = _QKV_BIAS.match(key)
        if qkv:
            base = f"visual_encoder.blocks.{qkv.group(1)}.attn."
            plan.append(Entry(base + "q_bias", (key,), "q_of_qkv"))
            plan.append(Entry(base + "v_bias", (key,), "v_of_qkv"))
            continue
        target = model_name(key)
        if vocab_rows is not None and target.removeprefix("llama_model.") in _EMBED_ROWS:
            plan.append(Entry(target, (key,), "rows", vocab_rows))
        else:
            plan.append(Entry(target, (key,)))
    return plan


# ------------------------------------------------------------------ the LLM, LoRA merged


def _lora_layers(module: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA-style layers (a ``base_layer`` and ``get_delta_weight``) by name."""
    return {
        name: sub
        for name, sub in module.named_modules()
        if hasattr(sub, "base_layer") and callable(getattr(sub, "get_delta_weight", None))
    }


def plain_llm_tensors(llm: nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """The LLM's tensors under plain ``LlamaForCausalLM`` names, each computed on demand.

    A peft model (``peft_config``; ``get_base_model()``) is read with its active
    adapters merged tensor by tensor, ``W + delta``: the same weights as
    ``merge_and_unload`` gives, without a second copy of the model. Adapter
    tensors (``lora_*``) are left out; ``modules_to_save`` copies replace their
    originals.
    """
    if not hasattr(llm, "peft_config"):
        state = llm.state_dict()
        return {k: (lambda v=v: v) for k, v in state.items()}
    inner = llm.get_base_model()
    layers = _lora_layers(inner)
    out: dict[str, Callable[[], torch.Tensor]] = {}
    for key, value in inner.state_dict().items():
        parts = key.split(".")
        if any(p.startswith("lora_") for p in parts) or "original_module" in parts:
            continue
        if "modules_to_save" in parts:
            i = parts.index("modules_to_save")
            wrapper = inner.get_submodule(".".join(parts[:i]))
            if parts[i + 1] != wrapper.active_adapter:
                continue
            parts = parts[:i] + parts[i + 2 :]
        if "base_layer" in parts:
            i = parts.index("base_layer")
            owner = ".".join(parts[:i])
            layer = layers.get(owner)
            parts = parts[:i] + parts[i + 1 :]
            if layer is not None and parts[-1] == "weight" and not layer.merged:
                out[".".join(parts)] = lambda layer=layer, v=value: _merged_weight(layer, v)
                continue
        out[".".join(parts)] = lambda v=value: v
    return out


def _merged_weight(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    merged = weight.float()
    adapters = layer.active_adapters
    for name in [adapters] if isinstance(adapters, str) else adapters:
        if name in getattr(layer, "lora_A", {}) or name in getattr(layer, "lora_embedding_A", {}):
            merged = merged + layer.get_delta_weight(name).float()
    return merged.to(weight.dtype)


def llm_config(llm: nn.Module) -> Any:
    """The ``LlamaConfig`` of the LLM, also under a peft wrapper."""
    base = llm.get_base_model() if hasattr(llm, "peft_config") else llm
    return base.config


def model_tensors(model: nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """Every tensor of a ``mini_gpt4`` model by its plain name, each computed on demand."""
    out: dict[str, Callable[[], torch.Tensor]] = {}
    for name, child in model.named_children():
        if name == "llama_model":
            for key, get in plain_llm_tensors(child).items():
                out[f"llama_model.{key}"] = get
        else:
            for key, value in child.state_dict().items():
                out[f"{name}.{key}"] = lambda v=value: v
    for name, param in model.named_parameters(recurse=False):
        out[name] = lambda v=param: v.detach()
    return out


# ------------------------------------------------------------------ configs


def vision_config_dict(encoder: nn.Module, image_size: int) -> dict[str, Any]:
    """``Blip2VisionConfig`` fields of a timm Eva encoder."""
    block = encoder.blocks[0]
    return {
        "hidden_size": int(encoder.embed_dim),
        "intermediate_size": int(block.mlp.fc1.out_features),
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": int(block.attn.num_heads),
        "image_size": int(image_size),
        "patch_size": int(encoder.patch_embed.patch_size[0]),
        "hidden_act": "gelu",
        "layer_norm_eps": float(block.norm1.eps),
        "qkv_bias": True,
        "attention_dropout": 0.0,
    }


def is_exported_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``xraygpt export hf``."""
    return path.is_dir() and (path / EXPORT_INFO).is_file() and (path / CONFIG_FILE).is_file()


@contextlib.contextmanager
def open_shard(folder: Path, file: str) -> Iterator[Any]:
    """A safetensors shard of an exported folder, open; a missing, truncated or damaged
    shard is one :class:`CheckpointError` naming it and what to do."""
    from safetensors import SafetensorError, safe_open

    path = folder / file
    fix = f"export the model again (xraygpt export hf ... --out {folder} --overwrite)"
    if not path.is_file():
        raise MissingFileError(f"{folder}: the shard {file} is missing: {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: the shard cannot be read ({err}); {fix}") from err


def folder_weight_files(folder: Path) -> dict[str, list[str]]:
    """Shard file -> its tensor names, from the index (or the single file)."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map: Mapping[str, str] = json.loads(index.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for key, file in weight_map.items():
            files.setdefault(file, []).append(key)
        return files
    single = folder / SINGLE_FILE
    if not single.is_file():
        raise MissingFileError(f"{folder}: neither {INDEX_FILE} nor {SINGLE_FILE} found")
    with open_shard(folder, SINGLE_FILE) as handle:
        return {SINGLE_FILE: list(handle.keys())}


def iter_folder_state(folder: Path, model_vocab: int) -> Iterator[dict[str, torch.Tensor]]:
    """An exported folder's weights in this model's names, one shard at a time.

    ``model_vocab``: the model's vocabulary size; the folder may hold more rows
    only where ``image_token_index`` needed a new id (those rows are dropped).
    """
    config = json.loads((folder / CONFIG_FILE).read_text())
    text_vocab = int(config["text_config"]["vocab_size"])
    image_id = int(config.get("image_token_index", -1))
    if text_vocab != max(model_vocab, image_id + 1):
        raise CheckpointError(
            f"{folder}: the LLM vocabulary ({text_vocab} rows, image token {image_id}) does not "
            f"fit this model's {model_vocab} tokens: the folder was exported from a model with "
            f"another tokenizer"
        )
    for file, keys in folder_weight_files(folder).items():
        with open_shard(folder, file) as handle:
            plan = from_hf_plan(keys, vocab_rows=model_vocab)
            yield {entry.target: entry.compute(handle.get_tensor) for entry in plan}


def blip2_config(model: nn.Module, image_token_index: int, vocab_rows: int) -> Any:
    """The ``Blip2Config`` of a ``mini_gpt4`` model with a timm Eva encoder."""
    from transformers import Blip2Config

    vit = model.visual_encoder
    text = llm_config(model.llama_model).to_dict()
    text["vocab_size"] = int(vocab_rows)
    qformer = model.Qformer.config.to_dict()
    for key in ("transformers_version", "architectures", "dtype"):  # the top config's business
        text.pop(key, None)
        qformer.pop(key, None)
    return Blip2Config(
        vision_config=vision_config_dict(vit, int(model.cfg.image_size)),
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=int(model.query_tokens.shape[1]),
        image_token_index=int(image_token_index),
    )
