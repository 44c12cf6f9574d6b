"""The phantom data set: determinism, layout, splits, findings drawn where the report says."""

import json

import numpy as np
import pytest
import torch

from xraygpt.cli.phantom import main as phantom_main
from xraygpt.common.constants import CHEXPERT_OBSERVATIONS, PHANTOM_OBSERVATIONS
from xraygpt.common.constants import PHANTOM_FINDINGS as FINDINGS
from xraygpt.common.registry import registry
from xraygpt.data.labeler import label_report, to_binary
from xraygpt.data.phantom import generator as phantom
from xraygpt.data.phantom.generator import (
    PhantomCase,
    generate,
    make_sample,
    render_image,
    sample_case,
    write_report,
)
from xraygpt.eval.metrics.clinical import clinical_efficacy
from xraygpt.processors.blip_processors import BlipCaptionProcessor


def _cases(n, seed=0):
    out = []
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        case = sample_case(rng)
        out.append((case, write_report(case, rng)))
    return out


def test_a_sample_is_a_pure_function_of_seed_and_index():
    image, report, labels = make_sample(3, 17)
    again = make_sample(3, 17)
    assert np.array_equal(image, again[0]) and report == again[1] and labels == again[2]
    other = make_sample(4, 17)
    assert not np.array_equal(image, other[0])
    assert image.dtype == np.uint8 and image.shape == (phantom.DEFAULT_SIZE,) * 2
    assert 20 < image.mean() < 220 and image.std() > 20  # an exposed film, not blank


def test_generate_writes_the_openi_layout_deterministically(tmp_path):
    ann_a = generate(tmp_path / "a", n=20, seed=5, size=64, progress=False)
    ann_b = generate(tmp_path / "b", n=20, seed=5, size=64, progress=False)
    data = json.loads(ann_a.read_text())
    assert data == json.loads(ann_b.read_text())
    entries = data["annotations"]
    assert [e["image_id"] for e in entries] == [f"phantom_{i:05d}" for i in range(20)]
    assert {e["split"] for e in entries} == {"train", "val", "test"}
    assert sum(e["split"] == "train" for e in entries) == 16
    for entry in entries:
        png = f"image/{entry['image_id']}.png"
        assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
        assert set(entry["labels"]) == set(CHEXPERT_OBSERVATIONS)
        assert entry["caption"].startswith("Findings: ") and " Impression: " in entry["caption"]
    assert len(list((tmp_path / "a" / "image").glob("*.png"))) == 20


def test_images_do_not_depend_on_how_many_are_made(tmp_path):
    generate(tmp_path / "small", n=6, seed=1, size=48, progress=False)
    generate(tmp_path / "large", n=12, seed=1, size=48, progress=False)
    for i in range(6):
        name = f"image/phantom_{i:05d}.png"
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "large" / name).read_bytes()


def test_splits_follow_the_fractions_and_the_seed():
    splits = phantom.assign_splits(1000, seed=0)
    assert [splits.count(s) for s in ("train", "val", "test")] == [800, 100, 100]
    assert splits == phantom.assign_splits(1000, seed=0)
    assert splits != phantom.assign_splits(1000, seed=1)
    with pytest.raises(ValueError, match="summing to 1"):
        phantom.assign_splits(10, 0, (0.5, 0.2, 0.2))


def test_labels_are_the_drawn_findings():
    counts = dict.fromkeys(PHANTOM_OBSERVATIONS, 0)
    for case, _ in _cases(400):
        labels = case.labels()
        present = case.present()
        for name in FINDINGS:
            assert labels[name] == int(present[name])
            counts[name] += labels[name]
        assert labels["No Finding"] == int(not any(present.values()))
        counts["No Finding"] += labels["No Finding"]
        assert all(labels[o] == 0 for o in CHEXPERT_OBSERVATIONS if o not in PHANTOM_OBSERVATIONS)
    # Every observation is common enough to learn; normal studies are the largest set.
    assert all(60 <= counts[name] <= 160 for name in FINDINGS), counts
    assert counts["No Finding"] >= 60


@pytest.mark.parametrize("processed", [False, True], ids=["raw", "blip_caption"])
def test_the_labeler_recovers_the_labels_from_the_reports(processed):
    """Macro-F1 >= 0.95 over the phantom observations, also without punctuation."""
    process = BlipCaptionProcessor(max_words=120) if processed else (lambda text: text)
    cases = _cases(600, seed=7)
    predicted = [to_binary(label_report(process(report))) for _, report in cases]
    reference = [case.labels() for case, _ in cases]
    scores = clinical_efficacy(predicted, reference, PHANTOM_OBSERVATIONS)
    assert scores["macro"]["f1"] >= 0.95, scores["per_observation"]


