"""Checkpoint key converters: original (LAVIS / MiniGPT-4) names -> this model's names.

Pure functions over state dicts (or just key lists), so a set-up checker can
validate a checkpoint's keys without building the model.

LAVIS BLIP-2 Q-Former -> transformers ``Blip2QFormerModel`` (docs/recipe.md §2):
strip ``Qformer.bert.``; ``embeddings.LayerNorm`` -> ``layernorm``;
``.attention.self.`` -> ``.attention.attention.``; ``.crossattention.self.``
-> ``.crossattention.attention.``; the text-side modules that MiniGPT-4 deletes
(word / position embeddings, the text FFN ``layer.N.intermediate`` /
``layer.N.output``, the LM head ``cls``) are dropped. ``query_tokens`` and
``ln_vision.*`` keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

LAVIS_QFORMER_PREFIX = "Qformer.bert."
QFORMER_PREFIX = "Qformer."  # the model's attribute
VIT_PREFIX = "visual_encoder."
# Kept by name from a BLIP-2 checkpoint besides the Q-Former itself.
BLIP2_SHARED_KEYS = ("query_tokens", "ln_vision.weight", "ln_vision.bias")

_DROPPED_LAVIS = re.compile(
    r"^(embeddings\.(word_embeddings|position_embeddings|position_ids)"
    r"|encoder\.layer\.\d+\.(intermediate|output)\.)"
)


def qformer_key_from_lavis(key: str) -> str | None:
    """The ``Blip2QFormerModel`` name of a LAVIS key without ``Qformer.bert.``; None = dropped."""
    if _DROPPED_LAVIS.match(key):
        return None
    if key.startswith("embeddings.LayerNorm."):
        return "layernorm." + key[len("embeddings.LayerNorm.") :]
    if key.startswith("embeddings."):
        return None  # any other text-embedding buffer
    key = key.replace(".crossattention.self.", ".crossattention.attention.")
    return key.replace(".attention.self.", ".attention.attention.")


def qformer_key_to_lavis(key: str) -> str:
    """Inverse of :func:`qformer_key_from_lavis` (HF name -> LAVIS name without the prefix)."""
    if key.startswith("layernorm."):
        return "embeddings.LayerNorm." + key[len("layernorm.") :]
    key = key.replace(".crossattention.attention.", ".crossattention.self.")
    return key.replace(".attention.attention.", ".attention.self.")


def model_key_from_original(key: str) -> str | None:
    """A MiniGPT-4/BLIP-2 model-level key in this model's names (None = dropped).

    ``Qformer.bert.*`` goes through the Q-Former mapping; ``Qformer.cls.*`` is
    dropped; every other key (``visual_encoder.*``, ``ln_vision.*``,
    ``query_tokens``, ``llama_proj.*``, ``llama_model.*``) is unchanged.
    """
    if key.startswith(LAVIS_QFORMER_PREFIX):
        inner = qformer_key_from_lavis(key[len(LAVIS_QFORMER_PREFIX) :])
        return None if inner is None else QFORMER_PREFIX + inner
    if key.startswith("Qformer.cls."):
        return None
    return key


@dataclass
class Converted:
    """The result of a conversion: tensors to load, and what was left out and why."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # not used by MiniGPT-4, by design
    unused: list[str] = field(default_factory=list)  # not recognised; worth a look


def convert_blip2_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    """A LAVIS BLIP-2 state dict (``ckpt["model"]``) -> ``Qformer.*``, ``query_tokens``, ``ln_vision.*``.

    Everything else in the file (``vision_proj``, ``text_proj``, ``itm_head``,
    ``temp``, ``t5_proj``, ``visual_encoder.*``) lands in ``unused``.
    """
    out = Converted()
    for key, value in state_dict.items():
        if key.startswith(LAVIS_QFORMER_PREFIX) or key.startswith("Qformer.cls."):
            new = model_key_from_original(key)
            if new is None:
                out.dropped.append(key)
            else:
                out.tensors[new] = value
        elif key in BLIP2_SHARED_KEYS:
            out.tensors[key] = value
        else:
            out.unused.append(key)
    return out


def blip2_checkpoint_from_model(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse: this model's ``Qformer.*``/``query_tokens``/``ln_vision.*`` in LAVIS names.

    Used by tests (a LAVIS-named checkpoint built from a model) and handy for
    exporting a Q-Former back to LAVIS.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model_state.items():
        if key.startswith(QFORMER_PREFIX):
            out[LAVIS_QFORMER_PREFIX + qformer_key_to_lavis(key[len(QFORMER_PREFIX) :])] = value
        elif key in BLIP2_SHARED_KEYS:
            out[key] = value
    return out


def strip_vit_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ``eva_vit_g.pth``-style dict with or without ``visual_encoder.``, as encoder keys.

    A dict that mixes prefixed and bare keys is ambiguous and rejected.
    """
    keys = list(state_dict)
    prefixed = [k for k in keys if k.startswith(VIT_PREFIX)]
    if prefixed and len(prefixed) != len(keys):
        others = [k for k in keys if not k.startswith(VIT_PREFIX)]
        raise ValueError(
            f"vision encoder state dict mixes '{VIT_PREFIX}' keys with {len(others)} other "
            f"key(s) (e.g. {others[:3]}); give the encoder's keys only"
        )
    if prefixed:
        return {k[len(VIT_PREFIX) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def unwrap_checkpoint(obj: object, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: ``obj["model"]`` if present, else ``obj``."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:3]
        raise ValueError(f"{path}: entries {bad} are not tensors; is this a model checkpoint?")
    return tensors


def group_counts(keys: Iterable[str]) -> dict[str, int]:
    """How many keys fall under each top-level module name (for log lines)."""
    counts: dict[str, int] = {}
    for key in keys:
        head = key.split(".", 1)[0]
        counts[head] = counts.get(head, 0) + 1
    return counts
