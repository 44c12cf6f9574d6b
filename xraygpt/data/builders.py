"""Dataset builders: a config section ``datasets.<name>`` in, ``{split: Dataset}`` out.

``mimic`` and ``openi`` read ``<storage>/filter_cap.json`` and
``<storage>/image/<image_id><image_ext>`` (``data_type: images``) or tar
shards (``data_type: wds``). A new folder-of-images dataset subclasses
:class:`OpenIBuilder` (or :class:`CaptionBuilder`) and sets the class
attributes ``DATASET_CONFIG_DICT``, ``DEFAULT_STORAGE``, ``IMAGE_EXT`` and
``PREPARE_COMMAND``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import Dataset

from xraygpt.common.config import PACKAGE_ROOT, ConfigError, load_yaml
from xraygpt.common.errors import MissingFileError
from xraygpt.common.registry import registry
from xraygpt.data.annotations import SPLITS, load_annotations, split_annotations
from xraygpt.data.caption_dataset import DEFAULT_MIN_IMAGE_SIZE, ON_BAD_IMAGE, CaptionDataset
from xraygpt.data.wds_dataset import ShardCaptionDataset, expand_shards

log = logging.getLogger(__name__)

DATA_TYPES = ("images", "wds")


@dataclass
class ProcessorConfig:
    """One processor: its registry ``name`` and the options it takes (null = its default)."""

    name: str = "???"
    image_size: int | None = None
    min_scale: float | None = None
    max_scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    jpeg_draft: bool | None = None
    prompt: str | None = None
    max_words: int | None = None
    normalize: bool | None = None  # blip_caption: false keeps case and punctuation


@dataclass
class ProcessorPairConfig:
    """``train`` processors serve the train split; ``eval`` ones val and test."""

    train: ProcessorConfig | None = None
    eval: ProcessorConfig | None = None


@dataclass
class BuildInfoConfig:
    storage: str | None = None  # folder with filter_cap.json and image/; null: the builder's
    ann_file: str = "filter_cap.json"  # relative to storage
    image_dir: str = "image"  # relative to storage
    # data_type wds: a brace pattern (the train split) or {split: pattern}
    shards: Any = None


@dataclass
class CaptionDatasetConfig:
    """Every key allowed under ``datasets.<name>``."""

    data_type: str = "images"  # images | wds
    build_info: BuildInfoConfig = field(default_factory=BuildInfoConfig)
    vis_processor: ProcessorPairConfig = field(default_factory=ProcessorPairConfig)
    text_processor: ProcessorPairConfig = field(default_factory=ProcessorPairConfig)
    sample_ratio: float = 1.0  # weight of this dataset when several train together
    image_ext: str | None = None  # null: the builder's (.jpg for mimic, .png for openi)
    on_bad_image: str = "skip"  # skip | error
    # Images with a side below this many pixels are bad images (under on_bad_image).
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    shuffle_buffer: int = 1000  # wds: samples held for shuffling per worker


class CaptionBuilder:
    """Builds the splits of one image-caption dataset from its config section."""

    name = "caption"
    config_class = CaptionDatasetConfig
    DATASET_CONFIG_DICT: dict[str, str] = {}
    DEFAULT_STORAGE = "dataset/caption"
    IMAGE_EXT = ".jpg"
    #: Shown when the annotation file or image folder is missing.
    PREPARE_COMMAND = "xraygpt prepare --help"

    def __init__(self, cfg: DictConfig | dict | None = None) -> None:
        self.config = self.resolve_config(cfg)

    @classmethod
    def default_config(cls) -> DictConfig:
        """This builder's section of its default YAML (empty when it has none)."""
        path = cls.DATASET_CONFIG_DICT.get("default")
        if path is None:
            return OmegaConf.create({})
        cfg = load_yaml(PACKAGE_ROOT / path, f"default config of dataset {cls.name}")
        sections = cfg.get("datasets") or {}
        if len(sections) != 1:
            raise ConfigError(
                f"{PACKAGE_ROOT / path}: expected exactly one entry under 'datasets', "
                f"got {list(sections)}"
            )
        return next(iter(sections.values()))

    @classmethod
    def resolve_config(cls, cfg: DictConfig | dict | None) -> DictConfig:
        """Default YAML < ``cfg``, checked against :attr:`config_class` and :meth:`check_config`."""
        try:
            merged = OmegaConf.merge(
                OmegaConf.structured(cls.config_class), cls.default_config(), cfg or {}
            )
        except OmegaConfBaseException as err:
            raise ConfigError(f"datasets.{cls.name}: {getattr(err, 'msg', err)}") from err
        cls.check_config(merged)
        return merged

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """The rules on values that the schema's types cannot state (``Config`` runs them
        at load, :meth:`resolve_config` for a builder made from a plain mapping)."""
        where = f"datasets.{cls.name}"
        if cfg.data_type not in DATA_TYPES:
            raise ConfigError(
                f"{where}.data_type must be one of {', '.join(DATA_TYPES)}, got {cfg.data_type!r}"
            )
        if cfg.on_bad_image not in ON_BAD_IMAGE:
            raise ConfigError(
                f"{where}.on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, "
                f"got {cfg.on_bad_image!r}"
            )
        if cfg.min_image_size < 0:
            raise ConfigError(f"{where}.min_image_size must be >= 0, got {cfg.min_image_size}")
        if cfg.sample_ratio < 0:
            raise ConfigError(f"{where}.sample_ratio must be >= 0, got {cfg.sample_ratio}")

    # -- paths ---------------------------------------------------------------

    @property
    def storage(self) -> Path:
        return Path(self.config.build_info.storage or self.DEFAULT_STORAGE)

    @property
    def image_ext(self) -> str:
        ext = self.config.image_ext or self.IMAGE_EXT
        return ext if ext.startswith(".") else f".{ext}"

    @property
    def ann_path(self) -> Path:
        return self.storage / self.config.build_info.ann_file

    @property
    def image_dir(self) -> Path:
        return self.storage / self.config.build_info.image_dir

    # -- processors ----------------------------------------------------------

    def build_processors(self, kind: str, stage: str) -> Any:
        """The ``kind`` (vis_processor / text_processor) processor of ``stage`` (train / eval)."""
        proc_cfg = self.config[kind][stage]
        if proc_cfg is None or OmegaConf.is_missing(proc_cfg, "name"):
            raise ConfigError(
                f"datasets.{self.name}.{kind}.{stage} needs a processor name, "
                f"e.g. {{name: {'blip2_image_' + stage if kind == 'vis_processor' else 'blip_caption'}}}"
            )
        return registry.get_processor_class(proc_cfg.name).from_config(proc_cfg)

    # -- datasets ------------------------------------------------------------

    def _missing(self, what: str, path: Path) -> MissingFileError:
        return MissingFileError(
            f"{what} of dataset {self.name} not found: {path} "
            f"(build_info.storage is {str(self.storage)!r}, relative to the current folder "
            f"{Path.cwd()}); prepare it with: {self.PREPARE_COMMAND}"
        )

    def build_datasets(self) -> dict[str, Dataset]:
        """``{split: Dataset}`` for the splits that exist (train uses the train processors)."""
        if self.config.data_type == "wds":
            datasets = self._build_wds()
        else:
            datasets = self._build_images()
        for dataset in datasets.values():
            dataset.sample_ratio = float(self.config.sample_ratio)
        return datasets

    def _processors(self, split: str) -> tuple[Any, Any]:
        stage = "train" if split == "train" else "eval"
        return (
            self.build_processors("vis_processor", stage),
            self.build_processors("text_processor", stage),
        )

    def _build_images(self) -> dict[str, Dataset]:
        if not self.ann_path.is_file():
            raise self._missing("annotation file", self.ann_path)
        if not self.image_dir.is_dir():
            raise self._missing("image folder", self.image_dir)
        groups = split_annotations(load_annotations(self.ann_path))
        datasets: dict[str, Dataset] = {}
        for split, entries in groups.items():
            vis, text = self._processors(split)
            datasets[split] = CaptionDataset(
                entries,
                self.image_dir,
                vis,
                text,
                image_ext=self.image_ext,
                on_bad_image=self.config.on_bad_image,
                min_image_size=self.config.min_image_size,
                name=self.name,
                split=split,
            )
        log.info(
            "dataset %s: %s",
            self.name,
            ", ".join(f"{split} {len(ds)}" for split, ds in datasets.items()),  # type: ignore[arg-type]
        )
        return datasets

    def _build_wds(self) -> dict[str, Dataset]:
        shards = self.config.build_info.shards
        if shards is None:
            raise ConfigError(
                f"datasets.{self.name}: data_type wds needs build_info.shards, a brace pattern "
                f"such as shards/{self.name}/train-{{000000..000009}}.tar"
            )
        if isinstance(shards, str):
            patterns = {"train": shards}
        else:
            patterns = dict(
                OmegaConf.to_container(shards) if isinstance(shards, DictConfig) else shards
            )
        unknown = sorted(set(patterns) - set(SPLITS))
        if unknown:
            raise ConfigError(
                f"datasets.{self.name}.build_info.shards: unknown split(s) {unknown}; "
                f"splits are {', '.join(SPLITS)}"
            )
        datasets: dict[str, Dataset] = {}
        for split in SPLITS:
            if split not in patterns:
                continue
            vis, text = self._processors(split)
            datasets[split] = ShardCaptionDataset(
                expand_shards(patterns[split]),
                vis,
                text,
                image_ext=self.image_ext,
                on_bad_image=self.config.on_bad_image,
                min_image_size=self.config.min_image_size,
                shuffle_buffer=self.config.shuffle_buffer,
                name=self.name,
                split=split,
            )
        return datasets


