"""Raw MIMIC-CXR / OpenI downloads -> ``filter_cap.json`` + resized images.

    xraygpt prepare openi --reports NLMCXR_reports.tgz \\
        [--images NLMCXR_png/] --out dataset/openi
    xraygpt prepare mimic --reports mimic-cxr-reports.zip \\
        --images <mimic-cxr-jpg root> --split-csv mimic-cxr-2.0.0-split.csv.gz --out dataset/mimic
    xraygpt prepare mimic --reports mimic-cxr-reports.zip \\
        --dicom <mimic-cxr root> --split-csv mimic-cxr-2.0.0-split.csv.gz --out dataset/mimic

Each report is filtered and cleaned (:mod:`xraygpt.data.report_cleaning`);
every image of a kept report becomes one annotation with the report's summary,
the split and the report id. With ``--images`` the images are copied to
``<out>/image/`` with the longer side at most ``--max-side`` pixels (images
already there and newer than their source are kept, so an interrupted run can
be restarted). ``prepare_stats.json`` records the counts. The output depends
only on the inputs and the options.

MIMIC-CXR's original DICOM release (``--dicom``, ``files/pXX/p<subject>/s<study>/
<dicom_id>.dcm``) is windowed to 8-bit JPEGs (:mod:`xraygpt.processors.dicom`),
keeping the frontal views (ViewPosition PA and AP) unless ``--views`` says
otherwise; ``prepare_stats.json`` then counts the images of each view.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.common.errors import DataError
from xraygpt.common.io import atomic_write_json
from xraygpt.data.annotations import SPLITS, Annotation, write_annotations
from xraygpt.data.openi import OpenIReport, read_openi_reports
from xraygpt.data.report_cleaning import (
    EMPTY_AFTER_CLEANING,
    FILTER_RULES,
    CleaningStats,
    filter_reason,
    mimic_sections,
    summarize,
)
from xraygpt.processors.image_io import dicom_downscale_job, downscale_job

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 512
# Frontal views: what XrayGPT and MIMIC-CXR report-generation work train on.
DEFAULT_VIEWS = ("PA", "AP")
NO_VIEW = "NONE"  # the name --views uses for a DICOM without ViewPosition


class PrepareError(DataError):
    """Input that prepare cannot use; the message names the file."""


@dataclass
class Report:
    report_id: str
    findings: str | None
    impression: str | None
    image_ids: list[str]
    split: str | None = None  # from the source (MIMIC); None: assigned by prepare
    image_sources: dict[str, Path] = field(default_factory=dict)  # image_id -> raw file
    labels: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- OpenI ------------------------------------------------------------------------


def _openi_report(report: OpenIReport) -> Report:
    return Report(
        report_id=report.uid,
        findings=report.findings,
        impression=report.impression,
        image_ids=list(report.image_ids),
    )


def seeded_split(report_id: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Split of a report from a hash of (seed, report id): stable whatever else changes."""
    digest = hashlib.sha256(f"{seed}:{report_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


# -- MIMIC-CXR -----------------------------------------------------------------------

_MIMIC_REPORT = re.compile(r"(?:^|/)p(\d{2})/p(\d+)/s(\d+)\.txt$")
_MIMIC_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> Iterator[dict[str, str]]:
    if not path.is_file():
        raise PrepareError(f"{what} not found: {path}")
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        missing = [col for col in required if col not in (reader.fieldnames or [])]
        if missing:
            raise PrepareError(
                f"{path}: {what} lacks column(s) {', '.join(missing)} "
                f"(has: {', '.join(reader.fieldnames or [])})"
            )
        yield from reader


def read_mimic_split(path: Path) -> dict[str, dict[str, Any]]:
    """``mimic-cxr-2.0.0-split.csv(.gz)`` -> {study id 's5...': {subject, dicoms, split}}."""
    studies: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(
        _read_csv(path, ("dicom_id", "study_id", "subject_id", "split"), "MIMIC split CSV"),
        start=2,
    ):
        split = _MIMIC_SPLITS.get(row["split"].strip())
        if split is None:
            raise PrepareError(
                f"{path}, line {line}: unknown split {row['split']!r} "
                f"(expected train, validate or test)"
            )
        study = f"s{row['study_id'].strip()}"
        entry = studies.setdefault(
            study, {"subject": f"p{row['subject_id'].strip()}", "dicoms": [], "split": split}
        )
        entry["dicoms"].append(row["dicom_id"].strip())
    return studies


def read_chexpert_labels(path: Path) -> dict[str, dict[str, int]]:
    """``mimic-cxr-2.0.0-chexpert.csv(.gz)`` -> {study: {observation: 1 if positive else 0}}."""
    labels = {}
    for row in _read_csv(path, ("study_id", *CHEXPERT_OBSERVATIONS), "CheXpert label CSV"):
        labels[f"s{row['study_id'].strip()}"] = {
            name: int(row[name].strip() in ("1", "1.0")) for name in CHEXPERT_OBSERVATIONS
        }
    return labels


def _mimic_report_texts(path: Path) -> Iterator[tuple[str, str, str]]:
    """(subject 'p1...', study 's5...', text) for every report in a zip or a folder."""
    if not path.exists():
        raise PrepareError(
            f"MIMIC-CXR reports not found: {path}; give mimic-cxr-reports.zip or its "
            f"extracted files/ folder (from physionet.org/content/mimic-cxr)"
        )
    if path.is_dir():
        found = []
        for file in path.rglob("s*.txt"):
            match = _MIMIC_REPORT.search(file.as_posix())
            if match:
                found.append((match.group(2), match.group(3), file))
        found.sort()
        for subject, study, file in found:
            yield f"p{subject}", f"s{study}", file.read_text(encoding="utf-8", errors="replace")
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise PrepareError(f"{path}: not a readable zip archive: {err}") from err
    with archive:
        names = []
        for name in archive.namelist():
            match = _MIMIC_REPORT.search(name)
            if match:
                names.append((match.group(2), match.group(3), name))
        names.sort()
        for subject, study, name in names:
            text = archive.read(name).decode("utf-8", errors="replace")
            yield f"p{subject}", f"s{study}", text


def mimic_image_root(images: Path) -> Path:
    """The folder holding ``pXX/pSUBJECT/sSTUDY/<dicom>.jpg`` (MIMIC-CXR-JPG's ``files/``)."""
    return images / "files" if (images / "files").is_dir() else images


def read_mimic_reports(
    reports: Path,
    split_csv: Path,
    images: Path | None,
    chexpert_csv: Path | None,
    counts: Counter,
    image_suffix: str = ".jpg",
) -> Iterator[Report]:
    studies = read_mimic_split(split_csv)
    labels = read_chexpert_labels(chexpert_csv) if chexpert_csv else {}
    image_root = mimic_image_root(images) if images else None
    empty = True
    for subject, study, text in _mimic_report_texts(reports):
        empty = False
        info = studies.get(study)
        if info is None:
            counts["not_in_split_csv"] += 1
            continue
        findings, impression = mimic_sections(text)
        sources = {}
        if image_root is not None:
            folder = image_root / f"p{subject[1:3]}" / subject / study
            sources = {dicom: folder / f"{dicom}{image_suffix}" for dicom in info["dicoms"]}
        yield Report(
            report_id=study,
            findings=findings,
            impression=impression,
            image_ids=list(info["dicoms"]),
            split=info["split"],
            image_sources=sources,
            labels=labels.get(study),
            extra={"subject_id": subject},
        )
    if empty:
        raise PrepareError(
            f"{reports}: no reports found (expected files/pXX/pNNNNNNNN/sNNNNNNNN.txt)"
        )


# -- common pipeline ------------------------------------------------------------------


def _up_to_date(src: Path, dst: Path) -> bool:
    try:
        return dst.stat().st_size > 0 and dst.stat().st_mtime >= src.stat().st_mtime
    except FileNotFoundError:
        return False


def copy_images(
    jobs: list[tuple[Path, Path]], max_side: int, workers: int, stats: Counter
) -> set[Path]:
    """Copy (and shrink) ``src -> dst``; returns the destinations that failed."""
    todo = []
    for src, dst in jobs:
        if _up_to_date(src, dst):
            stats["already_present"] += 1
        else:
            todo.append((str(src), str(dst), max_side))
    failed: set[Path] = set()
    if not todo:
        return failed
    Path(todo[0][1]).parent.mkdir(parents=True, exist_ok=True)
    desc = f"images (longer side <= {max_side})" if max_side > 0 else "images"
    if workers <= 1:
        results: Iterable[tuple[str, str | None]] = map(downscale_job, todo)
        pool = None
    else:
        # spawn, not fork: forking a process that holds threads can deadlock, and the
        # job function's module imports only PIL and NumPy, so workers start fast.
        pool = get_context("spawn").Pool(workers)
        results = pool.imap_unordered(downscale_job, todo, chunksize=16)
    try:
        for dst, error in tqdm(results, total=len(todo), desc=desc, unit="img"):
            if error is None:
                stats["copied"] += 1
            else:
                stats["unreadable"] += 1
                failed.add(Path(dst))
                log.warning("cannot read source image for %s: %s", dst, error)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return failed


def copy_dicom_images(
    jobs: list[tuple[Path, Path]],
    max_side: int,
    workers: int,
    stats: Counter,
    views: tuple[str, ...] | None,
    view_counts: dict[str, Counter],
) -> set[Path]:
    """Window DICOMs ``src -> dst`` keeping ``views`` (None: all); returns the destinations
    left out (other views and failures). ``view_counts[view]`` gets ``seen`` and ``kept``."""
    todo = [(str(src), str(dst), max_side, views) for src, dst in jobs]
    dropped: set[Path] = set()
    if not todo:
        return dropped
    Path(todo[0][1]).parent.mkdir(parents=True, exist_ok=True)
    desc = f"DICOM -> JPEG (longer side <= {max_side})" if max_side > 0 else "DICOM -> JPEG"
    if workers <= 1:
        results: Iterable[tuple[str, str, str | None, str | None]] = map(dicom_downscale_job, todo)
        pool = None
    else:
        pool = get_context("spawn").Pool(workers)  # spawn: see copy_images
        results = pool.imap_unordered(dicom_downscale_job, todo, chunksize=16)
    try:
        for dst, status, view, error in tqdm(results, total=len(todo), desc=desc, unit="img"):
            stats[status] += 1
            if status == "unreadable":
                dropped.add(Path(dst))
                log.warning("cannot read source DICOM for %s: %s", dst, error)
                continue
            counter = view_counts.setdefault(view or NO_VIEW, Counter())
            counter["seen"] += 1
            if status == "other_view":
                dropped.add(Path(dst))
            else:
                counter["kept"] += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return dropped


def build_annotations(
    reports: Iterable[Report],
    *,
    dataset: str,
    out: Path,
    image_ext: str,
    images_given: bool,
    max_side: int,
    workers: int,
    split_of: Callable[[str], str],
    counts: Counter,
    copier: Callable[[list[tuple[Path, Path]], Counter], set[Path]] | None = None,
) -> tuple[list[Annotation], dict[str, Any]]:
    """Filter, clean and expand reports into annotations; copy images; return the stats.

    ``copier(jobs, image_stats)`` replaces the plain copy (the DICOM path); it
    returns the destinations whose annotations are left out."""
    cleaning = CleaningStats()
    dropped: Counter = Counter()
    image_stats: Counter = Counter()
    per_split: dict[str, Counter] = defaultdict(Counter)
    pending: list[tuple[Annotation, Path | None]] = []
    reports_in = 0
    kept = 0
    kept_without_images = 0
    image_ids_named = 0
    for report in tqdm(reports, desc=f"{dataset} reports", unit="report"):
        reports_in += 1
        reason = filter_reason(report.findings, report.impression)
        if reason is not None:
            dropped[reason] += 1
            continue
        summary = summarize(report.findings or "", report.impression or "", cleaning)
        if not summary:
            dropped[EMPTY_AFTER_CLEANING] += 1
            continue
        kept += 1
        split = report.split or split_of(report.report_id)
        per_split[split]["reports"] += 1
        if not report.image_ids:
            kept_without_images += 1
        for image_id in report.image_ids:
            image_ids_named += 1
            source = None
            if images_given:
                source = report.image_sources.get(image_id)
                if source is None or not source.is_file():
                    image_stats["missing_source"] += 1
                    if image_stats["missing_source"] <= 5:
                        log.warning("source image not found: %s", source)
                    continue
            ann = Annotation(
                image_id=image_id,
                caption=summary,
                split=split,
                report_id=report.report_id,
                labels=report.labels,
                extra=dict(report.extra),
            )
            pending.append((ann, source))

    failed: set[Path] = set()
    if images_given:
        jobs = [(src, out / "image" / f"{ann.image_id}{image_ext}") for ann, src in pending if src]
        if copier is not None:
            failed = copier(jobs, image_stats)
        else:
            failed = copy_images(jobs, max_side, workers, image_stats)
    annotations = []
    for ann, _source in pending:
        if images_given and out / "image" / f"{ann.image_id}{image_ext}" in failed:
            continue
        annotations.append(ann)
        per_split[ann.split]["images"] += 1

    stats: dict[str, Any] = {
        "dataset": dataset,
        "reports_in": reports_in + sum(counts.values()),  # counts: dropped while reading
        "dropped": {
            **{rule: counts.get(rule, 0) for rule in counts},
            **{rule: dropped.get(rule, 0) for rule in (*FILTER_RULES, EMPTY_AFTER_CLEANING)},
        },
        "kept_reports": kept,
        "kept_reports_without_images": kept_without_images,
        "image_ids_of_kept_reports": image_ids_named,
        "annotations": len(annotations),
        "splits": {
            split: {"reports": per_split[split]["reports"], "images": per_split[split]["images"]}
            for split in SPLITS
            if split in per_split
        },
        "cleaning": dict(sorted(cleaning.counts.items())),
    }
    if images_given:
        stats["images"] = {"max_side": max_side, **dict(sorted(image_stats.items()))}
    return annotations, stats


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"prepare {stats['dataset']}: {stats['reports_in']} reports in"]
    for rule, n in stats["dropped"].items():
        lines.append(f"  dropped  {rule:<32}{n:>8}")
    lines.append(f"  kept reports{'':<29}{stats['kept_reports']:>8}")
    lines.append(f"  kept reports without images{'':<14}{stats['kept_reports_without_images']:>8}")
    lines.append(f"  annotations (one per image){'':<14}{stats['annotations']:>8}")
    lines.append(f"  {'split':<10}{'reports':>10}{'images':>10}")
    for split, row in stats["splits"].items():
        lines.append(f"  {split:<10}{row['reports']:>10}{row['images']:>10}")
    for key, n in stats["cleaning"].items():
        lines.append(f"  cleaning {key:<32}{n:>8}")
    for key, n in stats.get("images", {}).items():
        lines.append(f"  images   {key:<32}{n:>8}")
    if "views" in stats:
        kept = stats["views"]["kept"]
        lines.append(f"  views kept: {kept if isinstance(kept, str) else ', '.join(kept)}")
        lines.append(f"  {'view':<10}{'seen':>10}{'kept':>10}")
        for view, row in stats["views"]["counts"].items():
            lines.append(f"  {view:<10}{row['seen']:>10}{row['kept']:>10}")
    return "\n".join(lines)


