"""The shipped stage configs hold the original recipe (docs/recipe.md §5) and chain together."""

from pathlib import Path

import pytest

from xraygpt.common.config import REPO_ROOT, Config
from xraygpt.train.checkpoint import LAST_NAME

STAGE1 = REPO_ROOT / "train_configs" / "xraygpt_mimic_pretrain.yaml"
STAGE2 = REPO_ROOT / "train_configs" / "xraygpt_openi_finetune.yaml"
EVAL = REPO_ROOT / "eval_configs" / "xraygpt_eval.yaml"

COMMON = {
    "task": "image_text_pretrain",
    "runner": "runner_base",
    "lr_sched": "linear_warmup_cosine_lr",
    "warmup_lr": 1e-6,
    "weight_decay": 0.05,
    "beta1": 0.9,
    "beta2": 0.999,
    "amp": True,
    "seed": 42,
    "accum_grad_iters": 1,
}


@pytest.mark.parametrize(
    ("path", "dataset", "run", "model"),
    [
        (
            STAGE1,
            "mimic",
            dict(
                init_lr=1e-4,
                min_lr=8e-5,
                warmup_steps=500,
                max_epoch=4,
                iters_per_epoch=5000,
                batch_size_train=3,
            ),
            dict(max_txt_len=32, prompt_path="", end_sym="\n", ckpt=""),
        ),
        (
            STAGE2,
            "openi",
            dict(
                init_lr=3e-5,
                min_lr=1e-5,
                warmup_steps=200,
                max_epoch=1,
                iters_per_epoch=2501,
                batch_size_train=1,
            ),
            dict(
                max_txt_len=160,
                prompt_path="prompts/alignment_chest_xray.txt",
                prompt_template="###Patient: {} ###Doctor: ",
                end_sym="###",
            ),
        ),
    ],
)
def test_stage_recipe(path, dataset, run, model):
    cfg = Config(path)
    for key, value in {**COMMON, **run}.items():
        assert cfg.run_cfg[key] == value, key
    for key, value in model.items():
        assert cfg.model_cfg[key] == value, key
    assert cfg.model_cfg.model_type == "pretrain_vicuna"
    assert cfg.model_cfg.freeze_vit and cfg.model_cfg.freeze_qformer and cfg.model_cfg.freeze_llm
    assert list(cfg.datasets_cfg) == [dataset]
    assert cfg.datasets_cfg[dataset].vis_processor.train.name == "blip2_image_train"
    assert cfg.datasets_cfg[dataset].vis_processor.train.image_size == 224
    assert list(cfg.run_cfg.train_splits) == ["train"]
    assert (REPO_ROOT / cfg.model_cfg.prompt_path).is_file() or not cfg.model_cfg.prompt_path


def test_stage_2_starts_where_stage_1_writes():
    assert Config(STAGE2).model_cfg.ckpt == (Config(STAGE1).output_dir / LAST_NAME).as_posix()
    assert Config(STAGE1).output_dir == Path("output/xraygpt_mimic_pretrain")


def test_eval_config_uses_the_eval_processor_and_the_stage_2_checkpoint():
    cfg = Config(EVAL)
    openi = cfg.datasets_cfg.openi
    assert openi.vis_processor.eval.name == "blip2_image_eval"
    assert openi.text_processor.eval.name == "blip_caption"
    assert cfg.model_cfg.ckpt == (Config(STAGE2).output_dir / LAST_NAME).as_posix()
    assert cfg.model_cfg.end_sym == "###" and cfg.model_cfg.max_txt_len == 160
