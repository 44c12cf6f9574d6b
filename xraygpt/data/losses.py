"""What training and evaluation both compute over a dataset: the losses and scores.

- the assistant-token loss of conversation data (:func:`evaluate_answer_loss`; the
  ``conversation_sft`` task trains on it, ``xraygpt conversations loss`` reports it);
- the report loss of the LLM after a prompt with the image slot empty
  (:func:`report_loss`, :func:`evaluate_report_loss`; the ``text_pretrain`` task
  trains on it, the tiny recipe's summary measures the text-only floor with it);
- the stage-1 encoder's per-label scores (:func:`classification_scores`; the
  ``encoder_pretrain`` task and the tiny recipe's summary).

They live below both training and evaluation so that each computes the same thing
(docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from xraygpt.common.config import ConfigError, require_path
from xraygpt.common.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from xraygpt.conversation.templates import get_conv_template
from xraygpt.data.caption_dataset import collate
from xraygpt.data.conversations import collate_tokens


def sft_batch(samples: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """The padded tensors of a collated batch of :class:`ConversationSFTDataset` items."""
    missing = [k for k in ("input_ids", "labels", "position_ids") if k not in samples]
    if missing:
        raise ConfigError(
            f"run.task conversation_sft got batches without {missing}: its datasets must be "
            f"conversation files (datasets.conversations)"
        )
    return collate_tokens(samples["input_ids"], samples["labels"], samples["position_ids"], pad_id)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP / FSDP wrappers keep the model in .module


@torch.no_grad()
def evaluate_answer_loss(model: nn.Module, dataset: Dataset, *, batch_size: int = 16) -> float:
    """Token-weighted mean cross-entropy (nats / token) over the assistant tokens of ``dataset``."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    total, tokens = 0.0, 0
    try:
        for samples in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            batch = {
                k: v.to(inner.device)
                for k, v in sft_batch(samples, inner.llama_tokenizer.pad_token_id).items()
            }
            # The loss is the mean over answer tokens, whose count HF takes after the shift.
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(inner(batch)["loss"]) * n
            tokens += n
    finally:
        inner.train(was_training)
    return total / tokens


class ReportTextDataset(Dataset):
    """The processed reports of a folder-of-images dataset, without decoding any image.

    Samples carry an empty ``image`` tensor so that the shared collater (which
    stacks images) and the runner (which counts the batch by it) work unchanged.
    """

    def __init__(self, dataset: Dataset, name: str = "dataset") -> None:
        annotations = getattr(dataset, "annotations", None)
        processor = getattr(dataset, "text_processor", None)
        if annotations is None or processor is None:
            raise ConfigError(
                f"text_pretrain reads the reports of folder-of-images datasets "
                f"(data_type: images); datasets.{name} is a {type(dataset).__name__}"
            )
        self.annotations = list(annotations)
        self.text_processor = processor
        self.name = getattr(dataset, "name", name)
        self.split = getattr(dataset, "split", "train")
        self.sample_ratio = getattr(dataset, "sample_ratio", 1.0)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotations[index]
        return {
            "image": torch.empty(0),
            "caption": self.text_processor(ann.caption),
            "image_id": ann.image_id,
            "skipped": 0,
        }


def text_prompts(model: nn.Module) -> list[str]:
    """The model's formatted alignment prompts (``<ImageHere>`` still in), or ``[""]`` without."""
    return list(getattr(model, "prompt_list", []) or []) or [""]


