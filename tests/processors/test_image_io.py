"""Reading radiographs of every pixel format as 8-bit RGB, and the downscaled copies."""

import io

import numpy as np
import pytest
from PIL import Image

from xraygpt.processors.image_io import (
    downscale_job,
    load_image,
    open_image,
    resize_max_side,
    save_downscaled,
    to_rgb,
)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _gradient(dtype, hi: int, shape=(32, 48)) -> np.ndarray:
    return np.linspace(0, hi, shape[0] * shape[1]).reshape(shape).astype(dtype)


def test_16_bit_png_is_rescaled_not_clipped_to_white():
    # 12-bit data stored in a 16-bit PNG, as DICOM exports are.
    raw = _gradient(np.uint16, 4095)
    img = Image.open(io.BytesIO(_png_bytes(Image.fromarray(raw))))
    assert img.mode.startswith("I")
    rgb = np.asarray(load_image(_png_bytes(Image.fromarray(raw))))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 48, 3)
    assert rgb.min() == 0 and rgb.max() == 255
    assert 110 < rgb.mean() < 145  # a linear ramp stays a ramp (PIL's convert gives ~250)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    expected = np.rint((raw.astype(float) - raw.min()) * 255 / (raw.max() - raw.min()))
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1


def test_16_bit_range_offset_is_used():
    raw = _gradient(np.uint16, 1000) + 30000  # values 30000..31000
    rgb = np.asarray(load_image(_png_bytes(Image.fromarray(raw))))
    assert rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes(mode):
    raw = _gradient(np.int32 if mode == "I" else np.float32, 70000)
    img = Image.fromarray(raw, mode=mode) if mode == "F" else Image.fromarray(raw)
    rgb = np.asarray(to_rgb(img))
    assert rgb.min() == 0 and rgb.max() == 255 and rgb.dtype == np.uint8


def test_constant_16_bit_image_becomes_black_not_an_error():
    rgb = np.asarray(to_rgb(Image.fromarray(np.full((8, 8), 1234, np.uint16))))
    assert rgb.shape == (8, 8, 3) and (rgb == 0).all()


def test_palette_image_keeps_its_colours():
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (200, 100, 50) and rgb.getpixel((0, 0)) == (0, 0, 0)


def test_palette_with_transparency_is_flattened_on_black():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 255, 255, 90, 90, 90] + [0] * (256 * 3 - 6))
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 (white) is transparent
    rgb = load_image(_png_bytes(img))
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 0)) == (90, 90, 90)


def test_rgba_and_la_are_composited_on_black():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 255, 255, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    rgb = load_image(_png_bytes(rgba))
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 0)) == (10, 20, 30)
    la = Image.new("LA", (1, 1), (200, 255))
    assert to_rgb(la).getpixel((0, 0)) == (200, 200, 200)


def test_grayscale_jpeg_becomes_rgb():
    buf = io.BytesIO()
    Image.fromarray(_gradient(np.uint8, 255)).save(buf, format="JPEG")
    assert load_image(buf.getvalue()).mode == "RGB"


def test_jpeg_draft_decodes_smaller_but_not_below_the_asked_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(_gradient(np.uint8, 255, (2400, 2000))).save(path, quality=90)
    full = open_image(path)
    draft = open_image(path, draft_size=448)
    assert full.size == (2000, 2400)
    assert min(draft.size) >= 448 and draft.size[0] < 2000
    png = tmp_path / "big.png"
    Image.fromarray(_gradient(np.uint8, 255, (600, 500))).save(png)
    assert open_image(png, draft_size=100).size == (500, 600)  # no draft for PNG


def test_missing_and_corrupt_files_raise_oserror(tmp_path):
    with pytest.raises(OSError):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises((OSError, SyntaxError, ValueError)):
        load_image(bad)
    good = io.BytesIO()
    Image.fromarray(_gradient(np.uint8, 255, (64, 64))).save(good, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(OSError):
        load_image(truncated)


def test_resize_max_side_keeps_aspect_and_never_enlarges():
    img = Image.new("L", (3000, 2500))
    assert resize_max_side(img, 512).size == (512, 427)
    small = Image.new("L", (300, 200))
    assert resize_max_side(small, 512) is small
    with pytest.raises(ValueError):
        resize_max_side(img, 0)


def test_save_downscaled_writes_8_bit_grayscale(tmp_path):
    src = tmp_path / "src.png"
    Image.fromarray(_gradient(np.uint16, 4095, (1000, 800))).save(src)
    dst = tmp_path / "out" / "a.png"
    save_downscaled(src, dst, 256)
    out = Image.open(dst)
    assert out.mode == "L" and out.size == (205, 256)
    assert np.asarray(out).max() >= 250  # rescaled, not clipped or left dark
    jpg_src = tmp_path / "src.jpg"
    Image.fromarray(_gradient(np.uint8, 255, (3000, 2500))).save(jpg_src)
    save_downscaled(jpg_src, tmp_path / "out" / "b.jpg", 512)
    out = Image.open(tmp_path / "out" / "b.jpg")
    assert out.format == "JPEG" and out.size == (427, 512) and out.mode == "L"
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_downscale_job_reports_failures_and_copies_unchanged_at_max_side_0(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_gradient(np.uint8, 255, (900, 600))).save(src)
    dst = tmp_path / "out" / "a.png"
    assert downscale_job((str(src), str(dst), 300)) == (str(dst), None)
    assert Image.open(dst).size == (200, 300)
    (tmp_path / "same").mkdir()
    assert downscale_job((str(src), str(tmp_path / "same" / "a.png"), 0))[1] is None
    assert (tmp_path / "same" / "a.png").read_bytes() == src.read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    out, error = downscale_job((str(broken), str(tmp_path / "out" / "b.png"), 300))
    assert "UnidentifiedImageError" in error and not (tmp_path / "out" / "b.png").exists()


def test_min_size_refuses_tiny_images_as_value_errors():
    from xraygpt.processors.image_io import ImageTooSmallError

    one = _png_bytes(Image.new("L", (1, 1)))
    assert load_image(one).size == (1, 1)  # no minimum by default
    with pytest.raises(ImageTooSmallError, match="1x1 px, below the minimum of 32"):
        load_image(one, min_size=32)
    assert issubclass(ImageTooSmallError, ValueError)  # callers' bad-image handling catches it
    wide = _png_bytes(Image.new("L", (400, 31)))
    with pytest.raises(ImageTooSmallError, match="400x31"):
        load_image(wide, min_size=32)
    assert load_image(_png_bytes(Image.new("L", (32, 32))), min_size=32).size == (32, 32)
