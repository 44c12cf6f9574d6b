"""Chat with XrayGPT about a chest X-ray in the browser.

    python demo.py --cfg-path eval_configs/xraygpt_eval.yaml --gpu-id 0
    python demo.py --cfg-path eval_configs/xraygpt_tiny_eval.yaml --device cpu

Serves http://127.0.0.1:7860 (this machine only). ``--host 0.0.0.0`` serves
the network, ``--share`` adds a public gradio.live link, ``--auth user:pw``
asks for a login. See ``xraygpt/apps/demo/app.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from xraygpt.apps.demo.cli import add_demo_arguments
from xraygpt.common.errors import run_main
from xraygpt.common.launch import build_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser("XrayGPT demo: upload a chest X-ray and ask about it.")
    add_demo_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported after parsing: --help and flag errors answer without loading Gradio.
    from xraygpt.apps.demo.app import main as serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(run_main(main))
