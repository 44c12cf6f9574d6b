"""Conversation templates: how a chat turns into the LLM's prompt text.

Templates live in one registry, written once; :func:`get_conv_template`
hands out a fresh copy, so callers can append messages freely.

The ``xraygpt`` template (docs/recipe.md §4) renders as::

    {system}###Patient: <Img><ImageHere></Img> question###Doctor: answer###Patient: ...###Doctor:

i.e. ``system + sep``, then ``Role: message + sep`` for each finished turn, and
``Role:`` for the open turn (message ``None``) the model is to complete.

A template with a second separator ``sep2`` ends the assistant's turns with it
instead (FastChat's ``vicuna_v1.1``: ``sep=" "``, ``sep2="</s>"``)::

    {system} USER: question ASSISTANT: answer</s>USER: ...
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from xraygpt.common.constants import IMAGE_END, IMAGE_PLACEHOLDER, IMAGE_START, STOP_STR

IMAGE_MESSAGE = f"{IMAGE_START}{IMAGE_PLACEHOLDER}{IMAGE_END}"


@dataclass
class Conversation:
    """A conversation: the system text, two roles and the turns so far."""

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    messages: list[list[str | None]] = field(default_factory=list)
    sep2: str | None = None  # ends the assistant's turns when set (else sep does)

    def append_message(self, role: str, message: str | None) -> None:
        if role not in self.roles:
            raise ValueError(f"role {role!r} is not one of this conversation's roles {self.roles}")
        self.messages.append([role, message])

    def end_of(self, role: str) -> str:
        """The separator that closes a finished turn of ``role``."""
        if role == self.roles[1] and self.sep2 is not None:
            return self.sep2
        return self.sep

    def get_prompt(self) -> str:
        return "".join(text for text, _ in self.segments())

    def segments(self) -> list[tuple[str, bool]]:
        """The prompt as ``(text, is_answer)`` pieces whose concatenation is :meth:`get_prompt`.

        An answer piece is what the model is to write after ``Role:`` — a space,
        the message and the separator that ends it (the stop string) — so
        training can put the loss on exactly these pieces.
        """
        pieces: list[tuple[str, bool]] = []
        context = self.system + self.sep
        for role, message in self.messages:
            if message is None:
                context += f"{role}:"
            elif role == self.roles[1]:
                pieces.append((context + f"{role}:", False))
                pieces.append((f" {message}{self.end_of(role)}", True))
                context = ""
            else:  # an empty question is still a finished turn
                context += f"{role}: {message}{self.end_of(role)}"
        if context:
            pieces.append((context, False))
        return pieces

    def copy(self) -> Conversation:
        return copy.deepcopy(self)

    def turns(self) -> list[tuple[str | None, str | None]]:
        """``(user message, assistant message)`` pairs, e.g. for a chat widget."""
        pairs: list[tuple[str | None, str | None]] = []
        for role, message in self.messages:
            if role == self.roles[0]:
                pairs.append((message, None))
            elif pairs and pairs[-1][1] is None:
                pairs[-1] = (pairs[-1][0], message)
            else:
                pairs.append((None, message))
        return pairs


_TEMPLATES: dict[str, Conversation] = {}


def register_conv_template(template: Conversation) -> None:
    if template.name in _TEMPLATES:
        raise KeyError(f"conversation template {template.name!r} is already registered")
    _TEMPLATES[template.name] = template


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the named template."""
    if name not in _TEMPLATES:
        raise KeyError(
            f"unknown conversation template {name!r}; registered: {', '.join(sorted(_TEMPLATES))}"
        )
    return _TEMPLATES[name].copy()


def conv_template_names() -> list[str]:
    return sorted(_TEMPLATES)


register_conv_template(
    Conversation(
        name="xraygpt",
        system=(
            "You are an experienced Doctor, give the following medical scan: "
            "<Img>ImageContent</Img>. You will be able to see the medical scan once I "
            "provide it to you. Please answer my questions."
        ),
        roles=("Patient", "Doctor"),
        sep=STOP_STR,
    )
)

# FastChat's Vicuna v1.1 template, which Vicuna 7B/13B v1.1+ were fine-tuned with.
register_conv_template(
    Conversation(
        name="vicuna_v1.1",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
    )
)
