from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from xraygpt.common import config as config_mod
from xraygpt.common.config import Config, ConfigError, parse_options
from xraygpt.common.registry import Registry


@dataclass
class FakeModelCfg:
    arch: str = "fake"
    model_type: str = "base"
    width: int = 8
    depth: int = 2
    name: str = "default"


@dataclass
class FakeDataCfg:
    storage: str = ""
    ratio: float = 1.0


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    model_yaml = tmp_path / "model_default.yaml"
    model_yaml.write_text("model:\n  arch: fake\n  width: 16\n  depth: 3\n  name: from_default\n")
    data_yaml = tmp_path / "data_default.yaml"
    data_yaml.write_text("datasets:\n  fakeset:\n    storage: dataset/fake\n    ratio: 0.5\n")

    reg = Registry()
    reg.register_model("fake")(
        type(
            "FakeModel",
            (),
            {
                "PRETRAINED_MODEL_CONFIG_DICT": {"base": str(model_yaml)},
                "config_class": FakeModelCfg,
            },
        )
    )
    reg.register_builder("fakeset")(
        type(
            "FakeBuilder",
            (),
            {"DATASET_CONFIG_DICT": {"default": str(data_yaml)}, "config_class": FakeDataCfg},
        )
    )
    reg.register_task("image_text_pretrain")(object)
    reg.register_runner("runner_base")(object)
    reg.register_lr_scheduler("linear_warmup_cosine_lr")(object)
    monkeypatch.setattr(config_mod, "registry", reg)
    return reg


