"""Chat: images and questions into the context, answers, streaming, trimming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xraygpt.common.errors import UsageError
from xraygpt.conversation.chat import Chat, ContextTooLongError
from xraygpt.conversation.templates import IMAGE_MESSAGE

GREEDY = {"do_sample": False, "max_new_tokens": 6}


def _upload_and_ask(chat: Chat, image, question: str):
    conv, img_list = chat.new_conversation(), []
    assert chat.upload_img(image, conv, img_list) == "Received."
    chat.ask(question, conv)
    return conv, img_list


def test_image_and_question_share_the_patient_message(chat_model, xray):
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    assert conv.messages == [["Patient", f"{IMAGE_MESSAGE} What is shown?"]]
    assert len(img_list) == 1 and img_list[0].shape == (1, 4, 32)
    chat.ask("And the heart?", conv)  # no image right before: a message of its own
    assert conv.messages[-1] == ["Patient", "And the heart?"]


def test_context_embeddings_interleave_images(chat_model, xray):
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "Compare")
    chat.upload_img(torch.flip(xray, dims=[2]), conv, img_list)
    conv.append_message("Doctor", None)
    embs = chat.get_context_emb(conv, img_list)
    before, middle, after = conv.get_prompt().split("<ImageHere>")
    n0 = 1 + len(chat_model.tokenize(before))  # bos only at the very start
    n1 = len(chat_model.tokenize(middle))
    assert embs.shape[1] == n0 + 4 + n1 + 4 + len(chat_model.tokenize(after))
    bos = chat_model.embed_tokens(chat_model.bos_ids())
    assert torch.equal(embs[0, :1], bos)
    assert torch.equal(embs[0, n0 : n0 + 4], img_list[0][0])
    assert torch.equal(embs[0, n0 + 4 + n1 : n0 + 8 + n1], img_list[1][0])
    with pytest.raises(ValueError, match="2 image placeholder.*1 image"):
        chat.get_context_emb(conv, img_list[:1])


def test_answer_is_stored_and_turns_accumulate(chat_model, xray):
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    text, ids = chat.answer(conv, img_list, **GREEDY)
    assert conv.messages[-1] == ["Doctor", text]
    assert ids.ndim == 1 and 0 < len(ids) <= 6
    assert "###" not in text
    chat.ask("Anything else?", conv)
    again, _ = chat.answer(conv, img_list, **GREEDY)
    assert [role for role, _ in conv.messages] == ["Patient", "Doctor", "Patient", "Doctor"]
    assert conv.get_prompt().endswith(f"###Doctor: {again}###")


def test_answer_is_deterministic_when_greedy(chat_model, xray):
    chat = Chat(chat_model)
    answers = []
    for _ in range(2):
        conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
        answers.append(chat.answer(conv, img_list, **GREEDY)[0])
    assert answers[0] == answers[1]


class ScriptedHead(nn.Module):
    def __init__(self, script: list[int], vocab_size: int) -> None:
        super().__init__()
        self.script, self.vocab_size, self.step = script, vocab_size, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], hidden.shape[1], self.vocab_size)
        logits[..., self.script[min(self.step, len(self.script) - 1)]] = 20.0
        self.step += 1
        return logits


def test_answer_stops_at_the_separator_and_streams(chat_model, xray):
    vocab = chat_model.llama_tokenizer.get_vocab()
    script = [vocab[p] for p in ["▁the", "▁heart", "▁is", "▁normal", "###", "▁lungs"]]
    size = chat_model.llama_model.config.vocab_size
    chat = Chat(chat_model)

    chat_model.llama_model.lm_head = ScriptedHead(script, size)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    text, ids = chat.answer(conv, img_list, do_sample=False, max_new_tokens=50)
    assert text == "the heart is normal" and len(ids) == 5

    chat_model.llama_model.lm_head = ScriptedHead(script, size)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    parts = list(chat.stream_answer(conv, img_list, do_sample=False, max_new_tokens=50))
    assert parts[-1] == "the heart is normal"
    assert all(b.startswith(a) for a, b in zip(parts[:-1], parts[1:], strict=True))
    assert conv.messages[-1] == ["Doctor", "the heart is normal"]


def test_the_image_placeholder_in_a_question_or_an_answer_cannot_break_the_chat(chat_model, xray):
    # Seen in the demo soak: a random-weight model wrote "<ImageHere>" in an answer, and
    # every later turn of that conversation failed ("2 image placeholders, 1 image").
    tokenizer = chat_model.llama_tokenizer
    script = tokenizer(" the <ImageHere> heart", add_special_tokens=False)["input_ids"]
    script.append(tokenizer.get_vocab()["###"])
    chat_model.llama_model.lm_head = ScriptedHead(script, chat_model.llama_model.config.vocab_size)
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is <ImageHere> shown?")
    assert conv.get_prompt().count("<ImageHere>") == 1
    parts = list(chat.stream_answer(conv, img_list, do_sample=False, max_new_tokens=20))
    assert "<ImageHere>" not in parts[-1] and "heart" in parts[-1]
    assert "<ImageHere>" not in conv.messages[-1][1]
    chat.ask("And then?", conv)
    conv.append_message("Doctor", None)
    assert chat.get_context_emb(conv, img_list).shape[1] > 0  # the next turn still builds


def test_streaming_with_beams_yields_the_final_answer(chat_model, xray):
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    parts = list(chat.stream_answer(conv, img_list, num_beams=2, **GREEDY))
    conv2, img_list2 = _upload_and_ask(chat, xray, "What is shown?")
    assert parts == [chat.answer(conv2, img_list2, num_beams=2, **GREEDY)[0]]


def test_long_context_is_cut_from_the_left(chat_model, xray, monkeypatch):
    chat = Chat(chat_model, max_length=40)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    seen = {}
    original = chat_model.generate_from_embeds

    def spy(embeds, *args, **kwargs):
        seen["length"] = embeds.shape[1]
        return original(embeds, *args, **kwargs)

    monkeypatch.setattr(chat_model, "generate_from_embeds", spy)
    full = chat.get_context_emb(conv, img_list).shape[1] + len(chat_model.tokenize("###Doctor:"))
    assert full > 40 - 6  # the whole context is longer than this budget
    chat.answer(conv, img_list, **GREEDY)
    assert seen["length"] == 40 - 6


def test_image_cut_off_is_where_the_left_cut_reaches_the_image(chat_model, xray, monkeypatch):
    """Losing the system text is allowed; the first position the check refuses is the image's.

    The image sits in an earlier turn (a follow-up question), so that the
    newest turn alone still fits when the image would be cut.
    """
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    chat.answer(conv, img_list, **GREEDY)
    chat.ask("And the heart?", conv)
    first_image_row = img_list[0][0, 0]
    seen = []
    original = chat_model.generate_from_embeds

    def spy(embeds, *args, **kwargs):
        seen.append(bool((embeds[0] == first_image_row).all(-1).any()))
        return original(embeds, *args, **kwargs)

    monkeypatch.setattr(chat_model, "generate_from_embeds", spy)
    probe = conv.copy()
    probe.append_message(probe.roles[1], None)
    needed = chat.get_context_emb(probe, img_list).shape[1] + GREEDY["max_new_tokens"]
    chat.max_length = needed
    while chat.image_cut_off(conv, img_list, GREEDY["max_new_tokens"]) is None:
        chat.max_length -= 1
    assert chat.image_cut_off(conv, img_list, GREEDY["max_new_tokens"]) == (
        needed,
        chat.max_length,
    )
    assert chat.max_length < needed - 1  # the system text could go first
    chat.answer(conv.copy(), img_list, **GREEDY)  # refused length: the image is cut
    chat.max_length += 1
    chat.answer(conv.copy(), img_list, **GREEDY)  # the longest cut still allowed
    assert seen == [False, True]


def test_a_newest_turn_that_cannot_fit_is_an_error(chat_model, xray):
    chat = Chat(chat_model, max_length=30)
    conv, img_list = _upload_and_ask(chat, xray, "describe " * 40)
    before = [list(m) for m in conv.messages]
    with pytest.raises(ContextTooLongError, match="max_length=30"):
        chat.answer(conv, img_list, **GREEDY)
    assert conv.messages == before
    with pytest.raises(ContextTooLongError):
        next(chat.stream_answer(conv, img_list, **GREEDY))
    assert conv.messages == before


def test_images_from_pil_path_or_tensor(chat_model, xray, tmp_path):
    def processor(image: Image.Image) -> torch.Tensor:
        assert image.mode == "RGB"
        data = torch.from_numpy(np.asarray(image.resize((64, 64)), dtype=np.float32))
        return data.permute(2, 0, 1) / 255.0

    pil = Image.new("L", (80, 96), color=128)
    path = tmp_path / "scan.png"
    pil.save(path)
    chat = Chat(chat_model, processor, device="cpu")
    conv, img_list = chat.new_conversation(), []
    for image in (pil, path, str(path), xray, xray[None]):
        chat.upload_img(image, conv, img_list)
    assert len(img_list) == 5
    assert torch.equal(img_list[0], img_list[1]) and torch.equal(img_list[1], img_list[2])
    from xraygpt.processors.dicom import write_dicom

    # A DICOM path goes through the same reader: 12-bit, window 2048/4096 puts 2048 at 128.
    dicom = write_dicom(
        tmp_path / "scan.dcm", np.full((96, 80), 2048, np.uint16), window=(2048, 4096)
    )
    chat.upload_img(dicom, conv, img_list)
    assert torch.equal(img_list[-1], img_list[0])
    with pytest.raises(ValueError, match="no vis_processor"):
        Chat(chat_model).upload_img(pil, conv, img_list)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        chat.upload_img(tmp_path / "missing.png", conv, img_list)


def test_generation_options_are_checked(chat_model, xray):
    chat = Chat(chat_model)
    conv, img_list = _upload_and_ask(chat, xray, "What is shown?")
    with pytest.raises(TypeError, match="num_beam"):
        chat.answer(conv, img_list, num_beam=2)
    with pytest.raises(UsageError, match="max_new_tokens=50 leaves no room.*fewer new tokens"):
        chat.answer(conv, img_list, max_new_tokens=50, max_length=50)
    assert conv.messages[-1][0] == "Patient"
