"""Loading and merging the YAML configs.

A config has three sections: ``model``, ``datasets`` and ``run``. Values come
from four layers, each overriding the one before:

1. the model's default YAML, named by its ``arch`` and ``model_type``
   (``Model.PRETRAINED_MODEL_CONFIG_DICT``), and each dataset builder's
   default YAML (``Builder.DATASET_CONFIG_DICT["default"]``);
2. the user's YAML (``--cfg-path``);
3. ``--options a.b=c ...`` on the command line.

Each section is then checked against a typed schema (a dataclass), so that a
misspelt key fails here and not hours into a run; then the rules on values that
a type cannot state: the ``run`` keys' in :func:`check_run_config`, a dataset's
in its builder's ``check_config``. Code that reads a loaded config trusts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.common.errors import MissingFileError, XrayGPTError
from xraygpt.common.generation import GenerationOptions
from xraygpt.common.registry import registry

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent
SECTIONS = ("model", "datasets", "run")


class ConfigError(XrayGPTError, ValueError):
    """A config file or override that cannot be used as it stands."""


@dataclass
class RunConfig:
    """The ``run`` section: how to train, evaluate and where to write."""

    task: str = "image_text_pretrain"
    runner: str = "runner_base"
    job_name: str | None = None  # sub-folder of output_dir; default: the config file's stem
    output_dir: str = "output"
    seed: int = 42
    device: str = "cuda"  # falls back to cpu, with a warning, when CUDA is absent
    amp: bool = True
    amp_dtype: str = "auto"  # auto: bf16 if the GPU has it, else fp16 + scaler; CPU: fp32
    # optimisation
    lr_sched: str = "linear_warmup_cosine_lr"
    init_lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 0
    decay_rate: float | None = None  # linear_warmup_step_lr: factor per epoch
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    max_epoch: int = 1
    iters_per_epoch: int = 100
    batch_size_train: int = 1
    accum_grad_iters: int = 1
    grad_clip: float | None = None
    max_bad_steps: int = 10
    num_workers: int = 2
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    # logging and checkpoints
    log_freq: int = 50
    save_every_iters: int | None = None
    tensorboard: bool = True  # scalars to <output_dir>/<job>/tb/ (rank 0)
    wandb: dict[str, Any] | None = None  # {project: NAME, mode: offline|online}; needs wandb
    keep_last_checkpoints: int = 2
    resume_ckpt_path: str | None = None
    resume: str | None = None  # "auto": newest checkpoint in the output folder
    # evaluation
    evaluate: bool = False
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    valid_splits: list[str] = field(default_factory=list)
    batch_size_eval: int = 8
    max_samples: int | None = None
    eval_prompt: str = "<Img><ImageHere></Img> Describe the given chest x-ray image in detail."
    # generation (xraygpt.common.generation.GenerationOptions: the defaults live there)
    num_beams: int = GenerationOptions.num_beams
    max_new_tokens: int = GenerationOptions.max_new_tokens
    min_new_tokens: int = GenerationOptions.min_new_tokens
    repetition_penalty: float = GenerationOptions.repetition_penalty
    length_penalty: float = GenerationOptions.length_penalty
    nn_baseline: bool = False
    meteor: bool = True  # METEOR needs Java and takes up to a minute to start
    # FSDP2 full fine-tuning instead of DDP (xraygpt/train/fsdp.py); needs torchrun
    fsdp: bool = False
    fsdp_layer_classes: list[str] = field(default_factory=lambda: ["LlamaDecoderLayer"])
    fsdp_mixed_precision: bool = True  # bf16 compute, fp32 gradient reduce and optimizer
    fsdp_activation_checkpointing: bool = True
    bootstrap: int = 1000  # resamples for the 95 % intervals of metrics.json; 0 = none
    # distributed: read from torchrun's environment; kept for the original configs
    distributed: bool = True
    world_size: int = 1
    dist_url: str = "env://"


AMP_DTYPES = ("auto", "bf16", "fp16")
WANDB_MODES = ("offline", "online")
# run.* keys with a lower bound: (key, minimum, what the bound's edge means)
_RUN_MINIMUMS = (
    ("max_epoch", 1, ""),
    ("iters_per_epoch", 1, ""),
    ("warmup_steps", 0, ""),
    ("min_lr", 0, ""),
    ("warmup_lr", 0, ""),
    ("accum_grad_iters", 1, ""),
    ("batch_size_train", 1, ""),
    ("max_bad_steps", 1, ""),
    ("log_freq", 1, ""),
    ("keep_last_checkpoints", 0, " (0 keeps every checkpoint)"),
    ("batch_size_eval", 1, ""),
    ("bootstrap", 0, " (resamples of the 95 % intervals; 0 = none)"),
)


def check_wandb_config(value: Any) -> dict[str, str] | None:
    """``run.wandb`` as ``{"project", "mode"}``, or ``None`` when unset."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"run.wandb must be a mapping {{project: NAME, mode: offline|online}} or null, "
            f"got {value!r}"
        )
    unknown = sorted(set(value) - {"project", "mode"})
    if unknown:
        raise ConfigError(f"run.wandb: unknown key(s) {', '.join(unknown)}; keys: project, mode")
    project, mode = value.get("project"), value.get("mode", "offline")
    if not isinstance(project, str) or not project:
        raise ConfigError("run.wandb.project must name the W&B project, e.g. xraygpt")
    if mode not in WANDB_MODES:
        raise ConfigError(f"run.wandb.mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
    return {"project": project, "mode": mode}


def check_run_config(run: DictConfig, output_dir: Path) -> None:
    """The rules on ``run`` values that their types cannot state; a ConfigError names the key.

    ``Config`` runs them at load, so the runner, the schedulers and the evaluation
    loop read values that are known to fit.
    """
    for key, minimum, meaning in _RUN_MINIMUMS:
        if run[key] < minimum:
            raise ConfigError(f"run.{key}={run[key]}: must be >= {minimum}{meaning}")
    if run.init_lr <= 0:
        raise ConfigError(f"run.init_lr={run.init_lr}: the peak learning rate must be > 0")
    if run.lr_sched == "linear_warmup_step_lr" and (run.decay_rate is None or run.decay_rate <= 0):
        raise ConfigError(
            f"linear_warmup_step_lr needs run.decay_rate > 0 (the factor applied per epoch); "
            f"got {run.decay_rate!r}"
        )
    accum = run.accum_grad_iters
    # A checkpoint in the middle of an accumulation window would lose the
    # gradients gathered so far, so checkpoints fall on window ends only.
    if run.iters_per_epoch % accum:
        raise ConfigError(
            f"run.iters_per_epoch={run.iters_per_epoch} must be a multiple of "
            f"run.accum_grad_iters={accum}"
        )
    if run.save_every_iters is not None and (
        run.save_every_iters < 1 or run.save_every_iters % accum
    ):
        raise ConfigError(
            f"run.save_every_iters={run.save_every_iters} must be a positive multiple "
            f"of run.accum_grad_iters={accum} (or null)"
        )
    if run.amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"run.amp_dtype={run.amp_dtype!r}: choose one of {', '.join(AMP_DTYPES)}")
    check_wandb_config(run.wandb)
    if run.resume not in (None, "auto"):
        raise ConfigError(
            f"run.resume={run.resume!r}: the only value is 'auto' (newest checkpoint in "
            f"{output_dir}); name a file with run.resume_ckpt_path"
        )
    if run.max_samples is not None and run.max_samples < 1:
        raise ConfigError(
            f"run.max_samples={run.max_samples}: must be >= 1, or null for the whole split"
        )
    if run.eval_prompt.count(IMAGE_PLACEHOLDER) != 1:
        raise ConfigError(
            f"run.eval_prompt must hold {IMAGE_PLACEHOLDER} exactly once, got {run.eval_prompt!r}"
        )
    try:
        GenerationOptions.from_run_config(run)
    except ValueError as err:
        raise ConfigError(
            f"run.num_beams / run.max_new_tokens / run.min_new_tokens: {err}"
        ) from err


