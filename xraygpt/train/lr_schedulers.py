"""Learning-rate schedules of the recipe (docs/recipe.md §5), as pure functions of the step.

The runner calls :meth:`step` once per training iteration (micro-batch) with
the global iteration index, before the forward pass, as LAVIS does. Because
the rate depends on that index alone, a resumed run only needs the index
back to continue on the same curve.

Both schedules warm up linearly from ``warmup_lr`` to ``init_lr`` over the
first ``warmup_steps`` global iterations. (LAVIS counted the warm-up in the
iteration *within the epoch*, which restarts the ramp when ``warmup_steps``
exceeds ``iters_per_epoch``; with the recipe's values the two agree.)
"""

from __future__ import annotations

import math
from typing import Any, Self

from torch.optim import Optimizer

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry


class _WarmupScheduler:
    """Shared part: warm-up, writing the rate into the optimizer. The settings are checked
    when the config loads (:func:`xraygpt.common.config.check_run_config`)."""

    name = ""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        max_epoch: int,
        iters_per_epoch: int,
        init_lr: float,
        min_lr: float,
        warmup_lr: float,
        warmup_steps: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.max_epoch = max_epoch
        self.iters_per_epoch = iters_per_epoch
        self.init_lr = init_lr
        self.min_lr = min_lr
        self.warmup_lr = warmup_lr
        self.warmup_steps = warmup_steps
        self.last_step = -1

    @property
    def total_steps(self) -> int:
        return self.max_epoch * self.iters_per_epoch

    def lr_at(self, step: int) -> float:
        """The rate of global iteration ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / self.warmup_steps
        return self._after_warmup(step)

    def _after_warmup(self, step: int) -> float:
        raise NotImplementedError

    def step(self, step: int) -> float:
        """Set the rate of global iteration ``step`` in every parameter group."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_step = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ConfigError(
                f"checkpoint holds the state of lr scheduler {state.get('name')!r}, "
                f"but this run uses {self.name!r} (run.lr_sched): resume with "
                f"run.lr_sched={state.get('name')}, or start a new run"
            )
        self.last_step = int(state["last_step"])
        if self.last_step >= 0:
            self.step(self.last_step)

    @classmethod
    def from_config(cls, optimizer: Optimizer, run_cfg: Any, **extra: Any) -> Self:
        """The scheduler of the ``run`` section; ``extra``: a subclass's own arguments."""
        return cls(
            optimizer,
            max_epoch=run_cfg.max_epoch,
            iters_per_epoch=run_cfg.iters_per_epoch,
            init_lr=run_cfg.init_lr,
            min_lr=run_cfg.min_lr,
            warmup_lr=run_cfg.warmup_lr,
            warmup_steps=run_cfg.warmup_steps,
            **extra,
        )


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLRScheduler(_WarmupScheduler):
    """Warm-up, then a half cosine from ``init_lr`` to ``min_lr``.

    The cosine is evaluated at the global iteration over *all*
    ``max_epoch * iters_per_epoch`` iterations, warm-up included, as in the
    original: right after warm-up the rate is a hair under ``init_lr``.
    """

    name = "linear_warmup_cosine_lr"

    def _after_warmup(self, step: int) -> float:
        progress = step / self.total_steps
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLRScheduler(_WarmupScheduler):
    """Warm-up, then ``init_lr * decay_rate ** epoch``, never below ``min_lr``."""

    name = "linear_warmup_step_lr"

    def __init__(self, optimizer: Optimizer, *, decay_rate: float, **kwargs: Any) -> None:
        super().__init__(optimizer, **kwargs)
        self.decay_rate = decay_rate

    def _after_warmup(self, step: int) -> float:
        epoch = step // self.iters_per_epoch
        return max(self.min_lr, self.init_lr * self.decay_rate**epoch)

    @classmethod
    def from_config(cls, optimizer: Optimizer, run_cfg: Any, **extra: Any) -> Self:
        return super().from_config(optimizer, run_cfg, decay_rate=run_cfg.decay_rate, **extra)
