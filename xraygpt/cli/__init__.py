"""``xraygpt <command>``: every command of the project, one console script.

    xraygpt --help                       # the commands, one line each
    xraygpt train --cfg-path train_configs/xraygpt_mimic_pretrain.yaml
    xraygpt evaluate --cfg-path eval_configs/xraygpt_eval.yaml
    python -m xraygpt <command> ...      # the same, without the console script

Each command is a thin module of this folder, ``xraygpt/cli/<module>.py``, with
``main(argv) -> int``: it parses its arguments, then calls the library. Its heavy
imports (torch, gradio) happen after parsing, so ``--help`` answers at once; this
dispatcher imports only the chosen module. Every command runs through
:func:`xraygpt.common.errors.run_main`: the project's own errors print one line,
``error: ...``, and exit 2 (``--debug`` or ``XRAYGPT_DEBUG=1`` for the traceback).

A new command: a module here with ``main(argv)``, and a line in :data:`COMMANDS`.
Nothing imports this folder; it is the top of the house (docs/architecture.md).
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

from xraygpt import __version__

#: command -> (module in xraygpt/cli/, the one line ``xraygpt --help`` shows)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a stage from a YAML config (train.py; torchrun for several GPUs)"),
    "evaluate": ("evaluate", "generate and score reports on a test split (test.py)"),
    "demo": ("demo", "chat about a chest X-ray in the browser (demo.py)"),
    "validate": ("validate", "check a training set-up before the job (validate_training_setup.py)"),
    "score": ("score", "score a predictions file (any system's), with intervals and comparisons"),
    "chat-eval": ("chat_eval", "yes/no questions through the chat on the phantom test split"),
    "conversations": (
        "conversations",
        "radiology conversations from reports; held-out loss of an LLM fine-tuning",
    ),
    "prepare": ("prepare", "turn the MIMIC-CXR / OpenI downloads into filter_cap.json + images"),
    "shards": ("shards", "pack a prepared data set into WebDataset tar shards"),
    "phantom": ("phantom", "generate the synthetic phantom data set of the embedded default"),
    "export": (
        "export",
        "export a trained model: transformers' BLIP-2 (hf) or the LLM alone (llm)",
    ),
    "summary": ("summary", "parameter counts of a model config (built on the meta device)"),
    "plot-run": ("plot_run", "draw a run's loss, learning rate and throughput (log.jsonl)"),
    "recipe-summary": ("recipe_summary", "the tiny recipe's results table (quickstart's summary)"),
    "tokenizer": ("tokenizer", "rebuild the tiny model's tokenizer from the OpenI reports"),
    "openi-agreement": (
        "openi_agreement",
        "the rule labeler against OpenI's MeSH tags (a check of the labeler)",
    ),
}

PROG = "xraygpt"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {PROG} <command> [options]   ({PROG} <command> --help for its options)",
        "",
        "XrayGPT: chest radiograph summarisation (EVA-ViT-g, Q-Former, Vicuna).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  show this list",
        f"  {'--version':<{width}}  print the version",
        f"  {'--debug':<{width}}  with a command: the traceback of the project's errors too",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xraygpt <command> [options]``; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --debug may stand before the command too (xraygpt --debug train ...): run_main reads it.
    debug = [a for a in args[:1] if a == "--debug"]
    args = args[len(debug) :]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(
            f"error: {PROG}: no command '{name}'{hint} ({PROG} --help lists them)", file=sys.stderr
        )
        return 2
    from xraygpt.common.errors import run_main

    if argv is None:  # argparse names the program after argv[0]: "xraygpt <command>"
        sys.argv[0] = f"{PROG} {name}"

    module = importlib.import_module(f"xraygpt.cli.{COMMANDS[name][0]}")
    return run_main(module.main, [*rest, *debug])
