"""WebDataset shards: writing, one pass equals the folder, DDP splitting, resume."""

import json
import tarfile

import pytest
import torch

from xraygpt.cli.shards import main as shards_main
from xraygpt.data.builders import MimicBuilder, OpenIBuilder
from xraygpt.data.loaders import build_train_loader
from xraygpt.data.shards import write_shards
from xraygpt.data.wds_dataset import ShardCaptionDataset, consumer_shards, expand_shards


@pytest.fixture
def sharded(tmp_path, make_caption_folder):
    """A 23-image folder (train 19, test 4) and its train split in shards of 5."""
    storage = tmp_path / "openi"
    make_caption_folder(storage, splits={"train": 19, "test": 4})
    manifest = write_shards(storage, "train", tmp_path / "shards", shard_size=5, image_ext=".png")
    return storage, manifest


def _wds_builder(storage, pattern, **extra):
    return OpenIBuilder(
        {
            "data_type": "wds",
            "build_info": {"storage": str(storage), "shards": pattern},
            "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 16}},
            **extra,
        }
    )


def test_shards_hold_every_train_image_and_its_annotation(sharded, tmp_path):
    storage, manifest = sharded
    assert manifest["samples"] == 19 and manifest["shards"] == [
        f"train-{i:06d}.tar" for i in range(4)
    ]
    assert manifest["pattern"].endswith("train-{000000..000003}.tar")
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        names = tar.getnames()
        assert sorted(names[:2]) == ["000000000.json", "000000000.png"]
        entry = json.loads(tar.extractfile("000000000.json").read())
        image = (storage / "image" / f"{entry['image_id']}.png").read_bytes()
        assert tar.extractfile("000000000.png").read() == image  # stored as is
    assert len(names) == 10
    assert json.loads((tmp_path / "shards" / "train-manifest.json").read_text())["samples"] == 19


def test_one_pass_over_the_shards_equals_the_folder_dataset(sharded):
    storage, manifest = sharded
    folder = OpenIBuilder({"build_info": {"storage": str(storage)}}).build_datasets()["train"]
    shards = _wds_builder(storage, manifest["pattern"]).build_datasets()["train"]
    assert isinstance(shards, ShardCaptionDataset)
    from_folder = {(folder[i]["image_id"], folder[i]["caption"]) for i in range(len(folder))}
    from_shards = [(s["image_id"], s["caption"]) for s in shards]
    assert len(from_shards) == 19 and set(from_shards) == from_folder
    # the same pass, split over two DataLoader workers, still sees each sample once
    loader = torch.utils.data.DataLoader(shards, batch_size=None, num_workers=2)
    assert sorted(s["image_id"] for s in loader) == sorted(i for i, _ in from_folder)


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (2, 2), (3, 2)])
def test_every_rank_and_worker_reads_different_samples(sharded, world, workers):
    storage, manifest = sharded
    shards = _wds_builder(storage, manifest["pattern"]).build_datasets()["train"]
    consumers = world * max(workers, 1)
    # one epoch of each consumer: disjoint, and together all 19 samples
    seen = []
    for consumer in range(consumers):
        seen.append([raw["__key__"] for raw in shards.raw_stream(0, consumer, consumers, 7)])
    flat = [key for part in seen for key in part]
    assert len(flat) == len(set(flat)) == 19
    # the loaders of different ranks give different images and never run dry
    per_rank = []
    for rank in range(world):
        loader = build_train_loader(
            shards, 2, num_workers=workers, rank=rank, world_size=world, seed=7
        )
        per_rank.append([i for _ in range(12) for i in next(loader)["image_id"]])
        loader.close()
    first = [ids[:2] for ids in per_rank]
    assert all(set(a).isdisjoint(b) for k, a in enumerate(first) for b in first[k + 1 :])


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_loader_resumes_exactly(sharded, workers):
    storage, manifest = sharded
    shards = _wds_builder(storage, manifest["pattern"]).build_datasets()["train"]
    full = build_train_loader(shards, 3, num_workers=workers, seed=2)
    batches = [next(full) for _ in range(10)]
    full.close()
    resumed = build_train_loader(shards, 3, num_workers=workers, seed=2, start_step=7)
    again = [next(resumed) for _ in range(3)]
    resumed.close()
    assert [b["image_id"] for b in again] == [b["image_id"] for b in batches[7:]]
    for x, y in zip(again, batches[7:], strict=True):
        torch.testing.assert_close(x["image"], y["image"])


