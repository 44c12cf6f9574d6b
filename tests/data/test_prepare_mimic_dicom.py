"""prepare mimic --dicom on a tiny MIMIC-CXR (DICOM) tree written here with pydicom."""

import csv
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from xraygpt.cli.prepare import main
from xraygpt.data.annotations import load_annotations
from xraygpt.data.prepare import PrepareError, prepare_mimic
from xraygpt.processors.dicom import write_dicom

FINDINGS = (
    "PA and lateral views of the chest were provided. There is no focal consolidation,\n"
    " pleural effusion or pneumothorax.  The cardiomediastinal silhouette is normal."
)
REPORT = f" FINDINGS:\n \n {FINDINGS}\n \n IMPRESSION:\n \n No acute process.\n"
FAKE = {"PatientName": "Zzyzx^Quintessa", "PatientID": "FAKEPID-7731"}

PA, LAT, AP = "0aa1-pa", "0aa2-lat", "0bb1-ap"
NO_VIEW, BROKEN, MISSING = "0cc1-noview", "0cc2-multiframe", "0bb2-missing"
# (subject, study, split, {dicom_id: ViewPosition, "" for none, None for no file})
STUDIES = [
    ("10000032", "50414267", "train", {PA: "PA", LAT: "LATERAL"}),
    ("10000764", "57375967", "validate", {AP: "AP", MISSING: None}),
    ("11000011", "51029426", "test", {NO_VIEW: "", BROKEN: "PA"}),
]


def _ramp(height: int, width: int) -> np.ndarray:
    return np.linspace(0, 4095, height * width).reshape(height, width).astype(np.uint16)


def _write_tree(root: Path) -> dict[str, Path]:
    reports = root / "mimic-cxr-reports" / "files"
    dicom_root = root / "mimic-cxr" / "2.1.0"
    rows = []
    for subject, study, split, dicoms in STUDIES:
        folder = reports / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(REPORT)
        image_dir = dicom_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        for dicom_id, view in dicoms.items():
            rows.append([dicom_id, study, subject, split])
            if view is None:
                continue
            write_dicom(
                image_dir / f"{dicom_id}.dcm",
                _ramp(1200, 1000),
                bits_stored=12,
                photometric="MONOCHROME1",  # as many CR/DX films are
                view_position=view or None,
                tags=dict(FAKE),
            )
    broken = next(dicom_root.rglob(f"{BROKEN}.dcm"))
    ds = pydicom.dcmread(broken)
    ds.NumberOfFrames = 2
    ds.PixelData = _ramp(1200, 1000).tobytes() * 2
    ds.save_as(broken, enforce_file_format=True)
    split_csv = root / "mimic-cxr-2.0.0-split.csv.gz"
    with gzip.open(split_csv, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        writer.writerows(rows)
    return {"reports": reports, "dicom": dicom_root, "split_csv": split_csv}


@pytest.fixture
def tree(tmp_path):
    return _write_tree(tmp_path)


def _ids(out: Path) -> set[str]:
    return {a.image_id for a in load_annotations(out / "filter_cap.json")}


def test_dicom_tree_keeps_frontal_views_windowed_and_counts_each_view(tree, tmp_path, caplog):
    out = tmp_path / "dataset" / "mimic"
    stats = prepare_mimic(tree["reports"], tree["split_csv"], out, dicom=tree["dicom"], workers=1)
    assert _ids(out) == {PA, AP}
    assert stats["images"] == {
        "max_side": 512,
        "source": "dicom",
        "copied": 2,
        "other_view": 2,
        "unreadable": 1,
        "missing_source": 1,
    }
    assert stats["views"] == {
        "kept": ["AP", "PA"],
        "counts": {
            "AP": {"seen": 1, "kept": 1},
            "LATERAL": {"seen": 1, "kept": 0},
            "NONE": {"seen": 1, "kept": 0},
            "PA": {"seen": 1, "kept": 1},
        },
    }
    assert stats["splits"]["train"] == {"reports": 1, "images": 1}
    assert json.loads((out / "prepare_stats.json").read_text()) == stats
    copy = Image.open(out / "image" / f"{PA}.jpg")
    assert copy.mode == "L" and copy.size == (427, 512)
    pixels = np.asarray(copy).astype(int)
    assert pixels[:10].mean() > 245 and pixels[-10:].mean() < 10  # MONOCHROME1: low = white
    assert not (out / "image" / f"{LAT}.jpg").exists()
    assert f"{BROKEN}.jpg" in caplog.text and "multi-frame" in caplog.text
    for value in FAKE.values():
        assert value not in caplog.text and value not in (out / "filter_cap.json").read_text()
        assert value not in (out / "prepare_stats.json").read_text()


def test_restart_skips_finished_copies_and_views_can_be_chosen(tree, tmp_path):
    out = tmp_path / "mimic"
    prepare_mimic(tree["reports"], tree["split_csv"], out, dicom=tree["dicom"])
    first = (out / "image" / f"{PA}.jpg").stat().st_mtime_ns
    again = prepare_mimic(tree["reports"], tree["split_csv"], out, dicom=tree["dicom"])
    assert again["images"]["already_present"] == 2 and "copied" not in again["images"]
    assert (out / "image" / f"{PA}.jpg").stat().st_mtime_ns == first
    every = prepare_mimic(
        tree["reports"], tree["split_csv"], out, dicom=tree["dicom"], views=None, workers=2
    )
    assert _ids(out) == {PA, AP, LAT, NO_VIEW}
    assert every["images"]["already_present"] == 2 and every["images"]["copied"] == 2
    assert every["views"]["kept"] == "all"
    lateral = prepare_mimic(
        tree["reports"], tree["split_csv"], out, dicom=tree["dicom"], views=["lateral", "none"]
    )
    assert _ids(out) == {LAT, NO_VIEW} and lateral["views"]["kept"] == ["LATERAL", "NONE"]


def test_cli(tree, tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["mimic", "--reports", str(tree["reports"]), "--split-csv", str(tree["split_csv"])]
    code = main(
        [
            *common,
            "--dicom",
            str(tree["dicom"]),
            "--views",
            "PA",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and _ids(out) == {PA}
    printed = capsys.readouterr().out
    assert "views kept: PA" in printed and "LATERAL" in printed
    code = main(
        [*common, "--dicom", str(tree["dicom"]), "--images", str(tmp_path), "--out", str(out)]
    )
    assert code == 2 and "either --images" in capsys.readouterr().err
    with pytest.raises(PrepareError, match="DICOM folder not found"):
        prepare_mimic(tree["reports"], tree["split_csv"], out, dicom=tmp_path / "nope")


def test_logging_of_a_run_holds_no_patient_data(tree, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    main(
        [
            "mimic",
            "--reports",
            str(tree["reports"]),
            "--split-csv",
            str(tree["split_csv"]),
            "--dicom",
            str(tree["dicom"]),
            "--workers",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    printed = capsys.readouterr()
    for value in FAKE.values():
        assert value not in caplog.text + printed.out + printed.err
