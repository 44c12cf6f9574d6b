"""``text_pretrain``: train the LLM on the reports alone, in the conversation format.

Stage 2 of the tiny recipe (``train_configs/xraygpt_tiny_stage2.yaml``), the
miniature of Vicuna's fine-tuning on radiology conversations that XrayGPT
starts from. The model is a ``mini_gpt4``; only its LLM trains. A sample is
the alignment prompt with the image slot left empty, then the report:

    [bos] ###Patient: <Img></Img> Describe the given chest x-ray image in detail. ###Doctor: <report>###

tokenised exactly as the alignment stage tokenises it (the text before and
after ``<ImageHere>`` separately), so that stage only has to fill the slot.
Half the batches render the question as the chat demo does instead (the
conversation's system text first, see :func:`chat_prompts`).
The loss is the LLM's cross-entropy over the report tokens: without an image,
its value on held-out reports estimates the text-only floor that an
image-reading model must get below (from above: a 5x longer text-only run
reaches 0.48 nats/token on the phantom val reports, and memorises the
training reports rather than going lower).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from xraygpt.common.config import ConfigError
from xraygpt.common.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from xraygpt.common.registry import registry
from xraygpt.train.tasks.base_task import BaseTask

log = logging.getLogger(__name__)

# Share of batches whose prompt is rendered as in the chat demo (system text first).
CHAT_SHARE = 0.5


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
    from xraygpt.conversation.templates import get_conv_template
    from xraygpt.models.mini_gpt4 import require_path

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


@registry.register_task("text_pretrain")
class TextPretrainTask(BaseTask):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._chat_prompts: dict[int, list[str]] = {}  # per model built by this task

    def build_model(self, cfg: Any = None) -> nn.Module:
        model = super().build_model(cfg)
        if not hasattr(model, "llama_model") or not hasattr(model, "llama_tokenizer"):
            raise ConfigError(
                f"run.task text_pretrain trains the LLM of a mini_gpt4; got {type(model).__name__}"
            )
        if getattr(model, "freeze_llm", True):
            raise ConfigError(
                "run.task text_pretrain trains the LLM: set model.freeze_llm: false "
                "(and model.llm_dtype: float32)"
            )
        # Only the LLM sees text-only batches; anything else left trainable would be
        # saved into the checkpoint untrained and overwrite good weights downstream.
        frozen = []
        for name, param in model.named_parameters():
            if not name.startswith("llama_model.") and param.requires_grad:
                param.requires_grad_(False)
                frozen.append(name.split(".")[0])
        self._chat_prompts[id(model)] = chat_prompts(model)
        if frozen:
            log.info(
                "text_pretrain: froze %s (only the LLM trains)", ", ".join(sorted(set(frozen)))
            )
        return model

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        datasets = super().build_datasets(cfg)
        return {
            name: {split: ReportTextDataset(ds, name) for split, ds in by_split.items()}
            for name, by_split in datasets.items()
        }

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        if isinstance(model, DistributedDataParallel):
            # The loss bypasses the wrapper's forward, so DDP would not sync the gradients.
            raise ConfigError(
                "run.task text_pretrain runs in one process: start it with python train.py, "
                "not torchrun (the tiny LLM needs no more)"
            )
        chats = self._chat_prompts.get(id(model)) or []
        if chats and random.random() < CHAT_SHARE:
            prompt = random.choice(chats)
        else:
            prompt = random.choice(text_prompts(model))
        return {"loss": report_loss(model, samples["caption"], prompt)}


@torch.no_grad()
def evaluate_report_loss(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 64, prompt: str | None = None
) -> float:
    """Token-weighted mean cross-entropy (nats / token) of the reports of ``dataset``.

    With the model's first prompt, image slot empty, by default: for a stage-2
    model on held-out reports, the text-only floor.
    """
    from xraygpt.data.caption_dataset import collate

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
