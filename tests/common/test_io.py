"""The weights-only checkpoint loader: clear errors for empty, truncated and unsafe files."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from xraygpt.common.errors import CheckpointError, MissingFileError, XrayGPTError
from xraygpt.common.io import load_checkpoint


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(4000.0)}, path)
    return path


@pytest.mark.parametrize("mmap", [False, True])
def test_a_good_file_loads(saved, mmap):
    assert torch.equal(load_checkpoint(saved, mmap=mmap)["w"], torch.arange(4000.0))


@pytest.mark.parametrize("mmap", [False, True])
def test_empty_file(tmp_path, mmap):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model.ckpt .*empty.pth is empty \(0 bytes\)"):
        load_checkpoint(path, "model.ckpt", mmap=mmap)


@pytest.mark.parametrize("keep", [100, 0.5, 0.95])
@pytest.mark.parametrize("mmap", [False, True])
def test_truncated_zip_checkpoint(saved, tmp_path, keep, mmap):
    data = saved.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"is truncated \(\d+ bytes, its end is missing\)"):
        load_checkpoint(cut, mmap=mmap)


@pytest.mark.parametrize("mmap", [False, True])
def test_truncated_legacy_checkpoint(tmp_path, mmap):
    whole = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(4000.0)}, whole, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(cut, mmap=mmap)


def test_missing_and_unsafe_files(tmp_path):
    with pytest.raises(MissingFileError, match="run.resume checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth", "run.resume checkpoint")
    unsafe = tmp_path / "pickled.pth"
    torch.save({"args": argparse.Namespace(lr=1)}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only=True") as info:
        load_checkpoint(unsafe)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    # The old catch clauses keep working: a loading failure was a RuntimeError.
    assert issubclass(CheckpointError, RuntimeError) and issubclass(CheckpointError, XrayGPTError)