def test_fewer_shards_than_consumers_splits_by_sample():
    ids, subsample = consumer_shards(2, epoch=0, consumer=3, n_consumers=4, seed=0)
    assert subsample and sorted(ids) == [0, 1]
    ids, subsample = consumer_shards(8, epoch=0, consumer=3, n_consumers=4, seed=0)
    assert not subsample and len(ids) == 2


def test_bad_image_in_a_shard_is_skipped_and_counted(tmp_path, make_caption_folder):
    storage = tmp_path / "d"
    make_caption_folder(storage, n=6)
    (storage / "image" / "img003.png").write_bytes(b"corrupt")
    manifest = write_shards(storage, "train", tmp_path / "s", shard_size=6, image_ext=".png")
    shards = _wds_builder(storage, manifest["pattern"]).build_datasets()["train"]
    assert sorted(s["image_id"] for s in shards) == [
        "img000",
        "img001",
        "img002",
        "img004",
        "img005",
    ]
    loader = build_train_loader(shards, 5, seed=0)
    batch = next(loader)
    assert "img003" not in batch["image_id"] and batch["skipped"] == 1
    assert loader.pop_bad_image_count() == 1
    strict = _wds_builder(storage, manifest["pattern"], on_bad_image="error").build_datasets()
    with pytest.raises(RuntimeError, match="img003"):
        list(strict["train"])


def test_missing_shards_and_split_mapping(sharded, tmp_path):
    storage, manifest = sharded
    with pytest.raises(
        FileNotFoundError,
        match="6 of 10 shards.*train-000004.tar.*xraygpt shards",
    ):
        expand_shards(str(tmp_path / "shards" / "train-{000000..000009}.tar"))
    test_manifest = write_shards(storage, "test", tmp_path / "shards", 5, ".png")
    built = _wds_builder(
        storage, {"train": manifest["pattern"], "test": test_manifest["pattern"]}
    ).build_datasets()
    assert list(built) == ["train", "test"]
    assert len(list(built["test"])) == 4


def test_cli_writes_shards_and_prints_the_pattern(tmp_path, make_caption_folder, capsys):
    storage = tmp_path / "mimic"
    make_caption_folder(storage, n=4, ext=".jpg")
    assert (
        shards_main(["--storage", str(storage), "--out", str(tmp_path / "o"), "--shard-size", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "wrote 4 samples in 2 shards" in out and "train-{000000..000001}.tar" in out
    pattern = out.strip().split("build_info.shards: ")[-1]
    ds = MimicBuilder({"data_type": "wds", "build_info": {"shards": pattern}}).build_datasets()
    assert len(list(ds["train"])) == 4
    assert shards_main(["--storage", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2


def test_dicom_shards_are_read_from_their_bytes(tmp_path, make_caption_folder):
    import numpy as np
    from PIL import Image

    from xraygpt.processors.dicom import write_dicom

    storage = tmp_path / "d"
    make_caption_folder(storage, n=4)
    for png in sorted((storage / "image").glob("*.png")):
        pixels = np.asarray(Image.open(png)).astype(np.uint16) * 16
        write_dicom(png.with_suffix(".dcm"), pixels, bits_stored=12, photometric="MONOCHROME1")
    (storage / "image" / "img001.dcm").write_bytes(b"a .dcm that is not DICOM")
    manifest = write_shards(storage, "train", tmp_path / "s", shard_size=4, image_ext=".dcm")
    eval_proc = {"train": {"name": "blip2_image_eval", "image_size": 16}}
    shards = _wds_builder(
        storage, manifest["pattern"], image_ext="dcm", vis_processor=eval_proc
    ).build_datasets()["train"]
    folder = OpenIBuilder(
        {"build_info": {"storage": str(storage)}, "image_ext": "dcm", "vis_processor": eval_proc}
    ).build_datasets()["train"]
    by_id = {s["image_id"]: s["image"] for s in shards}
    assert sorted(by_id) == ["img000", "img002", "img003"]  # the bad one skipped
    for i in (0, 2, 3):
        assert torch.equal(by_id[f"img00{i}"], folder[i]["image"])
