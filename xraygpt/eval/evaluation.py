"""The evaluation loop of ``test.py``: generate a report per image, score, write.

For every dataset of the config and every split of ``run.test_splits``:

1. Take the split in file order, cut to its first ``run.max_samples``; under
   torchrun each rank takes the items ``rank::world_size``.
2. Generate in batches of ``run.batch_size_eval`` with the fixed prompt
   ``run.eval_prompt``, greedy (``run.num_beams: 1``) or beam search, no
   sampling: the model pads on the left, so the answers do not depend on the
   batch size.
3. Gather on rank 0, restore the split order, drop repeated images (a bad
   image is replaced by the next readable one, which can then appear twice).
4. Add the baselines (:mod:`xraygpt.eval.metrics.baselines`) from the training
   split, score everything (:mod:`xraygpt.eval.metrics.scoring`), write
   ``predictions.jsonl``, ``metrics.json`` and ``metrics.png`` to ``<run.output_dir>/<job>/``
   (``<dataset>_<split>/`` inside it when the run has several dataset/split
   pairs) and print the table. Images the dataset skipped (``on_bad_image:
   skip``: unreadable, or below ``min_image_size``) are listed under
   ``skipped_images`` (``count``, ``image_ids``) in ``metrics.json`` and the table.

The reference of an image is the report of its annotation as written in
``filter_cap.json`` (punctuation kept, not cut to the text processor's word
limit); shard datasets, which keep no raw annotation, give the processed
caption instead. ``metrics.json`` says which under ``run.reference``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from xraygpt.common import dist
from xraygpt.common.config import ConfigError
from xraygpt.common.generation import GenerationOptions
from xraygpt.common.io import atomic_write_json

log = logging.getLogger(__name__)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model built on the CPU to ``device``; one that placed its own parts
    (``low_resource``: an 8-bit LLM on a GPU, the ViT on the CPU) stays as it is."""
    placed = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if placed <= {"cpu"}:
        return model.to(device)
    log.info("the model placed itself on %s: not moved", ", ".join(sorted(placed)))
    return model


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from xraygpt.data.caption_dataset import collate

    return collate(samples)


def _batches(
    dataset: Dataset,
    batch_size: int,
    max_samples: int | None,
    rank: int,
    world_size: int,
    num_workers: int,
) -> tuple[int, Iterator[tuple[list[int], dict[str, Any]]]]:
    """This rank's share of the (cut) split: its size and ``(indices, batch)`` pairs."""
    if isinstance(dataset, IterableDataset):
        # One unshuffled pass over the shards; the share is taken while reading.
        def stream() -> Iterator[tuple[list[int], dict[str, Any]]]:
            indices: list[int] = []
            samples: list[dict[str, Any]] = []
            for index, sample in enumerate(dataset):
                if max_samples is not None and index >= max_samples:
                    break
                if index % world_size != rank:
                    continue
                indices.append(index)
                samples.append(sample)
                if len(samples) == batch_size:
                    yield indices, _collate(samples)
                    indices, samples = [], []
            if samples:
                yield indices, _collate(samples)

        return -1, stream()
    n = len(dataset)  # type: ignore[arg-type]
    if max_samples is not None:
        n = min(n, max_samples)
    share = list(range(rank, n, world_size))
    loader = DataLoader(
        Subset(dataset, share),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )

    def mapped() -> Iterator[tuple[list[int], dict[str, Any]]]:
        start = 0
        for batch in loader:
            size = len(batch["image_id"])
            yield share[start : start + size], batch
            start += size

    return len(share), mapped()


def generate_reports(
    model: nn.Module,
    dataset: Dataset,
    prompt: str,
    options: GenerationOptions,
    *,
    batch_size: int = 8,
    max_samples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "generating",
) -> list[dict[str, Any]]:
    """This rank's generated reports, in split order.

    Each item: ``index`` (position in the split), ``image_id``, ``generated``
    and ``caption`` (the processed caption of the sample). ``batch_size`` (>= 1) and
    ``max_samples`` (>= 1 or None) are ``run.batch_size_eval`` and ``run.max_samples``,
    checked when the config loads.
    """
    from tqdm import tqdm

    core = getattr(model, "module", model)  # DDP-wrapped or not
    core.eval()
    total, batches = _batches(dataset, batch_size, max_samples, rank, world_size, num_workers)
    kwargs = options.as_kwargs()
    out: list[dict[str, Any]] = []
    with (
        tqdm(
            total=total if total >= 0 else None,
            desc=desc,
            unit="report",
            disable=not progress or rank != 0,
        ) as bar,
        torch.inference_mode(),
    ):
        for indices, batch in batches:
            images = batch["image"]
            texts = core.generate(images, [prompt] * images.shape[0], **kwargs)
            if len(texts) != images.shape[0]:
                raise RuntimeError(
                    f"model.generate returned {len(texts)} answers for {images.shape[0]} images"
                )
            for j, index in enumerate(indices):
                out.append(
                    {
                        "index": index,
                        "image_id": str(batch["image_id"][j]),
                        "generated": texts[j].strip(),
                        "caption": batch["caption"][j],
                    }
                )
            bar.update(len(indices))
    return out


