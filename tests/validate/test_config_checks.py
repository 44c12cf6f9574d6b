"""Config checks: registry names, model types, keys, image sizes, the file itself."""

from __future__ import annotations

from tests.validate.helpers import (
    assert_fails,
    check,
    run,
)
from xraygpt.validate.checklist import PASS, SKIP


def test_registry_typos_are_all_reported_with_suggestions(tiny_job):
    result = run(
        tiny_job,
        "model.arch=mini_gtp4",
        "run.lr_sched=linear_warmup_cosine",
        "datasets.phantom.vis_processor.train.name=blip2_image_trian",
    )
    item = assert_fails(result, "registry names", "3 unknown")
    text = "\n".join(item.details)
    assert "model.arch: unknown model 'mini_gtp4' (did you mean 'mini_gpt4'?)" in text
    assert "did you mean 'linear_warmup_cosine_lr'" in text
    assert "datasets.phantom.vis_processor.train.name" in text and "'blip2_image_train'" in text
    assert check(result, "merge and schema").status == SKIP
    assert check(result, "weights").status == SKIP  # the rest is blocked, not crashed


def test_unknown_model_type_and_dataset(tiny_job):
    result = run(tiny_job, "model.model_type=tiyn", "datasets.phantmo.build_info.storage=x")
    item = assert_fails(result, "registry names", "2 unknown")
    assert "did you mean 'tiny'" in "\n".join(item.details)
    assert "did you mean 'phantom'" in "\n".join(item.details)


def test_misspelt_config_key(tiny_job):
    result = run(tiny_job, "run.batch_size_trian=3")
    assert_fails(result, "merge and schema", "batch_size_trian")


def test_image_size_of_processors_and_model_differ(tiny_job):
    result = run(tiny_job, "model.image_size=128")
    item = assert_fails(result, "phantom: processors", "image_size=96 but model.image_size=128")
    assert "model.image_size" in item.fix


def test_missing_config_file(tmp_path):
    result = run(tmp_path / "nope.yaml")
    assert_fails(result, "config file", "not found")
    # software is still checked
    assert check(result, "python").status == PASS
