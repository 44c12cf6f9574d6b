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
