"""What every entry point shares: the argument parser, logging and seeding.

Kept free of heavy imports so that ``python train.py --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from typing import Any


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg-path", required=True, help="path to the job's YAML config")
    parser.add_argument(
        "--options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --options run.init_lr=3e-5 model.freeze_vit=false",
    )
    # Read by xraygpt.common.errors.run_main; declared here so that --help lists it.
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of the project's own errors too (or set XRAYGPT_DEBUG=1)",
    )
    return parser


def setup_logging(rank: int | None = None) -> None:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; each rank gets its own stream (seed + rank)."""
    import numpy as np
    import torch

    value = seed + rank
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(value)


def load_config(args: argparse.Namespace):
    """The merged config of the job, printed on rank 0."""
    from xraygpt.common.config import Config

    return Config(args.cfg_path, args.options)


def start_job(args: argparse.Namespace, *, seed_per_rank: bool) -> tuple[Any, Any]:
    """What a training or evaluation job does first, on every rank: logging, the merged
    config (printed on rank 0), the process group and this rank's device, the seed.

    ``seed_per_rank``: each rank its own stream (training); else the same seed on every
    rank (evaluation: ranks must agree on anything drawn at random). The components must
    be registered (:func:`xraygpt.components.register_components`). Returns ``(cfg, device)``;
    the caller ends with :func:`xraygpt.common.dist.cleanup`.
    """
    from xraygpt.common import dist

    setup_logging()
    cfg = load_config(args)
    device = dist.init_distributed(cfg.run_cfg.device)
    seed_everything(cfg.run_cfg.seed, dist.get_rank() if seed_per_rank else 0)
    if dist.is_main_process():
        print(cfg.pretty_print(), flush=True)
    return cfg, device
