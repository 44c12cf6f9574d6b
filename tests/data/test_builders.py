"""The mimic / openi builders: default YAMLs, splits, processors, errors, subclassing."""

import pytest
import torch
from omegaconf import OmegaConf

from xraygpt.common.config import Config, ConfigError
from xraygpt.common.registry import registry
from xraygpt.data.builders import CaptionBuilder, MimicBuilder, OpenIBuilder
from xraygpt.data.caption_dataset import CaptionDataset
from xraygpt.processors.blip_processors import Blip2ImageEvalProcessor, Blip2ImageTrainProcessor


def test_builders_are_registered_with_the_original_storage_paths():
    assert registry.get_builder_class("mimic") is MimicBuilder
    assert registry.get_builder_class("openi") is OpenIBuilder
    assert MimicBuilder().config.build_info.storage == "dataset/mimic"
    assert OpenIBuilder().config.build_info.storage == "dataset/openi"
    assert MimicBuilder().image_ext == ".jpg" and OpenIBuilder().image_ext == ".png"


def test_builds_the_splits_that_exist_with_train_and_eval_processors(caption_folder):
    datasets = OpenIBuilder({"build_info": {"storage": str(caption_folder)}}).build_datasets()
    assert {split: len(ds) for split, ds in datasets.items()} == {"train": 8, "val": 2, "test": 2}
    assert isinstance(datasets["train"].vis_processor, Blip2ImageTrainProcessor)
    assert isinstance(datasets["test"].vis_processor, Blip2ImageEvalProcessor)
    assert datasets["train"][0]["image"].shape == (3, 224, 224)


def test_a_file_without_split_gives_only_train(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=3, with_split=False, ext=".jpg")
    datasets = MimicBuilder({"build_info": {"storage": str(tmp_path)}}).build_datasets()
    assert list(datasets) == ["train"]
    assert datasets["train"][2]["image_id"] == "img002"


def test_config_overrides_ext_ratio_processors_and_bad_image_policy(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=2, ext=".jpeg")
    cfg = {
        "build_info": {"storage": str(tmp_path)},
        "image_ext": "jpeg",
        "sample_ratio": 3,
        "on_bad_image": "error",
        "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 64}},
        "text_processor": {"train": {"name": "blip_caption", "max_words": 2}},
    }
    train = MimicBuilder(cfg).build_datasets()["train"]
    assert isinstance(train, CaptionDataset)
    assert train.sample_ratio == 3.0 and train.on_bad_image == "error"
    assert train[0]["image"].shape == (3, 64, 64) and train[0]["caption"] == "finding number"


def test_missing_annotation_file_names_the_path_and_the_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        OpenIBuilder({"build_info": {"storage": str(tmp_path / "openi")}}).build_datasets()
    message = str(info.value)
    assert str(tmp_path / "openi" / "filter_cap.json") in message
    assert "xraygpt prepare openi --reports NLMCXR_reports.tgz" in message


def test_missing_image_folder_names_the_path_and_the_prepare_command(tmp_path, make_caption_folder):
    make_caption_folder(tmp_path, n=1)
    for path in (tmp_path / "image").iterdir():
        path.unlink()
    (tmp_path / "image").rmdir()
    with pytest.raises(FileNotFoundError, match="image folder .*image.*prepare mimic"):
        MimicBuilder({"build_info": {"storage": str(tmp_path)}}).build_datasets()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"storage": "x"}, "storage"),
        ({"data_type": "parquet"}, "data_type must be one of images, wds"),
        ({"on_bad_image": "ignore"}, "on_bad_image must be one of skip, error"),
        ({"vis_processor": {"train": {"name": "blip2_image_train", "size": 3}}}, "size"),
    ],
)
def test_bad_config_keys_fail_at_load(cfg, message):
    with pytest.raises(ConfigError, match=message):
        OpenIBuilder(cfg)
    # the same rules when a whole config loads, before any data is read
    with pytest.raises(ConfigError, match=message):
        Config(user_config={"datasets": {"openi": cfg}})


