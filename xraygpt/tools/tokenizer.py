"""Training a small LLaMA-layout tokenizer, for the tiny models (no download needed).

Used by ``python -m xraygpt.tools.tiny_tokenizer`` (the shipped tokenizer, from OpenI
report text) and by the phantom generator (a tokenizer of the phantom reports).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in LLaMA
WORD_MARK = "\u2581"  # SentencePiece's word marker


def train_llama_bpe(
    texts: Iterable[str], out: str | Path, vocab_size: int, limit_alphabet: int
) -> Path:
    """A byte-fallback BPE tokenizer in LLaMA's layout, trained on ``texts``, saved under ``out``.

    The layout is LLaMA's, so the model code cannot tell it from Vicuna's:
    ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte tokens, then the learned
    pieces in the trainer's order; words carry SentencePiece's ``\u2581``;
    newlines and tabs are kept (as byte tokens) and characters outside the
    ``limit_alphabet`` most frequent ones fall back to bytes, so any text can
    be encoded. pad = eos, as MiniGPT-4 pads. Deterministic for the same texts.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIALS) + 256 + 64:
        raise ValueError(
            f"vocab_size {vocab_size} leaves too few learned pieces (min {len(SPECIALS) + 320})"
        )

    def pipeline(tok: Tokenizer) -> Tokenizer:
        tok.normalizer = normalizers.Replace(Regex("\r\n?"), "\n")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARK, prepend_scheme="first")
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace(WORD_MARK, " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        return tok

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256,  # the byte tokens are added afterwards
        min_frequency=2,
        special_tokens=list(SPECIALS),
        limit_alphabet=limit_alphabet,
        show_progress=False,
    )
    draft = pipeline(Tokenizer(models.BPE(unk_token="<unk>")))
    draft.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(draft.to_str())["model"]
    vocab = {name: i for i, name in enumerate(SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = pipeline(
        Tokenizer(
            models.BPE(
                vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True
            )
        )
    )
    tok.add_special_tokens(list(SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    out = Path(out)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        padding_side="right",
        model_max_length=2048,
    ).save_pretrained(out)
    return out
