"""Example X-rays for the demo: phantom radiographs drawn when the app starts.

No real patient image may ship with the code, and binary assets go stale; the
phantoms of :mod:`xraygpt.data.phantom.generator` are synthetic, deterministic and
take a fraction of a second to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Which phantoms to show: one normal film and two single, easily seen findings.
EXAMPLE_FINDINGS: tuple[str | None, ...] = (None, "Cardiomegaly", "Pleural Effusion")

# A report request first; then follow-ups in the same conversation. The tiny model of
# the embedded default learnt these kinds of question on the phantoms (quickstart.sh,
# stage 4): yes/no about a finding, its side or size, "is this normal?", and a question
# no image can answer (it gets one fixed honest sentence).
EXAMPLE_QUESTIONS = (
    "Describe the given chest x-ray image in detail.",
    "What are the main findings in this chest x-ray?",
    "Is there a pleural effusion?",
    "Which side is it on?",
    "Is the heart enlarged?",
    "Is this x-ray normal?",
    "What should the patient do next?",
)

_SEARCH_LIMIT = 2000  # phantom indices to scan for each wanted finding


def write_example_xrays(
    folder: str | Path, size: int = 320, seed: int = 0
) -> list[tuple[Path, str]]:
    """Draw one phantom per entry of :data:`EXAMPLE_FINDINGS` into ``folder``.

    Returns ``(png path, label)`` pairs; the label says what the phantom shows.
    """
    from PIL import Image

    from xraygpt.data.phantom.generator import render_image, sample_case

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for finding in EXAMPLE_FINDINGS:
        for index in range(_SEARCH_LIMIT):
            # The same generator as phantom.make_sample: the case, then the drawing.
            rng = np.random.default_rng([seed, index])
            case = sample_case(rng)
            shown = [name for name, on in case.present().items() if on]
            if shown == ([] if finding is None else [finding]):
                break
        else:
            raise RuntimeError(
                f"no phantom with only {finding or 'no finding'} among the first "
                f"{_SEARCH_LIMIT} of seed {seed}; the phantom generator has changed"
            )
        slug = (finding or "normal").lower().replace(" ", "_")
        path = folder / f"phantom_{slug}.png"
        Image.fromarray(render_image(case, rng, size), mode="L").save(path)
        examples.append((path, (finding or "no finding").lower()))
    return examples
