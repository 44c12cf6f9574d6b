"""``xraygpt train``: train an XrayGPT stage, in one process or one per GPU under torchrun.

    xraygpt train --cfg-path train_configs/xraygpt_mimic_pretrain.yaml
    torchrun --nproc-per-node 4 train.py --cfg-path train_configs/xraygpt_mimic_pretrain.yaml
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 \\
        --nproc-per-node 4 train.py --cfg-path ...           # on each node, its own rank

(``train.py`` is this command as a script, for torchrun.) Continue a killed run
with ``--options run.resume=auto`` (newest checkpoint in the job's output folder)
or ``run.resume_ckpt_path=<file>``.
"""

from __future__ import annotations

from xraygpt.common.launch import build_parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser("Train an XrayGPT stage from a YAML config.").parse_args(argv)
    # Heavy imports only after parsing, so that --help is instant.
    from xraygpt.common import dist
    from xraygpt.common.launch import load_config, seed_everything, setup_logging
    from xraygpt.components import register_components

    registry = register_components()
    setup_logging()
    cfg = load_config(args)
    device = dist.init_distributed(cfg.run_cfg.device)
    seed_everything(cfg.run_cfg.seed, dist.get_rank())
    if dist.is_main_process():
        print(cfg.pretty_print(), flush=True)
    try:
        task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner = registry.get_runner_class(cfg.run_cfg.runner)(
            cfg, task, model, datasets, device=device
        )
        return runner.train()
    finally:
        dist.cleanup()
