"""The held-out assistant-token loss of a config's LLM, before and after fine-tuning.

``xraygpt conversations loss --cfg-path train_configs/xraygpt_tiny_sft.yaml --ckpt ...``
prints, for each dataset of the config, the token-weighted mean cross-entropy
over the assistant tokens of a split (:func:`xraygpt.data.losses.evaluate_answer_loss`,
the loss training minimises), for the config's LLM untuned and, with a checkpoint,
tuned.
"""

from __future__ import annotations

from pathlib import Path

from xraygpt.common.config import Config, ConfigError
from xraygpt.common.io import load_checkpoint
from xraygpt.common.launch import seed_everything
from xraygpt.common.registry import registry
from xraygpt.data.losses import evaluate_answer_loss
from xraygpt.models.checkpoint_fit import load_trainable_state_dict


def held_out_loss(
    cfg_path: str | Path,
    options: list[str] | None = None,
    *,
    ckpt: str | Path | None = None,
    split: str = "val",
) -> dict[str, float]:
    """``{"<dataset>/<split> untuned": nats, "<dataset>/<split> tuned": nats}`` (tuned with
    ``ckpt``, a checkpoint of the run: its trainable weights)."""
    cfg = Config(cfg_path, options)
    seed_everything(cfg.run_cfg.seed, 0)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    for name, by_split in datasets.items():
        if split not in by_split:
            raise ConfigError(f"datasets.{name} has no split {split!r}")
    model = task.build_model(cfg)
    results = {
        f"{name}/{split} untuned": evaluate_answer_loss(model, by_split[split])
        for name, by_split in datasets.items()
    }
    if ckpt:
        state = load_checkpoint(ckpt, "--ckpt")
        load_trainable_state_dict(model, state.get("model", state), str(ckpt))
        for name, by_split in datasets.items():
            results[f"{name}/{split} tuned"] = evaluate_answer_loss(model, by_split[split])
    return results
