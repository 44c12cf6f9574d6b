"""The served demo, driven over HTTP with gradio_client, around the real tiny model."""

import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from xraygpt.apps.demo.app import MSG_EMPTY_QUESTION, MSG_NO_IMAGE, WARNING_PREFIX

# Gradio's queue calls a pandas option that pandas 3 deprecates; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def _text(message: dict) -> str:
    """A chat message's text, whatever shape the client hands it back in."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _transcript(messages) -> list[tuple[str, str]]:
    return [(m["role"], _text(m)) for m in messages]


def _client(tiny_demo) -> Client:
    # One Client is one browser session (its own session hash, so its own state).
    return Client(tiny_demo.url, verbose=False, analytics_enabled=False)


def _ask(client: Client, question: str, image=None, beams=1, temperature=1.0):
    """Ask and wait; returns (every streamed chat state, the final one)."""
    job = client.submit(image, question, beams, temperature, api_name="/ask")
    final = job.result(timeout=120)
    states = [out[0] for out in job.outputs()]
    return states, final[0]


def _is_warning(message: dict) -> bool:
    return _text(message).startswith(WARNING_PREFIX)


def test_upload_ask_follow_up_reset(tiny_demo, xray_png):
    client = _client(tiny_demo)
    messages, _ = client.predict(handle_file(str(xray_png)), api_name="/upload")
    assert _transcript(messages) == [
        ("assistant", "X-ray 'chest.png' loaded (80 × 96 pixels). Ask me about it.")
    ]

    states, final = _ask(client, "What are the findings?")
    roles = [role for role, _ in _transcript(final)]
    assert roles == ["assistant", "user", "assistant"]
    answer = final[-1]
    assert _text(answer).strip() and not _is_warning(answer)
    # Streamed: the question shows first, then the answer arrives over several updates.
    assert _transcript(states[0])[-1] == ("user", "What are the findings?")
    assert len(states) >= 3

    _, final = _ask(client, "Is there a pleural effusion?")
    assert [role for role, _ in _transcript(final)][-2:] == ["user", "assistant"]
    assert len(final) == 5 and not _is_warning(final[-1])

    image, messages, question = client.predict(api_name="/reset")
    assert image is None and messages == [] and question == ""
    _, final = _ask(client, "And now?")
    assert _transcript(final)[-1] == ("assistant", WARNING_PREFIX + MSG_NO_IMAGE)


def test_image_sent_with_the_question(tiny_demo, xray_png):
    """API callers (and example clicks) may skip /upload: /ask loads the image."""
    client = _client(tiny_demo)
    _, final = _ask(client, "Describe it.", image=handle_file(str(xray_png)))
    assert "loaded" in _text(final[0]) and not _is_warning(final[-1]) and len(final) == 3


def _write_bomb(path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_bad_inputs_get_messages_and_the_app_keeps_serving(
    tiny_demo, tmp_path, xray_png, text_file
):
    client = _client(tiny_demo)
    _, final = _ask(client, "Is it normal?")
    assert _transcript(final)[-1] == ("assistant", WARNING_PREFIX + MSG_NO_IMAGE)

    def upload(path) -> str:
        messages, _ = client.predict(handle_file(str(path)), api_name="/upload")
        return _text(messages[-1])

    assert "is not an image" in upload(text_file)

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(xray_png.read_bytes()[:200])
    assert "truncated or corrupt" in upload(truncated)

    bomb = tmp_path / "bomb.png"
    _write_bomb(bomb)
    assert "too large in pixels" in upload(bomb)

    wide = tmp_path / "sixteen_bit.png"
    Image.fromarray(np.linspace(0, 4095, 96 * 96).reshape(96, 96).astype(np.uint16)).save(wide)
    assert upload(wide) == "X-ray 'sixteen_bit.png' loaded (96 × 96 pixels). Ask me about it."

    _, final = _ask(client, "   ")
    assert _text(final[-1]) == WARNING_PREFIX + MSG_EMPTY_QUESTION
    _, final = _ask(client, "Findings?", beams=0)
    assert "Beams must be between 1 and 10" in _text(final[-1])

    # Over the upload cap: refused before it reaches the app (HTTP 413).
    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > tiny_demo.demo.max_file_size
    with pytest.raises(Exception, match="(?i)too large|413|size"):  # noqa: B017 - client's own error type
        client.predict(handle_file(str(big)), api_name="/upload")

    # After all that, the same session still gets answers.
    _, final = _ask(client, "What are the findings?")
    assert not _is_warning(final[-1]) and _text(final[-1]).strip()


def test_conversation_longer_than_the_context(tiny_demo, xray_png):
    client = _client(tiny_demo)
    client.predict(handle_file(str(xray_png)), api_name="/upload")
    _, final = _ask(client, "What are the findings?")
    assert not _is_warning(final[-1])
    _, final = _ask(client, "please describe every detail " * 30)
    assert "grown too long for the model's context" in _text(final[-1])
    _, final = _ask(client, "Any effusion?")  # the refused turn left the conversation usable
    assert not _is_warning(final[-1]) and len(final) == 7


def test_a_first_question_longer_than_the_context(tiny_demo, xray_png):
    client = _client(tiny_demo)
    client.predict(handle_file(str(xray_png)), api_name="/upload")
    _, final = _ask(client, "please describe every detail " * 30)
    assert "Your question is too long for the model's context" in _text(final[-1])
    _, final = _ask(client, "Any effusion?")
    assert not _is_warning(final[-1]) and _text(final[-1]).strip()


def test_simultaneous_users_have_their_own_conversations(
    tiny_demo, monkeypatch, xray_png, other_xray_png
):
    # Count generations in flight: the queue lets one run at a time (concurrency 1).
    original = tiny_demo.chat.stream_answer
    active, peak, lock = [0], [0], threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)  # long enough for the other user's request to arrive meanwhile
            yield from original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(tiny_demo.chat, "stream_answer", counted)
    alice, bob = _client(tiny_demo), _client(tiny_demo)
    alice.predict(handle_file(str(xray_png)), api_name="/upload")
    bob.predict(handle_file(str(other_xray_png)), api_name="/upload")
    results = {}

    def chat(name: str, client: Client, question: str) -> None:
        results[name] = _ask(client, question)[1]

    threads = [
        threading.Thread(target=chat, args=("alice", alice, "Alice's question?")),
        threading.Thread(target=chat, args=("bob", bob, "Bob's question?")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert "chest.png" in _text(results["alice"][0]) and "other.png" in _text(results["bob"][0])
    assert _transcript(results["alice"])[1] == ("user", "Alice's question?")
    assert _transcript(results["bob"])[1] == ("user", "Bob's question?")
    assert len(results["alice"]) == len(results["bob"]) == 3
    assert peak[0] == 1


def test_auth_is_required_when_set(fake_chat, xray_png):
    import httpx

    from xraygpt.apps.demo.app import build_demo, launch_demo

    demo = build_demo(fake_chat, examples=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = launch_demo(
        demo, port=port, auth=("ann", "s3cret"), prevent_thread_lock=True, quiet=True
    )
    try:
        assert httpx.get(f"{url}config").status_code == 401
        with pytest.raises(Exception, match="(?i)login|auth|401"):  # noqa: B017 - client's own error
            Client(url, verbose=False, analytics_enabled=False, auth=("ann", "wrong"))
        client = Client(url, verbose=False, analytics_enabled=False, auth=("ann", "s3cret"))
        messages, _ = client.predict(handle_file(str(xray_png)), api_name="/upload")
        assert "loaded" in _text(messages[-1])
    finally:
        demo.close()


@pytest.mark.parametrize("endpoint", ["/upload", "/upload_dicom"])
def test_dicom_upload_over_http(tiny_demo, xray_dicom, xray_png, endpoint):
    from gradio.utils import get_upload_folder

    def cached_dicoms() -> set[Path]:
        return set(Path(get_upload_folder()).rglob("*.dcm"))

    before = cached_dicoms()
    client = _client(tiny_demo)
    messages, shown = client.predict(handle_file(str(xray_dicom)), api_name=endpoint)
    text = _text(messages[-1])
    assert text == (
        "DICOM X-ray 'chest.dcm' loaded (80 × 96 pixels after windowing; view position: PA). "
        "Ask me about it."
    )
    # The image box gets the windowed picture (MONOCHROME1 inverted): chest.png, rescaled.
    png = np.asarray(Image.open(xray_png)).astype(int)
    expected = np.rint((png - png.min()) / (png.max() - png.min()) * 255)
    assert np.array_equal(np.asarray(Image.open(shown)).astype(int), expected)
    # The uploaded file (its header names the patient) is gone from the server's cache.
    assert cached_dicoms() - before == set()
    _, final = _ask(client, "What are the findings?")
    assert not _is_warning(final[-1]) and len(final) == 3
    for value in ("Zzyzx", "Quintessa", "FAKEPID-7731"):
        assert value not in repr(final)
