"""``image_conversation``: a ``mini_gpt4`` learns multi-turn conversations about an image.

The tiny recipe's conversation stages (``train_configs/xraygpt_tiny_stage2.yaml``,
text only, and ``xraygpt_tiny_stage4.yaml``, with the image) train on the
``phantom_conversations`` dataset. A sample's conversation is rendered in the
``xraygpt`` template exactly as :class:`xraygpt.conversation.chat.Chat` renders
a chat (system text, ``###Patient: <Img><ImageHere></Img> question###Doctor: answer###...``)
and tokenised as ``Chat`` tokenises it: the text before the image and the text
after it, each in one piece, so the model meets in training the very token
sequence the demo will give it. The image's embeddings go in the slot (an empty
slot for text-only samples). The loss is the cross-entropy over the Doctor
turns only: the tokens that start inside an answer (the answer and the ``###``
that ends it), averaged per turn and then over the turns, so that a short
answer ("No. There is no pneumothorax.") weighs as much as a report ten
times its length: averaged over tokens, the one token that says yes or no
would be lost among the report's.

With only text-only datasets (``with_images: false``) everything but the LLM
is frozen, as in ``text_pretrain``: those parts would otherwise be saved
untrained into the checkpoint and overwrite good weights downstream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from xraygpt.common.config import ConfigError
from xraygpt.common.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from xraygpt.common.registry import registry
from xraygpt.conversation.templates import get_conv_template
from xraygpt.train.tasks.base_task import BaseTask

log = logging.getLogger(__name__)

MAX_LENGTH = 640  # positions per conversation (image included); the phantom ones use ~300

_ROLE_INDEX = {"user": 0, "assistant": 1, "human": 0, "gpt": 1}


def render_chat(
    turns: Sequence[Sequence[str]], template: str = "xraygpt"
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's prompt text and the character spans of its answers."""
    conv = get_conv_template(template)
    for role, text in turns:
        conv.append_message(conv.roles[_ROLE_INDEX[role]], text)
    text, spans = "", []
    for piece, is_answer in conv.segments():
        if is_answer:
            spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


def encode_chat(
    tokenizer: Any, turns: Sequence[Sequence[str]], template: str = "xraygpt"
) -> tuple[list[int], list[int], list[int]]:
    """``(ids before the image, ids after it, labels of the ids after it)``.

    ``ids before`` starts with bos. A conversation without ``<ImageHere>`` has
    everything after an empty image slot. Answers never come before the image
    (it is in the first question).
    """
    text, spans = render_chat(turns, template)
    parts = text.split(IMAGE_PLACEHOLDER)
    if len(parts) > 2:
        raise ValueError(f"a conversation holds {IMAGE_PLACEHOLDER} at most once")
    before, after = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    offset = len(text) - len(after)
    if any(start < offset for start, _ in spans):
        raise ValueError("an answer comes before the image: the image goes in the first question")
    head = [tokenizer.bos_token_id]
    if before:
        head += tokenizer(before, add_special_tokens=False).input_ids
    enc = tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (start, _) in zip(enc.input_ids, enc.offset_mapping, strict=True):
        at = start + offset
        labels.append(token if any(a <= at < b for a, b in spans) else IGNORE_INDEX)
    return head, list(enc.input_ids), labels


def conversation_loss(
    model: nn.Module,
    conversations: Sequence[Sequence[Sequence[str]]],
    images: torch.Tensor | None,
    *,
    max_length: int = MAX_LENGTH,
) -> torch.Tensor:
    """Cross-entropy over the Doctor turns of a batch (``images`` [B, 3, H, W] or None):
    the mean over its turns of each turn's mean over its tokens."""
    tok = model.llama_tokenizer
    device = model.device
    img_embeds = None
    if images is not None and images.numel():
        img_embeds, _ = model.encode_img(images.to(device))
    rows, row_labels = [], []
    for i, turns in enumerate(conversations):
        head, ids, labels = encode_chat(tok, turns)
        pieces = [model.embed_tokens(torch.tensor(head, device=device))]
        prefix = [IGNORE_INDEX] * len(head)
        if img_embeds is not None:
            pieces.append(img_embeds[i].to(pieces[0].dtype))
            prefix += [IGNORE_INDEX] * img_embeds.shape[1]
        pieces.append(model.embed_tokens(torch.tensor(ids, device=device)))
        rows.append(torch.cat(pieces)[:max_length])
        row_labels.append((prefix + labels)[:max_length])
    length = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=device)
    weights = torch.zeros(len(rows), length, device=device)
    n_turns = 0
    for i, (row, lab) in enumerate(zip(rows, row_labels, strict=True)):
        embeds[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = 1
        labels[i, : len(lab)] = torch.tensor(lab, device=device)
        for start, end in _answer_runs(lab):
            weights[i, start:end] = 1.0 / (end - start)
            n_turns += 1
    if n_turns == 0:
        raise ValueError("no Doctor turn left in the batch (all cut off by max_length?)")
    logits = model.llama_model(inputs_embeds=embeds, attention_mask=mask, return_dict=True).logits
    # Position t predicts token t + 1.
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return (ce * weights[:, 1:].flatten()).sum() / n_turns


def _answer_runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of labelled positions: one per Doctor turn."""
    runs, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _text_only(cfg: Any) -> bool:
    sections = list(cfg.datasets_cfg.values())
    return bool(sections) and all(not s.get("with_images", True) for s in sections)


@registry.register_task("image_conversation")
class ImageConversationTask(BaseTask):
    def build_model(self, cfg: Any = None) -> nn.Module:
        cfg = cfg or self.cfg
        model = super().build_model(cfg)
        if not hasattr(model, "encode_img") or not hasattr(model, "llama_tokenizer"):
            raise ConfigError(
                f"run.task image_conversation trains a mini_gpt4; got {type(model).__name__}"
            )
        if _text_only(cfg):
            if getattr(model, "freeze_llm", True):
                raise ConfigError(
                    "run.task image_conversation on text-only conversations trains the LLM: "
                    "set model.freeze_llm: false"
                )
            frozen = set()
            for name, param in model.named_parameters():
                if not name.startswith("llama_model.") and param.requires_grad:
                    param.requires_grad_(False)
                    frozen.add(name.split(".")[0])
            if frozen:
                log.info("image_conversation (text only): froze %s", ", ".join(sorted(frozen)))
        return model

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        if isinstance(model, DistributedDataParallel):
            # The loss bypasses the wrapper's forward, so DDP would not sync the gradients.
            raise ConfigError(
                "run.task image_conversation runs in one process: start it with python "
                "train.py, not torchrun (the tiny model needs no more)"
            )
        if "conversation" not in samples:
            raise ConfigError(
                "run.task image_conversation trains on conversations: use the "
                "phantom_conversations dataset (its samples carry 'conversation')"
            )
        images = samples.get("image")
        return {"loss": conversation_loss(model, samples["conversation"], images)}
