"""How well the labeler agrees with the OpenI reports' MeSH tags.

The OpenI (Indiana University) report archive ``NLMCXR_reports.tgz`` ships
inside the ``torchxrayvision`` package. Each report has FINDINGS and
IMPRESSION text and, under ``MeSH/major``, finding tags written by human
indexers (``Cardiomegaly/mild``, ``Pulmonary Atelectasis/base/left``,
``normal``, ...). This module labels the text with
:func:`xraygpt.data.labeler.label_report` and compares its positives with
the tags, observation by observation.

Tag -> observation mapping (the head is the tag's first ``/`` part; the
attributes are the others; :data:`MESH_RULES` is the code):

=========================== =====================================================
observation                 MeSH ``major`` tags
=========================== =====================================================
Cardiomegaly                ``Cardiomegaly/*``; ``Cardiac Shadow/...enlarged...``
Pleural Effusion            ``Pleural Effusion/*``
Pneumothorax                ``Pneumothorax/*``, ``Hydropneumothorax``, ``Hemopneumothorax``
Atelectasis                 ``Pulmonary Atelectasis/*``
Edema                       ``Pulmonary Edema/*``, ``Pulmonary Congestion/*``, ``Heart Failure/*``
                            (CheXpert counts vascular congestion and heart failure as Edema)
Consolidation               ``Consolidation/*``
Pneumonia                   ``Pneumonia/*``
Fracture                    ``Fractures, Bone/*``
Lung Opacity                ``Opacity/*``, ``Airspace Disease/*``, ``Infiltrate/*``,
                            ``Density/lung/*``
Lung Lesion                 ``Nodule/*``, ``Mass/*``, and ``Opacity`` or ``Density`` with
                            the attribute ``round`` (how OpenI tags a nodular opacity)
No Finding                  ``normal``
Enlarged Cardiomediastinum  ``Mediastinum/...enlarged|prominent...`` (not lymph nodes)
Pleural Other               ``Pleura/*``; ``Thickening``, ``Cicatrix`` or ``Calcinosis`` with
                            the attribute ``pleura``
Support Devices             ``Catheters, Indwelling``, ``Implanted Medical Device``,
                            ``Tube, Inserted``, ``Medical Device``, ``Stents``
=========================== =====================================================

Reports without FINDINGS and IMPRESSION text, and reports whose only tag is
``No Indexing`` (the indexers did not tag them), are left out.

    xraygpt openi-agreement          # prints the table
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from xraygpt.data.labeler import POSITIVE, label_report
from xraygpt.data.openi import OpenIReport

# The observations the acceptance criterion is checked on (the list).
CORE_OBSERVATIONS = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Atelectasis",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Fracture",
    "Lung Opacity",
    "Lung Lesion",
    "No Finding",
)
EXTRA_OBSERVATIONS = ("Enlarged Cardiomediastinum", "Pleural Other", "Support Devices")


def _has(attrs: Sequence[str], *words: str) -> bool:
    return any(word in attrs for word in words)


# observation -> predicate on (head, attributes) of one tag
MESH_RULES: dict[str, Callable[[str, Sequence[str]], bool]] = {
    "Cardiomegaly": lambda h, a: (
        h == "Cardiomegaly" or (h == "Cardiac Shadow" and _has(a, "enlarged"))
    ),
    "Pleural Effusion": lambda h, a: h == "Pleural Effusion",
    "Pneumothorax": lambda h, a: h in ("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"),
    "Atelectasis": lambda h, a: h == "Pulmonary Atelectasis",
    "Edema": lambda h, a: h in ("Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"),
    "Consolidation": lambda h, a: h == "Consolidation",
    "Pneumonia": lambda h, a: h == "Pneumonia",
    "Fracture": lambda h, a: h == "Fractures, Bone",
    "Lung Opacity": lambda h, a: (
        h in ("Opacity", "Airspace Disease", "Infiltrate") or (h == "Density" and _has(a, "lung"))
    ),
    "Lung Lesion": lambda h, a: (
        h in ("Nodule", "Mass") or (h in ("Opacity", "Density") and _has(a, "round"))
    ),
    "No Finding": lambda h, a: h == "normal",
    "Enlarged Cardiomediastinum": lambda h, a: (
        h == "Mediastinum" and _has(a, "enlarged", "prominent") and not _has(a, "lymph nodes")
    ),
    "Pleural Other": lambda h, a: (
        h == "Pleura" or (h in ("Thickening", "Cicatrix", "Calcinosis") and _has(a, "pleura"))
    ),
    "Support Devices": lambda h, a: (
        h
        in (
            "Catheters, Indwelling",
            "Implanted Medical Device",
            "Tube, Inserted",
            "Medical Device",
            "Stents",
        )
    ),
}


def mesh_observations(tags: Iterable[str]) -> set[str]:
    """The observations a report's MeSH ``major`` tags express."""
    found = set()
    for tag in tags:
        head, *attrs = (part.strip() for part in tag.split("/"))
        for observation, rule in MESH_RULES.items():
            if rule(head, attrs):
                found.add(observation)
    return found


def usable(report: OpenIReport) -> bool:
    """Reports with text and with tags that were actually indexed."""
    return bool(report.text) and bool(report.major_tags) and report.major_tags != ("No Indexing",)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def agreement(
    reports: Sequence[OpenIReport],
    observations: Sequence[str] = CORE_OBSERVATIONS + EXTRA_OBSERVATIONS,
) -> dict:
    """Per-observation and micro precision/recall/F1 of the labeler against the tags.

    The MeSH tags are the reference: a true positive is a report the labeler
    calls positive that carries a tag of that observation.
    """
    counts = {obs: [0, 0, 0] for obs in observations}  # tp, fp, fn
    used = [r for r in reports if usable(r)]
    for report in used:
        labels = label_report(report.text)
        tagged = mesh_observations(report.major_tags)
        for obs in observations:
            predicted = labels[obs] == POSITIVE
            actual = obs in tagged
            if predicted and actual:
                counts[obs][0] += 1
            elif predicted:
                counts[obs][1] += 1
            elif actual:
                counts[obs][2] += 1
    table = {}
    for obs in observations:
        tp, fp, fn = counts[obs]
        precision, recall, f1 = _prf(tp, fp, fn)
        table[obs] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }

    def micro(names: Sequence[str]) -> dict:
        tp, fp, fn = (sum(counts[o][i] for o in names) for i in range(3))
        precision, recall, f1 = _prf(tp, fp, fn)
        return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}

    core = [o for o in observations if o in CORE_OBSERVATIONS]
    return {
        "n_reports": len(used),
        "per_observation": table,
        "micro_core": micro(core),
        "micro_all": micro(list(observations)),
    }


def format_table(result: dict) -> str:
    lines = [
        f"Labeler vs OpenI MeSH tags ({result['n_reports']} reports)",
        f"{'observation':28s} {'tp':>5s} {'fp':>5s} {'fn':>5s} {'P':>6s} {'R':>6s} {'F1':>6s}",
    ]

    def row(name: str, r: dict) -> str:
        return (
            f"{name:28s} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d} "
            f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f}"
        )

    for obs, r in result["per_observation"].items():
        lines.append(row(obs, r))
    lines.append(row(f"micro ({len(CORE_OBSERVATIONS)} core)", result["micro_core"]))
    lines.append(row(f"micro (all {len(result['per_observation'])})", result["micro_all"]))
    return "\n".join(lines)
