"""Dataset checks: storage folder, annotation schema and split counts, image files, decoding."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xraygpt.validate.checklist import Checklist


def _ext(ext: str) -> str:
    return ext if ext.startswith(".") else f".{ext}"


def check_dataset_files(
    out: Checklist,
    name: str,
    storage: Path,
    ann_path: Path,
    image_dir: Path,
    image_ext: str,
    *,
    sample_images: int = 32,
    needed_splits: Iterable[str] = ("train",),
    storage_key: str = "",
    seed: int = 0,
    prepare: str = "",
    min_image_size: int = 32,
) -> None:
    """One dataset in the ``filter_cap.json`` + ``image/<image_id><ext>`` layout.

    ``prepare`` is the command that writes the folder (the builder's PREPARE_COMMAND);
    sampled images with a side below ``min_image_size`` pixels are listed as bad,
    as training would treat them.
    """
    from xraygpt.data.annotations import AnnotationError, load_annotations, split_annotations

    group = "datasets"
    key = storage_key or f"datasets.{name}"
    prepare = prepare or "xraygpt prepare ... (see dataset/README.md)"
    if not storage.is_dir():
        out.failed(
            group,
            f"{name}: storage",
            f"{storage} is not a folder (relative paths start at {Path.cwd()})",
            f"set {key} to the folder that holds the data, or prepare it there: {prepare}",
        )
        for what in ("annotations", "image files", "sample images"):
            out.skip(group, f"{name}: {what}", "no storage folder")
        return
    out.passed(group, f"{name}: storage", str(storage))

    entries = None
    if not ann_path.is_file():
        message = f"{ann_path} not found"
        fix = f"write it with: {prepare}; or point {key} at the folder that has it"
    else:
        try:
            entries = load_annotations(ann_path)
            message, fix = "", ""
        except AnnotationError as err:
            message = str(err)
            fix = (
                f"repair {ann_path} at the entry named: it must be "
                '{"annotations": [{"image_id": ..., "caption": ..., "split": ...}, ...]}; '
                f"writing it again is safest: {prepare}"
            )
        except (OSError, UnicodeDecodeError) as err:
            message, fix = f"cannot read {ann_path}: {err}", "check the file's permissions"
    if entries is None:
        out.failed(group, f"{name}: annotations", message, fix)
        for what in ("image files", "sample images"):
            out.skip(group, f"{name}: {what}", "no usable annotations")
        return
    splits = split_annotations(entries)
    counts = ", ".join(f"{split} {len(items)}" for split, items in splits.items()) or "empty"
    absent = [s for s in dict.fromkeys(needed_splits) if s not in splits]
    out.add(
        group,
        f"{name}: annotations",
        not absent,
        f"{ann_path}: {len(entries)} entries ({counts})"
        + (f"; no entries for split(s) {', '.join(absent)} the run uses" if absent else ""),
        f'add entries with "split": {absent[0]!r} to {ann_path} or drop that split from '
        "run.train_splits / run.valid_splits / run.test_splits"
        if absent
        else "",
    )

    ext = _ext(image_ext)
    try:
        files = {entry.name for entry in os.scandir(image_dir) if entry.is_file()}
    except OSError as err:
        out.failed(
            group,
            f"{name}: image files",
            f"cannot list {image_dir}: {err}",
            f"put the images in {image_dir} (named <image_id>{ext})",
        )
        out.skip(group, f"{name}: sample images", "no image folder")
        return
    ids = list(dict.fromkeys(entry.image_id for entry in entries))
    missing = [i for i in ids if f"{i}{ext}" not in files]
    used = {f"{i}{ext}" for i in ids}
    orphans = sum(1 for f in files if f not in used)
    hint = ""
    if missing:
        wanted = set(missing[:1000])
        other = {Path(f).suffix for f in files if Path(f).stem in wanted}
        if other:
            hint = f" the folder has them as {', '.join(sorted(other))}: set image_ext accordingly;"
    out.add(
        group,
        f"{name}: image files",
        not missing,
        f"{len(ids) - len(missing)} of {len(ids)} annotated images found in {image_dir}"
        + (f" ({orphans} files not annotated)" if orphans else ""),
        f"{hint} copy the missing images into {image_dir} as <image_id>{ext}, or rewrite the "
        "annotation file without them",
        details=[f"missing: {image_dir / (i + ext)}" for i in missing[:10]]
        + ([f"... and {len(missing) - 10} more"] if len(missing) > 10 else []),
    )

    present = [i for i in ids if f"{i}{ext}" in files]
    if sample_images == 0 or not present:
        out.skip(
            group,
            f"{name}: sample images",
            "no images to sample" if present == [] else "--sample-images 0",
        )
        return
    _check_sample_images(
        out, name, image_dir, ext, present, sample_images, seed, min_image_size, f"datasets.{name}"
    )


def _check_sample_images(
    out: Checklist,
    name: str,
    image_dir: Path,
    ext: str,
    ids: list[str],
    n: int,
    seed: int,
    min_size: int = 0,
    key: str = "",
) -> None:
    from PIL import Image

    from xraygpt.processors.dicom import looks_like_dicom
    from xraygpt.processors.image_io import load_image

    chosen = ids if n < 0 or n >= len(ids) else random.Random(seed).sample(ids, n)
    bad = []
    for image_id in chosen:
        path = image_dir / f"{image_id}{ext}"
        try:
            if not looks_like_dicom(path):  # PIL cannot open a DICOM; load_image can
                with Image.open(path) as probe:
                    probe.verify()  # checksums of PNG chunks; load_image below decodes
            load_image(path, min_size=min_size)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            bad.append(f"{path}: {type(err).__name__}: {err}")
    out.add(
        "datasets",
        f"{name}: sample images",
        not bad,
        f"{len(chosen) - len(bad)} of {len(chosen)} images decode"
        + (" (all)" if len(chosen) == len(ids) else f" (a random sample of the {len(ids)})")
        + (f", each at >= {min_size} px a side" if min_size else ""),
        "replace the unreadable or too small files (re-download or re-extract them) or remove "
        "their entries from the annotation file"
        + (f" (or lower {key}.min_image_size)" if min_size and key else "")
        + "; then check the rest with --sample-images -1",
        details=bad[:20] + ([f"... and {len(bad) - 20} more"] if len(bad) > 20 else []),
    )


# --------------------------------------------------------------------------- datasets (config)


def _needed_splits(run_cfg: Any) -> list[str]:
    splits = list(run_cfg.train_splits or []) + list(run_cfg.valid_splits or [])
    if run_cfg.evaluate:
        splits = list(run_cfg.test_splits or [])
    return list(dict.fromkeys(splits))


def check_datasets(out: Checklist, cfg: Any, sample_images: int) -> None:
    """Every dataset of the config, through its builder's own idea of the paths."""
    from xraygpt.common.registry import registry

    group = "datasets"
    if not cfg.datasets_cfg:
        out.skip(group, "datasets", "the config names no dataset")
        return
    needed = _needed_splits(cfg.run_cfg)
    image_size = cfg.model_cfg.get("image_size") if "model" in cfg.config else None
    for name, ds_cfg in cfg.datasets_cfg.items():
        try:
            builder = registry.get_builder_class(name)(ds_cfg)
        except Exception as err:  # noqa: BLE001 - a builder's config errors vary
            out.failed(
                group,
                f"{name}: builder",
                f"{type(err).__name__}: {err}",
                f"fix datasets.{name} in the config",
            )
            continue
        if hasattr(builder, "conversation_files"):  # text only: files of conversations
            from xraygpt.validate.conversation_checks import check_conversation_files

            check_conversation_files(out, name, builder, needed)
            continue
        _check_processors(out, name, builder, image_size)
        if builder.config.get("data_type") == "wds":
            _check_shards(out, name, builder)
            continue
        storage = getattr(builder, "storage", None)
        if storage is None:
            out.skip(
                group, f"{name}: files", f"builder {type(builder).__name__} names no storage folder"
            )
            continue
        hint = getattr(builder, "PREPARE_COMMAND", "")
        check_dataset_files(
            out,
            name,
            Path(storage),
            Path(builder.ann_path),
            Path(builder.image_dir),
            builder.image_ext,
            sample_images=sample_images,
            needed_splits=needed,
            storage_key=f"datasets.{name}.build_info.storage",
            seed=int(cfg.run_cfg.seed),
            prepare=hint,
            min_image_size=int(builder.config.get("min_image_size", 0)),
        )


def _check_processors(out: Checklist, name: str, builder: Any, image_size: int | None) -> None:
    """Every processor builds, and images come out at the size the model expects."""
    build = getattr(builder, "build_processors", None)
    if build is None:
        return
    problems = []
    for kind in ("vis_processor", "text_processor"):
        for stage in ("train", "eval"):
            key = f"datasets.{name}.{kind}.{stage}"
            try:
                processor = build(kind, stage)
            except Exception as err:  # noqa: BLE001 - processor config errors vary
                problems.append(f"{key}: {err}")
                continue
            size = getattr(processor, "image_size", None)
            if kind == "vis_processor" and image_size and size and size != image_size:
                problems.append(
                    f"{key}.image_size={size} but model.image_size={image_size}: "
                    "the vision encoder would get images of the wrong size"
                )
    out.add(
        "datasets",
        f"{name}: processors",
        not problems,
        "train and eval processors build"
        + (f", images at {image_size} px as the model expects" if image_size else "")
        if not problems
        else f"{len(problems)} processor problem(s)",
        f"fix the processor entries named above under datasets.{name} (image_size must equal "
        "model.image_size)",
        details=problems,
    )


def _check_shards(out: Checklist, name: str, builder: Any) -> None:
    import tarfile

    from omegaconf import DictConfig, OmegaConf

    from xraygpt.data.wds_dataset import expand_shards

    shards = builder.config.build_info.shards
    if shards is None:
        out.failed(
            "datasets",
            f"{name}: shards",
            "data_type wds but build_info.shards is not set",
            f"set datasets.{name}.build_info.shards to a brace pattern such as "
            f"shards/{name}/train-{{000000..000009}}.tar",
        )
        return
    patterns = (
        {"train": shards}
        if isinstance(shards, str)
        else dict(OmegaConf.to_container(shards) if isinstance(shards, DictConfig) else shards)
    )
    problems, total = [], 0
    for split, pattern in patterns.items():
        try:
            urls = expand_shards(pattern)
        except FileNotFoundError as err:
            problems.append(f"{split}: {err}")
            continue
        total += len(urls)
        for url in urls:
            try:
                with tarfile.open(url) as tar:
                    tar.next()
            except (tarfile.TarError, OSError) as err:
                problems.append(f"{url}: not a readable tar file ({err})")
    out.add(
        "datasets",
        f"{name}: shards",
        not problems,
        f"{total} shard(s) readable ({', '.join(patterns)})"
        if not problems
        else f"{len(problems)} shard problem(s)",
        "write the shards again with `xraygpt shards ...` or fix "
        f"datasets.{name}.build_info.shards",
        details=problems,
    )
