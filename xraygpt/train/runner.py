"""The training loop: DDP, mixed precision, accumulation, checkpoints and resume.

One runner serves every stage: what a step computes is the task's business
(``task.train_step(model, samples) -> {"loss": ...}``), which datasets feed it
too (``task.train_datasets``). The loop reads top to bottom in :meth:`train` and :meth:`_loop`:

    set up (device, DDP, optimizer, scheduler, precision)  →  resume
    →  for each global iteration: lr, forward, backward, maybe optimizer step,
       log, maybe checkpoint

Epochs have a fixed length of ``iters_per_epoch`` iterations over an endless
loader; the batch of an iteration depends only on (seed, iteration, rank), so
a resumed run asks the loader to start at the saved iteration and continues
exactly where the killed one stopped.

``iters_per_epoch``, ``warmup_steps``, ``save_every_iters`` and ``log_freq``
count iterations (micro-batches), as in LAVIS; with ``accum_grad_iters=k`` the
optimizer steps once every ``k`` iterations, at the rate of the last one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import xraygpt.train.fsdp as fsdp
from xraygpt.common import dist
from xraygpt.common.config import Config
from xraygpt.common.errors import CheckpointError, OutputExistsError, XrayGPTError
from xraygpt.common.io import atomic_write_text, load_checkpoint
from xraygpt.common.launch import seed_everything
from xraygpt.common.registry import registry
from xraygpt.models.checkpoint_fit import load_trainable_state_dict
from xraygpt.train.checkpoint import (
    capture_rng_state,
    find_latest_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    trainable_state_dict,
)
from xraygpt.train.optim import Precision, build_optimizer, resolve_precision
from xraygpt.train.tracking import TB_DIR, WANDB_ID_FILE, Tracker

log = logging.getLogger(__name__)

# run.* keys the learning rate of an iteration depends on.
SCHEDULE_KEYS = (
    "lr_sched",
    "max_epoch",
    "iters_per_epoch",
    "init_lr",
    "min_lr",
    "warmup_lr",
    "warmup_steps",
    "decay_rate",
)

LOG_NAME = "log.jsonl"
# What a run writes into its folder besides checkpoints; a fresh start sets an earlier
# run's aside (see RunnerBase._set_aside_earlier_run).
RUN_RECORDS = (LOG_NAME, "config.yaml", TB_DIR, WANDB_ID_FILE)

# (start_step) -> an endless iterator of batches whose first batch is that of `start_step`.
LoaderFactory = Callable[[int], Iterator[dict]]


class NonFiniteLossError(XrayGPTError, RuntimeError):
    """Training stopped after too many consecutive steps with a NaN/inf loss or gradient."""


def move_to_device(samples: Any, device: torch.device) -> Any:
    if isinstance(samples, torch.Tensor):
        return samples.to(device, non_blocking=True)
    if isinstance(samples, Mapping):
        return {key: move_to_device(value, device) for key, value in samples.items()}
    if isinstance(samples, list | tuple):
        return type(samples)(move_to_device(value, device) for value in samples)
    return samples


def batch_size_of(samples: Mapping) -> int:
    """Samples in a collated batch: the first dim of its first tensor, else a list's length."""
    for value in samples.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    for value in samples.values():
        if isinstance(value, list | tuple):
            return len(value)
    raise ValueError(f"cannot tell the batch size of a batch with keys {sorted(samples)}")


