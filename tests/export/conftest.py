"""The export tests: a small random mini_gpt4 with the tiny Eva encoder, exported once."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every export test on one thread (tests/conftest.py says why)."""
