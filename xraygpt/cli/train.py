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
    from xraygpt.common.launch import start_job
    from xraygpt.components import register_components
    from xraygpt.train.runner import train_job

    register_components()
    cfg, device = start_job(args, seed_per_rank=True)
    try:
        return train_job(cfg, device)
    finally:
        dist.cleanup()
