"""``xraygpt summary``: parameter counts of a model config, built on the meta device.

    xraygpt summary --cfg-path train_configs/xraygpt_mimic_pretrain.yaml

Prints JSON: each top-level module's parameter count (total and trainable)
and the totals (:mod:`xraygpt.models.summary`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt summary",
        description="Parameter counts of a model config (meta device, no weights).",
    )
    parser.add_argument("--cfg-path", required=True)
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Imported after parsing: --help answers without torch.
    from xraygpt.components import register_components
    from xraygpt.models.summary import build_meta_model, load_model_config, parameter_summary

    register_components()
    cfg = load_model_config(args.cfg_path, args.options)
    model = build_meta_model(cfg)
    summary = parameter_summary(model)
    summary["llm"] = getattr(model, "llm_source", None)
    print(json.dumps(summary, indent=2))
    return 0