def write(tmp_path, text, name="job.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_merge_order_defaults_then_user_then_options(tmp_path, fake_registry):
    cfg_path = write(
        tmp_path,
        "model:\n  arch: fake\n  model_type: base\n  depth: 5\n  name: from_user\n"
        "datasets:\n  fakeset:\n    ratio: 0.25\n"
        "run:\n  init_lr: 0.001\n",
    )
    cfg = Config(cfg_path, ["model.name=from_options", "run.max_epoch=7"])
    assert cfg.model_cfg.width == 16  # default YAML beats the schema default
    assert cfg.model_cfg.depth == 5  # user YAML beats the default YAML
    assert cfg.model_cfg.name == "from_options"  # --options beat everything
    assert cfg.datasets_cfg.fakeset.storage == "dataset/fake"
    assert cfg.datasets_cfg.fakeset.ratio == 0.25
    assert cfg.run_cfg.init_lr == 0.001 and cfg.run_cfg.max_epoch == 7
    assert cfg.run_cfg.seed == 42  # RunConfig default
    assert cfg.output_dir.as_posix() == "output/job"
    assert "===== model =====" in cfg.pretty_print()


def test_options_can_change_model_type_and_add_datasets(tmp_path, fake_registry):
    cfg_path = write(tmp_path, "model:\n  arch: fake\n  model_type: other\n")
    with pytest.raises(ConfigError, match="no model_type 'other'"):
        Config(cfg_path)
    cfg = Config(cfg_path, ["model.model_type=base", "datasets.fakeset.ratio=2"])
    assert cfg.model_cfg.width == 16 and cfg.datasets_cfg.fakeset.ratio == 2.0


def test_unknown_top_level_section_is_named(tmp_path, fake_registry):
    cfg_path = write(tmp_path, "model:\n  arch: fake\n  model_type: base\nruns:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="unknown top-level section.*runs"):
        Config(cfg_path)


@pytest.mark.parametrize(
    "item, message",
    [
        ("run.seed", "malformed --options item 'run.seed'"),
        ("=3", "malformed"),
        ("run..seed=3", "malformed"),
        ("training.seed=3", "unknown section 'training'"),
        ("run.seed=[1, 2", "not valid YAML"),
    ],
)
def test_malformed_options_are_named(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_options([item])


def test_option_values_are_typed():
    merged = parse_options(
        ["run.a=3", "run.b=1e-4", "run.c=true", "run.d=null", "run.e=[1,2]", "run.f="]
    )
    assert OmegaConf.to_container(merged) == {
        "run": {"a": 3, "b": 1e-4, "c": True, "d": None, "e": [1, 2], "f": ""}
    }


def test_misspelt_keys_fail_at_load(tmp_path, fake_registry):
    bad_model = write(tmp_path, "model:\n  arch: fake\n  model_type: base\n  widht: 3\n", "m.yaml")
    with pytest.raises(ConfigError, match="widht"):
        Config(bad_model)
    bad_run = write(
        tmp_path,
        "model:\n  arch: fake\n  model_type: base\nrun:\n  init_lr: 1\n  max_epochs: 3\n",
        "r.yaml",
    )
    with pytest.raises(ConfigError, match="max_epochs"):
        Config(bad_run)
    bad_type = write(
        tmp_path, "model:\n  arch: fake\n  model_type: base\nrun:\n  max_epoch: many\n", "t.yaml"
    )
    with pytest.raises(ConfigError, match="max_epoch"):
        Config(bad_type)


def test_unknown_names_fail_with_the_registered_list(tmp_path, fake_registry):
    with pytest.raises(KeyError, match="registered model names: fake"):
        Config(write(tmp_path, "model:\n  arch: nope\n"))
    with pytest.raises(KeyError, match="registered task names"):
        Config(
            write(
                tmp_path, "model:\n  arch: fake\n  model_type: base\nrun:\n  task: nope\n", "x.yaml"
            )
        )
    with pytest.raises(KeyError, match="registered builder names: fakeset"):
        Config(write(tmp_path, "datasets:\n  nope: {}\n", "y.yaml"))


def test_missing_and_invalid_files(tmp_path, fake_registry):
    with pytest.raises(ConfigError, match="config file not found"):
        Config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        Config(write(tmp_path, "- a\n- b\n", "list.yaml"))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("run.accum_grad_iters=0", "run.accum_grad_iters=0: must be >= 1"),
        ("run.accum_grad_iters=3", "run.iters_per_epoch=100 must be a multiple of run.accum"),
        ("run.save_every_iters=0", "run.save_every_iters=0 must be a positive multiple"),
        ("run.max_bad_steps=0", "run.max_bad_steps=0: must be >= 1"),
        ("run.batch_size_train=0", "run.batch_size_train=0: must be >= 1"),
        ("run.log_freq=0", "run.log_freq=0: must be >= 1"),
        ("run.keep_last_checkpoints=-1", r"run.keep_last_checkpoints=-1: must be >= 0 \(0 keeps"),
        ("run.max_epoch=0", "run.max_epoch=0: must be >= 1"),
        ("run.iters_per_epoch=0", "run.iters_per_epoch=0: must be >= 1"),
        ("run.warmup_steps=-1", "run.warmup_steps=-1: must be >= 0"),
        ("run.init_lr=0", "run.init_lr=0.0: the peak learning rate must be > 0"),
        ("run.min_lr=-1e-5", "run.min_lr=-1e-05: must be >= 0"),
        ("run.amp_dtype=fp8", "run.amp_dtype='fp8': choose one of auto, bf16, fp16"),
        ("run.wandb={mode: offline}", "run.wandb.project must name the W&B project"),
        (
            "run.resume=latest",
            "run.resume='latest': the only value is 'auto'.*run.resume_ckpt_path",
        ),
        ("run.batch_size_eval=0", "run.batch_size_eval=0: must be >= 1"),
        ("run.max_samples=0", "run.max_samples=0: must be >= 1, or null"),
        ("run.bootstrap=-1", "run.bootstrap=-1: must be >= 0"),
        ("run.eval_prompt=Describe.", "run.eval_prompt must hold <ImageHere> exactly once"),
        ("run.num_beams=0", "run.num_beams / run.max_new_tokens / run.min_new_tokens"),
    ],
)
def test_a_bad_run_value_fails_at_load_naming_file_and_key(
    tmp_path, fake_registry, option, message
):
    cfg_path = write(tmp_path, "run:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'job.yaml'}: .*{message}"):
        Config(cfg_path, [option])


def test_the_step_schedule_needs_a_decay_rate_at_load(tmp_path, fake_registry):
    fake_registry.register_lr_scheduler("linear_warmup_step_lr")(object)
    cfg_path = write(tmp_path, "run:\n  lr_sched: linear_warmup_step_lr\n")
    with pytest.raises(ConfigError, match="linear_warmup_step_lr needs run.decay_rate > 0"):
        Config(cfg_path)
    assert Config(cfg_path, ["run.decay_rate=0.9"]).run_cfg.decay_rate == 0.9


def test_a_builders_value_rules_run_at_load(tmp_path, fake_registry):
    def check_config(cfg):
        if cfg.ratio < 0:
            raise ConfigError(f"datasets.checked.ratio must be >= 0, got {cfg.ratio}")

    fake_registry.register_builder("checked")(
        type(
            "CheckedBuilder",
            (),
            {"config_class": FakeDataCfg, "check_config": staticmethod(check_config)},
        )
    )
    cfg_path = write(tmp_path, "datasets:\n  checked:\n    ratio: -1\n")
    with pytest.raises(ConfigError, match=f"^{cfg_path}: datasets.checked.ratio must be >= 0"):
        Config(cfg_path)
