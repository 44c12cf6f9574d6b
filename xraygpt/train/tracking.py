"""Where the runner's scalars go besides ``log.jsonl``: TensorBoard, and W&B on request.

* ``run.tensorboard: true`` (the default) writes ``<output>/<job>/tb/``: under
  ``train/`` the loss, learning rate, samples/s, gradient norm, skipped steps
  and unreadable images of each ``log.jsonl`` line; ``test.py`` adds its
  headline metrics under ``eval/`` in its own job folder. View with
  ``tensorboard --logdir output``.
* ``run.wandb: {project: NAME, mode: offline|online}`` also sends them to
  Weights & Biases (the ``wandb`` package, not in requirements.txt); the run id
  is kept in ``<job>/wandb_run_id.txt`` so that a resumed run continues the
  same W&B run.

Only rank 0 writes. A resumed run continues the same TensorBoard curves: its
writer starts with ``purge_step`` one past the checkpoint's iteration, so
TensorBoard drops what the killed run had logged after that checkpoint and
each step appears once. W&B cannot rewind a run: there the killed run's
values after the checkpoint stay and the resumed run's repeats of those steps
are dropped by W&B.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xraygpt.common.config import ConfigError, check_wandb_config

log = logging.getLogger(__name__)

TB_DIR = "tb"
WANDB_ID_FILE = "wandb_run_id.txt"
# log.jsonl keys that are not curves
_NOT_SCALARS = {"step", "epoch"}


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise ConfigError(
            "run.wandb is set but the 'wandb' package is not installed: pip install wandb, "
            "or remove run.wandb from the config"
        ) from err
    return wandb


class Tracker:
    """Scalars to TensorBoard and/or W&B; a no-op on ranks other than 0 and when both are off."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        tensorboard: bool = True,
        wandb: Mapping[str, Any] | None = None,
        is_main: bool = True,
        start_step: int = 0,
        config: Mapping[str, Any] | None = None,
        job_name: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self._tb = None
        self._wandb_run = None
        wandb_cfg = check_wandb_config(wandb)  # the settings with their defaults filled in
        wandb_module = _import_wandb() if wandb_cfg else None
        if not is_main:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events of the killed run at or after it are dropped on load
            self._tb = SummaryWriter(
                log_dir=str(self.output_dir / TB_DIR),
                purge_step=start_step + 1 if start_step > 0 else None,
            )
        if wandb_cfg and wandb_module is not None:
            self._wandb_run = wandb_module.init(
                project=wandb_cfg["project"],
                mode=wandb_cfg["mode"],
                dir=str(self.output_dir),
                id=self._wandb_id(),
                name=job_name or self.output_dir.name,
                resume="allow",
                config=dict(config or {}),
            )

    @classmethod
    def from_run_config(
        cls,
        run_cfg: Any,
        output_dir: str | Path,
        *,
        is_main: bool,
        start_step: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> Tracker:
        wandb = run_cfg.wandb
        if wandb is not None and not isinstance(wandb, dict):  # an OmegaConf node
            from omegaconf import OmegaConf

            wandb = OmegaConf.to_container(wandb)
        return cls(
            output_dir,
            tensorboard=bool(run_cfg.tensorboard),
            wandb=wandb,
            is_main=is_main,
            start_step=start_step,
            config=config,
            job_name=getattr(run_cfg, "job_name", None),
        )

    def _wandb_id(self) -> str:
        from xraygpt.common.io import atomic_write_text

        path = self.output_dir / WANDB_ID_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
        run_id = uuid.uuid4().hex[:12]
        atomic_write_text(run_id + "\n", path)
        return run_id

    @property
    def active(self) -> bool:
        return self._tb is not None or self._wandb_run is not None

    def log(self, stats: Mapping[str, Any], step: int, prefix: str = "train") -> None:
        """Each finite number of ``stats`` as ``<prefix>/<key>`` at ``step``."""
        if not self.active:
            return
        scalars = {
            f"{prefix}/{key}": float(value)
            for key, value in stats.items()
            if key not in _NOT_SCALARS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, global_step=step)
        if self._wandb_run is not None:
            self._wandb_run.log(scalars, step=step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def evaluation_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of a ``metrics.json``: NLG metrics and the CE F1 variants."""
    scalars = {name: value for name, value in metrics.get("nlg", {}).items()}
    scalars.update((metrics.get("clinical_variants") or {}).get("f1", {}))
    return {k.replace(" ", "_"): v for k, v in scalars.items()}


def log_evaluation(cfg: Any, results: Mapping[str, Mapping[str, Any]], step: int = 0) -> None:
    """``test.py``'s metrics (``{"<dataset>/<split>": metrics}``) under ``eval/`` in its job's tb/."""
    run = cfg.run_cfg
    if not results or not (run.tensorboard or run.wandb):
        return
    tracker = Tracker.from_run_config(run, cfg.output_dir, is_main=True, config=cfg.to_dict())
    try:
        for name, metrics in results.items():
            tracker.log(evaluation_scalars(metrics), step=step, prefix=f"eval/{name}")
    finally:
        tracker.close()
