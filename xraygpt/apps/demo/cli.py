"""The demo's command-line flags and device choice.

Kept apart from :mod:`xraygpt.apps.demo.app` so that ``python demo.py --help`` and
a mistyped flag answer at once, without importing Gradio or the model.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from xraygpt.apps.demo.images import DEFAULT_MAX_BYTES
from xraygpt.common.errors import UsageError
from xraygpt.common.generation import CHAT_GENERATION

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = CHAT_GENERATION.max_new_tokens  # the original demo's budget
MIB = 1024 * 1024


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


def resolve_device(gpu_id: int | None, device: str | None) -> Any:
    """``--device`` as given, else ``cuda:<gpu_id>``, else the CPU with a warning."""
    import torch

    if device:
        try:
            chosen = torch.device(device)
        except RuntimeError as err:
            raise UsageError(
                f"--device {device!r} is not a device name (try cpu or cuda:0)"
            ) from err
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        return chosen
    gpu_id = 0 if gpu_id is None else gpu_id
    if not torch.cuda.is_available():
        log.warning("CUDA is not available: running on the CPU (pass --device cpu to silence this)")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not 0 <= gpu_id < count:
        raise UsageError(
            f"--gpu-id {gpu_id}: this machine has {count} CUDA device(s), numbered from 0"
        )
    return torch.device(f"cuda:{gpu_id}")
