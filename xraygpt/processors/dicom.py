"""DICOM radiographs as 8-bit display images.

A radiograph's stored values are not display values. The chain the DICOM
standard defines (PS3.3 C.11) is followed here:

1. Modality LUT: RescaleSlope / RescaleIntercept, or a Modality LUT Sequence
   (pydicom's ``apply_modality_lut``).
2. VOI: the first VOI LUT Sequence item (pydicom's ``apply_voi``), else the
   first WindowCenter / WindowWidth pair with its VOILUTFunction (LINEAR,
   LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2), else the image's own value
   range. The result is brought to 0..1 from the VOI's *output* range, not from
   the values this image happens to use, so a windowed film keeps its contrast.
3. MONOCHROME1 is inverted (its lowest value is white). DX files pair it with
   PresentationLUTShape INVERSE, which names the same inversion, not a second one.
4. Rounded to 8 bits: a grayscale ``L`` image for the usual processors.

Refused with a :class:`DicomError` naming the file and the problem: files that
are not DICOM, DICOMs without pixel data (structured reports, presentation
states), multi-frame and colour images, and transfer syntaxes that no
installed plugin decodes (the message names the package that would).

Privacy: DICOM headers hold patient names, IDs and dates. Nothing here reads,
logs or returns them: :class:`DicomInfo` holds only fields that describe the
image, error messages name the file and the problem, and pydicom's own
warnings and log lines (which can quote element values) are silenced.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE_BYTES = 128
MAGIC = b"DICM"

# Packages that decode each compressed transfer syntax (pydicom plugins).
_PLUGIN_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or pillow)",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (or pillow)",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless P14
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
}

DicomSource = str | Path | bytes | BinaryIO


class DicomError(ValueError):
    """A DICOM file that cannot become a radiograph image; the message names the file."""


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM says about its image, and nothing about its patient.

    ``view_position`` is the ViewPosition tag (``PA``, ``AP``, ``LATERAL``,
    ``LL``, ...) upper-cased, or ``None`` when absent or empty. ``voi`` says how
    the display range was chosen: ``"VOI LUT"``, ``"window C/W"`` or
    ``"value range"``.
    """

    view_position: str | None
    photometric: str
    rows: int
    columns: int
    bits_stored: int
    transfer_syntax: str
    voi: str = ""


def has_dicom_magic(head: bytes) -> bool:
    """Whether the first bytes of a file carry the DICOM Part 10 marker at byte 128."""
    return head[PREAMBLE_BYTES : PREAMBLE_BYTES + len(MAGIC)] == MAGIC


