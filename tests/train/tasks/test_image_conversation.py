"""``image_conversation``: chats rendered and tokenised as Chat does, loss on the Doctor turns."""

import pytest
import torch

from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.common.registry import registry
from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template
from xraygpt.data.phantom.generator import generate
from xraygpt.train.tasks.image_conversation import conversation_loss, encode_chat

TURNS = [
    ["user", f"{IMAGE_MESSAGE} Is there a pleural effusion?"],
    ["assistant", "Yes. There is a small left pleural effusion."],
    ["user", "Which side is it on?"],
    ["assistant", "It is on the left."],
]


@pytest.fixture(autouse=True)
def _one_thread(one_cpu_thread):
    """One thread, as every model test."""


def test_the_tokens_are_chats_and_only_answers_carry_labels(make_model):
    model = make_model(seed=0)
    tok = model.llama_tokenizer
    head, ids, labels = encode_chat(tok, TURNS)
    # The very ids Chat.get_context_emb builds around the image for this conversation.
    conv = get_conv_template("xraygpt")
    for role, text in TURNS:
        conv.append_message(conv.roles[0 if role == "user" else 1], text)
    before, after = conv.get_prompt().split("<ImageHere>")
    assert head == [tok.bos_token_id, *model.tokenize(before).tolist()]
    assert ids == model.tokenize(after).tolist()
    answer_ids = [t for t in labels if t != IGNORE_INDEX]
    text = tok.decode(answer_ids)
    assert "Yes. There is a small left pleural effusion." in text and "It is on the left." in text
    assert "Which side" not in text and "Patient" not in text.replace("###Patient", "")


def test_the_loss_reads_the_image_and_trains_the_projection(make_model):
    model = make_model(seed=0, freeze_qformer=False, freeze_llm=False, llm_dtype="float32").train()
    images = torch.randn(2, 3, 64, 64)
    loss = conversation_loss(model, [TURNS, TURNS[:2]], images)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.llama_proj.weight.grad is not None and model.llama_proj.weight.grad.abs().sum() > 0
    text_only = [[["user", "<Img></Img> Is there a pleural effusion?"], TURNS[1]]]
    assert torch.isfinite(conversation_loss(model, text_only, torch.empty(1, 0)))


def test_the_builder_reads_the_generated_conversations(tmp_path):
    generate(tmp_path / "ph", n=20, seed=0, size=48, progress=False)
    build = registry.get_builder_class("phantom_conversations")
    with_images = build({"build_info": {"storage": str(tmp_path / "ph")}}).build_datasets()
    sample = with_images["train"][0]
    assert sample["image"].shape == (3, 96, 96)
    assert sample["conversation"][0][0] == "user" and IMAGE_MESSAGE in sample["conversation"][0][1]
    assert len(with_images["train"]) == 6 * 16  # CONVERSATIONS_PER_CASE
    text = build(
        {"build_info": {"storage": str(tmp_path / "ph")}, "with_images": False}
    ).build_datasets()["train"]
    assert 0 < len(text) < len(with_images["train"])
    item = text[0]
    assert item["image"].numel() == 0
    assert item["conversation"][1][1].startswith("Findings: ")  # opens with the report


def test_each_doctor_turn_weighs_the_same(make_model):
    from xraygpt.train.tasks.image_conversation import _answer_runs

    assert _answer_runs([IGNORE_INDEX, 5, 6, IGNORE_INDEX, 7]) == [(1, 3), (4, 5)]
    model = make_model(seed=0).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        both = float(conversation_loss(model, [TURNS], images))
        # The second answer alone, with the first one in the context.
        head, ids, labels = encode_chat(model.llama_tokenizer, TURNS)
        runs = _answer_runs(labels)
        assert len(runs) == 2
        first = float(conversation_loss(model, [TURNS[:2]], images))
    # Two turns: the mean of the two per-turn means, the first of which is `first`;
    # so the second turn's own mean is positive and finite.
    second = 2 * both - first
    assert 0 < second < 100
