"""Dataset checks: folders, annotations, sampled images, splits."""

from __future__ import annotations

import json

from tests.validate.helpers import (
    assert_fails,
    check,
    run,
)
from xraygpt.validate.checklist import PASS, SKIP

# --------------------------------------------------------------------------- the failures


def test_missing_dataset_folder(tiny_job, tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run(tiny_job, f"datasets.phantom.build_info.storage={missing}")
    item = assert_fails(result, "phantom: storage", str(missing))
    assert "datasets.phantom.build_info.storage" in item.fix
    assert "xraygpt phantom --out dataset/phantom" in item.fix
    assert check(result, "phantom: annotations").status == SKIP


def test_malformed_annotation_json(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    ann.write_text(ann.read_text()[:-40])  # cut off mid-file
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: annotations", "not valid JSON", str(ann), "line")
    assert "annotations" in item.fix


def test_annotation_schema_error_names_the_entry(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    data = json.loads(ann.read_text())
    del data["annotations"][3]["caption"]
    ann.write_text(json.dumps(data))
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    assert_fails(result, "phantom: annotations", "annotations[3]", "caption")


def test_corrupt_image_is_listed(tiny_job, data_copy):
    bad = data_copy / "image" / "phantom_00004.png"
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated download
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: sample images", "9 of 10", str(bad))
    assert len(item.details) == 1
    assert check(result, "phantom: image files").status == PASS


def test_dicom_images_are_sampled_through_the_dicom_reader(tiny_job, data_copy):
    import numpy as np
    from PIL import Image

    from xraygpt.processors.dicom import write_dicom

    for png in sorted((data_copy / "image").glob("*.png")):
        pixels = np.asarray(Image.open(png).convert("L")).astype(np.uint16) * 16  # 12 bits
        write_dicom(png.with_suffix(".dcm"), pixels, bits_stored=12, photometric="MONOCHROME2")
        png.unlink()
    bad = data_copy / "image" / "phantom_00004.dcm"
    bad.write_bytes(bad.read_bytes()[:-500])  # truncated pixel data
    result = run(
        tiny_job,
        f"datasets.phantom.build_info.storage={data_copy}",
        "datasets.phantom.image_ext=dcm",
    )
    assert check(result, "phantom: image files").status == PASS
    item = assert_fails(result, "phantom: sample images", "9 of 10", str(bad))
    assert len(item.details) == 1 and "pixel data cannot be decoded" in item.details[0]


def test_too_small_image_is_listed(tiny_job, data_copy):
    from PIL import Image

    small = data_copy / "image" / "phantom_00002.png"
    Image.new("L", (1, 1), 100).save(small)  # decodes fine, but is no radiograph
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: sample images", "9 of 10", ">= 32 px", str(small))
    assert "1x1 px" in item.details[0] and "min_image_size" in item.fix
    relaxed = run(
        tiny_job,
        f"datasets.phantom.build_info.storage={data_copy}",
        "datasets.phantom.min_image_size=0",
    )
    assert check(relaxed, "phantom: sample images").status == PASS


def test_missing_image_and_wrong_extension(tiny_job, data_copy):
    image = data_copy / "image" / "phantom_00002.png"
    image.rename(image.with_suffix(".jpg"))
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: image files", "9 of 10", "phantom_00002.png")
    assert ".jpg" in item.fix and "image_ext" in item.fix


def test_split_the_run_needs_is_missing(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    data = json.loads(ann.read_text())
    for entry in data["annotations"]:
        entry["split"] = "train"
    ann.write_text(json.dumps(data))
    options = (f"datasets.phantom.build_info.storage={data_copy}", "run.valid_splits=[val]")
    result = run(tiny_job, *options)
    item = assert_fails(result, "phantom: annotations", "10 entries (train 10)", "split(s) val")
    assert "run.valid_splits" in item.fix
