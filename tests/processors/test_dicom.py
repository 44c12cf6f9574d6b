"""DICOM radiographs: windowing, photometric inversion, compressed syntaxes, refusals, privacy."""

import io
import logging

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import (
    MPEG2MPML,
    JPEG2000Lossless,
    RLELossless,
)

from xraygpt.processors.blip_processors import Blip2ImageEvalProcessor
from xraygpt.processors.dicom import (
    DicomError,
    DicomInfo,
    looks_like_dicom,
    new_dicom,
    read_dicom,
    read_dicom_info,
    window,
    write_dicom,
)
from xraygpt.processors.image_io import load_image, open_image, save_downscaled

# Recognisable fake patient data: none of it may ever show up in a message or a log.
FAKE_PATIENT = {
    "PatientName": "Zzyzx^Quintessa",
    "PatientID": "FAKEPID-7731",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACC-FAKE-4242",
}
FAKE_VALUES = ("Zzyzx", "Quintessa", "FAKEPID-7731", "19010203", "ACC-FAKE-4242")


def _twelve_bit(shape=(40, 56), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, shape).astype(np.uint16)


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int64)


def _assert_private(text: str) -> None:
    for value in FAKE_VALUES:
        assert value not in text, f"patient value {value!r} leaked into: {text}"


def test_windowed_12_bit_matches_a_hand_computed_reference(tmp_path):
    # Window 2048/1024, LINEAR (PS3.3 C.11.2.1.2): x <= 1536 -> 0, x > 2559 -> 255,
    # else ((x - 2047.5) / 1023 + 0.5) * 255, e.g. 1800 -> 65.81 -> 66, 2048 -> 127.62 -> 128,
    # 2300 -> 190.44 -> 190.
    stored = np.array([[0, 1536, 1537, 1800], [2048, 2300, 2559, 4095]], dtype=np.uint16)
    expected = np.array([[0, 0, 0, 66], [128, 190, 255, 255]])
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(2048, 1024))
    image, info = read_dicom(path)
    assert image.mode == "L" and image.size == (4, 2)
    assert np.array_equal(_pixels(image), expected)
    assert info.voi == "window 2048/1024" and info.bits_stored == 12


def test_rescale_is_applied_before_the_window(tmp_path):
    # Slope 2, intercept -1024: stored s is the value 2 s - 1024; the same values as above.
    values = np.array([[0, 1536, 1538, 1800], [2048, 2300, 2560, 4094]])
    stored = ((values + 1024) // 2).astype(np.uint16)
    path = write_dicom(
        tmp_path / "r.dcm", stored, bits_stored=12, rescale=(2, -1024), window=(2048, 1024)
    )
    assert np.array_equal(
        _pixels(read_dicom(path)[0]), np.array([[0, 0, 0, 66], [128, 190, 255, 255]])
    )


def test_without_a_window_the_value_range_is_used_and_16_bits_are_not_clipped(tmp_path):
    stored = np.linspace(1000, 60000, 32 * 48).reshape(32, 48).astype(np.uint16)
    image, info = read_dicom(write_dicom(tmp_path / "v.dcm", stored))
    expected = np.rint((stored.astype(float) - 1000) / 59000 * 255)
    assert np.array_equal(_pixels(image), expected) and info.voi == "value range"
    assert info.bits_stored == 16


def test_voi_lut_sequence_is_used_with_its_output_range(tmp_path):
    stored = _twelve_bit()
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 4000 + 50).astype(np.uint16)  # 50..4050
    stored[0, 0], stored[0, 1] = 0, 4095  # the LUT's first entry maps the lowest value
    path = write_dicom(tmp_path / "lut.dcm", stored, bits_stored=12, voi_lut=lut, window=(10, 5))
    image, info = read_dicom(path)
    expected = np.rint((lut[stored].astype(float) - 50) / 4000 * 255)
    assert info.voi == "VOI LUT"  # the LUT wins over the window, as the standard orders
    assert np.array_equal(_pixels(image), expected)