@registry.register_runner("runner_base")
class RunnerBase:
    def __init__(
        self,
        cfg: Config,
        task: Any,
        model: nn.Module,
        datasets: dict[str, dict[str, Any]],
        *,
        device: torch.device | None = None,
        loader_factory: LoaderFactory | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_cfg = cfg.run_cfg
        self.task = task
        self.model = model
        self.datasets = datasets
        self.device = device if device is not None else dist.init_distributed(self.run_cfg.device)
        self.output_dir = Path(cfg.output_dir)
        self._loader_factory = loader_factory
        self.fsdp = bool(self.run_cfg.fsdp)  # FSDP2 sharding instead of DDP (train/fsdp.py)
        self.tracker: Tracker | None = None  # TensorBoard / W&B, made when training starts

    # ------------------------------------------------------------------ set-up

    @property
    def total_steps(self) -> int:
        return self.run_cfg.max_epoch * self.run_cfg.iters_per_epoch

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _setup(self) -> None:
        run = self.run_cfg
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        # A model that placed its own parts (low_resource: 8-bit LLM on a GPU, ViT on the
        # CPU) stays as it is; one built wholly on the CPU moves to this rank's device.
        placed = {t.device.type for t in (*self.model.parameters(), *self.model.buffers())}
        if placed <= {"cpu"}:
            self.model.to(self.device)
        else:
            log.info("the model placed itself on %s: not moved", ", ".join(sorted(placed)))
        if self.fsdp:
            self.model = fsdp.shard_model(
                self.model,
                self.device,
                list(run.fsdp_layer_classes),
                mixed_precision=run.fsdp_mixed_precision,
                activation_checkpointing=run.fsdp_activation_checkpointing,
            )
        # Wrapped after the model froze its parts: DDP syncs only what has requires_grad.
        elif self.world_size > 1:
            self.model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.optimizer = build_optimizer(self.unwrapped_model, run)
        sched_cls = registry.get_lr_scheduler_class(run.lr_sched)
        self.lr_sched = sched_cls.from_config(self.optimizer, run)
        self.precision: Precision = resolve_precision(self.device, run.amp, run.amp_dtype)
        if self.fsdp:  # FSDP's own mixed precision policy replaces autocast
            self.precision = Precision(self.device.type, None, None)
        log.info(
            "training on %s x %d process(es), %s; %d epochs x %d iterations, batch %d per process",
            self.device,
            self.world_size,
            self.precision.describe(),
            run.max_epoch,
            run.iters_per_epoch,
            run.batch_size_train,
        )
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for path in remove_stale_temp_files(self.output_dir):
                log.info("removed %s, left by an interrupted checkpoint write", path.name)

    def _train_loader(self, start_step: int) -> Iterator[dict]:
        if self._loader_factory is not None:
            with torch.random.fork_rng(devices=[]):  # see _next_batch
                return self._loader_factory(start_step)
        from xraygpt.data.loaders import build_train_loader

        # Each dataset's sample_ratio (set by its builder) weighs the mix.
        return build_train_loader(
            self.task.train_datasets(self.datasets),
            batch_size=self.run_cfg.batch_size_train,
            num_workers=self.run_cfg.num_workers,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.run_cfg.seed,
            start_step=start_step,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------ checkpoints

    def _resume_path(self) -> Path | None:
        run = self.run_cfg
        if run.resume_ckpt_path:
            if run.resume == "auto":
                log.warning("run.resume_ckpt_path is set: it wins over run.resume=auto")
            return Path(run.resume_ckpt_path)
        if run.resume == "auto":
            # Rank 0 decides, so that every rank resumes from the same file.
            found = self._find_latest() if self.is_main else None
            found = _broadcast_object(found)
            if found is None:
                log.info("run.resume=auto: no checkpoint in %s, starting afresh", self.output_dir)
            return found
        return None

    def _find_latest(self) -> Path | None:
        if self.fsdp:
            return fsdp.find_latest(self.output_dir)
        return find_latest_checkpoint(self.output_dir)

    def _load(self, path: Path) -> int:
        """Restore the state saved in ``path``; returns the global iteration to start at."""
        if self.fsdp:
            # model and optimizer are restored shard by shard, on any world size
            ckpt = fsdp.load_sharded(self.model, self.optimizer, path)
        else:
            ckpt = load_checkpoint(path, "run.resume checkpoint")
            missing = [k for k in ("model", "optimizer", "lr_sched", "step") if k not in ckpt]
            if missing:
                raise CheckpointError(
                    f"{path} is not a training checkpoint of this runner (no "
                    f"{', '.join(missing)}); to start from weights only, use model.ckpt instead"
                )
            load_trainable_state_dict(self.unwrapped_model, ckpt["model"], str(path))
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_sched.load_state_dict(ckpt["lr_sched"])
        if self.precision.scaler is not None and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])
        saved_run = (ckpt.get("config") or {}).get("run") or {}
        for key, now in (
            ("batch_size_train", self.run_cfg.batch_size_train),
            ("seed", self.run_cfg.seed),
        ):
            if key in saved_run and saved_run[key] != now:
                log.warning(
                    "%s was written with run.%s=%s, this run has %s: the batches after the "
                    "resume point differ from those of an uninterrupted run",
                    path,
                    key,
                    saved_run[key],
                    now,
                )
        self._warn_if_schedule_changed(path, saved_run, step)
        rng = ckpt.get("rng") or []
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank])
        else:
            log.warning(
                "%s was written by %d process(es), this run has %d: RNG streams reseeded, "
                "so dropout and augmentation differ from an uninterrupted run",
                path,
                len(rng),
                self.world_size,
            )
            seed_everything(self.run_cfg.seed + step, self.rank)
        log.info("resumed from %s at iteration %d (epoch %d)", path, step, ckpt.get("epoch", -1))
        return step

    def _warn_if_schedule_changed(self, path: Path, saved_run: Mapping, step: int) -> None:
        """Say so when the run resumes with other learning-rate settings than it was
        written with (typically a finished run extended by a larger ``run.max_epoch``).

        The rate is a pure function of the global iteration and the *current*
        settings, so the resumed run continues on the recomputed curve, not on the
        old one: a cosine is stretched over the new total and can jump back up.
        """
        changed = [
            key
            for key in SCHEDULE_KEYS
            if key in saved_run and saved_run[key] != self.run_cfg.get(key)
        ]
        if not changed:
            return
        old = copy.copy(self.lr_sched)
        for key in ("max_epoch", "iters_per_epoch", "init_lr", "min_lr", "warmup_lr"):
            if key in saved_run:
                setattr(old, key, saved_run[key])
        if "warmup_steps" in saved_run:
            old.warmup_steps = saved_run["warmup_steps"]
        if "decay_rate" in saved_run and hasattr(old, "decay_rate"):
            old.decay_rate = saved_run["decay_rate"]
        try:
            before = f"{old.lr_at(step - 1):.3g}" if step > 0 else "none yet"
        except (TypeError, ValueError, ZeroDivisionError):  # another scheduler's settings
            before = "unknown"
        after = self.lr_sched.lr_at(step)
        log.warning(
            "%s was written with %s; this run has %s. The learning-rate schedule (%s) is "
            "recomputed from the global iteration with the new settings over %d iterations "
            "(warm-up not repeated once past it), not continued from the old curve: the "
            "last rate of the checkpoint was %s at iteration %d, the next is %.3g at "
            "iteration %d. To keep the old curve, resume with the old values",
            path,
            ", ".join(f"run.{k}={saved_run[k]}" for k in changed),
            ", ".join(f"run.{k}={self.run_cfg.get(k)}" for k in changed),
            self.run_cfg.lr_sched,
            self.total_steps,
            before,
            step - 1,
            after,
            step,
        )

    def _save(self, step: int) -> None:
        """Checkpoint after ``step`` global iterations (all ranks call; rank 0 writes)."""
        meta = {
            "lr_sched": self.lr_sched.state_dict(),
            "epoch": (step - 1) // self.run_cfg.iters_per_epoch,
            "step": step,
            "world_size": self.world_size,
            "rng": dist.all_gather_objects(capture_rng_state()),
            "config": self.cfg.to_dict(),
        }
        keep = self.run_cfg.keep_last_checkpoints
        if self.fsdp:
            path = fsdp.save_sharded(self.model, self.optimizer, meta, self.output_dir, step, keep)
            log.info("saved %s", path)
            return
        if self.is_main:
            state = {
                "model": trainable_state_dict(self.unwrapped_model),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.precision.scaler.state_dict() if self.precision.scaler else {},
                **meta,
            }
            path = save_checkpoint(state, self.output_dir, step, keep)
            log.info("saved %s", path)
        dist.barrier()

    # ------------------------------------------------------------------ loop

    def train(self) -> dict[str, Any]:
        """Train to ``max_epoch * iters_per_epoch`` iterations; returns the final stats."""
        self._setup()
        start_step = 0
        resume = self._resume_path()
        if resume is not None:
            start_step = self._load(resume)
            if self.is_main:
                self._trim_log(start_step)
        elif _broadcast_object(self.is_main and self._find_latest() is not None):
            # Starting afresh here would mix two runs' checkpoints and prune the wrong ones.
            raise OutputExistsError(
                f"{self.output_dir} already holds checkpoints of an earlier run: continue it "
                f"with --options run.resume=auto, or start a new one under another "
                f"run.job_name / run.output_dir (or delete the folder)"
            )
        elif self.is_main:
            self._set_aside_earlier_run()
        if self.is_main:
            atomic_write_text(self.cfg.to_yaml(), self.output_dir / "config.yaml")
        if start_step >= self.total_steps:
            log.info(
                "nothing to do: the checkpoint is at iteration %d of %d",
                start_step,
                self.total_steps,
            )
            return {"step": start_step}
        self.tracker = Tracker.from_run_config(
            self.run_cfg,
            self.output_dir,
            is_main=self.is_main,
            start_step=start_step,
            config=self.cfg.to_dict(),
        )
        loader = self._train_loader(start_step)
        try:
            return self._loop(loader, start_step)
        finally:
            close = getattr(loader, "close", None)
            if close is not None:
                close()
            self.tracker.close()

    def _loop(self, loader: Iterator[dict], start_step: int) -> dict[str, Any]:
        run = self.run_cfg
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.unwrapped_model.parameters() if p.requires_grad]
        bad_in_a_row, window_bad = 0, False
        meter = _Meter()
        bar = None
        started, samples_seen = time.perf_counter(), 0

        for step in range(start_step, self.total_steps):
            epoch, in_epoch = divmod(step, run.iters_per_epoch)
            if bar is None or in_epoch == 0:
                if bar is not None:
                    bar.close()
                bar = tqdm(
                    total=run.iters_per_epoch,
                    initial=in_epoch,
                    desc=f"epoch {epoch}",
                    disable=not self.is_main,
                    dynamic_ncols=True,
                )
            lr = self.lr_sched.step(step)
            samples = move_to_device(self._next_batch(loader), self.device)
            n_samples = batch_size_of(samples) * self.world_size
            last_micro = (step + 1) % run.accum_grad_iters == 0
            loss, finite = self._forward_backward(samples, last_micro)
            if not finite:
                window_bad = True
                log.warning("iteration %d: non-finite loss on some rank, step skipped", step)

            grad_norm = None
            if last_micro:
                if window_bad:
                    self.optimizer.zero_grad(set_to_none=True)
                else:
                    grad_norm = self._optimizer_step(params)
                    if grad_norm is not None and not math.isfinite(grad_norm):
                        log.warning("iteration %d: non-finite gradient norm, no update", step)
                        window_bad = True
                bad_in_a_row = bad_in_a_row + 1 if window_bad else 0
                window_bad = False
                if bad_in_a_row >= run.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{bad_in_a_row} optimizer steps in a row had a non-finite loss or "
                        f"gradient (run.max_bad_steps={run.max_bad_steps}); stopped at "
                        f"iteration {step}. The last good checkpoint in {self.output_dir} is "
                        f"intact: lower run.init_lr, set run.grad_clip or check the data"
                    )

            loss_value = loss.item()
            meter.add(loss_value if finite else None, n_samples, grad_norm)
            samples_seen += n_samples
            done = step + 1
            if self.is_main:
                bar.set_postfix(
                    loss=f"{loss_value:.4f}",
                    lr=f"{lr:.2e}",
                    sps=f"{meter.rate():.1f}",
                    refresh=False,
                )
                bar.update(1)
            if done % run.log_freq == 0 or done == self.total_steps:
                stats = meter.flush()
                stats["bad_images"] = float(getattr(loader, "pop_bad_image_count", int)())
                self._log(stats, step=done, epoch=epoch, lr=lr)
            # During a run of bad steps the last good checkpoint is kept as it is.
            if self._should_save(done) and (bad_in_a_row == 0 or done == self.total_steps):
                self._save(done)

        bar.close()
        elapsed = time.perf_counter() - started
        rate = samples_seen / elapsed if elapsed > 0 else float("nan")
        log.info(
            "training done: %d iterations in %.1f s, %.1f samples/s",
            self.total_steps - start_step,
            elapsed,
            rate,
        )
        return {"step": self.total_steps, "samples_per_s": rate, "seconds": elapsed}

    @staticmethod
    def _next_batch(loader: Iterator[dict]) -> dict:
        # torch's DataLoader draws from the global RNG when it starts an iterator, which
        # a resumed run does at another point than an uninterrupted one; isolating the
        # loader keeps the model's random stream (dropout, prompt choice) identical.
        with torch.random.fork_rng(devices=[]):
            return next(loader)

    def _forward_backward(self, samples: dict, last_micro: bool) -> tuple[torch.Tensor, bool]:
        """Forward, and backward unless some rank's loss is not finite; ``(loss, finite)``."""
        accum = self.run_cfg.accum_grad_iters
        # Only the last micro-step of a window all-reduces the gradients.
        no_sync = self.world_size > 1 and not last_micro
        if self.fsdp:
            fsdp.set_gradient_sync(self.model, last_micro)
            no_sync = False
        with self.model.no_sync() if no_sync else nullcontext():
            with self.precision.autocast():
                loss = self.task.train_step(self.model, samples)["loss"]
            # Every rank must take the same branch, or DDP's all-reduce would hang.
            finite = _all_agree(torch.isfinite(loss.detach()).all(), self.device)
            if finite:
                scaled = loss / accum
                if self.precision.scaler is not None:
                    scaled = self.precision.scaler.scale(scaled)
                scaled.backward()
        return loss, finite

    def _optimizer_step(self, params: list[nn.Parameter]) -> float | None:
        """Clip, step and zero the gradients; returns the gradient norm (None under a scaler
        that skipped the step because of inf/NaN gradients, which is its normal warm-up)."""
        scaler = self.precision.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        max_norm = self.run_cfg.grad_clip if self.run_cfg.grad_clip else float("inf")
        norm = fsdp.full_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            skipped = scaler.get_scale() < scale
            self.optimizer.zero_grad(set_to_none=True)
            return None if skipped else norm
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _should_save(self, done: int) -> bool:
        every = self.run_cfg.save_every_iters
        return done % self.run_cfg.iters_per_epoch == 0 or bool(every and done % every == 0)

    def _set_aside_earlier_run(self) -> None:
        """Move what an earlier run without checkpoints (killed before its first) left
        here into ``old_run_<n>/``, so that this fresh start begins its own log.jsonl,
        TensorBoard curves and W&B run instead of appending to the killed run's.

        Each record is renamed, not copied: a kill in between loses nothing, and the
        next start moves what is left into the next folder.
        """
        found = [name for name in RUN_RECORDS if (self.output_dir / name).exists()]
        if not found:
            return
        n = 1
        while (self.output_dir / f"old_run_{n}").exists():
            n += 1
        aside = self.output_dir / f"old_run_{n}"
        aside.mkdir()
        for name in found:
            (self.output_dir / name).rename(aside / name)
        log.warning(
            "%s holds no checkpoint but the records of an earlier run: moved %s to %s, "
            "so that this run starts afresh with its own log",
            self.output_dir,
            ", ".join(found),
            aside,
        )

    def _trim_log(self, step: int) -> None:
        """Drop the lines of ``log.jsonl`` past ``step``, the iteration resumed from.

        A killed run logged the iterations after its last checkpoint, which the
        resumed run repeats; without the trim every reader (the recipe summary,
        plots) would see those steps twice. A line cut off by the kill goes too.
        The file is rewritten atomically, so a kill now loses nothing.
        """
        path = self.output_dir / LOG_NAME
        if not path.is_file():
            return
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(entry, dict) and int(entry.get("step", 0)) > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            atomic_write_text("".join(f"{line}\n" for line in kept), path)
            log.info(
                "log.jsonl: dropped %d line(s) past iteration %d, which this run repeats",
                dropped,
                step,
            )

    def _log(self, stats: dict[str, float], **extra: Any) -> None:
        stats = {**extra, **_mean_across_ranks(stats, self.device)}
        stats["bad_steps"], stats["bad_images"] = int(stats["bad_steps"]), int(stats["bad_images"])
        if self.is_main:
            line = json.dumps({k: _json_number(v) for k, v in stats.items()})
            with open(self.output_dir / LOG_NAME, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
            log.debug(line)
            if self.tracker is not None:
                self.tracker.log(stats, step=stats["step"])


class _Meter:
    """Running means between two log lines, and the throughput since the last one."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.bad = 0
        self.samples = 0
        self.since = time.perf_counter()

    def add(self, loss: float | None, samples: int, grad_norm: float | None) -> None:
        if loss is None:
            self.bad += 1
        else:
            self.losses.append(loss)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.norms.append(grad_norm)
        self.samples += samples

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.since
        return self.samples / elapsed if elapsed > 0 else 0.0

    def flush(self) -> dict[str, float]:
        stats = {
            "loss": sum(self.losses) / len(self.losses) if self.losses else float("nan"),
            "grad_norm": sum(self.norms) / len(self.norms) if self.norms else float("nan"),
            "bad_steps": float(self.bad),
            "samples_per_s": self.rate(),
        }
        self._reset()
        return stats


def _all_agree(flag: torch.Tensor, device: torch.device) -> bool:
    """True only if ``flag`` holds on every rank, so that all ranks skip a step together."""
    if not dist.is_dist():
        return bool(flag)
    value = flag.to(device=device, dtype=torch.int32).reshape(1)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
    return bool(value.item())


def _mean_across_ranks(stats: dict[str, float], device: torch.device) -> dict[str, float]:
    """Losses and norms averaged over ranks, unreadable images summed; the rest as is
    (throughput already counts every rank's samples; all ranks skip the same steps)."""
    if not dist.is_dist():
        return stats
    keys = ["loss", "grad_norm", "bad_images"]
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    torch_dist.all_reduce(values)
    out = dict(stats)
    out["loss"], out["grad_norm"], out["bad_images"] = values.tolist()
    out["loss"] /= dist.get_world_size()
    out["grad_norm"] /= dist.get_world_size()
    return out


def _broadcast_object(obj: Any) -> Any:
    if not dist.is_dist():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def train_job(cfg: Config, device: torch.device) -> dict:
    """Train the job of ``cfg`` on ``device``: its task's datasets and model, its runner's
    loop; the runner's final stats (``xraygpt train``)."""
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner = registry.get_runner_class(cfg.run_cfg.runner)(
        cfg, task, model, datasets, device=device
    )
    return runner.train()