def parse_options(options: list[str] | None) -> DictConfig:
    """Turn ``["run.init_lr=3e-5", "model.freeze_vit=false"]`` into a config.

    Values are read as YAML (numbers, booleans, null, lists); quote a string
    that holds ``#`` or ``: ``. A malformed item
    raises a :class:`ConfigError` that names it.
    """
    merged = OmegaConf.create()
    for item in options or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not part for part in parts) or " " in key:
            raise ConfigError(
                f"malformed --options item {item!r}: expected section.key=value, "
                f"e.g. run.init_lr=3e-5"
            )
        if parts[0] not in SECTIONS:
            raise ConfigError(
                f"--options item {item!r} names unknown section {parts[0]!r}; "
                f"sections are: {', '.join(SECTIONS)}"
            )
        try:
            # OmegaConf's own YAML reading: 1e-4 is a float, as in the config files.
            # An empty value ("model.ckpt=") is the empty string, as in a YAML file's "".
            value = OmegaConf.from_dotlist([f"{key}={raw if raw.strip() else chr(34) * 2}"])
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            raise ConfigError(f"--options item {item!r}: value is not valid YAML: {err}") from err
        merged = OmegaConf.merge(merged, value)
    return merged


def load_yaml(path: str | Path, what: str = "config") -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{what} file {path} is not valid YAML: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{what} file {path} must hold a mapping at the top level")
    return cfg