def test_reports_state_side_location_and_severity():
    case = PhantomCase(
        cardiomegaly="moderate",
        effusion=("left", "small"),
        pneumothorax=("right", "large"),
        consolidation=("right", "middle"),
        lesion=("nodule", "left", "upper", 2.1),
        devices=("endotracheal tube",),
    )
    for seed in range(10):
        text = write_report(case, np.random.default_rng(seed)).lower()
        for words in ("moderate", "left", "small", "pleural effusion", "right", "large"):
            assert words in text
        assert "pneumothorax" in text and "middle lobe" in text and "nodule" in text
        assert "2.1 cm" in text and "endotracheal tube" in text
    normal = write_report(PhantomCase(), np.random.default_rng(0)).lower()
    for absent in ("pleural effusion", "pneumothorax", "consolidation", "nodule"):
        assert f"no {absent}" in normal or f"without focal {absent}" in normal or absent in normal
    assert to_binary(label_report(normal))["No Finding"] == 1


def _region_mean(case, rows, cols, n=12, size=96):
    """Mean intensity of a region (fractions of the image) over n renderings of ``case``."""
    r0, r1 = (int(f * size) for f in rows)
    c0, c1 = (int(f * size) for f in cols)
    values = [
        render_image(case, np.random.default_rng([99, i]), size)[r0:r1, c0:c1].mean()
        for i in range(n)
    ]
    return float(np.mean(values))


# (case, region where it shows, +1 brighter / -1 darker, the mirror region that must not)
DRAWN_WHERE_STATED = {
    "right effusion": (PhantomCase(effusion=("right", "moderate")), (0.6, 0.75), (0.12, 0.3), 1),
    "left effusion": (PhantomCase(effusion=("left", "moderate")), (0.6, 0.75), (0.7, 0.88), 1),
    "right pneumothorax": (
        PhantomCase(pneumothorax=("right", "large")),
        (0.18, 0.45),
        (0.15, 0.28),
        -1,
    ),
    "left upper consolidation": (
        PhantomCase(consolidation=("left", "upper")),
        (0.2, 0.35),
        (0.62, 0.78),
        1,
    ),
    "right upper mass": (
        PhantomCase(lesion=("mass", "right", "upper", 5.0)),
        (0.24, 0.36),
        (0.22, 0.36),
        1,
    ),
    "cardiomegaly": (PhantomCase(cardiomegaly="marked"), (0.5, 0.62), (0.72, 0.8), 1),
}


@pytest.mark.parametrize("name", list(DRAWN_WHERE_STATED))
def test_findings_are_drawn_on_the_stated_side(name):
    """Radiological orientation: the patient's right is on the image's left."""
    case, rows, cols, sign = DRAWN_WHERE_STATED[name]
    mirror = (1 - cols[1], 1 - cols[0])
    normal = PhantomCase()
    effect = sign * (_region_mean(case, rows, cols) - _region_mean(normal, rows, cols))
    if name != "cardiomegaly":  # the heart grows both ways
        elsewhere = abs(_region_mean(case, rows, mirror) - _region_mean(normal, rows, mirror))
        assert effect > 3 * max(elsewhere, 1.0), (effect, elsewhere)
    assert effect > 8, effect  # grey levels out of 255


def test_devices_are_bright_lines():
    tube = PhantomCase(devices=("endotracheal tube",))
    rows, cols = (0.05, 0.18), (0.47, 0.53)
    assert _region_mean(tube, rows, cols) - _region_mean(PhantomCase(), rows, cols) > 15


def test_cli_writes_and_rejects_bad_arguments(tmp_path, capsys):
    assert phantom_main(["--out", str(tmp_path / "cli"), "--n", "5", "--size", "48"]) == 0
    assert len(list((tmp_path / "cli" / "image").glob("*.png"))) == 5
    assert "wrote 5 phantoms" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        phantom_main(["--out", str(tmp_path / "bad"), "--n", "0"])
    assert "--n must be at least 1" in capsys.readouterr().err


def test_the_phantom_builder_reads_the_generated_folder(tmp_path):
    generate(tmp_path / "phantom", n=20, seed=0, size=64, progress=False)
    builder = registry.get_builder_class("phantom")(
        {"build_info": {"storage": str(tmp_path / "phantom")}}
    )
    datasets = builder.build_datasets()
    assert {split: len(ds) for split, ds in datasets.items()} == {"train": 16, "val": 2, "test": 2}
    sample = datasets["test"][0]
    assert sample["image"].shape == (3, 96, 96) and sample["image"].dtype == torch.float32
    assert sample["labels"]["No Finding"] in (0, 1)
    # The phantom's text processor keeps case and punctuation (blip_caption normalize: false).
    assert sample["caption"].startswith("Findings: ") and "." in sample["caption"]
    assert "Impression:" in sample["caption"]  # not cut at blip_caption's default 50 words
    assert sample["caption"] == " ".join(sample["caption"].split())


def test_the_phantom_builder_names_the_command_that_makes_the_data(tmp_path):
    builder = registry.get_builder_class("phantom")(
        {"build_info": {"storage": str(tmp_path / "none")}}
    )
    with pytest.raises(FileNotFoundError, match="xraygpt phantom"):
        builder.build_datasets()