def merge_shards(shards: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """All ranks' items in split order, each image once (its first occurrence)."""
    items = sorted((dict(item) for shard in shards for item in shard), key=lambda r: r["index"])
    seen: set[str] = set()
    merged = []
    for item in items:
        if item["image_id"] in seen:
            continue
        seen.add(item["image_id"])
        merged.append(item)
    return merged


def skipped_image_ids(
    dataset: Dataset,
    items: Sequence[Mapping[str, Any]],
    max_samples: int | None,
    recorded: Sequence[str] = (),
) -> list[str]:
    """The images of the (cut) split that got no report: those the dataset skipped.

    A folder dataset replaces a bad image by the next readable one, so its skipped
    images are the annotated ids of the cut split missing from ``items``; a shard
    dataset leaves bad images out and records their ids itself (``skipped_ids``,
    gathered from every rank into ``recorded``).
    """
    annotations = getattr(dataset, "annotations", None)
    if annotations is None:
        return list(dict.fromkeys(str(i) for i in recorded))
    cut = annotations if max_samples is None else annotations[:max_samples]
    got = {str(item["image_id"]) for item in items}
    return [i for i in dict.fromkeys(str(a.image_id) for a in cut) if i not in got]


def raw_reports(dataset: Dataset) -> dict[str, str] | None:
    """``image_id -> report`` as annotated, or ``None`` for datasets without annotations."""
    annotations = getattr(dataset, "annotations", None)
    if annotations is None:
        return None
    return {str(a.image_id): a.caption for a in annotations}


def compute_baselines(
    train: Dataset | None,
    test: Dataset,
    image_ids: Sequence[str],
    *,
    nearest_neighbour: bool = False,
    progress: bool = True,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Baseline reports per image, and the reasons for those that could not be made."""
    from xraygpt.eval.metrics.baselines import most_frequent_report, nearest_neighbour_reports

    reports: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    wanted = ["most_frequent"] + (["nearest_neighbour"] if nearest_neighbour else [])
    annotations = getattr(train, "annotations", None) if train is not None else None
    if annotations is None:
        why = (
            "the dataset has no train split"
            if train is None
            else "the train split has no annotation list (shard datasets)"
        )
        return reports, {f"baseline {name}": why for name in wanted}
    reports["most_frequent"] = [most_frequent_report([a.caption for a in annotations])] * len(
        image_ids
    )
    if nearest_neighbour:
        if not hasattr(test, "image_dir") or not hasattr(train, "image_path"):
            skipped["baseline nearest_neighbour"] = "needs image folders (data_type: images)"
        else:
            train_paths = [train.image_path(i) for i in range(len(annotations))]  # type: ignore[union-attr]
            ext = test.image_ext  # type: ignore[attr-defined]
            query = [Path(test.image_dir) / f"{image_id}{ext}" for image_id in image_ids]  # type: ignore[attr-defined]
            reports["nearest_neighbour"] = nearest_neighbour_reports(
                train_paths, [a.caption for a in annotations], query, progress=progress
            )
    return reports, skipped


def evaluate_split(
    cfg: Any,
    model: nn.Module,
    datasets: Mapping[str, Mapping[str, Dataset]],
    name: str,
    split: str,
    out_dir: Path,
    *,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Evaluate one split of one dataset; the metrics on rank 0, ``None`` elsewhere."""
    from xraygpt.eval.metrics.scoring import (
        format_table,
        make_record,
        score_records,
        write_predictions,
    )

    run = cfg.run_cfg
    by_split = datasets[name]
    if split not in by_split:
        raise ConfigError(
            f"dataset {name!r} has no split {split!r} (run.test_splits); "
            f"it has: {', '.join(sorted(by_split)) or 'none'}"
        )
    dataset = by_split[split]
    if split == "train":
        log.warning(
            "evaluating the train split: it is read with the train processors (random crops), "
            "so its reports change from run to run"
        )
    prompt = str(run.eval_prompt)
    options = GenerationOptions.from_run_config(run)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    started = time.perf_counter()
    local = generate_reports(
        model,
        dataset,
        prompt,
        options,
        batch_size=int(run.batch_size_eval),
        max_samples=run.max_samples,
        rank=rank,
        world_size=world_size,
        num_workers=int(run.num_workers),
        progress=progress,
        desc=f"{name}/{split}",
    )
    seconds = time.perf_counter() - started
    shards = dist.all_gather_objects(local)
    times = dist.all_gather_objects(seconds)
    shard_skips = dist.all_gather_objects(list(getattr(dataset, "skipped_ids", [])))
    if not dist.is_main_process():
        return None
    items = merge_shards(shards)
    recorded = [i for rank_ids in shard_skips for i in rank_ids]
    skipped_ids = skipped_image_ids(dataset, items, run.max_samples, recorded)
    if skipped_ids:
        log.warning(
            "%s/%s: %d image(s) skipped as unreadable or too small: %s",
            name,
            split,
            len(skipped_ids),
            ", ".join(skipped_ids[:10]) + (" ..." if len(skipped_ids) > 10 else ""),
        )
    if not items:
        raise RuntimeError(f"dataset {name}/{split}: no reports were generated")
    wall = max(times)
    raw = raw_reports(dataset)
    references = [raw.get(it["image_id"], it["caption"]) if raw else it["caption"] for it in items]
    image_ids = [it["image_id"] for it in items]
    baselines, baseline_skips = compute_baselines(
        by_split.get("train"),
        dataset,
        image_ids,
        nearest_neighbour=bool(run.nn_baseline),
        progress=progress,
    )
    records = [
        make_record(
            it["image_id"],
            prompt,
            it["generated"],
            ref,
            {b: texts[i] for b, texts in baselines.items()},
        )
        for i, (it, ref) in enumerate(zip(items, references, strict=True))
    ]
    run_info = {
        "config": str(cfg.cfg_path) if getattr(cfg, "cfg_path", None) else None,
        "dataset": name,
        "split": split,
        "ckpt": _ckpt_of(cfg),
        "reference": "annotation report (filter_cap.json)" if raw else "processed caption",
        "generation": {"prompt": prompt, **options.as_kwargs()},
        "batch_size": int(run.batch_size_eval),
        "max_samples": run.max_samples,
        "world_size": world_size,
        "device": str(getattr(getattr(model, "module", model), "device", "unknown")),
        "generation_seconds": wall,
        "reports_per_second": len(items) / wall if wall > 0 else None,
    }
    # Predictions first: should scoring fail, xraygpt score can redo it.
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = write_predictions(records, out_dir / "predictions.jsonl")
    metrics = score_records(
        records,
        meteor=bool(run.meteor),
        run_info=run_info,
        bootstrap=int(run.bootstrap),
        seed=int(run.seed),
    )
    metrics["skipped"].update(baseline_skips)
    metrics["skipped_images"] = {"count": len(skipped_ids), "image_ids": skipped_ids}
    metrics_path = out_dir / "metrics.json"
    atomic_write_json(metrics, metrics_path)
    from xraygpt.eval.plots import plot_metrics

    picture = plot_metrics(metrics, out_dir / "metrics.png")
    speed = run_info["reports_per_second"]
    rate = f"{speed:.2f} reports/s" if speed else "rate unknown"
    print(f"\n== {name}/{split}: {len(records)} reports, {rate} ==")
    print(format_table(metrics))
    print(
        f"predictions: {predictions}\nmetrics:     {metrics_path}\npicture:     {picture}",
        flush=True,
    )
    return metrics


def _ckpt_of(cfg: Any) -> Any:
    try:
        ckpt = cfg.model_cfg.get("ckpt")
    except AttributeError:
        return None
    if ckpt is None or isinstance(ckpt, str | int | float):
        return ckpt
    return [str(c) for c in ckpt]


def run_evaluation(
    cfg: Any, model: nn.Module, datasets: Mapping[str, Mapping[str, Dataset]]
) -> dict:
    """Every dataset x ``run.test_splits``; ``{"<dataset>/<split>": metrics}`` on rank 0."""
    splits = list(cfg.run_cfg.test_splits)
    if not splits:
        raise ConfigError("run.test_splits is empty: name the split(s) to evaluate, e.g. [test]")
    if not datasets:
        raise ConfigError("the config names no datasets to evaluate (datasets: section)")
    pairs = [(name, split) for name in datasets for split in splits]
    root = Path(cfg.output_dir)
    results = {}
    for name, split in pairs:
        out_dir = root if len(pairs) == 1 else root / f"{name}_{split}"
        metrics = evaluate_split(cfg, model, datasets, name, split, out_dir)
        if metrics is not None:
            results[f"{name}/{split}"] = metrics
    dist.barrier()
    return results


def evaluate_job(cfg: Any, device: torch.device) -> dict[str, Any]:
    """Evaluate the model of ``cfg`` (with its weights) on its datasets' test splits, on
    ``device``: :func:`run_evaluation`'s results (``xraygpt evaluate``)."""
    from xraygpt.common.registry import registry
    from xraygpt.models.factory import build_model

    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = place_model(build_model(cfg.model_cfg), device)
    return run_evaluation(cfg, model, datasets)
