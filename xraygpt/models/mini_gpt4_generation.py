"""Generating with mini_gpt4: answers for a batch, new ids from prepared inputs, streaming.

The model wraps each question as in training (:meth:`MiniGPT4.question_embeds`); here
the rows are padded on the left and handed to the LLM's ``generate`` with a fresh
``GenerationConfig`` and a stop at ``end_sym``. Streaming runs the generation in a
thread and yields the growing answer.

The functions take the model (a :class:`~xraygpt.models.mini_gpt4.MiniGPT4`), whose
methods of the same names call them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, StoppingCriteriaList, TextIteratorStreamer

from xraygpt.common.generation import GenerationOptions
from xraygpt.models.llm import EndSymStopping, cut_answer


def left_pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, H] sequences into [B, L, H] padded on the left, with the attention mask."""
    length = max(s.shape[0] for s in seqs)
    embeds = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=seqs[0].device)
    for i, seq in enumerate(seqs):
        embeds[i, length - seq.shape[0] :] = seq
        mask[i, length - seq.shape[0] :] = 1
    return embeds, mask


def generation_kwargs(model: nn.Module, end_sym: str, opts: GenerationOptions) -> dict[str, Any]:
    """The LLM's ``generate`` arguments: a fresh ``GenerationConfig`` and the stop at ``end_sym``."""
    tok = model.llama_tokenizer
    options: dict[str, Any] = {
        "max_new_tokens": int(opts.max_new_tokens),
        "min_new_tokens": int(opts.min_new_tokens),
        "num_beams": int(opts.num_beams),
        "do_sample": bool(opts.do_sample),
        "repetition_penalty": float(opts.repetition_penalty),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if opts.do_sample:
        options.update(temperature=float(opts.temperature), top_p=float(opts.top_p))
    if opts.num_beams > 1:
        options["length_penalty"] = float(opts.length_penalty)
    stop = EndSymStopping(tok, end_sym)
    # A fresh GenerationConfig, so a Vicuna folder's sampling defaults never leak in.
    return {
        "generation_config": GenerationConfig(**options),
        "stopping_criteria": StoppingCriteriaList([stop]),
    }


@torch.no_grad()
def generate_from_embeds(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    end_sym: str | None = None,
    streamer: Any = None,
    extra_stopping: Sequence[Any] = (),
    **options: Any,
) -> torch.Tensor:
    """New token ids [B, T] from prepared LLM inputs, stopping each row at ``end_sym``.

    ``options``: the fields of :class:`GenerationOptions`.
    """
    opts = GenerationOptions(**options)
    inputs_embeds = inputs_embeds.to(model.device, model.embeds_dtype())
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
    kwargs = generation_kwargs(model, end_sym or model.end_sym, opts)
    kwargs["stopping_criteria"].extend(extra_stopping)
    return model.llama_model.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask.to(model.device),
        streamer=streamer,
        **kwargs,
    )


def stream_from_embeds(
    model: nn.Module, inputs_embeds: torch.Tensor, *, end_sym: str | None = None, **options: Any
) -> Iterator[str]:
    """Yield the growing answer text (batch of one) while it is generated."""
    if inputs_embeds.shape[0] != 1:
        raise ValueError("streaming generates for one sequence at a time")
    end_sym = end_sym or model.end_sym
    streamer = TextIteratorStreamer(
        model.llama_tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
    )
    failure: list[BaseException] = []
    cancel = threading.Event()  # set when the consumer stops listening

    def cancelled(input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), cancel.is_set(), device=input_ids.device)

    def run() -> None:
        try:
            # Through the model's method, so that a wrapper of it (a test's spy) sees the call.
            model.generate_from_embeds(
                inputs_embeds,
                end_sym=end_sym,
                streamer=streamer,
                extra_stopping=[cancelled],
                **options,
            )
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            failure.append(err)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text.split(end_sym, 1)[0]
            if end_sym in text:
                break
    finally:
        cancel.set()
        thread.join()
    if failure:
        raise failure[0]


@torch.no_grad()
def generate(
    model: nn.Module, images: torch.Tensor, prompts: str | Sequence[str], **options: Any
) -> list[str]:
    """Answers for a batch: each prompt (one ``<ImageHere>``) wrapped in ``prompt_template``.

    ``options``: the fields of :class:`GenerationOptions` (greedy, at most
    160 new tokens by default). Rows are padded on the left, so a batch
    gives the same greedy / beam answers as its samples one at a time.
    Answers are cut at ``end_sym``.
    """
    opts = GenerationOptions(**options)  # a misspelt option fails before any work
    if isinstance(prompts, str):
        prompts = [prompts] * images.shape[0]
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
    img_embeds, _ = model.encode_img(images.to(model.device))
    seqs = [model.question_embeds(img_embeds[i], p) for i, p in enumerate(prompts)]
    inputs_embeds, attention_mask = left_pad(seqs)
    ids = model.generate_from_embeds(inputs_embeds, attention_mask, **dataclasses.asdict(opts))
    texts = model.llama_tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [cut_answer(text, model.end_sym) for text in texts]
