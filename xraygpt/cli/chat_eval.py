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
    parser = build_parser("Chat evaluation of a tiny-recipe model on the phantom test split.")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument(
        "--phrasing",
        choices=("held_out", "train"),
        default="held_out",
        help="the questions' phrasings: held out (the evaluation) or training (a diagnosis)",
    )
    args = parser.parse_args(argv)
    # Imported after parsing: --help answers without torch.
    from xraygpt.common.launch import load_config, seed_everything, setup_logging
    from xraygpt.components import register_components
    from xraygpt.eval.chat_eval import format_chat_metrics, run_chat_eval

    register_components()
    setup_logging()
    cfg = load_config(args)
    seed_everything(cfg.run_cfg.seed)
    metrics = run_chat_eval(cfg, limit=args.limit, phrasing=args.phrasing)
    print(format_chat_metrics(metrics))
    print(f"wrote {cfg.output_dir}/chat_metrics.json and chat_answers.jsonl")
    return 0
