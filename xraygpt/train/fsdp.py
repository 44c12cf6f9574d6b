"""Full fine-tuning with FSDP2: sharded LLM layers, bf16 compute, sharded checkpoints.

``run.fsdp: true`` makes the runner shard the model instead of wrapping it in
DDP (FastChat's full-shard recipe, in PyTorch's FSDP2 API):

- each module whose class is named in ``run.fsdp_layer_classes`` (default
  ``LlamaDecoderLayer``) becomes one ``fully_shard`` unit, then the root; frozen
  parameters outside those units (XrayGPT's ViT and Q-Former) are left out of
  sharding and stay whole on every rank;
- ``run.fsdp_mixed_precision``: the layers' parameters are gathered in bf16
  for compute, gradients reduced in fp32, the optimizer steps on fp32 shards.
  The root (embeddings, output head, ``llama_proj``) computes in fp32: it meets
  the fp32 outputs of frozen encoders, and holds a small share of the FLOPs;
- ``run.fsdp_activation_checkpointing``: the decoder layers recompute their
  activations in backward (transformers' own non-reentrant checkpointing).

Checkpoints are ``torch.distributed.checkpoint`` folders: every rank writes
its shards of the trainable parameters and their AdamW state, rank 0 adds
``meta.pth`` (step, schedule, per-rank RNG, config). A folder is written under
a temporary name and renamed when complete, and ``checkpoint_last.json`` names
the newest, so a run killed at any moment resumes from the last complete step.
The shards are resharded on load, so a run may resume on another world size.

Runs under torchrun on CUDA (nccl) and on the CPU (gloo); even one process
needs torchrun (``--nproc-per-node 1``), since FSDP needs a process group.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from xraygpt.common import dist
from xraygpt.common.config import ConfigError
from xraygpt.common.errors import CheckpointError, MissingFileError
from xraygpt.common.io import atomic_torch_save, atomic_write_json, load_checkpoint
from xraygpt.train.checkpoint import find_latest_checkpoint, numbered_checkpoints

log = logging.getLogger(__name__)

LAST_NAME = "checkpoint_last.json"
META_NAME = "meta.pth"
_PARTIAL_PREFIX = ".partial_checkpoint_"
# Only trained tensors go in a checkpoint (frozen ones come from the model's own weights).
_TRAINABLE_ONLY = StateDictOptions(ignore_frozen_params=True, strict=False)


# ------------------------------------------------------------------ sharding


def shard_model(
    model: nn.Module,
    device: torch.device,
    layer_classes: list[str],
    *,
    mixed_precision: bool = True,
    activation_checkpointing: bool = True,
) -> nn.Module:
    """Shard ``model`` in place with ``fully_shard`` (one unit per layer, then the root)."""
    if not dist.is_dist():
        raise ConfigError(
            "run.fsdp=true needs torch.distributed: launch with torchrun, e.g. "
            "torchrun --nproc-per-node 2 train.py ... (also --nproc-per-node 1 for one process)"
        )
    quantized = [
        type(m).__name__
        for m in model.modules()
        if getattr(m, "is_loaded_in_4bit", False) or getattr(m, "is_loaded_in_8bit", False)
    ]
    if quantized:
        raise ConfigError(
            f"run.fsdp=true with a quantized LLM ({quantized[0]}: model.low_resource or "
            f"model.lora.quantize_4bit): FSDP shards full-precision weights only; train "
            f"QLoRA / 8-bit models with run.fsdp=false (DDP)"
        )
    units = [m for m in model.modules() if type(m).__name__ in set(layer_classes)]
    if not units:
        raise ConfigError(
            f"run.fsdp_layer_classes={layer_classes}: the model has no module of these "
            f"classes; its layer classes include {_layer_class_names(model)}"
        )
    # Every rank must start from the same weights (DDP does the same when it wraps):
    # a randomly initialised part differs between ranks seeded seed + rank.
    _broadcast_from_rank0(model)
    if activation_checkpointing:
        _enable_activation_checkpointing(model, units)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    in_units = {id(p) for unit in units for p in unit.parameters()}
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    frozen_rest = {p for p in model.parameters() if not p.requires_grad and id(p) not in in_units}
    root_policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    fully_shard(model, mesh=mesh, mp_policy=root_policy, ignored_params=frozen_rest or None)
    log.info(
        "FSDP2: %d %s unit(s) + root over %d rank(s), %s, activation checkpointing %s; "
        "%d frozen tensor(s) outside the units kept whole",
        len(units),
        "/".join(sorted({type(u).__name__ for u in units})),
        dist.get_world_size(),
        "bf16 params / fp32 reduce" if mixed_precision else "fp32",
        "on" if activation_checkpointing else "off",
        len(frozen_rest),
    )
    return model


def _layer_class_names(model: nn.Module) -> list[str]:
    names = {type(m).__name__ for m in model.modules()}
    return sorted(n for n in names if n.endswith(("Layer", "Block")))


def _broadcast_from_rank0(model: nn.Module) -> None:
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch_dist.broadcast(tensor.data, src=0)


def _enable_activation_checkpointing(model: nn.Module, units: list[nn.Module]) -> None:
    """transformers' checkpointing on every model that holds a unit (names stay unchanged)."""
    from transformers import PreTrainedModel

    unit_ids = {id(u) for u in units}
    covered = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            inside = {id(m) for m in module.modules()} & unit_ids
            if inside - covered:
                module.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
                covered |= inside
    if covered != unit_ids:
        raise ConfigError(
            "run.fsdp_activation_checkpointing=true: some FSDP units are not layers of a "
            "transformers model that supports gradient checkpointing; set it to false"
        )


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Skip the gradient reduce-scatter on all but the last micro-step of a window."""
    model.set_requires_gradient_sync(sync)


def full_norm(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s result as a float (a DTensor over sharded gradients)."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


# --------------------------------------------------------------- checkpoints


def checkpoint_folders(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``checkpoint_<step>/`` folder, oldest first."""
    return numbered_checkpoints(folder, suffix="", complete=is_sharded_checkpoint)


