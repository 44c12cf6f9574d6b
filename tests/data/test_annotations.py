"""filter_cap.json: the schema, its errors, and files without a split field."""

import json

import pytest

from xraygpt.data.annotations import (
    Annotation,
    AnnotationError,
    load_annotations,
    split_annotations,
    write_annotations,
)


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_original_files_without_split_are_all_train(tmp_path):
    path = _write(
        tmp_path / "filter_cap.json",
        {"annotations": [{"image_id": "a", "caption": "x y"}, {"image_id": 7, "caption": "z"}]},
    )
    entries = load_annotations(path)
    assert [e.image_id for e in entries] == ["a", "7"]
    assert list(split_annotations(entries)) == ["train"]


def test_splits_group_in_file_order_and_only_existing_ones_appear(tmp_path):
    path = _write(
        tmp_path / "f.json",
        {
            "annotations": [
                {"image_id": "a", "caption": "x", "split": "test"},
                {"image_id": "b", "caption": "x", "split": "train"},
                {"image_id": "c", "caption": "x", "split": "test"},
            ]
        },
    )
    groups = split_annotations(load_annotations(path))
    assert list(groups) == ["train", "test"]
    assert [e.image_id for e in groups["test"]] == ["a", "c"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"caption": "x"}, "annotations\\[1\\]: missing required key 'image_id'"),
        ({"image_id": "b"}, "annotations\\[1\\]: missing required key 'caption'"),
        ({"image_id": "", "caption": "x"}, "annotations\\[1\\]: 'image_id' must be"),
        ({"image_id": "b", "caption": 3}, "annotations\\[1\\]: 'caption' must be"),
        ({"image_id": "a/b", "caption": "x"}, "must be a file stem"),
        ({"image_id": "b", "caption": "x", "split": "valid"}, "'split' must be one of"),
        ({"image_id": "b", "caption": "x", "labels": {"Fever": 1}}, "unknown label"),
        ({"image_id": "b", "caption": "x", "labels": {"Edema": 2}}, "'Edema' must be 0 or 1"),
        ("just a string", "annotations\\[1\\]: expected an object"),
    ],
)
def test_malformed_entry_names_file_and_index(tmp_path, entry, message):
    path = _write(
        tmp_path / "filter_cap.json", {"annotations": [{"image_id": "a", "caption": "x"}, entry]}
    )
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [[{"image_id": "a", "caption": "x"}], {"images": []}])
def test_wrong_top_level_shape_is_explained(tmp_path, data):
    path = _write(tmp_path / "filter_cap.json", data)
    with pytest.raises(AnnotationError, match="expected an object with an 'annotations' list"):
        load_annotations(path)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "filter_cap.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="filter_cap.json: not valid JSON"):
        load_annotations(path)


def test_labels_are_completed_over_the_14_observations_and_round_trip(tmp_path):
    path = tmp_path / "out.json"
    entry = Annotation("a", "cap", "val", "r1", None, {"subject_id": "p1"})
    write_annotations([entry], path)
    raw = json.loads(path.read_text())["annotations"][0]
    assert raw == {
        "image_id": "a",
        "caption": "cap",
        "split": "val",
        "report_id": "r1",
        "subject_id": "p1",
    }
    _write(path, {"annotations": [{"image_id": "a", "caption": "c", "labels": {"Edema": 1}}]})
    labels = load_annotations(path)[0].labels
    assert len(labels) == 14 and labels["Edema"] == 1 and labels["No Finding"] == 0
