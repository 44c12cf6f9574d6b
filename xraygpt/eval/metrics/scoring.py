"""Predictions files, the full metric set of a run, and the printed table.

A predictions file is JSON lines, one report per line::

    {"image_id": "CXR1_1_IM-0001-3001",
     "prompt": "<Img><ImageHere></Img> Describe the given chest x-ray image in detail.",
     "generated": "the heart is normal in size ...",
     "reference": "The heart is normal in size. ...",
     "generated_labels": {"Cardiomegaly": 0, "Edema": null, ...},   # labeler, 1/0/-1/null
     "reference_labels": {...},
     "baselines": {"most_frequent": "...", "nearest_neighbour": "..."}}   # optional

Only ``image_id``, ``generated`` and ``reference`` are required to score a
file: labels are always recomputed from the text, so files from any system
are scored by the same labeler. Each name under ``baselines`` is scored like
the model against the same references.

``metrics.json`` (see :func:`score_records`)::

    {"n": ..., "nlg": {"ROUGE-1": ..., ..., "CIDEr": ...},
     "clinical": {"micro": {...}, "macro": {...}, "per_observation": {...}},
     "definition": "...", "baselines": {name: {"description", "nlg", "clinical", ...}},
     "clinical_variants": {"f1": {"ce14_uncertain0_micro": ..., ...}, "scores": {...},
                           "per_observation": {...}},
     "clinical_variant_definitions": {"ce14_uncertain0_micro": "F1 over ...", ...},
     "ci": {"ROUGE-1": [low, high], ...}, "bootstrap": {"resamples", "seed", ...},
     "skipped": {"METEOR": "why"}, "notes": {...}, "run": {...},
     "skipped_images": {"count", "image_ids"},                    # test.py
     "rescored": {"by": "xraygpt score", "predictions", ...}}     # xraygpt score

``clinical`` is the project's original definition (14 observations,
uncertain = 0); ``clinical_variants`` holds every variant papers report
(:mod:`xraygpt.eval.metrics.ce_variants`), ``ci`` the bootstrap 95 %
intervals (:mod:`xraygpt.eval.metrics.bootstrap`) when asked for.

Rescoring a file (``xraygpt score``, :func:`rescore_predictions`) never replaces a
``metrics.json`` it did not write, such as test.py's: it writes
``metrics_rescored.json`` beside it, with test.py's ``run`` and ``skipped_images``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xraygpt.eval.metrics.bootstrap as boot
from xraygpt.common.errors import DataError, MissingFileError
from xraygpt.common.io import atomic_write_json, atomic_write_text
from xraygpt.data.labeler import BINARY_DEFINITION, label_report, to_binary
from xraygpt.eval.metrics.ce_variants import HEADLINE, clinical_variants, variant_definitions
from xraygpt.eval.metrics.clinical import clinical_efficacy
from xraygpt.eval.metrics.nlg import (
    METRIC_ORDER,
    MeteorScorer,
    java_status,
    nlg_scores,
    tokenize_texts,
)

REQUIRED_FIELDS = ("image_id", "generated", "reference")

BASELINE_DESCRIPTIONS = {
    "most_frequent": "the most frequent report of the training split, given for every image",
    "nearest_neighbour": (
        "the report of the training image nearest to the test image in a cheap feature "
        "space: grayscale, resized to 32x32, standardised, cosine similarity"
    ),
}


class PredictionsError(DataError):
    """A predictions file that cannot be scored as it stands."""


def make_record(
    image_id: str,
    prompt: str,
    generated: str,
    reference: str,
    baselines: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One predictions line, with both reports' labels (informative; scoring relabels)."""
    record: dict[str, Any] = {
        "image_id": str(image_id),
        "prompt": prompt,
        "generated": generated,
        "reference": reference,
        "generated_labels": label_report(generated),
        "reference_labels": label_report(reference),
    }
    if baselines:
        record["baselines"] = dict(baselines)
    return record


