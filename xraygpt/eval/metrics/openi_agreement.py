"""How well the labeler agrees with the OpenI reports' MeSH tags.

The OpenI (Indiana University) report archive ``NLMCXR_reports.tgz`` ships
inside the ``torchxrayvision`` package. Each report has FINDINGS and
IMPRESSION text and, under ``MeSH/major``, finding tags written by human
indexers (``Cardiomegaly/mild``, ``Pulmonary Atelectasis/base/left``,
``normal``, ...). This module labels the text with
:func:`xraygpt.eval.metrics.labeler.label_report` and compares its positives with
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

    python -m xraygpt.eval.metrics.openi_agreement          # prints the table
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xraygpt.common.errors import DataError, MissingFileError
from xraygpt.eval.metrics.labeler import POSITIVE, label_report

ARCHIVE_NAME = "NLMCXR_reports.tgz"

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


@dataclass(frozen=True)
class OpenIReport:
    report_id: str  # the archive's file stem, e.g. "1" for ecgen-radiology/1.xml
    findings: str
    impression: str
    major_tags: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(part for part in (self.findings, self.impression) if part).strip()


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


def find_archive() -> Path:
    """The report archive inside the installed ``torchxrayvision`` (not imported: it is slow)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            f"the OpenI report archive {ARCHIVE_NAME} comes with the torchxrayvision package, "
            f"which is not installed: pip install -r requirements.txt"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / ARCHIVE_NAME
        if path.is_file():
            return path
    raise MissingFileError(
        f"{ARCHIVE_NAME} not found in torchxrayvision's data folder "
        f"({', '.join(spec.submodule_search_locations)}); reinstall torchxrayvision"
    )


def read_reports(path: str | Path | None = None) -> list[OpenIReport]:
    """Every report of the archive, in file-name order (1, 2, ..., 3999)."""
    path = Path(path) if path is not None else find_archive()
    if not path.is_file():
        raise MissingFileError(f"the OpenI report archive {path} not found (--archive)")
    reports = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                root = ET.fromstring(handle.read())
                sections = {
                    node.get("Label"): (node.text or "").strip()
                    for node in root.iter("AbstractText")
                }
                tags = tuple(node.text.strip() for node in root.iter("major") if node.text)
                reports.append(
                    OpenIReport(
                        report_id=Path(member.name).stem,
                        findings=sections.get("FINDINGS", ""),
                        impression=sections.get("IMPRESSION", ""),
                        major_tags=tags,
                    )
                )
    except (tarfile.TarError, ET.ParseError, OSError) as err:
        raise DataError(f"cannot read the OpenI report archive {path}: {err}") from err
    if not reports:
        raise DataError(f"{path} holds no ecgen-radiology/*.xml reports")
    reports.sort(key=lambda r: int(r.report_id) if r.report_id.isdigit() else r.report_id)
    return reports


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archive", default=None, help=f"path to {ARCHIVE_NAME} (default: torchxrayvision's copy)"
    )
    args = parser.parse_args(argv)
    print(format_table(agreement(read_reports(args.archive))))
    return 0


if __name__ == "__main__":
    from xraygpt.common.errors import run_main

    sys.exit(run_main(main))
