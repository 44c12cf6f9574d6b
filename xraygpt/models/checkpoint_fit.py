"""What a checkpoint fits: pure functions over key names and shapes, and the strict copy
of a checkpoint into a model's trainable parameters that applies them
(:func:`load_trainable_state_dict`, used by training's resume, the held-out loss and
the LLM export).

The model applies the result when it loads weights (:mod:`xraygpt.models.mini_gpt4_loading`
raises on a misfit) and the set-up validator prints it without loading anything
(``xraygpt.validate.weight_checks``): one implementation, two readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xraygpt.models.convert as convert
from xraygpt.common.errors import CheckpointError
from xraygpt.models.llm import llama_size

if TYPE_CHECKING:
    import torch
    from torch import nn

Shapes = Mapping[str, tuple[int, ...]]


def shapes_of(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a state dict (tensors, or anything with a ``shape``)."""
    return {k: tuple(v.shape) for k, v in state.items()}


def _listed(keys: tuple[str, ...], limit: int) -> str:
    return ", ".join(keys[:limit]) + (" ..." if len(keys) > limit else "")


@dataclass(frozen=True)
class Fit:
    """How a checkpoint's tensors meet a model's: what loads, what is dropped by design,
    what is unused, and what does not fit (missing, unexpected, another shape)."""

    loads: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    dropped: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit: int = 5) -> list[str]:
        """One line per kind of misfit; [] when the checkpoint fits."""
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing key(s): {_listed(self.missing, limit)}")
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} unexpected key(s): {_listed(self.unexpected, limit)}"
            )
        shown = self.mismatched[: 2 * limit]
        lines += [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in shown]
        if len(self.mismatched) > len(shown):
            lines.append(f"... and {len(self.mismatched) - len(shown)} more shape mismatches")
        return lines


def fit_state(
    got: Shapes,
    expected: Shapes,
    *,
    subset: bool = False,
    dropped: Iterable[str] = (),
    unused: Iterable[str] = (),
) -> Fit:
    """How checkpoint shapes ``got`` fit the model's ``expected``.

    ``subset``: the checkpoint may hold fewer keys than the model (a MiniGPT-4
    ``ckpt`` holds only the trained ones). ``dropped`` / ``unused``: keys the
    conversion set aside, reported but no misfit.
    """
    common = sorted(set(got) & set(expected))
    return Fit(
        loads=tuple(k for k in common if tuple(got[k]) == tuple(expected[k])),
        missing=() if subset else tuple(sorted(set(expected) - set(got))),
        unexpected=tuple(sorted(set(got) - set(expected))),
        mismatched=tuple(
            (k, tuple(got[k]), tuple(expected[k]))
            for k in common
            if tuple(got[k]) != tuple(expected[k])
        ),
        dropped=tuple(dropped),
        unused=tuple(unused),
    )


def blip2_targets(model_shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """The model keys a BLIP-2 checkpoint fills: the Q-Former, ``query_tokens``, ``ln_vision``."""
    return {
        k: v
        for k, v in model_shapes.items()
        if k.startswith(convert.QFORMER_PREFIX) or k in convert.BLIP2_SHARED_KEYS
    }


def model_ckpt_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """A MiniGPT-4 / XrayGPT checkpoint's entries under this project's model keys."""
    mapped = {}
    for key, value in state.items():
        new = convert.model_key_from_original(key)
        if new is not None:
            mapped[new] = value
    return mapped


def llama_proj_problems(
    got: Sequence[int], hidden: int, width: int, llm: str = "the LLM"
) -> list[str]:
    """Why a checkpoint's ``llama_proj.weight`` of shape ``got`` does not project
    ``width``-wide Q-Former tokens into an LLM of ``hidden`` size (``llm`` names it);
    [] when it fits.

    The LLM's size comes first and on its own: a checkpoint made for another LLM size
    (13B against 7B) is the usual mistake, and the projection's output names that size.
    """
    got = tuple(got)
    problems = []
    if got[0] != hidden:
        problems.append(
            f"llama_proj maps {got[-1]} -> {got[0]} (weight {list(got)}), made for an LLM "
            f"with {llama_size(got[0])}, but {llm} has {llama_size(hidden)}"
        )
    if len(got) != 2 or got[-1] != width:
        problems.append(
            f"llama_proj.weight {list(got)} takes {got[-1]}-wide tokens, but the Q-Former "
            f"gives {width}-wide ones"
        )
    return problems


def load_trainable_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str
) -> None:
    """Copy a checkpoint's ``model`` entry into the trainable parameters, strictly.

    The checkpoint must hold exactly the trainable parameters, with their
    shapes; any difference raises an error naming ``source`` and the keys.
    """
    import torch

    params = dict(model.named_parameters())
    trainable = {name: tuple(p.shape) for name, p in params.items() if p.requires_grad}
    fit = fit_state(shapes_of(state), trainable)
    if fit.missing or fit.unexpected:
        raise CheckpointError(
            f"{source}: its 'model' entry does not match the trainable parameters of the "
            f"model; missing: {list(fit.missing) or 'none'}; not trainable here: "
            f"{list(fit.unexpected) or 'none'}. "
            f"Was it written with other freeze_* settings or another model?"
        )
    if fit.mismatched:
        bad = [f"{name} {got} vs {want}" for name, got, want in fit.mismatched]
        raise CheckpointError(f"{source}: shape mismatch (checkpoint vs model): {'; '.join(bad)}")
    with torch.no_grad():
        for name in trainable:
            params[name].copy_(state[name])
