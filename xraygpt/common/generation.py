"""How text is generated: one options type for evaluation, chat, the demo and the run config.

``MiniGPT4.generate`` / ``generate_from_embeds`` take these fields as keyword
arguments; ``test.py`` reads them from the ``run.*`` keys (sampling off, so a report
does not depend on the batch); the chat and the demo start from
:data:`CHAT_GENERATION`, the original demo's settings (``docs/recipe.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class GenerationOptions:
    """Generation options. ``temperature`` and ``top_p`` apply when ``do_sample``,
    ``length_penalty`` with ``num_beams > 1``."""

    num_beams: int = 1
    max_new_tokens: int = 160
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    min_new_tokens: int = 1
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.min_new_tokens < 0:
            raise ValueError(
                "num_beams and max_new_tokens must be >= 1 and min_new_tokens >= 0, "
                f"got {self.num_beams}, {self.max_new_tokens}, {self.min_new_tokens}"
            )

    @classmethod
    def from_run_config(cls, run_cfg: Any) -> GenerationOptions:
        """The ``run.*`` generation keys of an eval config; sampling off."""
        return cls(
            num_beams=int(run_cfg.num_beams),
            max_new_tokens=int(run_cfg.max_new_tokens),
            min_new_tokens=int(run_cfg.min_new_tokens),
            repetition_penalty=float(run_cfg.repetition_penalty),
            length_penalty=float(run_cfg.length_penalty),
        )

    def updated(self, **changes: Any) -> GenerationOptions:
        """A copy with ``changes``; an unknown name is a TypeError listing the known ones."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise TypeError(f"unknown generation option(s) {unknown}; known: {sorted(FIELDS)}")
        return replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(GenerationOptions.__dataclass_fields__)

# The original demo's settings: sampling, up to 300 new tokens.
CHAT_GENERATION = GenerationOptions(max_new_tokens=300, do_sample=True)