@registry.register_builder("mimic")
class MimicBuilder(CaptionBuilder):
    """MIMIC-CXR: ``dataset/mimic/filter_cap.json`` and ``image/<dicom_id>.jpg``."""

    name = "mimic"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/mimic/defaults.yaml"}
    DEFAULT_STORAGE = "dataset/mimic"
    IMAGE_EXT = ".jpg"
    PREPARE_COMMAND = (
        "xraygpt prepare mimic --reports <mimic-cxr-reports.zip> "
        "--images <mimic-cxr-jpg root> --split-csv <mimic-cxr-2.0.0-split.csv.gz> "
        "--out dataset/mimic  (see dataset/README.md)"
    )


@registry.register_builder("openi")
class OpenIBuilder(CaptionBuilder):
    """OpenI (Indiana University): ``dataset/openi/filter_cap.json`` and ``image/<id>.png``."""

    name = "openi"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/openi/defaults.yaml"}
    DEFAULT_STORAGE = "dataset/openi"
    IMAGE_EXT = ".png"
    PREPARE_COMMAND = (
        "xraygpt prepare openi --reports NLMCXR_reports.tgz "
        "--images NLMCXR_png/ --out dataset/openi  (see dataset/README.md)"
    )


@registry.register_builder("phantom")
class PhantomBuilder(OpenIBuilder):
    """The phantom data set: ``dataset/phantom/filter_cap.json`` and ``image/<id>.png``.

    Generated by ``xraygpt phantom`` (synthetic drawings, see README).
    """

    name = "phantom"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/phantom/defaults.yaml"}
    DEFAULT_STORAGE = "dataset/phantom"
    IMAGE_EXT = ".png"
    PREPARE_COMMAND = "xraygpt phantom --out dataset/phantom --n 3000 --seed 0"
