"""Paired comparison of two systems over the images both predictions files hold.

``xraygpt score --predictions A.jsonl --compare B.jsonl`` scores
A and B against the same references with the same bootstrap resamples
(:func:`xraygpt.eval.metrics.bootstrap.paired_comparison`) and gives, per
metric, A - B, its 95 % interval and a two-sided p-value. ``--compare
baseline:most_frequent`` compares A with a baseline stored in A itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xraygpt.data.labeler import label_report
from xraygpt.eval.metrics import bootstrap as boot
from xraygpt.eval.metrics.ce_variants import HEADLINE
from xraygpt.eval.metrics.nlg import tokenize_texts
from xraygpt.eval.metrics.scoring import PredictionsError

HEADLINE_NLG = ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU-4", "CIDEr")
BASELINE_PREFIX = "baseline:"


def baseline_records(records: Sequence[Mapping[str, Any]], name: str, where: str) -> list[dict]:
    """The records of a baseline stored in a predictions file, as a system of its own."""
    out = []
    for record in records:
        text = (record.get("baselines") or {}).get(name)
        if text is None:
            raise PredictionsError(
                f"{where}: image {record['image_id']!r} has no baseline {name!r} "
                f"(the file's lines need 'baselines': {{{name!r}: ...}})"
            )
        out.append({**record, "generated": text})
    return out


def shared_reports(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    a_name: str,
    b_name: str,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """``(image ids, A's reports, B's reports, references)`` over the ids both hold, in A's order."""
    by_id = {r["image_id"]: r for r in b}
    shared = [r for r in a if r["image_id"] in by_id]
    if not shared:
        raise PredictionsError(
            f"{a_name} and {b_name} share no image_id (e.g. {a[0]['image_id']!r} in the first, "
            f"{b[0]['image_id']!r} in the second): compare predictions of the same test split"
        )
    for record in shared:
        other = by_id[record["image_id"]]
        if record["reference"] != other["reference"]:
            raise PredictionsError(
                f"image {record['image_id']!r} has different references in {a_name} "
                f"({record['reference'][:60]!r}) and {b_name} ({other['reference'][:60]!r}): "
                f"the two files were not scored against the same test split"
            )
    return (
        [r["image_id"] for r in shared],
        [r["generated"] for r in shared],
        [by_id[r["image_id"]]["generated"] for r in shared],
        [r["reference"] for r in shared],
    )


def compare_records(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    *,
    a_name: str = "A",
    b_name: str = "B",
    resamples: int = 1000,
    seed: int = 0,
    use_java: bool | None = None,
) -> dict[str, Any]:
    """A - B per metric over the shared images, with paired-bootstrap intervals and p-values."""
    if resamples < 1:
        raise ValueError(f"a paired comparison needs resamples >= 1, got {resamples}")
    ids, gen_a, gen_b, refs = shared_reports(a, b, a_name, b_name)
    tokens, note = tokenize_texts([*gen_a, *gen_b, *refs], use_java=use_java)
    cache: dict[str, dict[str, int | None]] = {}

    def labels(texts: Sequence[str]) -> list[dict[str, int | None]]:
        for text in texts:
            if text not in cache:
                cache[text] = label_report(text)
        return [cache[t] for t in texts]

    stats_a = boot.report_statistics(gen_a, refs, tokens, labels(gen_a), labels(refs))
    stats_b = boot.report_statistics(gen_b, refs, tokens, labels(gen_b), labels(refs))
    metrics = boot.paired_comparison(stats_a, stats_b, resamples, seed)
    shared = set(ids)
    return {
        "a": a_name,
        "b": b_name,
        "n_shared": len(ids),
        "only_in_a": sum(r["image_id"] not in shared for r in a),
        "only_in_b": sum(r["image_id"] not in shared for r in b),
        "resamples": resamples,
        "seed": seed,
        "method": boot.METHOD,
        "p_value": "two-sided: min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (resamples + 1)) "
        "over the resampled differences d = A - B",
        "CIDEr": boot.CIDER_NOTE,
        "tokenizer": note,
        "headline": [*HEADLINE_NLG, *HEADLINE],
        "metrics": metrics,
    }


def format_comparison(result: Mapping[str, Any]) -> str:
    """The headline metrics: A, B, A - B [95 % interval], p."""
    rows = result["headline"]
    width = max(len(r) for r in rows) + 2
    lines = [
        f"A = {result['a']}",
        f"B = {result['b']}",
        f"{'metric':{width}s}{'A':>8s}{'B':>8s}   {'A - B [95 % CI]':28s}{'p':>8s}",
    ]
    # With every resampled difference on one side, p is the smallest the resamples can show.
    floor = 2 / (result["resamples"] + 1)
    for key in rows:
        row = result["metrics"][key]
        diff = f"{row['diff']:+.3f} [{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}]"
        p = f"<={row['p']:.3f}" if row["p"] <= floor + 1e-12 else f"{row['p']:.3f}"
        lines.append(f"{key:{width}s}{row['a']:8.3f}{row['b']:8.3f}   {diff:28s}{p:>8s}")
    lines.append(
        f"n = {result['n_shared']} shared reports ({result['only_in_a']} only in A, "
        f"{result['only_in_b']} only in B); paired bootstrap, {result['resamples']} resamples"
    )
    return "\n".join(lines)
