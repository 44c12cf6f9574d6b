"""Report sentences and random reports made of them (not a test module)."""

from __future__ import annotations

import random

SENTENCES = [
    "The heart is normal in size.",
    "Moderate cardiomegaly.",
    "Small left pleural effusion.",
    "No pleural effusion or pneumothorax.",
    "The lungs are clear.",
    "Right lower lobe consolidation.",
    "Mild pulmonary edema.",
    "Possible left basilar atelectasis.",
    "Endotracheal tube in place.",
    "No acute cardiopulmonary abnormality.",
]


def random_reports(n: int, seed: int, most_sentences: int = 4) -> list[str]:
    """``n`` reports of 1 to ``most_sentences`` distinct sentences, seeded."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, rng.randint(1, most_sentences))) for _ in range(n)]
