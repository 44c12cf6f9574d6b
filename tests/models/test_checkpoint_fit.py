from xraygpt.models.checkpoint_fit import blip2_targets, fit_state, model_ckpt_keys


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
