"""prepare openi: the real report archive (shipped in torchxrayvision) and a small fake one."""

import importlib.util
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraygpt.cli.prepare import main
from xraygpt.common.errors import DataError
from xraygpt.data.annotations import load_annotations
from xraygpt.data.prepare import PrepareError, prepare_openi, seeded_split

PAPER_SUMMARIES = 3403


def _real_archive() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    assert spec is not None, "torchxrayvision (a test dependency) is not installed"
    path = Path(spec.submodule_search_locations[0]) / "data" / "NLMCXR_reports.tgz"
    assert path.is_file(), f"{path} missing from the torchxrayvision package"
    return path


@pytest.fixture(scope="module")
def real_openi(tmp_path_factory):
    out = tmp_path_factory.mktemp("openi")
    stats = prepare_openi(_real_archive(), out)
    return out, stats


def test_real_archive_keeps_the_papers_number_of_reports(real_openi):
    out, stats = real_openi
    assert stats["reports_in"] == 3955
    assert abs(stats["kept_reports"] - PAPER_SUMMARIES) <= 0.01 * PAPER_SUMMARIES
    # the three word-count filters alone keep 3,398 reports / 6,426 image ids (docs/recipe.md §6)
    assert stats["dropped"] == {
        "no_findings": 530,
        "no_impression": 6,
        "findings_under_10_words": 13,
        "impression_under_2_words": 8,
        "empty_after_cleaning": stats["dropped"]["empty_after_cleaning"],
    }
    assert stats["kept_reports"] == 3398 - stats["dropped"]["empty_after_cleaning"]
    assert stats["annotations"] == stats["image_ids_of_kept_reports"]
    assert json.loads((out / "prepare_stats.json").read_text()) == stats


def test_real_archive_annotations_are_clean_and_split_by_report(real_openi):
    out, stats = real_openi
    entries = load_annotations(out / "filter_cap.json")
    assert len(entries) == stats["annotations"] > 6300
    splits_of_report = defaultdict(set)
    for entry in entries:
        splits_of_report[entry.report_id].add(entry.split)
        assert "XXXX" not in entry.caption
    assert all(len(splits) == 1 for splits in splits_of_report.values())
    counts = {split: row["reports"] for split, row in stats["splits"].items()}
    assert set(counts) == {"train", "val", "test"} and 0.03 < counts["test"] / 3398 < 0.07
    first = next(e for e in entries if e.image_id == "CXR1_1_IM-0001-3001")
    assert first.report_id == "CXR1" and first.caption.endswith("Normal chest x-ray.")


def _report_xml(n: int, findings: str | None, impression: str | None, images: list[str]) -> bytes:
    parts = [f'<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>']
    parts.append('<AbstractText Label="COMPARISON">None.</AbstractText>')
    if findings is not None:
        parts.append(f'<AbstractText Label="FINDINGS">{findings}</AbstractText>')
    if impression is not None:
        parts.append(f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>')
    parts.append("</Abstract></Article></MedlineCitation>")
    parts.extend(
        f'<parentImage id="{image}"><caption>x</caption></parentImage>' for image in images
    )
    parts.append("</eCitation>")
    return "".join(parts).encode()


def _fake_archive(path: Path, reports: list[bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for n, data in enumerate(reports, start=1):
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


FINDINGS = "The heart is normal in size. The lungs are clear without effusion or pneumothorax."


def test_fake_archive_with_images_copies_and_shrinks_them(tmp_path, capsys):
    archive = _fake_archive(
        tmp_path / "reports.tgz",
        [
            _report_xml(
                1, FINDINGS, "No acute disease.", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
            ),
            _report_xml(2, None, "Normal.", ["CXR2_IM-0002-1001"]),
            _report_xml(3, FINDINGS, "Stable.", ["CXR3_IM-0003-1001"]),
            _report_xml(4, FINDINGS, "Normal chest x-XXXX.", ["CXR4_IM-0004-1001", "CXR4_missing"]),
        ],
    )
    images = tmp_path / "NLMCXR_png"
    images.mkdir()
    ramp = np.linspace(0, 4095, 700 * 600).reshape(700, 600).astype(np.uint16)
    for name in (
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_IM-0002-1001",
        "CXR4_IM-0004-1001",
    ):
        Image.fromarray(ramp).save(images / f"{name}.png")  # 16-bit, as some exports are
    (images / "CXR1_1_IM-0001-4001.png").write_bytes(b"broken")
    out = tmp_path / "dataset" / "openi"
    code = main(
        [
            "openi",
            "--reports",
            str(archive),
            "--images",
            str(images),
            "--out",
            str(out),
            "--max-side",
            "256",
            "--workers",
            "1",
            "--test-fraction",
            "0",
            "--val-fraction",
            "0",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "kept reports" in printed and "impression_under_2_words" in printed
    stats = json.loads((out / "prepare_stats.json").read_text())
    assert (
        stats["dropped"]["no_findings"] == 1 and stats["dropped"]["impression_under_2_words"] == 1
    )
    assert stats["kept_reports"] == 2
    assert stats["images"] == {"max_side": 256, "copied": 2, "missing_source": 1, "unreadable": 1}
    entries = load_annotations(out / "filter_cap.json")
    assert [e.image_id for e in entries] == ["CXR1_1_IM-0001-3001", "CXR4_IM-0004-1001"]
    assert entries[1].caption.endswith("Normal chest x-ray.") and entries[1].split == "train"
    copy = Image.open(out / "image" / "CXR1_1_IM-0001-3001.png")
    assert copy.size == (219, 256) and copy.mode == "L" and np.asarray(copy).max() >= 250
    # a second run keeps the copies that are up to date and writes the same annotations
    before = (out / "filter_cap.json").read_bytes()
    again = prepare_openi(archive, out, images, max_side=256, val_fraction=0, test_fraction=0)
    assert again["images"]["already_present"] == 2
    assert (out / "filter_cap.json").read_bytes() == before


def test_seeded_split_is_stable_and_follows_the_fractions():
    ids = [f"CXR{i}" for i in range(4000)]
    splits = [seeded_split(i, 42, 0.1, 0.2) for i in ids]
    assert splits == [seeded_split(i, 42, 0.1, 0.2) for i in ids]
    assert 0.17 < splits.count("test") / 4000 < 0.23 and 0.07 < splits.count("val") / 4000 < 0.13
    assert splits != [seeded_split(i, 43, 0.1, 0.2) for i in ids]


def test_bad_inputs_are_explained(tmp_path, capsys):
    assert main(["openi", "--reports", str(tmp_path / "nope.tgz"), "--out", str(tmp_path)]) == 2
    assert "NLMCXR_reports.tgz" in capsys.readouterr().err
    with pytest.raises(PrepareError, match="OpenI image folder not found"):
        prepare_openi(_real_archive(), tmp_path, tmp_path / "no_images")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not a readable tar archive"):
        prepare_openi(bad, tmp_path)
    with pytest.raises(PrepareError, match="val_fraction"):
        prepare_openi(_real_archive(), tmp_path, val_fraction=0.6, test_fraction=0.6)
