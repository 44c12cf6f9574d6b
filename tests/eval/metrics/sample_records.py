"""Predictions records shared by the scoring tests (not a test module)."""

from __future__ import annotations

from xraygpt.eval.metrics.scoring import make_record

REFS = [
    "Moderate cardiomegaly. Small left pleural effusion.",
    "The lungs are clear. No pneumothorax.",
    "Right lower lobe consolidation.",
    "Possible left basilar atelectasis.",
]
GOOD = [
    "moderate cardiomegaly small left pleural effusion",
    "the lungs are clear",
    "right lower lobe consolidation",
    "left basilar atelectasis",
]
PRIOR = "The lungs are clear. No pneumothorax."


def sample_records(n: int = len(REFS)) -> list[dict]:
    """The first ``n`` records: a good model's report and the most-frequent-report baseline."""
    return [
        make_record(f"img{i}", "<Img><ImageHere></Img> Describe.", g, r, {"most_frequent": PRIOR})
        for i, (g, r) in enumerate(zip(GOOD[:n], REFS[:n], strict=True))
    ]
