"""The image and caption processors of BLIP-2 / MiniGPT-4 / XrayGPT (docs/recipe.md §5).

Configs name them under ``vis_processor`` / ``text_processor``::

    vis_processor: {train: {name: blip2_image_train, image_size: 224}}

and the builder calls ``registry.get_processor_class(name).from_config(cfg)``.
A key that the named processor does not take is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from xraygpt.common.constants import CLIP_MEAN, CLIP_STD
from xraygpt.common.errors import XrayGPTError
from xraygpt.common.registry import registry
from xraygpt.processors.image_io import to_rgb


class ProcessorConfigError(XrayGPTError, ValueError):
    """A processor config with a key the processor does not know."""


def _options(cfg: Any, allowed: tuple[str, ...], processor: str) -> dict[str, Any]:
    """The non-null keys of ``cfg`` other than ``name``; unknown ones raise."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ProcessorConfigError(f"config of processor {processor!r} must be a mapping")
    values = {k: v for k, v in cfg.items() if k != "name" and v is not None}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ProcessorConfigError(
            f"processor {processor!r} does not take {', '.join(unknown)}; "
            f"its keys are: name, {', '.join(allowed)}"
        )
    return values


class BaseProcessor:
    """A callable that turns one raw item (PIL image or text) into model input."""

    name = "base"
    CONFIG_KEYS: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Any = None) -> BaseProcessor:
        return cls(**_options(cfg, cls.CONFIG_KEYS, cls.name))

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError


class _ImageProcessor(BaseProcessor):
    #: Shorter side a JPEG may be draft-decoded to (see ``image_io.open_image``);
    #: ``None`` means decode at full size. Datasets read this attribute.
    decode_size: int | None = None

    def __init__(self, image_size: int, mean: tuple | list | None, std: tuple | list | None):
        if image_size <= 0:
            raise ProcessorConfigError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.normalize = transforms.Normalize(
            tuple(mean) if mean is not None else CLIP_MEAN,
            tuple(std) if std is not None else CLIP_STD,
        )
        self.transform: transforms.Compose

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(to_rgb(image))


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(_ImageProcessor):
    """RandomResizedCrop(scale 0.5-1.0, bicubic) -> tensor -> CLIP normalisation."""

    name = "blip2_image_train"
    CONFIG_KEYS = ("image_size", "mean", "std", "min_scale", "max_scale", "jpeg_draft")

    def __init__(
        self,
        image_size: int = 224,
        mean: tuple | list | None = None,
        std: tuple | list | None = None,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
        jpeg_draft: bool = True,
    ) -> None:
        super().__init__(image_size, mean, std)
        if not 0 < min_scale <= max_scale <= 1:
            raise ProcessorConfigError(
                f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}"
            )
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    self.image_size,
                    scale=(min_scale, max_scale),
                    interpolation=InterpolationMode.BICUBIC,
                ),
                transforms.ToTensor(),
                self.normalize,
            ]
        )
        # The smallest crop (min_scale of the area, aspect 3:4) spans ~0.6 of
        # the shorter side; decoding at twice the output size keeps that crop
        # above image_size pixels, so the draft never upsamples.
        self.decode_size = 2 * self.image_size if jpeg_draft else None


@registry.register_processor("blip2_image_eval")
class Blip2ImageEvalProcessor(_ImageProcessor):
    """Resize to image_size x image_size (bicubic) -> tensor -> CLIP normalisation."""

    name = "blip2_image_eval"
    CONFIG_KEYS = ("image_size", "mean", "std", "jpeg_draft")

    def __init__(
        self,
        image_size: int = 224,
        mean: tuple | list | None = None,
        std: tuple | list | None = None,
        jpeg_draft: bool = True,
    ) -> None:
        super().__init__(image_size, mean, std)
        self.transform = transforms.Compose(
            [
                transforms.Resize(
                    (self.image_size, self.image_size), interpolation=InterpolationMode.BICUBIC
                ),
                transforms.ToTensor(),
                self.normalize,
            ]
        )
        self.decode_size = 2 * self.image_size if jpeg_draft else None


_CAPTION_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s+")


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(BaseProcessor):
    """Lowercase, ``.!"()*#:;~`` -> space, collapse spaces, keep the first ``max_words``.

    That is the original's caption cleaning and stays the default (the real
    recipe trains on it). ``normalize: false`` keeps case and punctuation and
    only collapses white space and cuts at ``max_words``: the embedded
    default (the phantom data set) uses it, so that the tiny model writes
    reports with sentences and capitals and answers questions in full sentences.
    """

    name = "blip_caption"
    CONFIG_KEYS = ("prompt", "max_words", "normalize")

    def __init__(self, prompt: str = "", max_words: int = 50, normalize: bool = True) -> None:
        if max_words <= 0:
            raise ProcessorConfigError(f"max_words must be positive, got {max_words}")
        self.prompt = prompt
        self.max_words = int(max_words)
        self.normalize = bool(normalize)

    def __call__(self, caption: str) -> str:
        return self.prompt + self.pre_caption(caption)

    def pre_caption(self, caption: str) -> str:
        text = _CAPTION_PUNCT.sub(" ", caption.lower()) if self.normalize else caption
        text = _SPACES.sub(" ", text).strip(" ")
        words = text.split(" ")
        if len(words) > self.max_words:
            text = " ".join(words[: self.max_words])
        return text