def write_outputs(out: Path, annotations: list[Annotation], stats: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_annotations(annotations, out / "filter_cap.json")
    atomic_write_json(stats, out / "prepare_stats.json")


def prepare_openi(
    reports: Path,
    out: Path,
    images: Path | None = None,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    workers: int = 1,
    seed: int = 42,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> dict[str, Any]:
    """Prepare OpenI; returns the stats (also written to ``<out>/prepare_stats.json``)."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise PrepareError(
            f"need val_fraction, test_fraction >= 0 with a sum below 1, "
            f"got {val_fraction}, {test_fraction}"
        )
    if images is not None and not images.is_dir():
        raise PrepareError(f"OpenI image folder not found: {images} (expected NLMCXR_png/)")
    parsed = [_openi_report(r) for r in read_openi_reports(reports)]
    if images is not None:
        for report in parsed:
            report.image_sources = {i: images / f"{i}.png" for i in report.image_ids}
    annotations, stats = build_annotations(
        parsed,
        dataset="openi",
        out=out,
        image_ext=".png",
        images_given=images is not None,
        max_side=max_side,
        workers=workers,
        split_of=lambda rid: seeded_split(rid, seed, val_fraction, test_fraction),
        counts=Counter(),
    )
    stats["options"] = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    write_outputs(out, annotations, stats)
    return stats


def prepare_mimic(
    reports: Path,
    split_csv: Path,
    out: Path,
    images: Path | None = None,
    *,
    chexpert_csv: Path | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    workers: int = 1,
    dicom: Path | None = None,
    views: Iterable[str] | None = DEFAULT_VIEWS,
) -> dict[str, Any]:
    """Prepare MIMIC-CXR; returns the stats (also written to ``<out>/prepare_stats.json``).

    ``images``: the MIMIC-CXR-JPG root; or ``dicom``: the MIMIC-CXR (DICOM)
    root, whose images are windowed to JPEGs keeping the ``views`` (ViewPosition
    values, ``"NONE"`` for files without one; ``None`` keeps all).
    """
    if images is not None and dicom is not None:
        raise PrepareError("give either --images (MIMIC-CXR-JPG) or --dicom (MIMIC-CXR), not both")
    if images is not None and not images.is_dir():
        raise PrepareError(f"MIMIC-CXR-JPG folder not found: {images} (the folder with files/)")
    if dicom is not None and not dicom.is_dir():
        raise PrepareError(f"MIMIC-CXR DICOM folder not found: {dicom} (the folder with files/)")
    kept_views = None if views is None else tuple(sorted({v.strip().upper() for v in views}))
    if kept_views == ():
        raise PrepareError("--views needs at least one view position, e.g. PA AP, or all")
    view_counts: dict[str, Counter] = {}
    copier = None
    if dicom is not None:

        def copier(jobs: list[tuple[Path, Path]], image_stats: Counter) -> set[Path]:
            return copy_dicom_images(jobs, max_side, workers, image_stats, kept_views, view_counts)

    counts: Counter = Counter({"not_in_split_csv": 0})
    root = dicom if dicom is not None else images
    annotations, stats = build_annotations(
        read_mimic_reports(
            reports,
            split_csv,
            root,
            chexpert_csv,
            counts,
            image_suffix=".dcm" if dicom is not None else ".jpg",
        ),
        dataset="mimic",
        out=out,
        image_ext=".jpg",
        images_given=root is not None,
        max_side=max_side,
        workers=workers,
        split_of=lambda rid: "train",
        counts=counts,
        copier=copier,
    )
    if dicom is not None:
        stats["images"]["source"] = "dicom"
        stats["views"] = {
            "kept": list(kept_views) if kept_views is not None else "all",
            "counts": {
                view: {"seen": c["seen"], "kept": c["kept"]}
                for view, c in sorted(view_counts.items())
            },
        }
    write_outputs(out, annotations, stats)
    return stats
