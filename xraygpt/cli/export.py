"""``xraygpt export hf|llm``: the trained model in formats other tools load.

    xraygpt export hf --cfg-path eval_configs/xraygpt_tiny_eva_eval.yaml --out output/xraygpt_tiny_eva_hf
    xraygpt export llm --cfg-path train_configs/xraygpt_tiny_sft.yaml \\
        --ckpt output/xraygpt_tiny_sft/checkpoint_last.pth --out output/radvicuna_tiny

- ``hf``: the whole model as transformers' ``Blip2ForConditionalGeneration``, with its
  processor and generation config (:mod:`xraygpt.export.hf`).
- ``llm``: the language model alone as a plain ``LlamaForCausalLM`` folder, LoRA
  merged (:mod:`xraygpt.export.language_model`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from types import ModuleType

from xraygpt.export import DEFAULT_SHARD_SIZE

HF_HELP = "the whole model as transformers' Blip2ForConditionalGeneration (+ processor)"
LLM_HELP = "the language model alone as a LlamaForCausalLM folder, LoRA merged"


def _common_flags() -> argparse.ArgumentParser:
    """The flags both formats take."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values"
    )
    common.add_argument(
        "--out", required=True, help="the folder to write (new, empty, or an earlier export)"
    )
    common.add_argument(
        "--max-shard-size",
        default=DEFAULT_SHARD_SIZE,
        help=f"largest safetensors shard (default {DEFAULT_SHARD_SIZE})",
    )
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export at --out (never a folder of anything else)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xraygpt export", description="Export a trained XrayGPT model."
    )
    sub = parser.add_subparsers(dest="format", required=True, metavar="{hf,llm}")
    common = _common_flags()
    hf = sub.add_parser("hf", parents=[common], help=HF_HELP, description=HF_HELP)
    hf.add_argument("--cfg-path", required=True, help="the job's YAML (e.g. an eval config)")
    hf.add_argument(
        "--dtype",
        default=None,
        help="cast the weights (float32, float16, bfloat16; the Q-Former stays fp32); default: keep",
    )
    llm = sub.add_parser("llm", parents=[common], help=LLM_HELP, description=LLM_HELP)
    llm.add_argument(
        "--cfg-path", required=True, help="the YAML config the checkpoint was trained with"
    )
    llm.add_argument(
        "--ckpt",
        required=True,
        help="a training checkpoint: checkpoint_<step>.pth / checkpoint_last.pth, or an FSDP "
        "checkpoint_<step>/ folder",
    )
    llm.add_argument(
        "--dtype",
        default=None,
        help="dtype of the written weights (float16, bfloat16, float32); default: the model's",
    )
    return parser


#: format -> the module of xraygpt/export that writes it
EXPORTERS = {"hf": "xraygpt.export.hf", "llm": "xraygpt.export.language_model"}


def _exporter(name: str) -> ModuleType | None:
    """The module writing format ``name``, or None where this installation lacks it (the
    other format still works)."""
    try:
        return importlib.import_module(EXPORTERS[name])
    except ModuleNotFoundError as err:
        if err.name == EXPORTERS[name]:
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported after parsing: --help answers without torch.
    from dataclasses import asdict

    from xraygpt.common.launch import setup_logging
    from xraygpt.components import register_components

    register_components()
    exporter = _exporter(args.format)
    if exporter is None:
        print(
            f"xraygpt export {args.format}: not available in this installation "
            f"(no module {EXPORTERS[args.format]})",
            file=sys.stderr,
        )
        return 2
    if args.format == "hf":
        setup_logging()
        report = exporter.export_from_config(
            args.cfg_path,
            args.options,
            args.out,
            max_shard_size=args.max_shard_size,
            dtype=args.dtype,
            overwrite=args.overwrite,
        )
        print(json.dumps(asdict(report), indent=2))
        return 0
    info = exporter.export_llm(
        args.cfg_path,
        args.ckpt,
        args.out,
        options=args.options,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out} ({info['parameters'] / 1e6:.2f} M parameters, {info['dtype']})")
    return 0