def find_latest(folder: str | Path) -> Path | None:
    """The newest sharded checkpoint in ``folder``: the one ``checkpoint_last.json`` names."""
    last = Path(folder) / LAST_NAME
    named = json.loads(last.read_text())["folder"] if last.is_file() else None
    return find_latest_checkpoint(folder, suffix="", complete=is_sharded_checkpoint, last=named)


def is_sharded_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / META_NAME).is_file()


def save_sharded(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    folder: str | Path,
    step: int,
    keep_last: int,
) -> Path:
    """Write ``checkpoint_<step>/`` collectively (every rank calls); returns its path."""
    folder = Path(folder)
    final = folder / f"checkpoint_{step}"
    partial = folder / f"{_PARTIAL_PREFIX}{step}"
    if dist.is_main_process():
        for stale in folder.glob(f"{_PARTIAL_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed write
    dist.barrier()
    model_state, optim_state = get_state_dict(model, optimizer, options=_TRAINABLE_ONLY)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(partial))
    if dist.is_main_process():
        atomic_torch_save(meta, partial / META_NAME)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        atomic_write_json({"folder": final.name, "step": step}, folder / LAST_NAME)
        if keep_last > 0:
            for _, old in checkpoint_folders(folder)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, path: str | Path
) -> dict[str, Any]:
    """Restore the trainable parameters (and optimizer) from ``path``; returns its meta.

    Works on any world size, and without a process group for an unsharded model.
    """
    path = Path(path)
    if not is_sharded_checkpoint(path):
        raise MissingFileError(
            f"{path} is not a sharded checkpoint folder (no {META_NAME}): name a "
            f"checkpoint_<step>/ folder that a run.fsdp run wrote"
        )
    if optimizer is None:
        state = {"model": _trainable_tensors(model)}
    else:
        model_state, optim_state = get_state_dict(model, optimizer, options=_TRAINABLE_ONLY)
        state = {"model": model_state, "optimizer": optim_state}
    try:
        dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_dist())
    except Exception as err:  # noqa: BLE001 - re-raised with the folder named
        raise CheckpointError(
            f"cannot load the sharded checkpoint {path} into this model: {err}. Was it written "
            f"with other model.freeze_* / model.lora settings or another model? Resume with "
            f"the settings it was written with"
        ) from err
    if optimizer is not None:
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=_TRAINABLE_ONLY,
        )
    return load_checkpoint(path / META_NAME, "sharded checkpoint meta")


def _trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.data for n, p in model.named_parameters() if p.requires_grad}
