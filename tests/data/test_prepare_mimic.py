"""prepare mimic on a small fake MIMIC-CXR tree in the official layout, written here."""

import csv
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraygpt.cli.prepare import main
from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.data.annotations import load_annotations
from xraygpt.data.prepare import PrepareError, prepare_mimic


def _report(findings: str | None, impression: str | None) -> str:
    text = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___M with cough  // ?pna\n\n"
        " COMPARISON:  ___\n\n"
    )
    if findings is not None:
        text += f" FINDINGS:\n \n {findings}\n \n"
    if impression is not None:
        text += f" IMPRESSION:\n \n {impression}\n"
    return text


LONG = (
    "PA and lateral views of the chest were provided. There is no focal consolidation,\n"
    " pleural effusion or pneumothorax.  The cardiomediastinal silhouette is normal.\n"
    " Compared to the prior study there is no change."
)
# (subject, study, report text, {dicom: (width, height) or None for a missing file}, split)
STUDIES = [
    (
        "10000032",
        "50414267",
        _report(LONG, "No acute cardiopulmonary process."),
        {
            "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014": (1000, 1200),
            "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962": None,
        },
        "train",
    ),
    (
        "10000032",
        "53189527",
        _report(None, "No acute intrathoracic process."),
        {"2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab": (300, 300)},
        "train",
    ),
    (
        "10000764",
        "57375967",
        _report(LONG, "Focal consolidation at the left lung base, ___ pneumonia."),
        {"096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4": (600, 500)},
        "validate",
    ),
    (
        "10000898",
        "50771383",
        _report("Lungs are clear.", "No acute process."),
        {"f3d0fc7b-4d6a7e5b-1b0f9c5b-0a4c7d0e-3c3b8d6e": (300, 300)},
        "train",
    ),
    (
        "11000011",
        "51029426",
        _report(LONG, "1. Mild cardiomegaly. 2. Stable left effusion."),
        {"b8b8b8b8-11111111-22222222-33333333-44444444": (1200, 1000)},
        "test",
    ),
]
NOT_IN_CSV = ("11000183", "59999999", _report(LONG, "No acute process."))


def _write_tree(root: Path) -> dict[str, Path]:
    reports = root / "mimic-cxr-reports" / "files"
    jpg = root / "mimic-cxr-jpg" / "2.0.0"
    rows = []
    for subject, study, text, dicoms, split in [*STUDIES, (*NOT_IN_CSV, {}, None)]:
        folder = reports / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
        for dicom, size in dicoms.items():
            rows.append([dicom, study, subject, split])
            if size is not None:
                image_dir = jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
                image_dir.mkdir(parents=True, exist_ok=True)
                ramp = np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0])
                Image.fromarray(ramp.astype(np.uint8)).save(image_dir / f"{dicom}.jpg", quality=90)
    split_csv = root / "mimic-cxr-2.0.0-split.csv.gz"
    with gzip.open(split_csv, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        writer.writerows(rows)
    chexpert = root / "mimic-cxr-2.0.0-chexpert.csv"
    with chexpert.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "study_id", *sorted(CHEXPERT_OBSERVATIONS)])
        for subject, study, *_ in STUDIES:
            values = {name: "" for name in CHEXPERT_OBSERVATIONS}
            values.update({"Pneumonia": "1.0", "Consolidation": "-1.0", "Edema": "0.0"})
            writer.writerow([subject, study, *(values[n] for n in sorted(CHEXPERT_OBSERVATIONS))])
    return {"reports": reports, "images": jpg, "split_csv": split_csv, "chexpert": chexpert}


@pytest.fixture
def tree(tmp_path):
    return _write_tree(tmp_path)


def test_mimic_tree_gives_one_annotation_per_dicom_with_the_official_split(tree, tmp_path):
    out = tmp_path / "dataset" / "mimic"
    stats = prepare_mimic(
        tree["reports"],
        tree["split_csv"],
        out,
        tree["images"],
        chexpert_csv=tree["chexpert"],
        workers=2,
    )
    assert stats["reports_in"] == 6
    assert stats["dropped"]["not_in_split_csv"] == 1
    assert stats["dropped"]["no_findings"] == 1
    assert stats["dropped"]["findings_under_10_words"] == 1
    assert stats["kept_reports"] == 3
    assert stats["images"] == {"max_side": 512, "copied": 3, "missing_source": 1}
    assert stats["splits"] == {
        "train": {"reports": 1, "images": 1},
        "val": {"reports": 1, "images": 1},
        "test": {"reports": 1, "images": 1},
    }
    entries = {e.image_id: e for e in load_annotations(out / "filter_cap.json")}
    first = entries["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    assert first.report_id == "s50414267" and first.split == "train"
    assert first.extra == {"subject_id": "p10000032"}
    assert first.caption == (
        "There is no focal consolidation, pleural effusion or pneumothorax. "
        "The cardiomediastinal silhouette is normal. No acute cardiopulmonary process."
    )
    val = entries["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"]
    assert val.split == "val" and "___" not in val.caption
    assert val.labels["Pneumonia"] == 1 and val.labels["Consolidation"] == 0
    assert sum(val.labels.values()) == 1
    test = entries["b8b8b8b8-11111111-22222222-33333333-44444444"]
    assert test.caption.endswith("Mild cardiomegaly. Left effusion.")
    copy = Image.open(out / "image" / "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg")
    assert copy.format == "JPEG" and copy.size == (427, 512)
    assert Image.open(out / "image" / "b8b8b8b8-11111111-22222222-33333333-44444444.jpg").size == (
        512,
        427,
    )


def test_reports_zip_and_cli_give_the_same_output(tree, tmp_path, capsys):
    folder_out = tmp_path / "from_folder"
    prepare_mimic(tree["reports"], tree["split_csv"], folder_out)
    archive = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree["reports"].rglob("*.txt")):
            zf.write(path, f"files/{path.relative_to(tree['reports']).as_posix()}")
    zip_out = tmp_path / "from_zip"
    code = main(
        [
            "mimic",
            "--reports",
            str(archive),
            "--split-csv",
            str(tree["split_csv"]),
            "--out",
            str(zip_out),
        ]
    )
    assert code == 0
    assert "not_in_split_csv" in capsys.readouterr().out
    assert (zip_out / "filter_cap.json").read_bytes() == (
        folder_out / "filter_cap.json"
    ).read_bytes()
    # without --images every dicom of a kept report is listed, unchecked
    assert len(json.loads((zip_out / "filter_cap.json").read_text())["annotations"]) == 4


def test_bad_mimic_inputs_are_explained(tree, tmp_path):
    bad_csv = tmp_path / "split.csv"
    bad_csv.write_text("dicom_id,study_id\nx,1\n")
    with pytest.raises(PrepareError, match="split.csv: MIMIC split CSV lacks column"):
        prepare_mimic(tree["reports"], bad_csv, tmp_path / "o")
    with pytest.raises(PrepareError, match="MIMIC-CXR reports not found"):
        prepare_mimic(tmp_path / "nothing", tree["split_csv"], tmp_path / "o")
    with pytest.raises(PrepareError, match="MIMIC-CXR-JPG folder not found"):
        prepare_mimic(tree["reports"], tree["split_csv"], tmp_path / "o", tmp_path / "nope")
    odd = tmp_path / "odd.csv"
    odd.write_text("dicom_id,study_id,subject_id,split\nx,1,2,holdout\n")
    with pytest.raises(PrepareError, match="odd.csv, line 2: unknown split 'holdout'"):
        prepare_mimic(tree["reports"], odd, tmp_path / "o")