def write_predictions(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(text, path)
    return path


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a predictions file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"predictions file not found: {path}")
    records = []
    first_line: dict[str, int] = {}  # image_id -> the line it first appeared on
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PredictionsError(f"{where}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise PredictionsError(f"{where}: expected a JSON object per line")
            missing = [key for key in REQUIRED_FIELDS if key not in record]
            if missing:
                raise PredictionsError(
                    f"{where}: missing field(s) {', '.join(missing)}; every line needs "
                    f"{', '.join(REQUIRED_FIELDS)}"
                )
            if not isinstance(record["image_id"], str | int) or isinstance(
                record["image_id"], bool
            ):
                raise PredictionsError(
                    f"{where}: 'image_id' must be a string, got {record['image_id']!r}"
                )
            image_id = str(record["image_id"])
            if image_id in first_line:
                raise PredictionsError(
                    f"{where}: duplicate image_id {image_id!r} (first on line "
                    f"{first_line[image_id]}); each image may appear once"
                )
            first_line[image_id] = lineno
            record["image_id"] = image_id
            for key in ("generated", "reference"):
                if not isinstance(record[key], str):
                    raise PredictionsError(
                        f"{where}: {key!r} must be a string, got {record[key]!r}"
                    )
            baselines = record.get("baselines")
            if baselines is not None and not (
                isinstance(baselines, dict) and all(isinstance(v, str) for v in baselines.values())
            ):
                raise PredictionsError(f"{where}: 'baselines' must map names to report strings")
            records.append(record)
    if not records:
        raise PredictionsError(f"{path}: no predictions in the file")
    return records


def _labels(texts: Sequence[str], cache: dict[str, dict[str, int | None]]) -> list[dict]:
    """The labeler's labels (1/0/-1/None) of each text, labelling each distinct text once."""
    out = []
    for text in texts:
        if text not in cache:
            cache[text] = label_report(text)
        out.append(cache[text])
    return out


def score_texts(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    meteor: MeteorScorer | bool | None = None,
    use_java: bool | None = None,
    label_cache: dict[str, dict[str, int | None]] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """NLG and clinical-efficacy scores of one system against the references.

    ``labels``: the labeler's ``(generated, reference)`` label dicts, for the bootstrap.
    """
    cache = {} if label_cache is None else label_cache
    nlg = nlg_scores(generated, references, meteor=meteor, use_java=use_java, tokens=tokens)
    generated_labels, reference_labels = _labels(generated, cache), _labels(references, cache)
    clinical = clinical_efficacy(
        [to_binary(x) for x in generated_labels], [to_binary(x) for x in reference_labels]
    )
    return {
        "nlg": nlg.scores,
        "clinical": clinical,
        "clinical_variants": clinical_variants(generated_labels, reference_labels),
        "skipped": nlg.skipped,
        "notes": nlg.notes,
        "labels": (generated_labels, reference_labels),
        "per_report": nlg.per_report,
    }


def bootstrap_block(resamples: int, seed: int) -> dict[str, Any]:
    """How the intervals of ``metrics.json`` were made."""
    return {
        "resamples": resamples,
        "seed": seed,
        "level": 0.95,
        "method": boot.METHOD,
        "CIDEr": boot.CIDER_NOTE,
        "METEOR": boot.METEOR_NOTE,
    }


def score_records(
    records: Sequence[Mapping[str, Any]],
    *,
    meteor: bool = True,
    use_java: bool | None = None,
    descriptions: Mapping[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """``metrics.json`` of a list of prediction records (model and their baselines).

    ``bootstrap``: resamples for the 95 % intervals (0: none); ``seed`` draws them.
    The model and every baseline are resampled with the same reports.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap resamples must be >= 0 (0 = off), got {bootstrap}")
    if not records:
        raise PredictionsError("no predictions to score")
    references = [r["reference"] for r in records]
    names: list[str] = []
    for record in records:
        for name in record.get("baselines") or {}:
            if name not in names:
                names.append(name)
    for name in names:
        lacking = [r["image_id"] for r in records if name not in (r.get("baselines") or {})]
        if lacking:
            raise PredictionsError(
                f"baseline {name!r} is missing for {len(lacking)} report(s), e.g. {lacking[0]!r}"
            )
    # One METEOR process for all systems: starting it costs up to a minute.
    scorer: MeteorScorer | None = None
    meteor_arg: MeteorScorer | bool | None
    start_error = None
    if not meteor:
        meteor_arg = False
    elif java_status() is not None:
        meteor_arg = None  # nlg records "needs Java: <why>"
    else:
        try:
            scorer = meteor_arg = MeteorScorer()
        except OSError as err:
            meteor_arg = False
            start_error = f"the METEOR Java process did not start: {err}"
    cache: dict[str, dict[str, int | None]] = {}
    texts = [r["generated"] for r in records] + references
    texts += [r["baselines"][name] for name in names for r in records]
    tokens, tokenizer_note = tokenize_texts(texts, use_java=use_java)
    try:
        model = score_texts(
            [r["generated"] for r in records],
            references,
            meteor=meteor_arg,
            use_java=use_java,
            label_cache=cache,
            tokens=tokens,
        )
        baselines = {}
        for name in names:
            scores = score_texts(
                [r["baselines"][name] for r in records],
                references,
                meteor=meteor_arg,
                use_java=use_java,
                label_cache=cache,
                tokens=tokens,
            )
            baselines[name] = {
                "description": (descriptions or {}).get(name)
                or BASELINE_DESCRIPTIONS.get(name, name),
                "nlg": scores["nlg"],
                "clinical": scores["clinical"],
                "clinical_variants": scores["clinical_variants"],
            }
            if bootstrap:
                baselines[name]["ci"], baselines[name]["ci_per_observation"] = _intervals(
                    [r["baselines"][name] for r in records],
                    references,
                    tokens,
                    scores,
                    bootstrap,
                    seed,
                )
    finally:
        if scorer is not None:
            scorer.close()
    skipped = dict(model["skipped"])
    if start_error:
        skipped["METEOR"] = start_error
    metrics: dict[str, Any] = {
        "n": len(records),
        "nlg": model["nlg"],
        "clinical": model["clinical"],
        "definition": BINARY_DEFINITION,
        "baselines": baselines,
        "skipped": skipped,
        "notes": {**model["notes"], "tokenizer": tokenizer_note},
        "clinical_variants": model["clinical_variants"],
        "clinical_variant_definitions": variant_definitions(),
    }
    if bootstrap:
        metrics["ci"], metrics["ci_per_observation"] = _intervals(
            [r["generated"] for r in records], references, tokens, model, bootstrap, seed
        )
        metrics["bootstrap"] = bootstrap_block(bootstrap, seed)
    if run_info:
        metrics["run"] = dict(run_info)
    return metrics


def _intervals(
    generated: Sequence[str],
    references: Sequence[str],
    tokens: Mapping[str, str],
    scores: Mapping[str, Any],
    resamples: int,
    seed: int,
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """The intervals of every metric, and of each observation's F1 per label set/mapping."""
    stats = boot.report_statistics(
        generated,
        references,
        tokens,
        *scores["labels"],
        shifted={
            name: (scores["nlg"][name], values)
            for name, values in scores.get("per_report", {}).items()
            if name in scores["nlg"]
        },
    )
    everything = boot.confidence_intervals(stats, resamples, seed, per_observation=True)
    per_observation: dict[str, dict[str, list[float]]] = {}
    for key, interval in everything.items():
        if "/" in key:
            variant, obs = key.split("/", 1)
            per_observation.setdefault(variant, {})[obs] = interval
    return {k: v for k, v in everything.items() if "/" not in k}, per_observation


# ``xraygpt score`` writes beside a metrics.json it did not write (test.py's) and marks its own.
RESCORED_BY = "xraygpt score"
RESCORED_STEM = "metrics_rescored"
EVALUATE_PREDICTIONS = "predictions.jsonl"  # the name test.py gives its predictions file


@dataclass(frozen=True)
class Rescored:
    """What :func:`rescore_predictions` wrote."""

    metrics: dict[str, Any]
    metrics_path: Path
    picture_path: Path
    kept: Path | None  # the metrics.json beside metrics_path, left as it was


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """A metrics.json's content; ``None`` when there is none or it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _written_by_score(metrics: Mapping[str, Any] | None) -> bool:
    block = (metrics or {}).get("rescored")
    return isinstance(block, Mapping) and block.get("by") == RESCORED_BY


def evaluation_metrics(predictions: Path) -> tuple[Path, dict[str, Any]] | None:
    """``(path, content)`` of the metrics.json that ``xraygpt evaluate`` (test.py) wrote
    with these predictions: beside them, the file named ``predictions.jsonl``, with a
    ``run`` block; ``None`` when there is none."""
    if predictions.name != EVALUATE_PREDICTIONS:
        return None
    path = predictions.parent / "metrics.json"
    data = _read_json_object(path)
    if data is None or _written_by_score(data) or not isinstance(data.get("run"), dict):
        return None
    return path, data


def rescored_destination(out_dir: Path) -> tuple[Path, Path | None]:
    """``(where to write, the metrics.json kept)``: ``out_dir/metrics.json``, unless a
    metrics.json that ``xraygpt score`` did not write is there (test.py's, or one that
    does not parse): that one is never replaced, and ``metrics_rescored.json`` goes beside
    it. A file that ``xraygpt score`` wrote is its own to replace."""
    existing = out_dir / "metrics.json"
    if existing.exists() and not _written_by_score(_read_json_object(existing)):
        return out_dir / f"{RESCORED_STEM}.json", existing
    return existing, None


def rescore_predictions(
    path: Path,
    out_dir: Path | None = None,
    *,
    meteor: bool = True,
    use_java: bool | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    skipped: Mapping[str, str] | None = None,
) -> Rescored:
    """Score a predictions file again (``xraygpt score``) and write its metrics and picture.

    Into ``out_dir`` (default: the predictions' folder) as ``metrics.json`` /
    ``metrics.png``, or ``metrics_rescored.json`` / ``metrics_rescored.png`` when a
    metrics.json that this function did not write is there (see
    :func:`rescored_destination`). When the predictions come from ``xraygpt evaluate``,
    its ``run`` block (config, checkpoint, generation settings), ``skipped_images`` and
    reasons for a missing baseline are carried into the new file. The ``rescored`` block
    says how the file was made. ``skipped``: reasons to add (a metric turned off).
    """
    records = read_predictions(path)
    out_dir = path.parent if out_dir is None else Path(out_dir)
    evaluation = evaluation_metrics(path)
    metrics = score_records(
        records,
        meteor=meteor,
        use_java=use_java,
        run_info=evaluation[1]["run"] if evaluation else {"predictions": str(path)},
        bootstrap=bootstrap,
        seed=seed,
    )
    metrics["skipped"].update(skipped or {})
    if evaluation:
        before = evaluation[1]
        # Its skipped metrics were its scoring's; a skipped baseline is the predictions'.
        for key, reason in (before.get("skipped") or {}).items():
            if key not in METRIC_ORDER:
                metrics["skipped"].setdefault(key, reason)
        if "skipped_images" in before:
            metrics["skipped_images"] = before["skipped_images"]
    metrics["rescored"] = {
        "by": RESCORED_BY,
        "predictions": str(path),
        "evaluation_metrics": str(evaluation[0]) if evaluation else None,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    target, kept = rescored_destination(out_dir)
    atomic_write_json(metrics, target)
    from xraygpt.eval.plots import plot_metrics

    picture = plot_metrics(metrics, target.with_suffix(".png"))
    return Rescored(metrics=metrics, metrics_path=target, picture_path=picture, kept=kept)


# Table rows of the intervals: (row label, key in "ci")
_CE_ROWS = {"micro": "ce14_uncertain0_micro", "macro": "ce14_uncertain0_macro_all"}


def format_table(metrics: Mapping[str, Any]) -> str:
    """The metrics of the model and its baselines side by side."""
    columns = ["model", *metrics.get("baselines", {})]
    systems = [metrics, *metrics.get("baselines", {}).values()]
    # (label, values, interval key): with intervals a cell reads "0.511 [0.492, 0.530]"
    rows: list[tuple[str, list[float | None], str | None]] = []
    for name in METRIC_ORDER:
        rows.append((name, [s["nlg"].get(name) for s in systems], name))
    for avg in ("micro", "macro"):
        for key in ("precision", "recall", "f1"):
            label = f"CE {avg} {'P' if key == 'precision' else 'R' if key == 'recall' else 'F1'}"
            ci_key = _CE_ROWS[avg] if key == "f1" else None
            rows.append((label, [s["clinical"][avg][key] for s in systems], ci_key))
    if all("clinical_variants" in s for s in systems):
        for key in HEADLINE:
            if key in _CE_ROWS.values():
                continue  # already shown as CE micro / macro F1
            rows.append((key, [s["clinical_variants"]["f1"][key] for s in systems], key))
    with_ci = all("ci" in s for s in systems)

    def cell(system: Mapping[str, Any], value: float | None, ci_key: str | None) -> str:
        if value is None:
            return "-"
        if not with_ci:
            return f"{value:.4f}"
        return boot.format_ci(value, system["ci"].get(ci_key) if ci_key else None)

    label_width = max(16, *(len(r[0]) + 1 for r in rows))
    width = max(24 if with_ci else 12, *(len(c) for c in columns))
    lines = [f"{'metric':{label_width}s}" + "".join(f"{c:>{width + 2}s}" for c in columns)]
    for label, values, ci_key in rows:
        if all(v is None for v in values):
            continue
        cells = "".join(
            f"{cell(s, v, ci_key):>{width + 2}s}" for s, v in zip(systems, values, strict=True)
        )
        lines.append(f"{label:{label_width}s}{cells}")
    if with_ci:
        lines.append(f"[95 % bootstrap interval, {metrics['bootstrap']['resamples']} resamples]")
    lines.append(f"n = {metrics['n']} reports")
    bad = metrics.get("skipped_images") or {}
    if bad.get("count"):
        ids = list(bad.get("image_ids", []))
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        lines.append(f"images skipped (unreadable or too small): {bad['count']}: {shown}")
    for metric, reason in metrics.get("skipped", {}).items():
        lines.append(f"{metric} skipped: {reason}")
    return "\n".join(lines)


def format_variant_table(metrics: Mapping[str, Any]) -> str:
    """Every clinical-efficacy variant's F1 (with its interval when there is one), per system."""
    columns = ["model", *metrics.get("baselines", {})]
    systems = [metrics, *metrics.get("baselines", {}).values()]
    keys = list(metrics["clinical_variants"]["f1"])
    width = max(14, *(len(c) for c in columns)) + (12 if "ci" in metrics else 0)
    label_width = max(len(k) for k in keys) + 2
    lines = [f"{'CE variant (F1)':{label_width}s}" + "".join(f"{c:>{width + 2}s}" for c in columns)]
    for key in keys:
        cells = "".join(
            f"{boot.format_ci(s['clinical_variants']['f1'][key], (s.get('ci') or {}).get(key)):>{width + 2}s}"
            for s in systems
        )
        lines.append(f"{key:{label_width}s}{cells}")
    lines.append("definitions: metrics.json, clinical_variant_definitions")
    return "\n".join(lines)
