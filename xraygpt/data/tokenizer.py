"""Training a small LLaMA-layout tokenizer, for the tiny models (no download needed).

Two tokenizers are made this way: the shipped one of the tiny model
(``xraygpt/models/assets/tiny_tokenizer/``, :func:`build_tiny_tokenizer`, rebuilt by
``xraygpt tokenizer``) and the phantom data set's (the phantom generator). Both learn
the conversation template's pieces from :func:`template_lines`, so that ``###``,
``Patient:`` and ``Doctor:`` become single pieces.

The shipped tokenizer's training text: the FINDINGS and IMPRESSION sections of
the OpenI reports (``NLMCXR_reports.tgz``, shipped inside the ``torchxrayvision``
package), in their original case and lower-cased (the caption processor
lower-cases), plus the prompt file and the conversation template. Files are read
in numeric order and the trainer is deterministic, so the output is the same on
every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from xraygpt.common.config import REPO_ROOT

TINY_TOKENIZER_OUT = REPO_ROOT / "xraygpt" / "models" / "assets" / "tiny_tokenizer"
PROMPT_FILE = REPO_ROOT / "prompts" / "alignment_chest_xray.txt"
TINY_VOCAB = 4096
# Repeated so that the template's pieces win merges over rarer report words.
TEMPLATE_REPEATS = 200
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


def template_lines(prompt_file: str | Path | None = PROMPT_FILE) -> list[str]:
    """The conversation template around an image question, and each prompt of
    ``prompt_file`` (when it exists) in a ``###Patient: ... ###Doctor: `` turn."""
    from xraygpt.conversation.templates import get_conv_template

    conv = get_conv_template("xraygpt")
    conv.append_message(conv.roles[0], "<Img><ImageHere></Img> Describe this chest x-ray image.")
    conv.append_message(conv.roles[1], None)
    lines = [conv.get_prompt()]
    if prompt_file is not None and Path(prompt_file).is_file():
        for line in Path(prompt_file).read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.append(f"###Patient: {line.strip()} ###Doctor: ")
    return lines


def tiny_corpus(reports: list[str], templates: list[str]) -> Iterator[str]:
    """The shipped tokenizer's text: each report as written and lower-cased, then the
    template lines, repeated."""
    for text in reports:
        yield text
        yield text.lower()
    for _ in range(TEMPLATE_REPEATS):
        yield from templates


def build_tiny_tokenizer(
    reports_archive: str | Path | None = None,
    vocab_size: int = TINY_VOCAB,
    out: str | Path = TINY_TOKENIZER_OUT,
) -> Path:
    """The tiny model's tokenizer from the OpenI reports (default: torchxrayvision's copy)."""
    from xraygpt.common.errors import DataError
    from xraygpt.data.openi import read_openi_reports

    reports = [r.text for r in read_openi_reports(reports_archive) if r.text]
    if not reports:
        raise DataError(f"no FINDINGS/IMPRESSION text found in {reports_archive}")
    # limit_alphabet 120: rare characters fall back to bytes
    return train_llama_bpe(
        tiny_corpus(reports, template_lines()), out, vocab_size, limit_alphabet=120
    )
