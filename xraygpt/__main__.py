"""``python -m xraygpt <command>``: the same as the ``xraygpt`` console script."""

import sys

from xraygpt.cli import main

if __name__ == "__main__":
    sys.exit(main())
