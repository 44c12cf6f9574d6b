"""Config checks: the YAML, every registry name in it (all at once), the merge and schemas."""

from __future__ import annotations

from typing import Any

from xraygpt.validate.checklist import Checklist, closest


def _registry_names(cfg: Any) -> list[tuple[str, str, str]]:
    """``(kind, name, config key)`` for every registry name a job config uses."""
    from omegaconf import OmegaConf

    from xraygpt.common.config import RunConfig

    found: list[tuple[str, str, str]] = []
    arch = OmegaConf.select(cfg, "model.arch")
    if arch is not None:
        found.append(("model", str(arch), "model.arch"))
    vit = OmegaConf.select(cfg, "model.vit_model")
    if vit is not None:
        found.append(("vision_encoder", str(vit), "model.vit_model"))
    for name, ds_cfg in (cfg.get("datasets") or {}).items():
        found.append(("builder", str(name), f"datasets.{name}"))
        for proc_key in ("vis_processor", "text_processor"):
            procs = ds_cfg.get(proc_key) if ds_cfg is not None else None
            for split, proc in (procs or {}).items():
                proc_name = proc.get("name") if hasattr(proc, "get") else None
                if proc_name is not None:
                    found.append(
                        ("processor", str(proc_name), f"datasets.{name}.{proc_key}.{split}.name")
                    )
    run = cfg.get("run") or {}
    for key, kind in (("task", "task"), ("runner", "runner"), ("lr_sched", "lr_scheduler")):
        found.append((kind, str(run.get(key, getattr(RunConfig, key))), f"run.{key}"))
    return found


def check_config(out: Checklist, cfg_path: str, options: list[str] | None) -> Any:
    """Registry names, the merge and the schemas; returns the :class:`Config` or None."""
    from omegaconf import OmegaConf

    from xraygpt.common.config import Config, ConfigError, load_yaml, parse_options
    from xraygpt.common.registry import RegistryError, registry

    group = "config"
    try:
        raw = OmegaConf.merge(load_yaml(cfg_path), parse_options(options))
    except ConfigError as err:
        out.failed(
            group,
            "config file",
            str(err),
            "pass an existing YAML file to --cfg-path (the shipped ones are in train_configs/) "
            "and fix the YAML syntax at the position named",
        )
        return None
    out.passed(group, "config file", f"{cfg_path} is valid YAML")

    try:
        from xraygpt.components import register_components

        register_components()
    except Exception as err:  # noqa: BLE001 - whatever a registering module raised
        out.failed(
            group,
            "registry names",
            f"the project's components do not import: {type(err).__name__}: {err}",
            "the traceback of `python -c 'import xraygpt.components as c; c.register_components()'` names the broken module; "
            "reinstall the requirements or fix it",
        )
        return None

    # Collect every unknown name at once, rather than the first one Config trips on.
    unknown = []
    checked = 0
    for kind, name, key in _registry_names(raw):
        checked += 1
        known = registry.names(kind)
        if name not in known:
            unknown.append(
                f"{key}: unknown {kind} {name!r}{closest(name, known)}; registered: "
                f"{', '.join(known) or '(none)'}"
            )
    arch = OmegaConf.select(raw, "model.arch")
    if arch is not None and arch in registry.names("model"):
        model_type = OmegaConf.select(raw, "model.model_type", default="default")
        types = sorted(getattr(registry.get_model_class(arch), "PRETRAINED_MODEL_CONFIG_DICT", {}))
        checked += 1
        if model_type not in types:
            unknown.append(
                f"model.model_type: {arch} has no type {model_type!r}"
                f"{closest(str(model_type), types)}; types: {', '.join(types) or '(none)'}"
            )
    out.add(
        group,
        "registry names",
        not unknown,
        f"{checked} names checked"
        + (f", {len(unknown)} unknown" if unknown else ", all registered"),
        f"correct the spelling in {cfg_path} (or the --options) to a registered name",
        details=unknown,
    )
    if unknown:
        out.skip(group, "merge and schema", "blocked by unknown names")
        return None

    try:
        cfg = Config(cfg_path, options)
    except (ConfigError, RegistryError, ValueError) as err:
        out.failed(
            group,
            "merge and schema",
            str(err),
            f"fix the key named above in {cfg_path} (a misspelt key or a wrong type); each "
            "section's keys are the fields of its config dataclass",
        )
        return None
    datasets = ", ".join(cfg.datasets_cfg.keys()) or "none"
    model = (
        f"{cfg.model_cfg.arch}/{cfg.model_cfg.get('model_type', 'default')}"
        if "model" in cfg.config
        else "none"
    )
    out.passed(
        group,
        "merge and schema",
        f"model {model}; datasets {datasets}; task {cfg.run_cfg.task}; output {cfg.output_dir}",
    )

    return cfg
