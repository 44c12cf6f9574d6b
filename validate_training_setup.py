"""Check a training set-up before launching the job: ``xraygpt validate`` as a script.

    python validate_training_setup.py --cfg-path train_configs/xraygpt_mimic_pretrain.yaml

See :mod:`xraygpt.cli.validate`.
"""

import sys

from xraygpt.cli.validate import main
from xraygpt.common.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
