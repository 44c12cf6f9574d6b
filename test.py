"""Evaluate XrayGPT on a test split: ``xraygpt evaluate`` as a script.

    python test.py --cfg-path eval_configs/xraygpt_eval.yaml
    torchrun --nproc-per-node 4 test.py --cfg-path eval_configs/xraygpt_eval.yaml

See :mod:`xraygpt.cli.evaluate`.
"""

import sys

from xraygpt.cli.evaluate import main
from xraygpt.common.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
