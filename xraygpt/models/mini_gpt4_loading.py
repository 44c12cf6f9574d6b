"""Loading mini_gpt4's weights: the files its config names, each checked before it loads.

``vit_ckpt`` (EVA-ViT-g), ``q_former_model`` (a LAVIS BLIP-2 checkpoint) and each
``ckpt`` (MiniGPT-4 / XrayGPT checkpoints, or a folder of ``xraygpt export
hf``), in that order (docs/recipe.md §2). Every key and shape is compared first
(:mod:`xraygpt.models.checkpoint_fit`): a misfit is a :class:`CheckpointError` naming
the file, never a silent partial load.

The functions take the model (a :class:`~xraygpt.models.mini_gpt4.MiniGPT4`), whose
methods of the same names call them. :func:`frozen_random_parts` is the rule the
set-up validator applies too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import xraygpt.models.convert as convert
import xraygpt.models.hf_blip2 as hf_blip2
from xraygpt.common.config import ConfigError, require_path, resolve_path
from xraygpt.common.constants import EXPORT_INFO
from xraygpt.common.errors import CheckpointError, MissingFileError
from xraygpt.common.io import load_checkpoint
from xraygpt.models.checkpoint_fit import (
    blip2_targets,
    fit_state,
    llama_proj_problems,
    model_ckpt_keys,
    shapes_of,
)

log = logging.getLogger(__name__)

# Each part of the model: the freeze flag that keeps it as loaded, and the config key
# of the file that fills it besides model.ckpt ("" = only model.ckpt does).
PART_SOURCES: dict[str, tuple[str, str]] = {
    "visual_encoder": ("freeze_vit", "vit_ckpt"),
    "ln_vision": ("freeze_vit", "q_former_model"),
    "Qformer": ("freeze_qformer", "q_former_model"),
    "query_tokens": ("freeze_qformer", "q_former_model"),
    "llama_proj": ("", ""),
    "llama_model": ("freeze_llm", "llama_model"),
}
IMAGE_PARTS = ("visual_encoder", "ln_vision", "Qformer", "query_tokens")


def frozen_random_parts(cfg: Any, filled: Iterable[str], *, images: bool = True) -> list[str]:
    """The parts that stay frozen yet no file fills: training cannot fix their random weights.

    ``cfg``: the ``model:`` section; ``filled``: the parts the ``model.ckpt`` files fill;
    ``images``: False for a task that never runs the image side (then only the LLM counts).
    A model type in the model class's ``RANDOM_INIT_MODEL_TYPES`` has them by design.
    """
    filled = set(filled)
    return [
        part
        for part, (flag, key) in PART_SOURCES.items()
        if (images or part not in IMAGE_PARTS)
        and flag
        and cfg.get(flag)
        and not cfg.get(key)
        and part not in filled
    ]


def ckpt_paths(value: Any) -> list[str]:
    """``model.ckpt`` as a list: empty, one path, or a list of paths."""
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


def load_pretrained(model: nn.Module) -> None:
    """Load ``vit_ckpt``, ``q_former_model`` and each ``ckpt`` in order; report the result."""
    cfg = model.cfg
    got: dict[str, str] = {}
    if model.llm_pretrained:
        got["llama_model"] = model.llm_source
    if cfg.vit_ckpt:
        path = require_path(cfg.vit_ckpt, "vit_ckpt")
        load_vit_state(model, load_checkpoint(path, "model.vit_ckpt"), str(path))
        got["visual_encoder"] = str(path)
    if cfg.q_former_model:
        path = require_path(cfg.q_former_model, "q_former_model")
        load_blip2_state(model, load_checkpoint(path, "model.q_former_model"), str(path))
        got.update(Qformer=str(path), query_tokens=str(path), ln_vision=str(path))
    for item in ckpt_paths(cfg.ckpt):
        path = resolve_path(item)
        if path is not None and path.is_dir():  # a folder of xraygpt export hf
            modules = load_hf_folder(model, path)
        else:
            path = require_path(item, "ckpt")
            modules = load_ckpt_state(model, load_checkpoint(path, "model.ckpt"), str(path))
        for module in modules:
            got[module] = str(path)
    random_init = [name for name in PART_SOURCES if name not in got]
    if random_init:
        log.info("random init (no weights loaded): %s", ", ".join(random_init))
    frozen_random = frozen_random_parts(cfg, got)
    if frozen_random:
        by_design = cfg.model_type in model.RANDOM_INIT_MODEL_TYPES
        (log.info if by_design else log.warning)(
            "frozen but randomly initialised: %s; set the weight paths in the config "
            "(vit_ckpt, q_former_model, llama_model, ckpt) unless this is intended",
            ", ".join(frozen_random),
        )


def load_vit_state(model: nn.Module, obj: Any, source: str = "vision weights") -> None:
    """An ``eva_vit_g.pth``-style state dict into ``visual_encoder``: every key must fit."""
    state = convert.strip_vit_prefix(convert.unwrap_checkpoint(obj, source))
    adapt = getattr(model.visual_encoder, "adapt_state_dict", None)
    dropped: list[str] = []
    if adapt is not None:
        state, dropped = adapt(state)
    fit = fit_state(shapes_of(state), shapes_of(model.visual_encoder.state_dict()))
    if not fit.ok:
        raise CheckpointError(
            f"{source} does not fit vision encoder {model.cfg.vit_model!r}: "
            + "; ".join(fit.problems())
        )
    model.visual_encoder.load_state_dict(state, strict=True)
    log.info(
        "visual_encoder: loaded %d tensors from %s%s",
        len(state),
        source,
        f" ({len(dropped)} unused by BLIP-2 dropped: {_dotted(dropped, 3)})" if dropped else "",
    )


def load_blip2_state(model: nn.Module, obj: Any, source: str = "BLIP-2 checkpoint") -> None:
    """A LAVIS BLIP-2 checkpoint into ``Qformer``, ``query_tokens`` and ``ln_vision``."""
    converted = convert.convert_blip2_checkpoint(convert.unwrap_checkpoint(obj, source))
    fit = fit_state(
        shapes_of(converted.tensors),
        blip2_targets(shapes_of(model.state_dict())),
        dropped=converted.dropped,
        unused=converted.unused,
    )
    if not fit.ok:
        raise CheckpointError(
            f"{source} (model.q_former_model) does not fit the Q-Former (after the LAVIS "
            "-> HF key mapping): " + "; ".join(fit.problems())
        )
    # Only the Q-Former side is in the file; every one of its keys was checked above.
    model.load_state_dict(converted.tensors, strict=False)
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


def load_ckpt_state(model: nn.Module, obj: Any, source: str = "checkpoint") -> list[str]:
    """A MiniGPT-4/XrayGPT checkpoint (``{"model": {...}}``, a subset of the model's keys).

    Returns the top-level modules that received tensors. Keys the model does
    not have, and shapes that do not fit, are errors; a file that loads
    nothing is an error.
    """
    tensors = model_ckpt_keys(convert.unwrap_checkpoint(obj, source))
    if not tensors:
        raise CheckpointError(f"{source} (model.ckpt) holds no tensor of this model")
    own = model.state_dict()
    # A checkpoint holds the trained subset by design.
    load_fitting(model, tensors, own, source, "it was saved from a different model configuration")
    loaded = convert.group_counts(tensors)
    totals = convert.group_counts(own)
    log.info(
        "loaded %d tensors from %s: %s",
        len(tensors),
        source,
        ", ".join(f"{m} {n}/{totals[m]}" for m, n in loaded.items()),
    )
    return list(loaded)


def load_hf_folder(model: nn.Module, folder: Path) -> list[str]:
    """A folder written by ``xraygpt export hf`` (transformers' BLIP-2 layout).

    It holds the whole model, so every tensor of the model must be there
    (the names mapped back by :mod:`xraygpt.models.hf_blip2`); shapes must fit.
    """
    if not hf_blip2.is_exported_folder(folder):
        raise MissingFileError(
            f"model.ckpt: {folder} is a folder but not one written by "
            f"'xraygpt export hf' (no {EXPORT_INFO} and "
            f"{hf_blip2.CONFIG_FILE}); give a checkpoint file or an exported folder"
        )
    if hasattr(model.llama_model, "peft_config"):
        raise CheckpointError(
            f"model.ckpt: {folder} holds plain LLM weights (LoRA merged); load it before "
            f"wrapping the LLM with adapters"
        )
    vocab = int(model.llama_model.config.vocab_size)
    own = model.state_dict()
    seen: list[str] = []
    for tensors in hf_blip2.iter_folder_state(folder, vocab):  # one shard in memory at a time
        # One shard at a time: the missing keys are checked once all shards are read.
        load_fitting(model, tensors, own, str(folder), "it was exported from another configuration")
        seen += tensors
    missing = sorted(set(own) - set(seen))
    if missing:
        raise CheckpointError(
            f"model.ckpt: {folder} lacks {len(missing)} tensor(s) of this model "
            f"[{_dotted(missing)}]; it was exported from another configuration"
        )
    log.info("loaded %d tensors from the exported folder %s", len(seen), folder)
    return list(convert.group_counts(seen))


def load_fitting(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    source: str,
    origin: str,
) -> None:
    """Load ``tensors``, some of the model's (``own``: its state), once every name and shape fits.

    The errors name ``source`` (model.ckpt) and say where a misfit comes from
    (``origin``); the keys ``tensors`` lacks are the caller's to judge.
    """
    fit = fit_state(shapes_of(tensors), shapes_of(own), subset=True)
    if fit.unexpected:
        raise CheckpointError(
            f"{source} (model.ckpt) has {len(fit.unexpected)} tensor(s) this model does not "
            f"have: {_dotted(list(fit.unexpected))}; {origin}"
        )
    proj = tensors.get("llama_proj.weight")
    if proj is not None:
        hidden, width = own["llama_proj.weight"].shape
        problems = llama_proj_problems(proj.shape, hidden, width, "this model's LLM")
        if problems:
            raise CheckpointError(
                f"{source}: " + "; ".join(problems) + ". The checkpoint belongs to an LLM "
                "of another size (4096 = 7B, 5120 = 13B) or another Q-Former: use the "
                "matching model.llama_model / model.llama_preset"
            )
    if fit.mismatched:
        raise CheckpointError(
            f"{source}: shapes do not fit the model: " + "; ".join(fit.problems())
        )
    model.load_state_dict(tensors, strict=False)
