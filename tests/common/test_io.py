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


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from xraygpt.common.errors import DiskFullError
    from xraygpt.train.checkpoint import LAST_NAME, save_checkpoint

    save_checkpoint({"step": 2, "w": torch.ones(1000)}, tmp_path, 2, keep_last=2)
    real_save = torch.save

    def full_disk(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)  # some bytes reach the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        DiskFullError, match=r"cannot write .*checkpoint_4.pth: no space left"
    ) as info:
        save_checkpoint({"step": 4, "w": torch.zeros(1000)}, tmp_path, 4, keep_last=2)
    message = str(info.value)
    assert "no checkpoint_4.pth was written" in message and "run.resume=auto" in message
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    # Nothing half-written is left; the previous checkpoint is whole and still the last one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_2.pth", LAST_NAME]
    for name in ("checkpoint_2.pth", LAST_NAME):
        state = load_checkpoint(tmp_path / name)
        assert state["step"] == 2 and torch.equal(state["w"], torch.ones(1000))


def test_disk_full_over_an_existing_file_says_it_is_untouched(tmp_path, monkeypatch):
    import errno

    from xraygpt.common.errors import DiskFullError
    from xraygpt.common.io import atomic_write_text

    path = tmp_path / "config.yaml"
    atomic_write_text("old: 1\n", path)

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("xraygpt.common.io.os.fsync", fsync)
    with pytest.raises(DiskFullError, match="the previous config.yaml is untouched"):
        atomic_write_text("new: 2\n", path)
    assert path.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == [path.name]
