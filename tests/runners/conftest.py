import sys
from pathlib import Path

import pytest

# The runner tests share toy components (runner_toys.py) that are not a test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every runner test on one thread: toy models run ~10x faster (tests/conftest.py)."""
