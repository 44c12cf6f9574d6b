"""The demo's logic with a scripted Chat: no server, no model (fast)."""

import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

from xraygpt.apps.demo.app import (
    MSG_EMPTY_ANSWER,
    MSG_EMPTY_QUESTION,
    MSG_NO_IMAGE,
    WARNING_PREFIX,
    ChatHandlers,
    ChatSession,
    build_demo,
)
from xraygpt.apps.demo.options import resolve_device
from xraygpt.cli.demo import add_demo_arguments
from xraygpt.common.config import REPO_ROOT
from xraygpt.common.launch import build_parser


@pytest.fixture
def handlers(fake_chat):
    return ChatHandlers(fake_chat, max_question_chars=200)


def _upload(path, name=None):
    """What Gradio hands an unprocessed image input: a FileData dict."""
    return {"path": str(path), "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


def _run(handlers, image, question, session, beams=1, temperature=1.0):
    """All yields of one turn: (list of chat-message lists, last question box value, session)."""
    steps = list(handlers.ask(image, question, beams, temperature, session))
    assert steps, "ask must yield at least once"
    return [s[0] for s in steps], steps[-1][1], steps[-1][2]


def _texts(messages):
    return [(m["role"], m["content"]) for m in messages]


def test_upload_then_stream_then_follow_up(handlers, fake_chat, xray_png):
    messages, shown, session = handlers.load_image(_upload(xray_png), ChatSession())
    assert shown is not None  # gr.skip(): the image box keeps the upload
    assert _texts(messages) == [
        ("assistant", "X-ray 'chest.png' loaded (80 × 96 pixels). Ask me about it.")
    ]
    assert fake_chat.images[0].mode == "RGB" and session.img_list

    frames, box, session = _run(handlers, _upload(xray_png), "  What do you see?  ", session)
    # First the question alone, then the answer growing word by word.
    assert frames[0][-1] == {"role": "user", "content": "What do you see?"}
    answers = [f[-1]["content"] for f in frames[1:] if f[-1]["role"] == "assistant"]
    assert answers[0] == "The" and answers[-1] == fake_chat.answer
    assert len(set(answers)) > 3  # streamed, not sent in one piece
    assert box == gr.skip() and frames[0] is not frames[-1]

    frames, _, session = _run(handlers, _upload(xray_png), "Any effusion?", session)
    roles = [role for role, _ in _texts(frames[-1])]
    assert roles == ["assistant", "user", "assistant", "user", "assistant"]
    # The same file again continues the conversation; the question joins the image turn.
    prompt = session.conv.get_prompt()
    assert "<Img><ImageHere></Img> What do you see?###Doctor: The heart" in prompt
    assert prompt.count("<ImageHere>") == 1 and prompt.endswith("No pleural effusion.###")
    assert fake_chat.generation_calls[-1] == {
        "num_beams": 1,
        "temperature": 1.0,
        "max_new_tokens": 300,
    }


def test_sliders_reach_the_model(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    _run(handlers, None, "q", session, beams=4.0, temperature=0.3)
    assert fake_chat.generation_calls[-1] == {
        "num_beams": 4,
        "temperature": 0.3,
        "max_new_tokens": 300,
    }


def test_question_before_any_image(handlers, fake_chat):
    frames, box, session = _run(handlers, None, "Is it normal?", ChatSession())
    assert _texts(frames[-1]) == [
        ("user", "Is it normal?"),
        ("assistant", WARNING_PREFIX + MSG_NO_IMAGE),
    ]
    assert box == "Is it normal?"  # kept, to send again after the upload
    assert session.conv is None and not fake_chat.generation_calls


def test_empty_question(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    frames, _, _ = _run(handlers, None, "   \n", session)
    assert frames[-1][-1]["content"] == WARNING_PREFIX + MSG_EMPTY_QUESTION
    assert not fake_chat.generation_calls


def test_question_too_long(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    frames, _, _ = _run(handlers, None, "why " * 100, session)
    assert "the limit is 200" in frames[-1][-1]["content"]
    assert not fake_chat.generation_calls


@pytest.mark.parametrize(
    ("beams", "temperature", "expected"),
    [
        (0, 1.0, "Beams must be between 1 and 10"),
        (11, 1.0, "Beams"),
        (2.5, 1.0, "Beams"),
        ("x", 1.0, "Beams"),
        (1, 0.0, "Temperature must be between 0.1 and 2.0"),
        (1, "hot", "Temperature"),
        (1, float("nan"), "Temperature"),
    ],
)
def test_bad_settings(handlers, fake_chat, xray_png, beams, temperature, expected):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    frames, _, _ = _run(handlers, None, "q", session, beams=beams, temperature=temperature)
    assert expected in frames[-1][-1]["content"]
    assert not fake_chat.generation_calls


def test_not_an_image(handlers, fake_chat, text_file):
    messages, shown, session = handlers.load_image(_upload(text_file, "notes.png"), ChatSession())
    assert shown is None  # the rejected file is taken out of the image box
    assert messages[-1]["content"].startswith(WARNING_PREFIX + "'notes.png' is not an image")
    assert session.conv is None and not fake_chat.images


def test_rejected_image_ends_the_previous_conversation(handlers, xray_png, text_file):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    frames, box, session = _run(handlers, _upload(text_file), "and now?", session)
    assert "is not an image" in frames[-1][-1]["content"]
    assert session.conv is None and box == "and now?"


def test_new_image_via_ask_starts_a_new_conversation(handlers, fake_chat, xray_png, other_xray_png):
    """An example click fills the image box without an upload event: ask loads it."""
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    _run(handlers, None, "first", session)
    frames, _, session = _run(handlers, other_xray_png, "second", session)
    assert _texts(frames[-1])[0] == (
        "assistant",
        "X-ray 'other.png' loaded (64 × 64 pixels). Ask me about it.",
    )
    assert [role for role, _ in _texts(frames[-1])] == ["assistant", "user", "assistant"]
    assert "first" not in session.conv.get_prompt() and len(fake_chat.images) == 2


def test_context_overflow_gets_a_message_and_keeps_the_conversation(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    _, _, session = _run(handlers, None, "first question", session)
    before = session.conv.get_prompt()
    calls = len(fake_chat.generation_calls)
    fake_chat.max_length = 301  # 300 new tokens leave one position of context
    frames, _, session = _run(handlers, None, "a question that no longer fits", session)
    assert "grown too long for the model's context" in frames[-1][-1]["content"]
    assert session.conv.get_prompt() == before  # the refused turn left no trace
    assert len(fake_chat.generation_calls) == calls

    fake_chat.max_length = 2000  # and the app keeps answering
    frames, _, _ = _run(handlers, None, "short", session)
    assert frames[-1][-1]["content"] == fake_chat.answer


def test_max_new_tokens_must_leave_room(fake_chat):
    with pytest.raises(ValueError, match="max_new_tokens=2000 leaves no room"):
        ChatHandlers(fake_chat, max_new_tokens=2000)


def test_model_failure_is_reported_not_raised(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    fake_chat.fail_with = RuntimeError("CUDA out of memory")
    frames, _, _ = _run(handlers, None, "q", session)
    assert "Something went wrong while answering (RuntimeError)" in frames[-1][-1]["content"]


def test_empty_answer_is_explained(handlers, fake_chat, xray_png):
    fake_chat.answer = " "
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    frames, _, _ = _run(handlers, None, "q", session)
    assert frames[-1][-1]["content"] == MSG_EMPTY_ANSWER


def test_sessions_are_independent(handlers, xray_png, other_xray_png):
    _, _, alice = handlers.load_image(_upload(xray_png), ChatSession())
    _, _, bob = handlers.load_image(_upload(other_xray_png), ChatSession())
    _, _, alice = _run(handlers, None, "alice asks", alice)
    assert "alice" not in bob.conv.get_prompt() and len(bob.history) == 1


def test_clearing_the_chat_restarts_about_the_same_xray(handlers, fake_chat, xray_png):
    loaded, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    _, _, session = _run(handlers, None, "first", session)
    messages, restarted = handlers.restart(session)
    assert messages == loaded and restarted.img_list is session.img_list
    frames, _, restarted = _run(handlers, None, "second", restarted)
    prompt = restarted.conv.get_prompt()
    assert "first" not in prompt and "<Img><ImageHere></Img> second###" in prompt
    assert len(fake_chat.images) == 1  # not encoded again
    assert handlers.restart(ChatSession()) == ([], ChatSession())


def test_reset_and_clear(handlers):
    image, messages, box, session = handlers.reset()
    assert image is None and messages == [] and box == "" and session == ChatSession()
    assert handlers.clear_image() == ([], ChatSession())


def test_build_demo_wires_the_events(fake_chat):
    demo = build_demo(fake_chat, concurrency_limit=2, model_note="tiny test model")
    assert isinstance(demo, gr.Blocks)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    assert {"upload", "ask", "reset", "clear_image", "restart"} <= set(fns)
    # Upload and generation share one bounded concurrency group.
    for name in ("upload", "ask"):
        assert fns[name].concurrency_id == "model" and fns[name].concurrency_limit == 2
        assert fns[name].preprocess is False
    assert fns["reset"].queue is False
    config = str(demo.config)
    assert "Research use only" in config and "tiny test model" in config
    assert "synthetic phantoms, not patients (no finding, cardiomegaly, pleural effusion)" in config


def test_cli_defaults_are_safe():
    parser = add_demo_arguments(build_parser("demo"))
    args = parser.parse_args(["--cfg-path", "c.yaml"])
    assert (args.host, args.port, args.share, args.auth) == ("127.0.0.1", 7860, False, None)
    assert (args.gpu_id, args.device) == (0, None)
    args = parser.parse_args(["--cfg-path", "c.yaml", "--device", "cpu", "--auth", "ann:s3:cret"])
    assert args.device == "cpu" and args.auth == ("ann", "s3:cret")


@pytest.mark.parametrize(
    "argv",
    [
        ["--auth", "nopassword"],
        ["--auth", ":pw"],
        ["--port", "70000"],
        ["--gpu-id", "1", "--device", "cpu"],
        ["--concurrency", "0"],
    ],
)
def test_cli_rejects_bad_flags(argv, capsys):
    parser = add_demo_arguments(build_parser("demo"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--cfg-path", "c.yaml", *argv])
    assert "error" in capsys.readouterr().err


def test_gpu_falls_back_to_cpu_with_a_warning(monkeypatch, caplog):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(0, None) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text
    assert resolve_device(None, "cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(None, "cuda:0")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device(None, "gpu")


def test_demo_py_help_is_thin_and_loads_no_model():
    """`python demo.py --help` answers without importing Gradio, torch or the model."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['demo.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('demo.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('gradio', 'torch', 'xraygpt.models', 'xraygpt.conversation.chat', 'transformers')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert "--cfg-path" in out.stdout and "--share" in out.stdout and "--auth" in out.stdout
    assert out.stdout.strip().endswith("LOADED []")


def test_main_reports_a_bad_config_without_a_traceback(tmp_path, caplog):
    from xraygpt.apps.demo.app import main

    parser = add_demo_arguments(build_parser("demo"))
    missing = tmp_path / "missing.yaml"
    assert main(parser.parse_args(["--cfg-path", str(missing), "--device", "cpu"])) == 2
    assert f"config file not found: {missing}" in caplog.text
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: mini_gpt4, model_type: tiny, no_such_key: 1}\n")
    assert main(parser.parse_args(["--cfg-path", str(bad), "--device", "cpu"])) == 2
    assert "no_such_key" in caplog.text


# --------------------------------------------------------------------------- DICOM uploads


def _no_patient_data(*texts: str) -> None:
    for text in texts:
        for value in ("Zzyzx", "Quintessa", "FAKEPID-7731"):
            assert value not in text


def test_dicom_upload_is_windowed_shown_and_continued(
    handlers, fake_chat, xray_dicom, xray_png, caplog
):
    import numpy as np
    from PIL import Image

    messages, shown, session = handlers.load_image(_upload(xray_dicom), ChatSession())
    assert _texts(messages) == [
        (
            "assistant",
            "DICOM X-ray 'chest.dcm' loaded (80 × 96 pixels after windowing; view position: "
            "PA). Ask me about it.",
        )
    ]
    # MONOCHROME1 inverted and the 12 bits scaled: the picture of chest.png again.
    seen = np.asarray(fake_chat.images[0])[..., 0].astype(int)
    png = np.asarray(Image.open(xray_png)).astype(int)
    expected = np.rint((png - png.min()) / (png.max() - png.min()) * 255)
    assert np.array_equal(seen, expected)
    # The image box shows the windowed PNG (a browser cannot draw a DICOM) ...
    assert shown.endswith(".png") and np.array_equal(np.asarray(Image.open(shown)), seen)
    assert xray_dicom.is_file()  # ... and a file that is not Gradio's upload copy stays put
    # Asking with what the box now shows continues the same conversation.
    frames, _, session = _run(handlers, _upload(Path(shown)), "Findings?", session)
    assert [role for role, _ in _texts(frames[-1])] == ["assistant", "user", "assistant"]
    assert len(fake_chat.images) == 1
    _no_patient_data(repr(frames[-1]), repr(session.history), caplog.text)


def test_dicom_without_a_view_position_and_refused_dicoms(handlers, tmp_path, caplog):
    import numpy as np

    from xraygpt.processors.dicom import write_dicom

    plain = write_dicom(tmp_path / "a.dcm", np.full((40, 40), 100, np.uint16))
    messages, _, _ = handlers.load_image(_upload(plain, "scan.dcm"), ChatSession())
    assert "view position: not given" in messages[0]["content"]

    colour = write_dicom(
        tmp_path / "b.dcm", np.zeros((4, 4), np.uint16), tags={"PatientID": "FAKEPID-7731"}
    )
    data = colour.read_bytes()
    colour.write_bytes(data.replace(b"MONOCHROME2", b"RGB        "))
    messages, shown, session = handlers.load_image(_upload(colour, "colour.dcm"), ChatSession())
    text = messages[0]["content"]
    assert text.startswith(WARNING_PREFIX + "'colour.dcm' is a colour DICOM (RGB")
    assert str(tmp_path) not in text and shown is None and session.conv is None

    junk = tmp_path / "junk.dcm"
    junk.write_text("Zzyzx^Quintessa was here")
    messages, _, _ = handlers.load_image(_upload(junk), ChatSession())
    assert "'junk.dcm' is not a DICOM file" in messages[0]["content"]
    _no_patient_data(repr(messages), caplog.text)


def test_dicom_uploads_are_deleted_from_gradios_upload_cache(
    handlers, xray_dicom, tmp_path, monkeypatch
):
    import shutil

    import pydicom

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    copy = cache / "0123abcd" / "chest.dcm"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(xray_dicom, copy)
    messages, _, session = handlers.load_image(_upload(copy), ChatSession())
    assert "loaded" in messages[0]["content"] and session.conv is not None
    assert not copy.exists()  # its header named the patient; only the pixels are kept
    # The same DICOM sent again (an API caller's /ask) continues, and its copy goes too.
    again = cache / "4567cdef" / "chest.dcm"
    again.parent.mkdir()
    shutil.copyfile(xray_dicom, again)
    frames, _, same = _run(handlers, _upload(again), "Findings?", session)
    assert len(frames[-1]) == 3 and same.image_key == session.image_key
    assert not again.exists()
    # A refused DICOM is deleted as well.
    refused = cache / "89abcdef" / "frames.dcm"
    refused.parent.mkdir()
    shutil.copyfile(xray_dicom, refused)
    ds = pydicom.dcmread(refused)
    ds.NumberOfFrames = 2
    ds.save_as(refused)
    messages, _, _ = handlers.load_image(_upload(refused), ChatSession())
    assert "multi-frame" in messages[0]["content"] and not refused.exists()
    assert xray_dicom.is_file()  # outside Gradio's cache: left alone


def test_a_first_question_too_long_for_the_context_says_so(handlers, fake_chat, xray_png):
    _, _, session = handlers.load_image(_upload(xray_png), ChatSession())
    before = session.conv.get_prompt()
    fake_chat.max_length = 400  # room for 300 new tokens and ~100 positions of context
    question = "please describe " * 12  # under max_question_chars, over the context
    frames, box, session = _run(handlers, None, question, session)
    text = frames[-1][-1]["content"]
    assert "Your question is too long for the model's context" in text
    assert "grown too long" not in text
    assert box == question  # kept, to be shortened
    assert session.conv.get_prompt() == before and not fake_chat.generation_calls
    frames, _, _ = _run(handlers, None, "short?", session)  # a shorter one is answered
    assert frames[-1][-1]["content"] == fake_chat.answer
