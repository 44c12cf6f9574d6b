"""What the benchmarks share: the full-size random model, the machine description,
timing and reporting."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))


def build_full_size_random(device: torch.device, options: Any, **overrides: Any):
    """XrayGPT's full-size model (EVA-ViT-g + Q-Former + LLaMA-7B) with random weights.

    Nothing is loaded: no Vicuna folder (the ``llama-7b`` preset instead), no ViT or
    BLIP-2 checkpoint, and the shipped tiny tokenizer. ``options`` holds what
    :func:`add_full_size_options` parsed: the frozen ViT and LLM in
    ``options.precision`` (bf16 as XrayGPT runs them; fp32 for CPU smoke tests), and
    ``options.vit_layers``/``options.llm_layers`` keeping only the first blocks of
    each, so that a smoke test of a benchmark fits a small machine. ``overrides``
    go on top.
    """
    from xraygpt.models.factory import build_model
    from xraygpt.models.mini_gpt4 import MiniGPT4

    precision = options.precision
    random_weights: dict[str, Any] = {
        "vit_ckpt": "",
        "q_former_model": "",
        "llama_model": "",
        "llama_preset": "llama-7b",
        "tokenizer": "xraygpt/models/assets/tiny_tokenizer",
        "llm_dtype": "bfloat16" if precision == "bf16" else "float32",
        "vit_precision": precision,
    }
    if options.llm_layers:
        random_weights["llama_config"] = {"num_hidden_layers": options.llm_layers}
    cfg = MiniGPT4.default_config("pretrain_vicuna", {**random_weights, **overrides})
    model = build_model(cfg, device=device)
    if options.vit_layers:
        model.visual_encoder.blocks = model.visual_encoder.blocks[: options.vit_layers]
    return model


def add_full_size_options(parser) -> None:
    """The ``--size full`` options both model benchmarks take."""
    parser.add_argument(
        "--precision",
        choices=["bf16", "fp32"],
        default="bf16",
        help="full size: dtype of the frozen ViT and LLM (fp32 for CPU smoke tests)",
    )
    parser.add_argument("--vit-layers", type=int, default=None, help="cut EVA-ViT-g (smoke tests)")
    parser.add_argument("--llm-layers", type=int, default=None, help="cut the 7B LLM (smoke tests)")


def attention_backends(model) -> dict[str, str]:
    """Which attention kernel each part uses: ``sdpa`` is PyTorch's fused attention."""
    fused = all(getattr(b.attn, "fused_attn", False) for b in model.visual_encoder.blocks)
    return {
        "vit": "sdpa" if fused else "eager",
        "qformer": model.Qformer.config._attn_implementation,
        "llm": model.llama_model.config._attn_implementation,
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, out: dict[str, float], key: str = "seconds"):
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    out[key] = time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def report(name: str, args: dict[str, Any], rows: list[dict[str, Any]], extra: dict[str, Any]):
    """One JSON line (for scripts and BENCHMARKS.md) and a table for people."""
    record = {"benchmark": name, "machine": machine(), "args": args, "results": rows, **extra}
    print(json.dumps(record))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for key, value in extra.items():
        print(f"{key}: {value}")
    return record


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_of(repeats: int, fn: Callable[[], dict[str, float]], key: str) -> dict[str, float]:
    """Run ``fn`` ``repeats`` times and keep the run with the largest ``key``."""
    runs = [fn() for _ in range(repeats)]
    return max(runs, key=lambda r: r[key])