def _check_sections(cfg: DictConfig, source: str) -> None:
    unknown = [key for key in cfg.keys() if key not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level section(s) {', '.join(map(str, unknown))}; "
            f"allowed sections are: {', '.join(SECTIONS)}"
        )


def _validated(schema: type, section: Any, where: str) -> DictConfig:
    """Merge a section onto its dataclass schema; unknown keys and bad types fail."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), section)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {err.msg if hasattr(err, 'msg') else err}") from err


def _with_source(check: Any, *args: Any, source: str) -> None:
    """Run ``check(*args)``; a ConfigError it raises also names the config file."""
    try:
        check(*args)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err


def model_default_config(arch: str, model_type: str) -> DictConfig:
    return default_yaml_of(registry.get_model_class(arch), arch, model_type)


def default_yaml_of(model_cls: type, arch: str, model_type: str) -> DictConfig:
    """The whole default YAML that ``model_cls.PRETRAINED_MODEL_CONFIG_DICT`` names for
    ``model_type`` (a ``model:`` section in LAVIS's shape)."""
    types = getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", {})
    if model_type not in types:
        raise ConfigError(
            f"model {arch!r} has no model_type {model_type!r}; "
            f"known types: {', '.join(sorted(types)) or '(none)'}"
        )
    return load_yaml(PACKAGE_ROOT / types[model_type], f"default config of {arch}/{model_type}")


def dataset_default_config(name: str) -> DictConfig:
    builder_cls = registry.get_builder_class(name)
    path = getattr(builder_cls, "DATASET_CONFIG_DICT", {}).get("default")
    if path is None:
        return OmegaConf.create({"datasets": {name: {}}})
    return load_yaml(PACKAGE_ROOT / path, f"default config of dataset {name}")


class Config:
    """The merged, validated configuration of one job.

    ``user_config``, when given, is the user's layer instead of the file at
    ``cfg_path``; ``cfg_path`` then only names it (in errors and ``job_name``).
    """

    def __init__(
        self,
        cfg_path: str | Path | None = None,
        options: list[str] | None = None,
        *,
        user_config: DictConfig | dict | None = None,
    ) -> None:
        if user_config is not None:
            user = OmegaConf.create(user_config)
            source = str(cfg_path) if cfg_path is not None else "config"
        else:
            if cfg_path is None:
                raise ConfigError("a config needs --cfg-path")
            user = load_yaml(cfg_path)
            source = str(cfg_path)
        self.cfg_path = Path(cfg_path) if cfg_path is not None else None
        _check_sections(user, source)
        overrides = parse_options(options)
        # The defaults to pull in depend on names that --options may change.
        wanted = OmegaConf.merge(user, overrides)

        layers: list[DictConfig] = []
        if "model" in wanted:
            arch = OmegaConf.select(wanted, "model.arch")
            if arch is None:
                raise ConfigError(f"{source}: model section needs an 'arch'")
            model_type = OmegaConf.select(wanted, "model.model_type")
            if model_type is None:
                model_type = getattr(registry.get_model_class(arch), "DEFAULT_MODEL_TYPE", None)
                if model_type is None:
                    raise ConfigError(f"{source}: model section needs a 'model_type'")
            layers.append(model_default_config(arch, model_type))
        for name in (wanted.get("datasets") or {}).keys():
            layers.append(dataset_default_config(str(name)))
        for layer in layers:
            _check_sections(layer, "a default config")
        merged = OmegaConf.merge(*layers, user, overrides)

        self.model_cls = None
        sections: dict[str, Any] = {}
        if "model" in merged:
            self.model_cls = registry.get_model_class(merged.model.arch)
            schema = getattr(self.model_cls, "config_class", None)
            sections["model"] = (
                _validated(schema, merged.model, f"{source}: model") if schema else merged.model
            )
        datasets = {}
        for name, ds_cfg in (merged.get("datasets") or {}).items():
            builder_cls = registry.get_builder_class(str(name))
            schema = getattr(builder_cls, "config_class", None)
            section = _validated(schema, ds_cfg, f"{source}: datasets.{name}") if schema else ds_cfg
            check = getattr(builder_cls, "check_config", None)
            if check is not None:
                _with_source(check, section, source=source)
            datasets[str(name)] = section
        sections["datasets"] = datasets
        sections["run"] = _validated(RunConfig, merged.get("run") or {}, f"{source}: run")
        self.config: DictConfig = OmegaConf.create(sections)
        # Fail now, not later, on a misspelt task / runner / scheduler name, or a bad value.
        registry.get_task_class(self.run_cfg.task)
        registry.get_runner_class(self.run_cfg.runner)
        registry.get_lr_scheduler_class(self.run_cfg.lr_sched)
        _with_source(check_run_config, self.run_cfg, self.output_dir, source=source)

    @property
    def model_cfg(self) -> DictConfig:
        return self.config.model

    @property
    def datasets_cfg(self) -> DictConfig:
        return self.config.datasets

    @property
    def run_cfg(self) -> DictConfig:
        return self.config.run

    @property
    def job_name(self) -> str:
        if self.run_cfg.job_name:
            return self.run_cfg.job_name
        return self.cfg_path.stem if self.cfg_path else "job"

    @property
    def output_dir(self) -> Path:
        return Path(self.run_cfg.output_dir) / self.job_name

    def to_dict(self) -> dict:
        return OmegaConf.to_container(self.config, resolve=True)  # type: ignore[return-value]

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self.config, resolve=True)

    def pretty_print(self) -> str:
        lines = []
        for section in SECTIONS:
            body = OmegaConf.to_yaml(self.config.get(section, {}), resolve=True).rstrip()
            lines.append(f"===== {section} =====\n{body}")
        return "\n".join(lines)


def resolve_path(value: str | None) -> Path | None:
    """A config path: absolute, or relative to the working folder, else to the repo root."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def require_path(value: str, key: str, *, folder: bool = False, hint: str = "") -> Path:
    """The resolved path of config key ``model.<key>``; an error naming key and path if absent."""
    path = resolve_path(value)
    ok = path is not None and (path.is_dir() if folder else path.is_file())
    if not ok:
        what = "folder" if folder else "file"
        raise MissingFileError(
            f"model.{key}: {what} {value!r} not found (looked at {path}). {hint}".rstrip()
        )
    return path
