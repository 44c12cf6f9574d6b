"""Build the tiny model's tokenizer: a LLaMA-style byte-fallback BPE trained on report text.

The tiny ``mini_gpt4`` must run with nothing downloaded, so it ships its own
tokenizer (``xraygpt/models/assets/tiny_tokenizer/``). This script is how that
file was made; rerun it to rebuild it::

    python tools/make_tiny_tokenizer.py            # writes the shipped folder
    python tools/make_tiny_tokenizer.py --out DIR  # somewhere else

The layout copies LLaMA's so that the model code cannot tell the two apart:
``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte tokens ``<0x00>``..``<0xFF>``
at 3..258 (so any character, ``\\n`` included, can be encoded), then the
learned pieces; words are marked with ``▁`` as SentencePiece does, and the pad
token is ``</s>``.

Training text: the FINDINGS and IMPRESSION sections of the OpenI reports
(``NLMCXR_reports.tgz``, shipped inside the ``torchxrayvision`` package), in
their original case and lower-cased (the caption processor lower-cases), plus
the prompt file and the conversation template, so that ``###``, ``Patient:``
and ``Doctor:`` become single pieces. Files are read in numeric order and the
trainer is deterministic, so the output is the same on every run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "xraygpt" / "models" / "assets" / "tiny_tokenizer"
PROMPT_FILE = REPO_ROOT / "prompts" / "alignment_chest_xray.txt"
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in LLaMA
SPACE = "\u2581"  # SentencePiece's word marker
SECTIONS = ("FINDINGS", "IMPRESSION")
# Repeated so that the template's pieces win merges over rarer report words.
TEMPLATE_REPEATS = 200


def find_reports_archive() -> Path:
    try:
        import torchxrayvision
    except ImportError as err:
        raise SystemExit(
            "torchxrayvision is not installed; it ships NLMCXR_reports.tgz "
            "(pip install -r requirements.txt), or pass --reports PATH"
        ) from err
    path = Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        raise SystemExit(f"{path} not found; pass --reports PATH to NLMCXR_reports.tgz")
    return path


def report_texts(archive: Path) -> list[str]:
    """FINDINGS and IMPRESSION texts of every report, in numeric file order."""
    texts: list[tuple[int, str]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            match = re.search(r"(\d+)\.xml$", member.name)
            if not member.isfile() or match is None:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            root = ET.fromstring(handle.read())
            parts = [
                (node.text or "").strip()
                for node in root.iter("AbstractText")
                if node.get("Label") in SECTIONS
            ]
            text = " ".join(part for part in parts if part)
            if text:
                texts.append((int(match.group(1)), text))
    if not texts:
        raise SystemExit(f"no FINDINGS/IMPRESSION text found in {archive}")
    texts.sort()
    return [text for _, text in texts]


def template_lines() -> list[str]:
    # The script runs from a checkout, where the package is not installed.
    sys.path.insert(0, str(REPO_ROOT))
    from xraygpt.conversation.templates import get_conv_template

    conv = get_conv_template("xraygpt")
    conv.append_message(conv.roles[0], "<Img><ImageHere></Img> Describe this chest x-ray image.")
    conv.append_message(conv.roles[1], None)
    lines = [conv.get_prompt()]
    if PROMPT_FILE.is_file():
        for line in PROMPT_FILE.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.append(f"###Patient: {line.strip()} ###Doctor: ")
    return lines


def corpus(reports: list[str], templates: list[str]) -> Iterator[str]:
    for text in reports:
        yield text
        yield text.lower()
    for _ in range(TEMPLATE_REPEATS):
        yield from templates


def build(reports_path: Path, vocab_size: int):
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

    reports = report_texts(reports_path)
    templates = template_lines()

    def pipeline(tok: Tokenizer) -> Tokenizer:
        # Newlines and tabs are kept (they reach the model as byte tokens);
        # only spaces mark words, as in SentencePiece.
        tok.normalizer = normalizers.Replace(Regex("\r\n?"), "\n")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first")
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace(SPACE, " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        return tok

    n_fixed = len(SPECIALS) + 256
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256,  # the byte tokens are added below
        min_frequency=2,
        special_tokens=list(SPECIALS),
        limit_alphabet=120,  # rare characters fall back to bytes
        show_progress=False,
    )
    draft = pipeline(Tokenizer(models.BPE(unk_token="<unk>")))
    draft.train_from_iterator(corpus(reports, templates), trainer=trainer)
    trained = json.loads(draft.to_str())["model"]

    # Re-number: specials, the 256 byte tokens, then the learned pieces in the
    # trainer's order, exactly LLaMA's layout.
    vocab: dict[str, int] = {name: i for i, name in enumerate(SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    assert len(vocab) >= n_fixed
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

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
    return tok


def save(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",  # LLaMA has no pad token; MiniGPT-4 pads with eos
        padding_side="right",
        model_max_length=2048,
    )
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=None, help="NLMCXR_reports.tgz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args(argv)
    reports = args.reports or find_reports_archive()
    tok = build(reports, args.vocab_size)
    save(tok, args.out)
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens) from {reports}")


if __name__ == "__main__":
    main()
