from xraygpt.models.checkpoint_fit import (
    blip2_targets,
    fit_state,
    llama_proj_problems,
    model_ckpt_keys,
)


def test_a_full_fit_loads_every_key():
    fit = fit_state({"a": (2, 3), "b": (4,)}, {"a": (2, 3), "b": (4,)})
    assert fit.ok and fit.loads == ("a", "b") and fit.problems() == []


def test_missing_unexpected_and_shapes_are_each_reported():
    fit = fit_state({"a": (2, 3), "c": (1,)}, {"a": (3, 3), "b": (4,)})
    assert not fit.ok
    assert fit.problems() == [
        "1 missing key(s): b",
        "1 unexpected key(s): c",
        "a: checkpoint [2, 3] vs model [3, 3]",
    ]


def test_a_trained_subset_fits_and_dropped_keys_are_no_misfit():
    fit = fit_state({"a": (2,)}, {"a": (2,), "b": (4,)}, subset=True, dropped=["text.x"])
    assert fit.ok and fit.dropped == ("text.x",)


def test_blip2_targets_and_original_checkpoint_keys():
    shapes = {"Qformer.layer.0.w": (2,), "query_tokens": (1, 4, 8), "llama_proj.weight": (8, 4)}
    assert set(blip2_targets(shapes)) == {"Qformer.layer.0.w", "query_tokens"}
    assert set(model_ckpt_keys({"llama_proj.weight": 1, "llama_proj.bias": 2})) == {
        "llama_proj.weight",
        "llama_proj.bias",
    }


def test_llama_proj_of_another_llm_size_names_both_sizes():
    assert llama_proj_problems((4096, 32), hidden=4096, width=32) == []
    (problem,) = llama_proj_problems((5120, 32), hidden=4096, width=32, llm="the 7B")
    assert "llama_proj maps 32 -> 5120" in problem and "[5120, 32]" in problem
    assert "hidden 5120, a 13B LLaMA" in problem and "the 7B has hidden 4096, a 7B LLaMA" in problem
    # a projection for another Q-Former width is told apart from an LLM of another size
    (problem,) = llama_proj_problems((4096, 768), hidden=4096, width=32)
    assert "768-wide tokens" in problem and "32-wide" in problem
