"""``xraygpt validate``: check a training set-up in seconds, before a long job finds the problem.

    xraygpt validate --cfg-path train_configs/xraygpt_mimic_pretrain.yaml
    xraygpt validate --cfg-path CFG --json --sample-images 64

(``validate_training_setup.py`` is this command as a script.) Prints a checklist
(✓ pass, ✗ required check failed, ! optional check failed, – skipped) with the fix
for each failure: config and registry names, each dataset's folder, annotations and
images, the Vicuna folder and the checkpoints, GPUs and memory, disk, Python
packages. Exits 0 only when every required check passes. The checks are in
:mod:`xraygpt.validate`.
"""

from __future__ import annotations

from xraygpt.common.launch import build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("Check an XrayGPT training set-up before launching the job.")
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON (for scripts)"
    )
    parser.add_argument(
        "--sample-images",
        type=int,
        default=32,
        metavar="N",
        help="decode N random images of each dataset (0: none, -1: all); default 32",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        metavar="N",
        help="GPUs per node the job will be launched with (torchrun --nproc-per-node); "
        "default: $LOCAL_WORLD_SIZE / $WORLD_SIZE, else run.world_size",
    )
    args = parser.parse_args(argv)

    from xraygpt.validate import validate_setup

    checklist = validate_setup(
        args.cfg_path,
        args.options,
        sample_images=args.sample_images,
        nproc_per_node=args.nproc_per_node,
    )
    print(checklist.to_json() if args.json else checklist.render())
    return checklist.exit_code
