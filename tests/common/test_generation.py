import pytest

from xraygpt.common.config import RunConfig
from xraygpt.common.generation import CHAT_GENERATION, GenerationOptions


def test_run_config_defaults_are_the_options_defaults():
    run, opts = RunConfig(), GenerationOptions()
    for name in ("num_beams", "max_new_tokens", "min_new_tokens", "repetition_penalty"):
        assert getattr(run, name) == getattr(opts, name)


def test_chat_defaults_sample_up_to_300_tokens():
    assert CHAT_GENERATION.do_sample and CHAT_GENERATION.max_new_tokens == 300


def test_unknown_and_bad_options_are_refused():
    with pytest.raises(TypeError, match=r"unknown generation option\(s\) \['beams'\]"):
        CHAT_GENERATION.updated(beams=2)
    with pytest.raises(ValueError, match="num_beams"):
        GenerationOptions(num_beams=0)
    assert CHAT_GENERATION.updated(num_beams=3).num_beams == 3
