import pytest


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every training test on one thread (tests/conftest.py says why)."""
