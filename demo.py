"""Chat with XrayGPT about a chest X-ray in the browser: ``xraygpt demo`` as a script.

    python demo.py --cfg-path eval_configs/xraygpt_eval.yaml --gpu-id 0
    python demo.py --cfg-path eval_configs/xraygpt_tiny_eval.yaml --device cpu

Serves http://127.0.0.1:7860 (this machine only). See :mod:`xraygpt.cli.demo`.
"""

import sys

from xraygpt.cli.demo import main
from xraygpt.common.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
