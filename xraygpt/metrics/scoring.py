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
     "definition": "...", "baselines": {name: {"description", "nlg", "clinical"}},
     "skipped": {"METEOR": "why"}, "notes": {...}, "run": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xraygpt.common.errors import DataError, MissingFileError
from xraygpt.common.io import atomic_write_text
from xraygpt.metrics.clinical import clinical_efficacy
from xraygpt.metrics.labeler import BINARY_DEFINITION, label_report, to_binary
from xraygpt.metrics.nlg import METRIC_ORDER, MeteorScorer, java_status, nlg_scores, tokenize_texts

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


def _binary_labels(texts: Sequence[str], cache: dict[str, dict[str, int]]) -> list[dict[str, int]]:
    out = []
    for text in texts:
        if text not in cache:
            cache[text] = to_binary(label_report(text))
        out.append(cache[text])
    return out


def score_texts(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    meteor: MeteorScorer | bool | None = None,
    use_java: bool | None = None,
    label_cache: dict[str, dict[str, int]] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """NLG and clinical-efficacy scores of one system against the references."""
    cache = {} if label_cache is None else label_cache
    nlg = nlg_scores(generated, references, meteor=meteor, use_java=use_java, tokens=tokens)
    clinical = clinical_efficacy(
        _binary_labels(generated, cache), _binary_labels(references, cache)
    )
    return {"nlg": nlg.scores, "clinical": clinical, "skipped": nlg.skipped, "notes": nlg.notes}


def score_records(
    records: Sequence[Mapping[str, Any]],
    *,
    meteor: bool = True,
    use_java: bool | None = None,
    descriptions: Mapping[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json`` of a list of prediction records (model and their baselines)."""
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
    cache: dict[str, dict[str, int]] = {}
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
            }
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
    }
    if run_info:
        metrics["run"] = dict(run_info)
    return metrics


def format_table(metrics: Mapping[str, Any]) -> str:
    """The metrics of the model and its baselines side by side."""
    columns = ["model", *metrics.get("baselines", {})]
    systems = [metrics, *metrics.get("baselines", {}).values()]
    rows: list[tuple[str, list[float | None]]] = []
    for name in METRIC_ORDER:
        rows.append((name, [s["nlg"].get(name) for s in systems]))
    for avg in ("micro", "macro"):
        for key in ("precision", "recall", "f1"):
            label = f"CE {avg} {'P' if key == 'precision' else 'R' if key == 'recall' else 'F1'}"
            rows.append((label, [s["clinical"][avg][key] for s in systems]))
    width = max(12, *(len(c) for c in columns))
    lines = [f"{'metric':16s}" + "".join(f"{c:>{width + 2}s}" for c in columns)]
    for label, values in rows:
        if all(v is None for v in values):
            continue
        cells = "".join(f"{'-' if v is None else f'{v:.4f}':>{width + 2}s}" for v in values)
        lines.append(f"{label:16s}{cells}")
    lines.append(f"n = {metrics['n']} reports")
    bad = metrics.get("skipped_images") or {}
    if bad.get("count"):
        ids = list(bad.get("image_ids", []))
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        lines.append(f"images skipped (unreadable or too small): {bad['count']}: {shown}")
    for metric, reason in metrics.get("skipped", {}).items():
        lines.append(f"{metric} skipped: {reason}")
    return "\n".join(lines)