def looks_like_dicom(source: DicomSource) -> bool:
    """A file named ``*.dcm`` / ``*.dicom``, or one with the DICOM marker.

    A ``.dcm`` name counts even without the marker, so that such a file gets
    the "not a DICOM file" refusal rather than an image decoder's puzzlement.
    File objects are read at their current position and rewound.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if path.suffix.lower() in DICOM_SUFFIXES:
            return True
        try:
            with path.open("rb") as handle:
                return has_dicom_magic(handle.read(PREAMBLE_BYTES + len(MAGIC)))
        except OSError:
            return False
    if isinstance(source, bytes | bytearray | memoryview):
        return has_dicom_magic(bytes(source[: PREAMBLE_BYTES + len(MAGIC)]))
    try:
        start = source.tell()
        head = source.read(PREAMBLE_BYTES + len(MAGIC))
        source.seek(start)
    except (OSError, AttributeError, ValueError):
        return False
    return has_dicom_magic(head)


def _label(source: DicomSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | Path):
        return str(source)
    return "<DICOM data>"


def _silence_pydicom_log() -> None:
    """pydicom logs what it warns about, and those lines can quote element values
    (a patient's name among them): keep them out of the application's log."""
    logging.getLogger("pydicom").propagate = False


def _dataset(source: DicomSource, what: str, *, header_only: bool) -> Any:
    """Parse ``source`` with pydicom, with Part 10 framing required."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _silence_pydicom_log()
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            # pydicom's warnings about odd elements can quote their values (names, IDs).
            warnings.simplefilter("ignore")
            return pydicom.dcmread(source, stop_before_pixels=header_only)
    except InvalidDicomError as err:
        raise DicomError(
            f"{what} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
            "give a DICOM Part 10 file, or rename a PNG/JPEG to its real suffix"
        ) from err
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        raise DicomError(
            f"{what}: the DICOM header cannot be parsed ({type(err).__name__}); "
            "the file is truncated or corrupt"
        ) from err


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip().upper() if value not in (None, "") else ""


def _transfer_syntax(ds: Any) -> Any:
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(str(uid)) if uid else None


def _info(ds: Any, voi: str = "") -> DicomInfo:
    tsyntax = _transfer_syntax(ds)
    return DicomInfo(
        view_position=_text(ds, "ViewPosition") or None,
        photometric=_text(ds, "PhotometricInterpretation"),
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
        bits_stored=int(ds.get("BitsStored") or 0),
        transfer_syntax=tsyntax.name if tsyntax is not None else "",
        voi=voi,
    )


def decodable_transfer_syntaxes() -> dict[str, str]:
    """``{transfer syntax name: decoding plugins}`` for every syntax pydicom has a decoder
    for and whose plugin is installed (``"pydicom"`` where it needs only NumPy)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import AllTransferSyntaxes

    found = {}
    for uid in AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:  # no decoder in pydicom at all (MPEG, HEVC, ...)
            continue
        if decoder.is_available:
            found[uid.name] = ", ".join(sorted(decoder.available_plugins)) or "pydicom"
    return found


def read_dicom_info(source: DicomSource, *, name: str | None = None) -> DicomInfo:
    """The image description of a DICOM without decoding its pixels (fast: header only)."""
    what = _label(source, name)
    return _info(_dataset(source, what, header_only=True))


def _check_image(ds: Any, what: str, max_pixels: int | None) -> None:
    """Refuse what this project does not turn into a radiograph, before decoding."""
    if "PixelData" not in ds:
        kind = (
            "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else None
        )
        sop = ds.get("SOPClassUID")
        sop_name = getattr(sop, "name", str(sop)) if sop else "unknown SOP class"
        if kind:
            raise DicomError(f"{what} holds {kind}, which is not a radiograph ({sop_name})")
        # pydicom stops quietly at a truncated element, so a cut-off file arrives here.
        if not sop or "Rows" in ds or "Image" in sop_name:
            raise DicomError(
                f"{what} has no pixel data although it should be an image ({sop_name}); "
                "the file is truncated or corrupt"
            )
        raise DicomError(
            f"{what} has no pixel data ({sop_name}); it is not an image, e.g. a structured "
            "report or presentation state"
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise DicomError(
            f"{what} is a multi-frame DICOM ({frames} frames); only single-frame "
            "radiographs are supported: export the frame you want as its own file"
        )
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = _text(ds, "PhotometricInterpretation")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(
            f"{what} is a colour DICOM ({photometric or 'no PhotometricInterpretation'}, "
            f"{samples} samples per pixel); only grayscale radiographs (MONOCHROME1/2) "
            "are supported"
        )
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or columns <= 0:
        raise DicomError(f"{what} declares an empty image ({rows} x {columns} pixels)")
    if max_pixels is not None and rows * columns > max_pixels:
        raise DicomError(
            f"{what} is {columns} x {rows} pixels, over the limit of {max_pixels:,} pixels"
        )


def _check_decoder(ds: Any, what: str) -> None:
    """Name the syntax and the package to install when no plugin decodes it."""
    from pydicom.pixels import get_decoder

    tsyntax = _transfer_syntax(ds)
    if tsyntax is None:
        raise DicomError(f"{what} has no Transfer Syntax UID in its file meta information")
    label = f"{tsyntax.name} ({tsyntax})" if tsyntax.name != str(tsyntax) else str(tsyntax)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as err:
        raise DicomError(
            f"{what} uses the transfer syntax {label}, which pydicom cannot decode with any "
            "plugin; convert it first, e.g. with dcmtk's dcmdjpeg/dcmconv or gdcmconv --raw"
        ) from err
    if not decoder.is_available:
        package = _PLUGIN_PACKAGES.get(str(tsyntax), "a pydicom pixel data plugin")
        raise DicomError(
            f"{what} uses the transfer syntax {label}, which no installed plugin decodes; "
            f"install {package} (pip install -r requirements.txt)"
        )


def _modality_values(ds: Any, what: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoders raise many types for bad data
        # pydicom's decoding messages describe the pixel data only (lengths, codecs).
        raise DicomError(
            f"{what}: the pixel data cannot be decoded ({type(err).__name__}: {err})"
        ) from err
    if stored.ndim != 2:
        raise DicomError(f"{what}: expected one 2-D grayscale frame, got shape {stored.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return apply_modality_lut(stored, ds)


def _first(value: Any) -> float:
    """The first of a multi-valued tag (files may carry several windows)."""
    if isinstance(value, bytes | str):
        return float(value)
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing of ``values`` onto 0..1 (float64).

    LINEAR uses the standard's half-pixel offsets ((x - (c - 0.5)) / (w - 1) + 0.5,
    needs w >= 1); LINEAR_EXACT is (x - c) / w + 0.5 (w > 0); SIGMOID is
    1 / (1 + exp(-4 (x - c) / w)).
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:  # a threshold at the centre
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _value_range(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape)
    return (x - lo) / (hi - lo)


def _voi(values: np.ndarray, ds: Any) -> tuple[np.ndarray, str]:
    """Display values in 0..1 and how they were chosen."""
    from pydicom.pixels.processing import apply_voi

    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        entries, first_map = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        # The LUT's own output range: its nominal bit depth is often wrong in real files.
        table = apply_voi(np.arange(first_map, first_map + entries, dtype=np.int64), ds)
        lo, hi = float(table.min()), float(table.max())
        # Clip to the LUT's input range first: pydicom indexes through a uint16 array,
        # where values more than 65,535 above the first mapped one would wrap around.
        indices = np.clip(np.rint(values), first_map, first_map + entries - 1).astype(np.int64)
        mapped = apply_voi(indices, ds).astype(np.float64)
        out = (mapped - lo) / (hi - lo) if hi > lo else np.zeros(mapped.shape)
        return out, "VOI LUT"
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center not in (None, "") and width not in (None, ""):
        c, w = _first(center), _first(width)
        function = _text(ds, "VOILUTFunction") or "LINEAR"
        try:
            return window(values, c, w, function), f"window {c:g}/{w:g}"
        except ValueError:
            pass  # an invalid window: fall back to the value range, as viewers do
    return _value_range(values), "value range"


def read_dicom(
    source: DicomSource, *, name: str | None = None, max_pixels: int | None = None
) -> tuple[Image.Image, DicomInfo]:
    """Decode a single-frame grayscale DICOM into an 8-bit ``L`` image and its :class:`DicomInfo`.

    ``name`` replaces the path in error messages (the demo shows the user's own
    file name); ``max_pixels`` refuses larger images before decoding them.
    Raises :class:`DicomError` (a ``ValueError``) for every unusable file and
    ``FileNotFoundError`` for a missing one.
    """
    what = _label(source, name)
    ds = _dataset(source, what, header_only=False)
    _check_image(ds, what, max_pixels)
    _check_decoder(ds, what)
    display, voi = _voi(_modality_values(ds, what), ds)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        display = 1.0 - display
    pixels = np.clip(np.rint(display * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L"), _info(ds, voi)


DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image - For Presentation


def new_dicom(sop_class: str) -> Any:
    """An empty DICOM of ``sop_class``: file meta (Explicit VR Little Endian), a new instance UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    view_position: str | None = None,
    transfer_syntax: str | None = None,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Write a synthetic single-frame grayscale DX DICOM (for tests, benchmarks, examples).

    ``pixels``: a 2-D uint8 / uint16 / int16 array of stored values;
    ``bits_stored`` defaults to the dtype's width. ``rescale`` is (slope,
    intercept); ``window`` is (centre, width); ``voi_lut`` a uint16 table whose
    first entry maps the lowest stored value. ``transfer_syntax`` other than
    Explicit VR Little Endian compresses through pydicom's encoders (RLE
    Lossless; JPEG 2000 with pylibjpeg-openjpeg). ``tags`` adds elements by
    keyword. No patient data is written unless ``tags`` holds some.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"need a 2-D uint8/uint16/int16 array, got {pixels.dtype} {pixels.shape}")
    ds = new_dicom(DX_FOR_PRESENTATION)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:g}" for v in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in window)
    if voi_lut is not None:
        table = np.asarray(voi_lut, dtype=np.uint16)
        item = Dataset()
        # Both elements have an ambiguous VR (US/SS, US/OW): name it.
        item.add_new(0x00283002, "US", [len(table) % 2**16, int(pixels.min()), 16])
        item.add_new(0x00283006, "US", table.tolist())
        ds.VOILUTSequence = Sequence([item])
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    if transfer_syntax is not None and UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(UID(transfer_syntax), pixels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
