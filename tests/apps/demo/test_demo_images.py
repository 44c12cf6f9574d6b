import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from xraygpt.apps.demo.images import ImageRejected, file_digest, load_upload


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (no pixel data): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_grayscale_png_becomes_rgb(xray_png):
    image = load_upload(xray_png)
    assert image.mode == "RGB" and image.size == (80, 96)
    assert np.array_equal(np.asarray(image)[..., 0], np.asarray(Image.open(xray_png)))


def test_16bit_png_is_stretched_by_its_range_not_clipped(tmp_path):
    values = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "dicom_export.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load_upload(path))[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255
    assert 100 < np.median(pixels) < 155  # a clipping conversion would make it ~255


def test_rgba_is_flattened(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 10), (200, 200, 200, 0)).save(path)
    image = load_upload(path)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 0)


def test_text_file_is_rejected_with_its_name(text_file):
    with pytest.raises(ImageRejected, match=r"'my notes.png' is not an image"):
        load_upload(text_file, name="my notes.png")


def test_truncated_png_is_rejected(xray_png, tmp_path):
    data = xray_png.read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        load_upload(broken)


def test_empty_file_is_rejected(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageRejected, match="is empty"):
        load_upload(empty)


def test_pixel_limit(xray_png):
    with pytest.raises(ImageRejected, match="too large in pixels"):
        load_upload(xray_png, max_pixels=80 * 96 - 1)
    assert load_upload(xray_png, max_pixels=80 * 96).size == (80, 96)


def test_decompression_bomb_is_rejected_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40_000, 40_000)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageRejected, match="too large in pixels"):
        load_upload(bomb, max_pixels=None)  # PIL's own limit still applies
    with pytest.raises(ImageRejected, match="too large in pixels"):
        load_upload(bomb)


def test_file_size_limit(xray_png):
    size = xray_png.stat().st_size
    with pytest.raises(ImageRejected, match="the limit is"):
        load_upload(xray_png, max_bytes=size - 1)
    load_upload(xray_png, max_bytes=size)


def test_missing_file(tmp_path):
    with pytest.raises(ImageRejected, match="did not arrive"):
        load_upload(tmp_path / "gone.png")


def test_digest_tells_files_apart(xray_png, other_xray_png, tmp_path):
    copy = tmp_path / "copy.png"
    copy.write_bytes(xray_png.read_bytes())
    assert file_digest(xray_png) == file_digest(copy) != file_digest(other_xray_png)
