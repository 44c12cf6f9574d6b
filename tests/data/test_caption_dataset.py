"""The folder dataset: samples, labels, bad images, and the collater."""

import logging

import pytest
import torch

from xraygpt.data.annotations import load_annotations
from xraygpt.data.caption_dataset import BadImageError, CaptionDataset, collate
from xraygpt.processors.blip_processors import Blip2ImageEvalProcessor, BlipCaptionProcessor


def _dataset(root, **kwargs):
    return CaptionDataset(
        load_annotations(root / "filter_cap.json"),
        root / "image",
        Blip2ImageEvalProcessor(image_size=32),
        BlipCaptionProcessor(),
        image_ext=".png",
        name="openi",
        **kwargs,
    )


def test_sample_has_image_caption_image_id_and_labels_when_annotated(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=3, labels=True)
    sample = _dataset(tmp_path)[1]
    assert sample["image"].shape == (3, 32, 32)
    assert sample["caption"] == "finding number 1 no effusion"
    assert sample["image_id"] == "img001"
    assert sample["labels"]["Cardiomegaly"] == 1 and sample["labels"]["No Finding"] == 0
    assert sample["skipped"] == 0
    make_caption_folder(tmp_path / "plain", n=2)
    assert "labels" not in _dataset(tmp_path / "plain")[0]


def test_bad_images_are_skipped_with_a_warning_and_counted(tmp_path, caplog, make_caption_folder):
    make_caption_folder(tmp_path, n=5)
    (tmp_path / "image" / "img001.png").write_bytes(b"not an image")
    (tmp_path / "image" / "img002.png").unlink()
    ds = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        sample = ds[1]
    assert sample["image_id"] == "img003" and sample["skipped"] == 2
    assert "img001.png" in caplog.text and "img002.png" in caplog.text
    assert ds[4]["image_id"] == "img004" and ds[4]["skipped"] == 0


def test_skipping_wraps_around_the_end(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=3)
    (tmp_path / "image" / "img002.png").unlink()
    assert _dataset(tmp_path)[2]["image_id"] == "img000"


def test_on_bad_image_error_is_fatal_and_names_the_file(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=3)
    (tmp_path / "image" / "img001.png").write_bytes(b"")
    ds = _dataset(tmp_path, on_bad_image="error")
    assert ds[0]["image_id"] == "img000"
    with pytest.raises(BadImageError, match="img001.png.*on_bad_image: skip"):
        ds[1]


def test_a_folder_of_unreadable_images_is_an_error_not_an_endless_loop(
    tmp_path, make_caption_folder
):
    make_caption_folder(tmp_path, n=4)
    for path in (tmp_path / "image").iterdir():
        path.unlink()
    with pytest.raises(BadImageError, match="4 images in a row are unreadable"):
        _dataset(tmp_path)[0]


def test_collate_stacks_images_lists_the_rest_and_sums_skipped(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=3, labels=True)
    ds = _dataset(tmp_path)
    plain = dict(ds[2])
    del plain["labels"]
    plain["skipped"] = 3
    batch = collate([ds[0], ds[1], plain])
    assert batch["image"].shape == (3, 3, 32, 32)
    assert batch["image_id"] == ["img000", "img001", "img002"]
    assert batch["caption"][0] == "finding number 0 no effusion"
    assert batch["labels"][2] is None and batch["labels"][0]["No Finding"] == 1
    assert batch["skipped"] == 3
    assert torch.equal(batch["image"][1], ds[1]["image"])
    with pytest.raises(ValueError):
        collate([])


def test_bad_arguments(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=2)
    with pytest.raises(ValueError, match="on_bad_image"):
        _dataset(tmp_path, on_bad_image="ignore")
    with pytest.raises(IndexError):
        _dataset(tmp_path)[2]


def test_an_image_below_min_image_size_is_a_bad_image(tmp_path, caplog, make_caption_folder):
    from PIL import Image

    make_caption_folder(tmp_path, n=3)
    Image.new("L", (1, 1), 128).save(tmp_path / "image" / "img001.png")
    with caplog.at_level(logging.WARNING):
        sample = _dataset(tmp_path)[1]
    assert sample["image_id"] == "img002" and sample["skipped"] == 1
    assert "img001.png" in caplog.text and "1x1 px" in caplog.text
    with pytest.raises(BadImageError, match="img001.png.*1x1 px.*min_image_size"):
        _dataset(tmp_path, on_bad_image="error")[1]
    # The minimum is the dataset's to set: 0 accepts any size.
    assert _dataset(tmp_path, min_image_size=0)[1]["image_id"] == "img001"
    # The folder's images are 40x48: a minimum of 41 px refuses them all.
    with pytest.raises(BadImageError, match="3 images in a row are unreadable"):
        _dataset(tmp_path, min_image_size=41)[0]
