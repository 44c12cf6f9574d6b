"""Every YAML the project ships loads, merges and validates."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from xraygpt.common.config import PACKAGE_ROOT, REPO_ROOT, Config
from xraygpt.common.registry import registry

JOB_CONFIGS = sorted(
    p.relative_to(REPO_ROOT).as_posix()
    for folder in ("train_configs", "eval_configs")
    for p in (REPO_ROOT / folder).glob("*.yaml")
)
ALL_YAMLS = JOB_CONFIGS + sorted(
    p.relative_to(REPO_ROOT).as_posix() for p in (PACKAGE_ROOT / "configs").rglob("*.yaml")
)


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_the_project_ships_job_configs():
    assert any(p.startswith("train_configs/") for p in JOB_CONFIGS)
    assert any(p.startswith("eval_configs/") for p in JOB_CONFIGS)


@pytest.mark.parametrize("rel_path", JOB_CONFIGS)
def test_job_config_loads_and_resolves(rel_path):
    cfg = Config(REPO_ROOT / rel_path)
    OmegaConf.to_container(cfg.config, resolve=True, throw_on_missing=True)
    assert cfg.pretty_print()


@pytest.mark.parametrize("rel_path", ALL_YAMLS)
def test_no_absolute_or_personal_paths(rel_path):
    data = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / rel_path))
    for value in _strings(data):
        assert not value.startswith(("/", "~")), f"{rel_path}: absolute path {value!r}"
        assert "/home/" not in value and "\\" not in value, f"{rel_path}: {value!r}"


def test_every_default_yaml_is_used_and_validates():
    used = set()
    for arch in registry.names("model"):
        cls = registry.get_model_class(arch)
        for model_type, path in getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", {}).items():
            used.add(Path(path).as_posix())
            cfg = Config(user_config={"model": {"arch": arch, "model_type": model_type}})
            assert cfg.model_cfg.arch == arch
    for name in registry.names("builder"):
        cls = registry.get_builder_class(name)
        path = getattr(cls, "DATASET_CONFIG_DICT", {}).get("default")
        if path:
            used.add(Path(path).as_posix())
        Config(user_config={"datasets": {name: {}}})
    shipped = {
        p.relative_to(PACKAGE_ROOT).as_posix() for p in (PACKAGE_ROOT / "configs").rglob("*.yaml")
    }
    assert shipped <= used, f"default YAMLs no class names: {sorted(shipped - used)}"
