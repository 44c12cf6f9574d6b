import pytest

# The runner tests share toy components: ``tests.train.runner_toys`` (the repository root is
# on the path through pytest's ``pythonpath``).


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every runner test on one thread: toy models run ~10x faster (tests/conftest.py)."""
