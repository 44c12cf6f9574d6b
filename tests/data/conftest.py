"""Every data set test on one thread."""

import pytest


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every data set test on one thread (tests/conftest.py says why)."""
