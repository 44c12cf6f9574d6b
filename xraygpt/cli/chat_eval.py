"""``xraygpt chat-eval``: chat evaluation of a tiny-recipe model on the phantom test split.

    xraygpt chat-eval --cfg-path eval_configs/xraygpt_tiny_eval.yaml

Takes test.py's config (and ``--options``): the model, its weights and
``datasets.phantom.build_info.storage``. Writes ``chat_metrics.json`` and
``chat_answers.jsonl`` to ``<run.output_dir>/<job>/`` and prints the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from xraygpt.common.launch import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument(
        "--phrasing",
        choices=("held_out", "train"),
        default="held_out",
        help="the questions' phrasings: held out (the evaluation) or training (a diagnosis)",
    )
    args = parser.parse_args(argv)
    import torch

    from xraygpt.common.config import ConfigError
    from xraygpt.common.launch import load_config, seed_everything, setup_logging
    from xraygpt.components import register_components
    from xraygpt.conversation.chat import Chat
    from xraygpt.eval.chat_eval import (
        evaluate_chat,
        format_chat_metrics,
        phantom_cases,
        write_results,
    )
    from xraygpt.models.factory import load_model_and_processors

    register_components()
    setup_logging()
    cfg = load_config(args)
    seed_everything(cfg.run_cfg.seed)
    if "phantom" not in cfg.datasets_cfg:
        raise ConfigError(
            f"{args.cfg_path}: the chat evaluation reads the phantom test split; the config "
            f"names no datasets.phantom"
        )
    storage = cfg.datasets_cfg.phantom.build_info.storage or "dataset/phantom"
    device = "cuda" if cfg.run_cfg.device == "cuda" and torch.cuda.is_available() else "cpu"
    model, vis_processor = load_model_and_processors(cfg, device=device)
    chat = Chat(model, vis_processor)
    cases = phantom_cases(storage, limit=args.limit)
    records = evaluate_chat(chat, cases, seed=cfg.run_cfg.seed, phrasing=args.phrasing)
    metrics = write_results(cfg.output_dir, records)
    print(format_chat_metrics(metrics))
    print(f"wrote {cfg.output_dir}/chat_metrics.json and chat_answers.jsonl")
    return 0