@pytest.mark.parametrize("windowed", [False, True])
def test_monochrome1_and_its_monochrome2_twin_give_the_same_tensor(tmp_path, windowed):
    values = _twelve_bit(seed=1)
    # The twin stores 4095 - x; a LINEAR window (c, w) on x mirrors to (4096 - c, w).
    mono2 = write_dicom(
        tmp_path / "m2.dcm", values, bits_stored=12, window=(1900, 1500) if windowed else None
    )
    mono1 = write_dicom(
        tmp_path / "m1.dcm",
        (4095 - values).astype(np.uint16),
        bits_stored=12,
        photometric="MONOCHROME1",
        window=(4096 - 1900, 1500) if windowed else None,
    )
    processor = Blip2ImageEvalProcessor(image_size=32)
    a = processor(load_image(mono2))
    b = processor(load_image(mono1))
    assert torch.equal(a, b)
    # ... and the inversion really happened: bright stays bright.
    assert np.corrcoef(_pixels(open_image(mono1)).ravel(), values.ravel())[0, 1] > 0.9


def test_twelve_bits_in_a_16_bit_word_ignore_the_unused_high_bits(tmp_path):
    values = _twelve_bit(seed=2)
    clean = read_dicom(write_dicom(tmp_path / "c.dcm", values, bits_stored=12))[0]
    dirty = read_dicom(write_dicom(tmp_path / "d.dcm", values | 0xF000, bits_stored=12))[0]
    assert np.array_equal(_pixels(clean), _pixels(dirty))


def test_signed_pixels(tmp_path):
    values = np.array([[-1000, 0], [500, 1000]], dtype=np.int16)
    image, _ = read_dicom(write_dicom(tmp_path / "s.dcm", values, window=(0, 2001)))
    assert np.array_equal(_pixels(image), [[0, 128], [191, 255]])


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_files_decode_to_the_uncompressed_image(tmp_path, syntax):
    # Smooth, like a radiograph (noise would not compress).
    values = np.add.outer(np.arange(40) * 40, np.arange(56) * 30).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", values, bits_stored=12, window=(2000, 3000))
    packed = write_dicom(
        tmp_path / "packed.dcm",
        values,
        bits_stored=12,
        window=(2000, 3000),
        transfer_syntax=syntax,
    )
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    assert packed.stat().st_size < plain.stat().st_size
    image, info = read_dicom(packed)
    assert np.array_equal(_pixels(image), _pixels(read_dicom(plain)[0]))
    assert info.transfer_syntax == syntax.name


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_pydicoms_own_compressed_files_match_their_uncompressed_original(name):
    # pydicom ships these; no encoder for JPEG-LS is installed, so its file is the test input.
    original = _pixels(read_dicom(get_testdata_file("MR_small.dcm"))[0])
    assert np.array_equal(_pixels(read_dicom(get_testdata_file(name))[0]), original)


def test_jpeg_extended_12_bit_decodes():
    image, info = read_dicom(get_testdata_file("JPGExtended.dcm"))
    assert info.transfer_syntax.startswith("JPEG Extended") and image.mode == "L"
    assert _pixels(image).std() > 10


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # writing the lower-case 'pa '
def test_view_position_and_the_metadata_object_hold_no_patient_data(tmp_path):
    path = write_dicom(
        tmp_path / "pa.dcm", _twelve_bit(), view_position="pa ", tags=dict(FAKE_PATIENT)
    )
    info = read_dicom_info(path)
    # pydicom's log lines can quote element values: they stay out of the app's log.
    assert logging.getLogger("pydicom").propagate is False
    assert info.view_position == "PA"
    _, full = read_dicom(path)
    assert full.view_position == "PA" and full.rows == 40 and full.columns == 56
    assert set(DicomInfo.__dataclass_fields__) == {
        "view_position",
        "photometric",
        "rows",
        "columns",
        "bits_stored",
        "transfer_syntax",
        "voi",
    }
    _assert_private(repr(full) + repr(info))
    assert read_dicom_info(write_dicom(tmp_path / "none.dcm", _twelve_bit())).view_position is None


