"""Shared pieces of the demo tests: a scripted Chat, image files, the served tiny demo."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.conversation.chat import Chat
from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template

FAKE_IMAGE_TOKENS = 4


class FakeModel:
    """Character-level "tokenizer": one position per character, bos = 1."""

    def tokenize(self, text: str) -> torch.Tensor:
        return torch.zeros(len(text), dtype=torch.long)

    def bos_ids(self) -> torch.Tensor:
        return torch.ones(1, dtype=torch.long)


class FakeChat:
    """A Chat with the real interface and a scripted answer, for the app's logic.

    It keeps the conversation the way the real Chat does (the image message,
    the question appended to it, one Doctor turn per answer), streams the
    answer word by word, counts context positions per character and can be
    told to fail.
    """

    def __init__(self, answer: str = "The heart size is normal. No pleural effusion.") -> None:
        self.answer = answer
        self.model = FakeModel()
        self.max_length = 2000
        self.images: list[Image.Image] = []
        self.generation_calls: list[dict] = []
        self.fail_with: Exception | None = None

    image_cut_off = Chat.image_cut_off  # the real check, on this fake's context lengths

    def new_conversation(self):
        return get_conv_template("xraygpt")

    def get_context_emb(self, conv, img_list) -> torch.Tensor:
        prompt = conv.get_prompt()
        images = prompt.count(IMAGE_PLACEHOLDER)
        assert images == len(img_list)
        length = 1 + len(prompt) - images * (len(IMAGE_PLACEHOLDER) - FAKE_IMAGE_TOKENS)
        return torch.zeros(1, length, 2)

    def upload_img(self, image, conv, img_list) -> None:
        self.images.append(image)
        img_list.append(("embedding of", image.size))
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)

    def ask(self, text: str, conv) -> None:
        last = conv.messages[-1] if conv.messages else None
        if last is not None and last[0] == conv.roles[0] and last[1].endswith("</Img>"):
            last[1] = f"{last[1]} {text}"
        else:
            conv.append_message(conv.roles[0], text)

    def stream_answer(self, conv, img_list, **generation) -> Iterator[str]:
        self.generation_calls.append(generation)
        if self.fail_with is not None:
            raise self.fail_with
        conv.append_message(conv.roles[1], None)
        words = self.answer.split()
        for i in range(1, len(words) + 1):
            yield " ".join(words[:i])
        conv.messages[-1][1] = self.answer


@pytest.fixture
def fake_chat() -> FakeChat:
    return FakeChat()


@pytest.fixture
def xray_png(tmp_path):
    """An 8-bit grayscale PNG with some structure (a bright disc on a gradient)."""
    yy, xx = np.mgrid[0:96, 0:80]
    pixels = (xx * 2 + ((yy - 48) ** 2 + (xx - 40) ** 2 < 400) * 80).astype(np.uint8)
    path = tmp_path / "chest.png"
    Image.fromarray(pixels, mode="L").save(path)
    return path


# Recognisable fake patient data in the test DICOMs: it must never reach the user or a log.
FAKE_PATIENT = {"PatientName": "Zzyzx^Quintessa", "PatientID": "FAKEPID-7731"}


@pytest.fixture
def xray_dicom(tmp_path):
    """The picture of ``xray_png`` as a 12-bit MONOCHROME1 PA DICOM with fake patient tags."""
    from xraygpt.processors.dicom import write_dicom

    yy, xx = np.mgrid[0:96, 0:80]
    pixels = (xx * 2 + ((yy - 48) ** 2 + (xx - 40) ** 2 < 400) * 80).astype(np.uint16) * 16
    return write_dicom(
        tmp_path / "chest.dcm",
        (4095 - pixels).astype(np.uint16),
        bits_stored=12,
        photometric="MONOCHROME1",
        view_position="PA",
        tags=dict(FAKE_PATIENT),
    )


@pytest.fixture
def other_xray_png(tmp_path):
    path = tmp_path / "other.png"
    Image.fromarray(np.full((64, 64), 90, dtype=np.uint8), mode="L").save(path)
    return path


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "report.png"  # an image's name, a text's bytes
    path.write_text("FINDINGS: none. This is not an image.\n")
    return path


# --------------------------------------------------------------------------- the served app

TINY_MAX_NEW_TOKENS = 16
# A short context, so that a long question overflows it (the tiny tokenizer needs ~80
# positions for the system text, the image and a short question).
TINY_MAX_LENGTH = 160
UPLOAD_LIMIT_BYTES = 1024 * 1024


@pytest.fixture(scope="session")
def tiny_demo():
    """The demo around the real tiny model (random weights), served on a free port."""
    from types import SimpleNamespace

    from xraygpt.apps.demo.app import build_demo, launch_demo
    from xraygpt.common.config import Config
    from xraygpt.common.registry import registry
    from xraygpt.conversation.chat import Chat
    from xraygpt.models.factory import eval_image_processor

    torch.manual_seed(0)
    cfg = Config(user_config={"model": {"arch": "mini_gpt4", "model_type": "tiny"}})
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    model = model_cls.from_config(cfg.model_cfg, device="cpu").eval()
    chat = Chat(model, eval_image_processor(cfg), max_length=TINY_MAX_LENGTH)
    demo = build_demo(
        chat,
        model_note="tiny mini_gpt4 with random weights (test)",
        max_new_tokens=TINY_MAX_NEW_TOKENS,
        max_file_bytes=UPLOAD_LIMIT_BYTES,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, share_url = launch_demo(
        demo,
        port=port,
        max_file_bytes=UPLOAD_LIMIT_BYTES,
        prevent_thread_lock=True,
        quiet=True,
    )
    assert share_url is None and url.startswith("http://127.0.0.1:")
    yield SimpleNamespace(url=url, chat=chat, demo=demo)
    demo.close()