def test_processor_without_a_name_is_explained(caption_folder):
    builder = OpenIBuilder(
        {
            "build_info": {"storage": str(caption_folder)},
            "vis_processor": {"eval": None},
        }
    )
    with pytest.raises(ConfigError, match="vis_processor.eval needs a processor name"):
        builder.build_datasets()


def test_wds_without_shards_is_explained():
    with pytest.raises(ConfigError, match="needs build_info.shards"):
        OpenIBuilder({"data_type": "wds"}).build_datasets()


def test_subclass_sets_storage_and_extension_as_class_attributes(
    tmp_path, monkeypatch, make_caption_folder
):
    make_caption_folder(tmp_path / "dataset" / "toy", n=2, ext=".bmp")

    class ToyBuilder(OpenIBuilder):
        name = "toy"
        DATASET_CONFIG_DICT = {}
        DEFAULT_STORAGE = "dataset/toy"
        IMAGE_EXT = ".bmp"
        PREPARE_COMMAND = "python make_toy.py"

    monkeypatch.chdir(tmp_path)  # storage is relative to the current folder
    cfg = OmegaConf.to_container(OpenIBuilder.default_config())
    del cfg["build_info"]["storage"]
    datasets = ToyBuilder(cfg).build_datasets()
    assert datasets["train"][1]["image_id"] == "img001"
    with pytest.raises(FileNotFoundError, match="python make_toy.py"):
        ToyBuilder({**cfg, "build_info": {"storage": "elsewhere"}}).build_datasets()
    assert issubclass(ToyBuilder, CaptionBuilder)


def test_job_config_merges_two_datasets_and_the_task_builds_them(
    tmp_path, monkeypatch, make_caption_folder
):
    make_caption_folder(tmp_path / "dataset" / "mimic", n=3, ext=".jpg")
    make_caption_folder(tmp_path / "dataset" / "openi", n=2)
    monkeypatch.chdir(tmp_path)
    cfg = Config(user_config={"datasets": {"mimic": {"sample_ratio": 4}, "openi": {}}, "run": {}})
    assert cfg.datasets_cfg.mimic.vis_processor.train.name == "blip2_image_train"
    built = {
        name: registry.get_builder_class(name)(ds_cfg).build_datasets()
        for name, ds_cfg in cfg.datasets_cfg.items()
    }
    assert len(built["mimic"]["train"]) == 3 and built["mimic"]["train"].sample_ratio == 4
    assert len(built["openi"]["train"]) == 2


@pytest.mark.parametrize("builder", [MimicBuilder, OpenIBuilder])
def test_image_ext_dcm_reads_dicom_folders(tmp_path, make_caption_folder, builder):
    import numpy as np
    from PIL import Image

    from xraygpt.processors.dicom import write_dicom

    make_caption_folder(tmp_path / "png", n=4, ext=".png")
    make_caption_folder(tmp_path / "dcm", n=4, ext=".png")
    for png in sorted((tmp_path / "dcm" / "image").glob("*.png")):
        pixels = np.asarray(Image.open(png)).copy()
        pixels[0, 0], pixels[0, 1] = 0, 255  # the full range, so the DICOM's range maps back
        Image.fromarray(pixels).save(tmp_path / "png" / "image" / png.name)
        # 16 times the 8-bit values in 12 bits, no window: scaled by the value range.
        write_dicom(png.with_suffix(".dcm"), pixels.astype(np.uint16) * 16, bits_stored=12)
        png.unlink()
    (tmp_path / "dcm" / "image" / "img002.dcm").write_bytes(b"not a dicom at all")
    eval_proc = {"train": {"name": "blip2_image_eval", "image_size": 32}}

    def train(folder, **extra):
        cfg = {"build_info": {"storage": str(folder)}, "vis_processor": eval_proc, **extra}
        return builder(cfg).build_datasets()["train"]

    dicoms, pngs = (
        train(tmp_path / "dcm", image_ext="dcm"),
        train(tmp_path / "png", image_ext="png"),
    )
    for i in (0, 1, 3):
        assert torch.equal(dicoms[i]["image"], pngs[i]["image"])
    skipped = dicoms[2]  # not DICOM despite .dcm: skipped, and counted
    assert skipped["image_id"] == "img003" and skipped["skipped"] == 1
