"""``xraygpt evaluate``: generate a report for every test image, score it, write the results.

    xraygpt evaluate --cfg-path eval_configs/xraygpt_eval.yaml
    xraygpt evaluate --cfg-path eval_configs/xraygpt_eval.yaml --options run.max_samples=100 run.num_beams=3
    torchrun --nproc-per-node 4 test.py --cfg-path eval_configs/xraygpt_eval.yaml

(``test.py`` is this command as a script.) Writes ``predictions.jsonl`` and
``metrics.json`` to ``<run.output_dir>/<job>/`` and prints the metrics (model and
baselines). Score any other predictions file with ``xraygpt score --predictions FILE``.
"""

from __future__ import annotations

from xraygpt.common.launch import build_parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser("Evaluate an XrayGPT model on a test split.").parse_args(argv)
    # Heavy imports only after parsing, so that --help is instant.
    from xraygpt.common import dist
    from xraygpt.common.launch import start_job
    from xraygpt.components import register_components
    from xraygpt.eval.evaluation import evaluate_job

    register_components()
    # The same seed on every rank: ranks must agree on anything drawn at random (a part
    # built without weights); generation itself is greedy or beam search.
    cfg, device = start_job(args, seed_per_rank=False)
    try:
        results = evaluate_job(cfg, device)
        if dist.is_main_process():
            from xraygpt.train.tracking import log_evaluation

            log_evaluation(cfg, results)  # headline metrics to <job>/tb/ (run.tensorboard)
        return results
    finally:
        dist.cleanup()
