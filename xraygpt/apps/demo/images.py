"""Checking an uploaded file before it reaches the model.

Anyone who can open the page can upload anything: a PDF, a truncated PNG, a
16-bit DICOM export, a 30,000-pixel decompression bomb. Each is turned into
an :class:`ImageRejected` whose message is written for the person at the
browser (it names their file, not a server path) and says what to do.

DICOM files are windowed by :mod:`xraygpt.processors.dicom`; of their header
only the view position comes back (:class:`Upload`), never a patient tag.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from xraygpt.common.errors import XrayGPTError
from xraygpt.processors.dicom import DICOM_SUFFIXES, DicomError, looks_like_dicom, read_dicom
from xraygpt.processors.image_io import to_rgb

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000  # a 7000 x 7000 film; digital chest X-rays are ~3000 x 3000


class ImageRejected(XrayGPTError, ValueError):
    """An upload the demo cannot use; ``str(err)`` is the message for the user."""


@dataclass(frozen=True)
class Upload:
    """A checked upload: the 8-bit RGB image, and for a DICOM its view position."""

    image: Image.Image
    dicom: bool = False
    view_position: str | None = None


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file: tells "the same X-ray again" from "a new X-ray"."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def load_upload(
    path: str | Path,
    *,
    name: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open an uploaded file as an 8-bit RGB image, or raise :class:`ImageRejected`.

    ``name`` is the file name the user knows (the upload's original name);
    ``max_bytes`` and ``max_pixels`` bound the work one upload can cause.
    """
    return read_upload(path, name=name, max_bytes=max_bytes, max_pixels=max_pixels).image


def _read_dicom_upload(path: Path, shown: str, max_pixels: int | None) -> Upload:
    try:
        image, info = read_dicom(path, name=repr(shown), max_pixels=max_pixels)
    except DicomError as err:
        # The message names the user's file and the problem, never a header value.
        raise ImageRejected(
            f"{err}. Please upload a single-frame grayscale DICOM, or a PNG/JPEG export."
        ) from err
    return Upload(to_rgb(image), dicom=True, view_position=info.view_position)


def read_upload(
    path: str | Path,
    *,
    name: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Upload:
    """:func:`load_upload`, also saying whether the file was a DICOM and its view position."""
    path = Path(path)
    shown = name or path.name
    if not path.is_file():
        raise ImageRejected(f"The upload of {shown!r} did not arrive. Please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise ImageRejected(f"{shown!r} is empty (0 bytes). Please upload a chest X-ray image.")
    if max_bytes is not None and size > max_bytes:
        raise ImageRejected(
            f"{shown!r} is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}. "
            "Please upload a smaller image (a PNG or JPEG export of the X-ray)."
        )
    if looks_like_dicom(path) or Path(shown).suffix.lower() in DICOM_SUFFIXES:
        return _read_dicom_upload(path, shown, max_pixels)
    too_big = ImageRejected(
        f"{shown!r} is too large in pixels (limit {max_pixels or Image.MAX_IMAGE_PIXELS:,} pixels). "
        "Please downscale it, e.g. to about 1000 x 1000 pixels; the model sees 224 x 224."
    )
    corrupt = (
        f"{shown!r} looks like an image but cannot be decoded (the file is truncated or "
        "corrupt). Please export the X-ray again and upload the new file."
    )
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice its limit: make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height = probe.size
                if max_pixels is not None and width * height > max_pixels:
                    raise too_big
                # verify() checks the container (chunks, CRCs) without decoding pixels.
                probe.verify()
            # verify() leaves the image unusable and misses truncated pixel data:
            # decode the whole thing from a fresh handle.
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise too_big from err
    except UnidentifiedImageError as err:
        raise ImageRejected(
            f"{shown!r} is not an image that can be read. Please upload a chest X-ray as "
            "PNG, JPEG, TIFF or BMP."
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL reports damaged files with any of these, depending on the format.
        raise ImageRejected(corrupt) from err
    # 16-bit films are stretched by their value range, not clipped (see to_rgb).
    return Upload(to_rgb(image))
