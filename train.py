"""Train XrayGPT: ``xraygpt train`` as a script, for ``torchrun``.

    python train.py --cfg-path train_configs/xraygpt_mimic_pretrain.yaml
    torchrun --nproc-per-node 4 train.py --cfg-path train_configs/xraygpt_mimic_pretrain.yaml

See :mod:`xraygpt.cli.train`.
"""

import sys

from xraygpt.cli.train import main
from xraygpt.common.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
