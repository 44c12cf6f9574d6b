import sys
from pathlib import Path

import pytest
import torch

# The runner tests share toy components (runner_toys.py) that are not a test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Toy models run ~10x faster on one thread than on two cores shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