def chat_prompts(model: nn.Module) -> list[str]:
    """The prompt file's questions as the chat demo renders them (``[]`` without a prompt file).

    The ``xraygpt`` conversation: system text, ``###Patient: <Img><ImageHere></Img>
    question###Doctor:``. Alignment trains with the short template only (as the
    real recipe); the LLM meets the chat's longer context here, as Vicuna met
    conversations before XrayGPT, so that the demo's context is not new to it.
    """

    path = getattr(getattr(model, "cfg", None), "prompt_path", "")
    if not path:
        return []
    lines = require_path(path, "prompt_path").read_text(encoding="utf-8").splitlines()
    prompts = []
    for line in (line.strip() for line in lines):
        if IMAGE_PLACEHOLDER in line:
            conv = get_conv_template("xraygpt")
            conv.append_message(conv.roles[0], line)
            conv.append_message(conv.roles[1], None)
            prompts.append(conv.get_prompt())
    return prompts


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """[bos] + the prompt's tokens with the image slot left empty.

    The text before and after ``<ImageHere>`` is tokenised apart, as
    ``mini_gpt4`` does around the image embeddings.
    """
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    if len(pieces) > 2:
        raise ValueError(f"a prompt holds {IMAGE_PLACEHOLDER} at most once, got {prompt!r}")
    ids = [tokenizer.bos_token_id]
    for piece in pieces:
        if piece:
            ids += tokenizer(piece, add_special_tokens=False).input_ids
    return ids


def report_loss(model: nn.Module, captions: Sequence[str], prompt: str) -> torch.Tensor:
    """Mean cross-entropy (nats / token) of the LLM over ``caption + end_sym`` after ``prompt``."""
    tok = model.llama_tokenizer
    head = prompt_ids(tok, prompt)
    targets = tok(
        [c + model.end_sym for c in captions],
        add_special_tokens=False,
        truncation=True,
        max_length=model.max_txt_len,
    ).input_ids
    # Right padding, labels only on the report tokens (docs/recipe.md §3 without the image).
    length = len(head) + max(len(t) for t in targets)
    ids = torch.full((len(targets), length), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(targets), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(targets), length), dtype=torch.long)
    for i, target in enumerate(targets):
        end = len(head) + len(target)
        ids[i, : len(head)] = torch.tensor(head)
        ids[i, len(head) : end] = torch.tensor(target)
        labels[i, len(head) : end] = torch.tensor(target)
        mask[i, :end] = 1
    device = model.device
    out = model.llama_model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        labels=labels.to(device),
        return_dict=True,
    )
    return out.loss


@torch.no_grad()
def evaluate_report_loss(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 64, prompt: str | None = None
) -> float:
    """Token-weighted mean cross-entropy (nats / token) of the reports of ``dataset``.

    With the model's first prompt, image slot empty, by default: for a stage-2
    model on held-out reports, the text-only floor.
    """
    was_training = model.training
    model.eval()
    prompt = text_prompts(model)[0] if prompt is None else prompt
    total, tokens = 0.0, 0
    tok = model.llama_tokenizer
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            captions = batch["caption"]
            n = sum(
                len(ids)
                for ids in tok(
                    [c + model.end_sym for c in captions],
                    add_special_tokens=False,
                    truncation=True,
                    max_length=model.max_txt_len,
                ).input_ids
            )
            total += float(report_loss(model, captions, prompt)) * n
            tokens += n
    finally:
        model.train(was_training)
    return total / tokens


@torch.no_grad()
def classification_scores(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    threshold: float = 0.5,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-label precision / recall / F1 of ``model`` on ``dataset`` at ``threshold``.

    Returns ``{"per_label": {name: {precision, recall, f1, support}}, "macro_f1": float}``.
    """
    was_training = model.training
    model.eval()
    names = list(model.label_names)
    counts = {name: [0, 0, 0] for name in names}  # tp, fp, fn
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    try:
        for batch in tqdm(loader, desc="classify", disable=not progress):
            predicted = model.predict(batch["image"]) >= threshold
            truth = model.targets(batch["labels"]).to(predicted.device) > 0.5
            for j, name in enumerate(names):
                counts[name][0] += int((predicted[:, j] & truth[:, j]).sum())
                counts[name][1] += int((predicted[:, j] & ~truth[:, j]).sum())
                counts[name][2] += int((~predicted[:, j] & truth[:, j]).sum())
    finally:
        model.train(was_training)
    per_label = {}
    for name, (tp, fp, fn) in counts.items():
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    macro = sum(s["f1"] for s in per_label.values()) / len(per_label)
    return {"per_label": per_label, "macro_f1": macro}
