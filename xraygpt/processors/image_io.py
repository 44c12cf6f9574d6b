"""Reading radiographs from disk as 8-bit RGB, whatever their pixel format.

Chest X-rays come as 8-bit grayscale JPEGs (MIMIC-CXR-JPG), 8- or 16-bit
grayscale PNGs (OpenI, exports from DICOM), DICOM files (windowed to 8 bits by
:mod:`xraygpt.processors.dicom`), and now and then palette or RGBA files. PIL's own ``convert("RGB")`` clips 16-bit values above 255, which turns
a 16-bit radiograph almost white, so the conversion here rescales such images
by the range of values they actually use.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from xraygpt.processors.dicom import looks_like_dicom, read_dicom

# Formats that carry more than 8 bits per pixel (or signed / float values).
_WIDE_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32S"}

ImageSource = str | Path | bytes | BinaryIO


def _rescale_to_8bit(img: Image.Image) -> Image.Image:
    """Map the image's own min..max linearly onto 0..255 (no clipping)."""
    arr = np.asarray(img)
    if arr.ndim == 3:  # a wide multi-channel array cannot come from PIL, but be safe
        arr = arr[..., 0]
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return Image.new("L", img.size, 0)
    lo = float(arr[finite].min())
    hi = float(arr[finite].max())
    if hi <= lo:
        out = np.zeros(arr.shape, dtype=np.uint8)
    else:
        scaled = (np.where(finite, arr, lo) - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a transparent image onto black: radiograph backgrounds are dark."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB.

    16-bit and 32-bit grayscale is rescaled by its real value range;
    palette, grayscale+alpha and RGBA images are flattened onto black.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_MODES:
        return _rescale_to_8bit(img).convert("RGB")
    if mode == "P":
        if "transparency" in img.info:
            return _flatten_alpha(img)
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _flatten_alpha(img)
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def to_gray_or_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit image that keeps grayscale as ``L`` (a third of the bytes on disk)."""
    if img.mode in _WIDE_MODES:
        return _rescale_to_8bit(img)
    if img.mode in ("L", "1"):
        return img.convert("L")
    rgb = to_rgb(img)
    arr = np.asarray(rgb)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return rgb.convert("L")
    return rgb


def open_image(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode an image (any mode), optionally with JPEG draft decoding.

    DICOM files (a ``.dcm`` / ``.dicom`` name or the ``DICM`` marker) are
    windowed to an 8-bit ``L`` image by :func:`xraygpt.processors.dicom.read_dicom`;
    its :class:`~xraygpt.processors.dicom.DicomError` is a ``ValueError``.

    ``draft_size``: when given and the file is a JPEG, let libjpeg decode at
    1/2, 1/4 or 1/8 scale as long as both sides stay at least this large. For
    a 224-pixel model input this is several times faster on full-size
    MIMIC-CXR JPEGs and loses nothing the final resize would keep. A windowed
    DICOM is box-averaged down by the same factors (``Image.reduce``), so the
    transforms after it see the same sizes as for a JPEG.
    Raises ``FileNotFoundError`` / ``OSError`` / ``PIL.UnidentifiedImageError``
    for missing or unreadable files (callers decide whether to skip).
    """
    if looks_like_dicom(source):
        img = read_dicom(source)[0]
        if draft_size is not None:
            for factor in (8, 4, 2):
                if min(img.size) // factor >= draft_size:
                    return img.reduce(factor)
        return img
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    img = Image.open(source)
    if draft_size is not None and img.format == "JPEG":
        img.draft(img.mode, (draft_size, draft_size))
    img.load()  # decode now, so corrupt data fails here and not in a transform
    return img


class ImageTooSmallError(ValueError):
    """An image with a side below the minimum: a thumbnail or a placeholder, not a radiograph."""


def load_image(
    source: ImageSource, draft_size: int | None = None, min_size: int = 0
) -> Image.Image:
    """An image file (path, bytes or file object) as an 8-bit RGB PIL image.

    ``min_size``: raise :class:`ImageTooSmallError` (a ``ValueError``, so callers
    treat it as an unreadable image) when either side is below this many pixels;
    a 1x1 file decodes fine but upscaled to the model's input it is no image.
    """
    img = open_image(source, draft_size)
    if min(img.size) < min_size:
        width, height = img.size
        raise ImageTooSmallError(
            f"the image is {width}x{height} px, below the minimum of {min_size} px a side "
            "(min_image_size)"
        )
    return to_rgb(img)


def resize_max_side(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is at most ``max_side`` (aspect kept; never enlarges)."""
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    width, height = img.size
    longer = max(width, height)
    if longer <= max_side:
        return img
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def save_downscaled(src: str | Path, dst: str | Path, max_side: int, quality: int = 95) -> None:
    """Write an 8-bit copy of ``src`` at ``dst`` with its longer side at most ``max_side``.

    The format follows ``dst``'s suffix (``.jpg`` / ``.png``). Grayscale stays
    grayscale; 16-bit images are rescaled to 8 bits here once, so training never
    has to. JPEG sources are draft-decoded at no less than ``max_side``. The file
    is written to a temporary name first, so an interrupted run leaves no
    truncated image behind.
    """
    src, dst = Path(src), Path(dst)
    img = open_image(src, draft_size=max_side)
    img = resize_max_side(to_gray_or_rgb(img), max_side)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    fmt = "JPEG" if dst.suffix.lower() in (".jpg", ".jpeg") else None
    if fmt is None:
        fmt = Image.registered_extensions().get(dst.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the image format of {dst} from its suffix")
    options = {"quality": quality} if fmt == "JPEG" else {}
    try:
        img.save(tmp, format=fmt, **options)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def downscale_job(job: tuple[str, str, int]) -> tuple[str, str | None]:
    """``(src, dst, max_side)`` -> ``(dst, error or None)``: one copy of a batch job.

    ``max_side`` 0 copies the file unchanged. Runs in worker processes (so it
    lives in a module without torch); any failure is reported, not raised.
    """
    src, dst, max_side = job
    try:
        if max_side > 0:
            save_downscaled(src, dst, max_side)
        else:
            shutil.copyfile(src, dst)
    except Exception as err:  # noqa: BLE001 - each failure is one unreadable image, reported
        Path(dst).unlink(missing_ok=True)
        return dst, f"{type(err).__name__}: {err}"
    return dst, None


def dicom_downscale_job(
    job: tuple[str, str, int, tuple[str, ...] | None],
) -> tuple[str, str, str | None, str | None]:
    """``(src.dcm, dst, max_side, views)`` -> ``(dst, status, view, error or None)``.

    Reads the header first (fast) for the view position: a view outside
    ``views`` (``None``: all) is ``"other_view"`` and nothing is written; a
    copy newer than its source is ``"already_present"``; else the DICOM is
    windowed and written at ``dst`` (``"copied"``; ``max_side`` 0 keeps the full
    size). ``view`` is the ViewPosition or ``None``. Failures are
    ``"unreadable"`` with the error, never raised (runs in worker processes).
    """
    from xraygpt.processors.dicom import read_dicom_info

    src, dst, max_side, views = job
    view = None
    try:
        view = read_dicom_info(src).view_position
        if views is not None and (view or "NONE") not in views:
            return dst, "other_view", view, None
        target = Path(dst)
        if target.is_file() and target.stat().st_size > 0:
            if target.stat().st_mtime >= Path(src).stat().st_mtime:
                return dst, "already_present", view, None
        # resize_max_side never enlarges, so "no limit" is any side at least the image's.
        save_downscaled(src, dst, max_side if max_side > 0 else 1 << 30)
    except Exception as err:  # noqa: BLE001 - each failure is one unreadable file, reported
        Path(dst).unlink(missing_ok=True)
        return dst, "unreadable", view, f"{type(err).__name__}: {err}"
    return dst, "copied", view, None
