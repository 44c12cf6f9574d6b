"""The BLIP-2 image processors and the BLIP caption processor (docs/recipe.md §5)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from xraygpt.common.constants import CLIP_MEAN, CLIP_STD
from xraygpt.common.registry import registry
from xraygpt.processors.blip_processors import (
    Blip2ImageEvalProcessor,
    Blip2ImageTrainProcessor,
    BlipCaptionProcessor,
    ProcessorConfigError,
)


def _xray(size=(300, 260), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), mode="L")


def test_processors_are_registered():
    assert registry.get_processor_class("blip2_image_train") is Blip2ImageTrainProcessor
    assert registry.get_processor_class("blip2_image_eval") is Blip2ImageEvalProcessor
    assert registry.get_processor_class("blip_caption") is BlipCaptionProcessor


def test_eval_processor_is_bicubic_resize_and_clip_normalisation():
    img = _xray().convert("RGB")
    proc = Blip2ImageEvalProcessor.from_config({"name": "blip2_image_eval", "image_size": 224})
    reference = transforms.Compose(
        [
            transforms.Resize((224, 224), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    out = proc(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(img))
    torch.testing.assert_close(proc(_xray()), out)  # grayscale input is made RGB


def test_train_processor_crops_randomly_at_image_size():
    proc = Blip2ImageTrainProcessor(image_size=64)
    torch.manual_seed(0)
    a = proc(_xray())
    torch.manual_seed(0)
    b = proc(_xray())
    torch.manual_seed(1)
    c = proc(_xray())
    assert a.shape == (3, 64, 64)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    crop = proc.transform.transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.interpolation == InterpolationMode.BICUBIC


def test_train_processor_normalises_with_clip_statistics():
    value = 180
    out = Blip2ImageTrainProcessor(image_size=32)(Image.new("RGB", (50, 40), (value,) * 3))
    for channel in range(3):
        expected = (value / 255 - CLIP_MEAN[channel]) / CLIP_STD[channel]
        assert torch.allclose(out[channel], torch.tensor(expected), atol=1e-5)


def test_decode_size_allows_draft_decoding_unless_disabled():
    assert Blip2ImageTrainProcessor(image_size=224).decode_size == 448
    assert Blip2ImageEvalProcessor(image_size=224, jpeg_draft=False).decode_size is None


def test_unknown_processor_key_is_an_error_that_lists_the_keys():
    with pytest.raises(ProcessorConfigError, match="does not take max_words.*image_size"):
        Blip2ImageEvalProcessor.from_config({"name": "blip2_image_eval", "max_words": 3})
    with pytest.raises(ProcessorConfigError, match="min_scale"):
        Blip2ImageTrainProcessor(min_scale=0.0)


def test_from_config_ignores_null_keys_and_takes_none():
    proc = Blip2ImageTrainProcessor.from_config({"name": "x", "image_size": 96, "std": None})
    assert proc.image_size == 96
    assert BlipCaptionProcessor.from_config(None).max_words == 50


def test_caption_processor_lowercases_strips_punctuation_and_collapses_spaces():
    proc = BlipCaptionProcessor()
    text = 'The Heart: is "normal" (size)!  No*effusion; ~ #1.\nLungs clear.'
    assert proc(text) == "the heart is normal size no effusion 1 lungs clear"
    assert proc("Left-sided, 1.5 cm nodule?") == "left-sided, 1 5 cm nodule?"


def test_caption_processor_keeps_the_first_max_words_and_adds_the_prompt():
    words = " ".join(f"w{i}" for i in range(80))
    assert BlipCaptionProcessor()(words).split() == [f"w{i}" for i in range(50)]
    assert BlipCaptionProcessor(prompt="a photo of ", max_words=2)("X Y Z") == "a photo of x y"


def test_blip_caption_normalize_false_keeps_case_and_punctuation():
    from xraygpt.processors.blip_processors import BlipCaptionProcessor

    text = "Findings:  Small LEFT effusion.\nImpression: (none)"
    assert BlipCaptionProcessor()(text) == "findings small left effusion impression none"
    kept = BlipCaptionProcessor(normalize=False, max_words=4)
    assert kept(text) == "Findings: Small LEFT effusion."
    assert (
        BlipCaptionProcessor.from_config({"name": "blip_caption", "normalize": False}).normalize
        is False
    )
