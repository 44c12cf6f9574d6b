"""``xraygpt demo``: chat with XrayGPT about a chest X-ray in the browser.

    xraygpt demo --cfg-path eval_configs/xraygpt_eval.yaml --gpu-id 0
    xraygpt demo --cfg-path eval_configs/xraygpt_tiny_eval.yaml --device cpu

Serves http://127.0.0.1:7860 (this machine only). ``--host 0.0.0.0`` serves
the network, ``--share`` adds a public gradio.live link, ``--auth user:pw``
asks for a login. The flags are parsed here, without importing Gradio or the
model, so ``--help`` and a mistyped flag answer at once; the page is
:mod:`xraygpt.apps.demo.app`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from xraygpt.apps.demo.images import DEFAULT_MAX_BYTES
from xraygpt.apps.demo.options import DEFAULT_MAX_NEW_TOKENS, MIB
from xraygpt.common.launch import build_parser


def parse_auth(value: str) -> tuple[str, str]:
    """``user:password`` -> ``(user, password)`` (an argparse type)."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError(
            f"--auth expects user:password (both non-empty), got {value!r}"
        )
    return user, password


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be a number from 1 to 65535, got {value!r}")
    return port


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return number


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's flags, added to :func:`xraygpt.common.launch.build_parser`'s."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--gpu-id",
        type=int,
        default=0,
        help="CUDA device to run on (default 0); falls back to the CPU if CUDA is absent",
    )
    where.add_argument("--device", help="run on this device instead, e.g. cpu or cuda:1")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: the network)",
    )
    parser.add_argument("--port", type=_port, default=7860, help="port to serve on (default 7860)")
    parser.add_argument(
        "--share",
        action="store_true",
        help="also create a public gradio.live link (off by default)",
    )
    parser.add_argument(
        "--auth",
        type=parse_auth,
        metavar="USER:PASSWORD",
        help="require this login to open the demo",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"longest answer, in tokens (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="generations that may run at once; others wait in the queue (default 1)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_int,
        default=DEFAULT_MAX_BYTES // MIB,
        help=f"largest image file accepted, in MiB (default {DEFAULT_MAX_BYTES // MIB})",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser("XrayGPT demo: upload a chest X-ray and ask about it.")
    add_demo_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported after parsing: --help and flag errors answer without loading Gradio.
    from xraygpt.apps.demo.app import main as serve
    from xraygpt.components import register_components

    register_components()
    return serve(args)
