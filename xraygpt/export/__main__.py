"""``python -m xraygpt.export hf|llm``: the trained model in formats other tools load.

- ``hf``: the whole model as transformers' ``Blip2ForConditionalGeneration``
  (see :mod:`xraygpt.export.hf`).
- ``llm``: the language model alone as a plain ``LlamaForCausalLM`` folder, LoRA
  merged (see ``xraygpt.export.llm``).

Contract for a subcommand module ``xraygpt.export.<name>`` (imported only when
its subcommand runs, so ``--help`` stays instant and one missing module does
not break the other)::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
        # adds the subcommand's own options to its sub-parser
    def run(args: argparse.Namespace) -> int: ...
        # does the work; returns the exit status (0 = success)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

SUBCOMMANDS = {
    "hf": "the whole model as transformers' Blip2ForConditionalGeneration (+ processor)",
    "llm": "the language model alone as a LlamaForCausalLM folder, LoRA merged",
}


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"xraygpt.export.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"xraygpt.export.{name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m xraygpt.export", description="Export a trained XrayGPT model."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{hf,llm}")
    # Only the chosen subcommand's module is imported.
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    modules: dict[str, ModuleType | None] = {}
    for name, help_text in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = _module(name)
            if modules[name] is not None:
                modules[name].add_arguments(sub_parser)
    args, rest = parser.parse_known_args(argv)
    module = modules.get(args.command)
    if module is None:
        print(
            f"python -m xraygpt.export {args.command}: not available in this installation "
            f"(no module xraygpt.export.{args.command})",
            file=sys.stderr,
        )
        return 2
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(module.run(args))  # the project's own errors: one line, through run_main


if __name__ == "__main__":
    from xraygpt.common.errors import run_main

    sys.exit(run_main(main))
