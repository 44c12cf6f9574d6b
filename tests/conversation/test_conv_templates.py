"""The conversation template registry and the xraygpt prompt format (docs/recipe.md §4)."""

from __future__ import annotations

import pytest

from xraygpt.conversation.templates import IMAGE_MESSAGE, conv_template_names, get_conv_template

SYSTEM = (
    "You are an experienced Doctor, give the following medical scan: <Img>ImageContent</Img>. "
    "You will be able to see the medical scan once I provide it to you. Please answer my questions."
)


def test_xraygpt_prompt_format():
    conv = get_conv_template("xraygpt")
    assert conv.roles == ("Patient", "Doctor") and conv.sep == "###"
    conv.append_message("Patient", f"{IMAGE_MESSAGE} What is shown?")
    conv.append_message("Doctor", "A normal chest.")
    conv.append_message("Patient", "Any effusion?")
    conv.append_message("Doctor", None)
    assert conv.get_prompt() == (
        SYSTEM
        + "###Patient: <Img><ImageHere></Img> What is shown?###Doctor: A normal chest."
        + "###Patient: Any effusion?###Doctor:"
    )
    assert conv.turns() == [
        ("<Img><ImageHere></Img> What is shown?", "A normal chest."),
        ("Any effusion?", None),
    ]


def test_templates_are_fresh_copies_and_names_are_checked():
    first = get_conv_template("xraygpt")
    first.append_message("Patient", "hello")
    assert get_conv_template("xraygpt").messages == []
    assert "xraygpt" in conv_template_names()
    with pytest.raises(KeyError, match="unknown conversation template 'vicuna'.*xraygpt"):
        get_conv_template("vicuna")
    with pytest.raises(ValueError, match="role 'Human'"):
        first.append_message("Human", "hi")


def test_vicuna_v11_prompt_format():
    conv = get_conv_template("vicuna_v1.1")
    conv.append_message("USER", "Hi?")
    conv.append_message("ASSISTANT", "Hello.")
    conv.append_message("USER", "Effusion?")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: Hi? "
        "ASSISTANT: Hello.</s>USER: Effusion? ASSISTANT:"
    )


@pytest.mark.parametrize("name", ["xraygpt", "vicuna_v1.1"])
def test_segments_concatenate_to_the_prompt_and_mark_the_answers(name):
    conv = get_conv_template(name)
    user, assistant = conv.roles
    for role, text in [(user, "Q1"), (assistant, "A1"), (user, "Q2"), (assistant, "A2")]:
        conv.append_message(role, text)
    pieces = conv.segments()
    assert "".join(text for text, _ in pieces) == conv.get_prompt()
    end = conv.sep2 or conv.sep
    assert [text for text, answer in pieces if answer] == [f" A1{end}", f" A2{end}"]
