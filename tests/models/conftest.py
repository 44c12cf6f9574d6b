"""The model tests use ``make_model`` (tests/conftest.py): small random models, CPU, no downloads."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every model test on one thread (tests/conftest.py says why)."""


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
