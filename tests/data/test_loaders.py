"""The endless training loader: determinism, DDP sharding, resume, ratios, bad images."""

from collections import Counter

import pytest
import torch

from xraygpt.data.annotations import load_annotations
from xraygpt.data.caption_dataset import CaptionDataset
from xraygpt.data.loaders import build_train_loader
from xraygpt.processors.blip_processors import Blip2ImageTrainProcessor, BlipCaptionProcessor


def _train_set(root, name="openi", n=10, make=None, ratio=1.0):
    if make is not None:
        make(root, n=n)
    ds = CaptionDataset(
        load_annotations(root / "filter_cap.json"),
        root / "image",
        Blip2ImageTrainProcessor(image_size=16),
        BlipCaptionProcessor(),
        image_ext=".png",
        name=name,
    )
    ds.sample_ratio = ratio
    return ds


def _take(loader, n):
    batches = [next(loader) for _ in range(n)]
    loader.close()
    return batches


def _ids(batches):
    return [b["image_id"] for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_worker_count(tmp_path, make_caption_folder, workers):
    ds = _train_set(tmp_path, n=10, make=make_caption_folder)
    reference = _take(build_train_loader(ds, batch_size=3, num_workers=0, seed=5), 5)
    got = _take(build_train_loader(ds, batch_size=3, num_workers=workers, seed=5), 5)
    assert _ids(got) == _ids(reference)
    for a, b in zip(got, reference, strict=True):
        torch.testing.assert_close(a["image"], b["image"])  # same random crops
    other_seed = _take(build_train_loader(ds, batch_size=3, seed=6), 5)
    assert _ids(other_seed) != _ids(reference)


def test_never_runs_dry_and_each_epoch_is_a_permutation(tmp_path, make_caption_folder):
    ds = _train_set(tmp_path, n=10, make=make_caption_folder)
    ids = [i for b in _take(build_train_loader(ds, batch_size=5, seed=1), 8) for i in b["image_id"]]
    epochs = [ids[k : k + 10] for k in range(0, 40, 10)]
    assert all(sorted(epoch) == sorted(ids[:10]) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 4  # reshuffled every epoch


def test_ranks_see_disjoint_samples_covering_the_epoch(tmp_path, make_caption_folder):
    ds = _train_set(tmp_path, n=10, make=make_caption_folder)
    per_rank = [
        [
            i
            for b in _take(build_train_loader(ds, 5, rank=r, world_size=2, seed=3), 1)
            for i in b["image_id"]
        ]
        for r in range(2)
    ]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == [f"img{i:03d}" for i in range(10)]
    # an odd size is padded like DistributedSampler: every rank gets ceil(n / world) samples
    three = [
        [
            i
            for b in _take(build_train_loader(ds, 4, rank=r, world_size=3, seed=3), 1)
            for i in b["image_id"]
        ]
        for r in range(3)
    ]
    assert set().union(*three) == {f"img{i:03d}" for i in range(10)}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_a_step_gives_the_same_batches(tmp_path, make_caption_folder, workers):
    a = _train_set(tmp_path / "a", n=7, make=make_caption_folder, ratio=2)
    b = _train_set(tmp_path / "b", name="b", n=5, make=make_caption_folder, ratio=1)
    full = _take(build_train_loader([a, b], 2, num_workers=workers, seed=9), 9)
    resumed_loader = build_train_loader([a, b], 2, num_workers=workers, seed=9, start_step=6)
    assert resumed_loader.step == 6
    resumed = _take(resumed_loader, 3)
    assert _ids(resumed) == _ids(full[6:])
    for x, y in zip(resumed, full[6:], strict=True):
        torch.testing.assert_close(x["image"], y["image"])


def test_sample_ratios_weigh_the_choice_of_dataset_per_batch(tmp_path, make_caption_folder):
    a = _train_set(tmp_path / "a", n=4, make=make_caption_folder)
    make_caption_folder(tmp_path / "b", n=4)
    b = _train_set(tmp_path / "b", name="b")
    loader = build_train_loader({"a": a, "b": b}, 1, sample_ratios=[3, 1], seed=0)
    picks = Counter(loader.dataset_for_step(step) for step in range(4000))
    assert 0.72 < picks[0] / 4000 < 0.78
    batch = next(loader)
    assert len(batch["image_id"]) == 1  # one dataset per batch
    a.sample_ratio, b.sample_ratio = 0.0, 1.0  # default: the datasets' own ratios
    only_b = build_train_loader([a, b], 1, seed=0)
    assert {only_b.dataset_for_step(s) for s in range(100)} == {1}


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_are_counted_across_workers(tmp_path, make_caption_folder, workers):
    ds = _train_set(tmp_path, n=6, make=make_caption_folder)
    (tmp_path / "image" / "img002.png").write_bytes(b"broken")
    loader = build_train_loader(ds, batch_size=3, num_workers=workers, seed=0)
    batches = _take(loader, 4)  # two epochs: the bad file comes up twice
    assert all("img002" not in b["image_id"] for b in batches)
    assert sum(b["skipped"] for b in batches) == 2
    assert loader.pop_bad_image_count() == 2
    assert loader.pop_bad_image_count() == 0


def test_bad_arguments_are_explained(tmp_path, make_caption_folder):
    ds = _train_set(tmp_path, n=2, make=make_caption_folder)
    with pytest.raises(ValueError, match="rank"):
        build_train_loader(ds, 1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="sample_ratios"):
        build_train_loader([ds, ds], 1, sample_ratios=[1])
    with pytest.raises(ValueError, match="batch_size"):
        build_train_loader(ds, 0)