def test_dicom_from_bytes_and_file_objects(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", _twelve_bit())
    data = path.read_bytes()
    expected = _pixels(read_dicom(path)[0])
    assert looks_like_dicom(data) and looks_like_dicom(io.BytesIO(data))
    assert np.array_equal(_pixels(open_image(data)), expected)
    handle = io.BytesIO(data)
    assert np.array_equal(_pixels(open_image(handle)), expected)
    renamed = tmp_path / "no_suffix"
    renamed.write_bytes(data)  # the marker, not the name, says DICOM
    assert load_image(renamed).mode == "RGB"


def test_save_downscaled_writes_a_windowed_8_bit_copy(tmp_path):
    values = np.linspace(0, 4095, 300 * 200).reshape(300, 200).astype(np.uint16)
    src = write_dicom(tmp_path / "big.dcm", values, bits_stored=12, photometric="MONOCHROME1")
    save_downscaled(src, tmp_path / "out.jpg", max_side=100)
    out = Image.open(tmp_path / "out.jpg")
    assert out.mode == "L" and out.size == (67, 100)
    top, bottom = np.asarray(out)[:5].mean(), np.asarray(out)[-5:].mean()
    assert top > 240 and bottom < 15  # MONOCHROME1: low values white


# -- refusals -----------------------------------------------------------------------------


def _no_pixel_dataset(path, sop_class="1.2.840.10008.5.1.4.1.1.88.11") -> None:
    """A Basic Text SR: a DICOM with no image at all."""
    ds = new_dicom(sop_class)
    ds.Modality = "SR"
    for key, value in FAKE_PATIENT.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _multi_frame(path) -> None:
    frames = np.random.default_rng(4).integers(0, 4096, (3, 16, 16)).astype(np.uint16)
    write_dicom(path, frames[0], bits_stored=12, tags=dict(FAKE_PATIENT))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _colour(path) -> None:
    write_dicom(path, _twelve_bit(), tags=dict(FAKE_PATIENT))
    ds = pydicom.dcmread(path)
    rgb = np.random.default_rng(5).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _truncated_pixels(path) -> None:
    write_dicom(path, _twelve_bit(), tags=dict(FAKE_PATIENT))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])


def _truncated_header(path) -> None:
    write_dicom(path, _twelve_bit(), tags=dict(FAKE_PATIENT))
    path.write_bytes(path.read_bytes()[:300])


def _truncated_after_the_header(path) -> None:
    write_dicom(path, _twelve_bit(), tags=dict(FAKE_PATIENT))
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00") + 3])  # inside the PixelData tag


def _undecodable_syntax(path) -> None:
    write_dicom(path, _twelve_bit(), tags=dict(FAKE_PATIENT))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def _png_named_dcm(path) -> None:
    Image.new("L", (8, 8), 128).save(path, format="PNG")


def _garbage(path) -> None:
    path.write_bytes(b"Zzyzx^Quintessa FAKEPID-7731 " * 20)  # even junk with patient data


REFUSALS = [
    (_no_pixel_dataset, "has no pixel data (Basic Text SR"),
    (_multi_frame, "multi-frame DICOM (3 frames)"),
    (_colour, "colour DICOM (RGB, 3 samples per pixel)"),
    (_truncated_pixels, "pixel data cannot be decoded"),
    (_truncated_header, "the file is truncated or corrupt"),
    (_truncated_after_the_header, "the file is truncated or corrupt"),
    (_undecodable_syntax, "MPEG2 Main Profile / Main Level"),
    (_png_named_dcm, "is not a DICOM file"),
    (_garbage, "is not a DICOM file"),
]


