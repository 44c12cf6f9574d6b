"""Build the tiny model's tokenizer: a LLaMA-style byte-fallback BPE trained on report text.

The tiny ``mini_gpt4`` must run with nothing downloaded, so it ships its own
tokenizer (``xraygpt/models/assets/tiny_tokenizer/``). This script is how that
file was made; rerun it to rebuild it::

    python -m xraygpt.tools.tiny_tokenizer            # writes the shipped folder
    python -m xraygpt.tools.tiny_tokenizer --out DIR  # somewhere else

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

from xraygpt.common.config import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "xraygpt" / "models" / "assets" / "tiny_tokenizer"
PROMPT_FILE = REPO_ROOT / "prompts" / "alignment_chest_xray.txt"
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


def build(reports_path: Path, vocab_size: int, out: Path) -> Path:
    from xraygpt.tools.tokenizer import train_llama_bpe

    reports = report_texts(reports_path)
    # limit_alphabet 120: rare characters fall back to bytes
    return train_llama_bpe(corpus(reports, template_lines()), out, vocab_size, limit_alphabet=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=None, help="NLMCXR_reports.tgz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args(argv)
    reports = args.reports or find_reports_archive()
    out = build(reports, args.vocab_size, args.out)
    size = len(json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    print(f"wrote {out} ({size} tokens) from {reports}")


if __name__ == "__main__":
    from xraygpt.common.errors import run_main

    sys.exit(run_main(main))
