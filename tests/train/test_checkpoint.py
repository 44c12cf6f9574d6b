"""Checkpoint files: trainable-only weights, RNG states, atomic writes, pruning, lookup."""

import random

import numpy as np
import pytest
import torch

from tests.train.runner_toys import TRAINABLE_NAMES, ToyModel
from xraygpt.common.io import load_checkpoint
from xraygpt.models.checkpoint_fit import load_trainable_state_dict
from xraygpt.train import checkpoint as ckpt_mod
from xraygpt.train.checkpoint import (
    LAST_NAME,
    capture_rng_state,
    find_latest_checkpoint,
    numbered_checkpoints,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    trainable_state_dict,
)


def draws():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(), np.random.randn())


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.randn()  # and one in NumPy's
    state = capture_rng_state()
    torch.save({"rng": [state]}, tmp_path / "rng.pth")
    expected = draws()

    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"][0])
    assert draws() == expected


def test_trainable_state_dict_holds_only_trainable_parameters():
    model = ToyModel()
    state = trainable_state_dict(model)
    assert set(state) == TRAINABLE_NAMES
    state["head.bias"] += 1  # a copy, not a view
    assert not torch.equal(state["head.bias"], model.head.bias)


def test_load_trainable_is_strict_and_names_the_file():
    source, target = ToyModel(), ToyModel()
    load_trainable_state_dict(target, trainable_state_dict(source), "a.pth")
    assert torch.equal(target.proj.weight, source.proj.weight)
    assert not torch.equal(target.frozen.weight, source.frozen.weight)  # frozen untouched

    state = trainable_state_dict(source)
    del state["head.bias"]
    with pytest.raises(ValueError, match=r"b\.pth.*missing: \['head.bias'\]"):
        load_trainable_state_dict(target, state, "b.pth")
    state = {**trainable_state_dict(source), "frozen.weight": source.frozen.weight}
    with pytest.raises(ValueError, match=r"not trainable here: \['frozen.weight'\]"):
        load_trainable_state_dict(target, state, "c.pth")
    state = {**trainable_state_dict(source), "head.bias": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"d\.pth: shape mismatch.*head.bias \(5,\) vs \(1,\)"):
        load_trainable_state_dict(target, state, "d.pth")


def test_save_keeps_the_newest_and_points_last_at_it(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint({"step": step, "w": torch.full((2,), step)}, tmp_path, step, keep_last=2)
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [20, 30]
    last = load_checkpoint(tmp_path / LAST_NAME)
    assert last["step"] == 30 and torch.equal(last["w"], torch.full((2,), 30))
    assert not (tmp_path / LAST_NAME).is_symlink()
    assert find_latest_checkpoint(tmp_path) == tmp_path / LAST_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_20.pth",
        "checkpoint_30.pth",
        LAST_NAME,
    ]
    # checkpoint_last.pth stays whole even when every numbered file is gone
    for _, path in numbered_checkpoints(tmp_path):
        path.unlink()
    assert load_checkpoint(tmp_path / LAST_NAME)["step"] == 30


def test_keep_zero_keeps_all(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, tmp_path, step, keep_last=0)
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [1, 2, 3]


def test_a_failed_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"step": 1}, tmp_path, 1, keep_last=2)
    good = (tmp_path / LAST_NAME).read_bytes()

    def dies_half_way(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, tmp_path, 2, keep_last=2)
    assert (tmp_path / LAST_NAME).read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pth", LAST_NAME]


def test_last_falls_back_to_a_copy_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError("links not supported")

    monkeypatch.setattr(ckpt_mod.os, "link", no_links)
    save_checkpoint({"step": 5}, tmp_path, 5, keep_last=1)
    assert load_checkpoint(tmp_path / LAST_NAME)["step"] == 5


def test_find_latest_without_last_uses_the_highest_step(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    assert find_latest_checkpoint(tmp_path / "absent") is None
    for step in (9, 100, 11):
        torch.save({"step": step}, tmp_path / f"checkpoint_{step}.pth")
    (tmp_path / "checkpoint_best.pth").write_bytes(b"")
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint_100.pth"


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    save_checkpoint({"step": 1}, tmp_path, 1, keep_last=2)
    (tmp_path / ".checkpoint_2.pth.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".checkpoint_last.pth.x.tmp").write_bytes(b"")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [
        ".checkpoint_2.pth.abc123.tmp",
        ".checkpoint_last.pth.x.tmp",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_1.pth",
        LAST_NAME,
        "notes.tmp",
    ]
    assert remove_stale_temp_files(tmp_path / "absent") == []