@pytest.mark.parametrize(("make", "expected"), REFUSALS, ids=[m.__name__ for m, _ in REFUSALS])
def test_refusals_name_the_file_and_the_problem_and_no_patient_data(
    tmp_path, caplog, capsys, make, expected
):
    path = tmp_path / "case.dcm"
    make(path)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DicomError) as err:
        load_image(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    # Also through the chained causes a traceback would print.
    cause, chain = err.value, []
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    out = capsys.readouterr()
    _assert_private(" ".join(chain) + caplog.text + out.out + out.err)
    # The name the user knows replaces the path.
    with pytest.raises(DicomError, match="upload.dcm"):
        read_dicom(path, name="upload.dcm")


def test_a_missing_plugin_is_named(tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    path = write_dicom(tmp_path / "j2k.dcm", _twelve_bit(), transfer_syntax=JPEG2000Lossless)
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    assert "JPEG 2000 Image Compression (Lossless Only)" in str(err.value)
    assert "install pylibjpeg-openjpeg" in str(err.value)


def test_too_many_pixels_are_refused_before_decoding(tmp_path):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((100, 100), dtype=np.uint16))
    with pytest.raises(DicomError, match="over the limit of 9,999 pixels"):
        read_dicom(path, max_pixels=9_999)


def test_window_functions():
    x = np.array([0.0, 50.0, 100.0])
    assert np.allclose(window(x, 50, 100, "LINEAR_EXACT"), [0.0, 0.5, 1.0])
    assert np.allclose(window(x, 50, 100, "SIGMOID"), 1 / (1 + np.exp([2.0, 0.0, -2.0])))
    assert np.array_equal(window(x, 50, 1), [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="width must be >= 1"):
        window(x, 50, 0.5)


def test_an_invalid_window_falls_back_to_the_value_range(tmp_path):
    values = _twelve_bit(seed=6)
    bad = read_dicom(write_dicom(tmp_path / "bad.dcm", values, bits_stored=12, window=(10, 0)))
    plain = read_dicom(write_dicom(tmp_path / "plain.dcm", values, bits_stored=12))
    assert bad[1].voi == "value range"
    assert np.array_equal(_pixels(bad[0]), _pixels(plain[0]))


def test_the_pinned_plugins_decode_the_compressed_radiograph_syntaxes():
    from xraygpt.processors.dicom import decodable_transfer_syntaxes

    found = decodable_transfer_syntaxes()
    for name in (
        "Explicit VR Little Endian",
        "RLE Lossless",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG-LS Lossless Image Compression",
        "JPEG 2000 Image Compression (Lossless Only)",
        "High-Throughput JPEG 2000 Image Compression",
    ):
        assert name in found, f"{name} has no installed decoder; pip install -r requirements.txt"
    assert "pylibjpeg" in found["JPEG-LS Lossless Image Compression"]
    assert not any("MPEG" in name for name in found)


def test_draft_size_reduces_a_dicom_like_a_jpeg_draft(tmp_path):
    values = np.linspace(0, 4095, 1000 * 900).reshape(1000, 900).astype(np.uint16)
    path = write_dicom(tmp_path / "big.dcm", values, bits_stored=12)
    full = open_image(path)
    assert full.size == (900, 1000)
    assert open_image(path, draft_size=448).size == (450, 500)  # 1/2: 1/4 would go below 448
    assert open_image(path, draft_size=100).size == (113, 125)  # 1/8, at most
    assert open_image(path, draft_size=900).size == (900, 1000)
    reduced = np.asarray(open_image(path, draft_size=448)).astype(float)
    assert abs(reduced.mean() - np.asarray(full).mean()) < 1


def test_voi_lut_inputs_beyond_the_table_take_its_ends(tmp_path):
    # Rescale 20x puts stored 3327 at 66,540: past the 4,096-entry LUT, and past 16 bits
    # by 1,004, where an index that wrapped around would land.
    stored = np.array([[0, 100], [2000, 3327]], dtype=np.uint16)
    lut = np.linspace(0, 4095, 4096).astype(np.uint16)
    path = write_dicom(tmp_path / "far.dcm", stored, rescale=(20, 0), voi_lut=lut)
    assert np.array_equal(_pixels(read_dicom(path)[0]), [[0, 125], [255, 255]])
