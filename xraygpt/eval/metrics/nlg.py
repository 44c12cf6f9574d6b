"""Natural-language generation metrics of generated reports against references.

Two families, as the field reports them (docs/recipe.md §7):

* ROUGE-1, ROUGE-2 and ROUGE-L from ``rouge-score`` (the XrayGPT paper's
  metric): F-measure per report, Porter stemming on, averaged over reports.
* BLEU-1..4, METEOR, ROUGE-L and CIDEr from ``pycocoevalcap`` (the captioning
  toolkit R2Gen and its successors use), on text tokenized by the Stanford
  PTB tokenizer. BLEU is corpus-level ("closest" reference length), CIDEr is
  CIDEr-D with document frequencies from the references, METEOR is 1.5.

The PTB tokenizer and METEOR are Java programs. Without a working ``java``
the PTB step falls back to :func:`simple_tokenize` (a pure-Python
approximation, named in the result) and METEOR is skipped, with the reason in
``skipped``; the other metrics are still computed.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROUGE_SCORE_KEYS = {"ROUGE-1": "rouge1", "ROUGE-2": "rouge2", "ROUGE-L": "rougeL"}
COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L (coco)", "CIDEr")
METRIC_ORDER = (*ROUGE_SCORE_KEYS, *COCO_METRICS)

# PTB output tokens that pycocoevalcap drops (its PUNCTUATIONS list). Note that
# the tokenizer lower-cases first, so brackets survive as -lrb- / -rrb-.
_PTB_DROP = {
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
}  # fmt: skip
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_TOKEN_RE = re.compile(
    r"(?:[a-z]\.){2,}"  # abbreviations: p.m., e.g.
    r"|(?:dr|mr|mrs|ms|st|vs|no)\.(?=\s)"  # titles keep their full stop
    r"|\d+(?:[.,:/]\d+)*[a-z]*"  # numbers: 2.5, 1,000, 10:30, 3/4, 8mm, 9th
    r"|[a-z]+(?=n't\b)|n't\b"  # clitic: isn't -> is n't
    r"|'(?:s|re|ve|ll|d|m)\b"  # clitics: heart's -> heart 's
    r"|\w+(?:[-/.]\w+)*"  # words, hyphenated words, "apex.there" (no space: one token)
    r"|\.\.\.|--|[^\w\s]"  # punctuation
)


_CANNOT_RE = re.compile(r"\bcannot\b")
_LINE_BREAKS_RE = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass
class NLGResult:
    scores: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # per-report scores of a corpus metric that has no other per-report statistics (METEOR)
    per_report: dict[str, list[float]] = field(default_factory=dict)


@functools.cache
def java_status() -> str | None:
    """``None`` when a working ``java`` is on PATH, else why not (cached)."""
    java = shutil.which("java")
    if java is None:
        return "no 'java' executable on PATH"
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"'java -version' failed: {err}"
    if proc.returncode != 0:
        return f"'java -version' exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[:200]}"
    return None


def simple_tokenize(text: str) -> str:
    """A pure-Python stand-in for PTB tokenization + pycocoevalcap's punctuation removal.

    Lower-cases, splits off punctuation, the clitics ``n't``/``'s`` and
    "cannot" (as PTB does), keeps decimal numbers whole, writes brackets as
    ``-lrb-``/``-rrb-`` and drops the punctuation tokens pycocoevalcap drops. On 1,500 OpenI reports it differs
    from the Java tokenizer in about 0.1 % of tokens (HTML entities, "ct.",
    "16.2/24.7"); the test suite checks the agreement when Java is present.
    """
    tokens = []
    text = _CANNOT_RE.sub("can not", text.lower().replace("\n", " "))
    for token in _TOKEN_RE.findall(text):
        token = _BRACKETS.get(token, token)
        if token not in _PTB_DROP:
            tokens.append(token)
    return " ".join(tokens)


def _ptb_jar() -> Path:
    from pycocoevalcap.tokenizer import ptbtokenizer

    return Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Stanford PTB tokenization (pycocoevalcap's jar and settings), one string per text.

    pycocoevalcap's own wrapper writes its temporary file into the installed
    package folder; this one uses the system temporary folder and checks that
    one line comes back per text.
    """
    if not texts:
        return []
    # One line per text: every character Python or Java could take for a line break goes.
    lines = [_LINE_BREAKS_RE.sub(" ", t) for t in texts]
    fd, path = tempfile.mkstemp(prefix="ptb_", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        cmd = [
            "java", "-cp", str(_ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines", "-lowerCase", path,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(
            f"PTB tokenizer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:500]}"
        )
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"PTB tokenizer returned {len(out)} lines for {len(lines)} texts")
    return [
        " ".join(w for w in line.rstrip().split(" ") if w and w not in _PTB_DROP)
        for line in out[: len(lines)]
    ]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemmer)."""
    from rouge_score import rouge_scorer

    # rouge-score logs "Using default tokenizer." at INFO for every scorer
    logging.getLogger("absl").setLevel(logging.WARNING)

    scorer = rouge_scorer.RougeScorer(list(ROUGE_SCORE_KEYS.values()), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_SCORE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name, key in ROUGE_SCORE_KEYS.items():
            totals[name] += scores[key].fmeasure
    n = max(len(predictions), 1)
    return {name: total / n for name, total in totals.items()}


class MeteorScorer:
    """METEOR 1.5 through pycocoevalcap's Java process, started once and reused.

    Starting the JVM and loading METEOR's paraphrase tables takes from several
    seconds to a minute, so one scorer serves the model and every baseline.
    """

    def __init__(self) -> None:
        from pycocoevalcap.meteor.meteor import Meteor

        self._meteor = Meteor()

    def __call__(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        return self.with_segments(gts, res)[0]

    def with_segments(
        self, gts: dict[int, list[str]], res: dict[int, list[str]]
    ) -> tuple[float, list[float]]:
        """The corpus METEOR and the per-report (segment) scores, in ``res`` order."""
        score, segments = self._meteor.compute_score(gts, res)
        return float(score), [float(s) for s in segments]

    def close(self) -> None:
        meteor = getattr(self, "_meteor", None)
        if meteor is not None:
            meteor.meteor_p.stdin.close()
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
            # pycocoevalcap's __del__ would kill the process a second time
            meteor.__class__ = _ClosedMeteor
            self._meteor = None


class _ClosedMeteor:
    def __del__(self) -> None:
        pass


def tokenize_texts(
    texts: Sequence[str], *, use_java: bool | None = None
) -> tuple[dict[str, str], str]:
    """``{text: tokenized}`` for the distinct texts, and a note naming the tokenizer.

    ``use_java``: the Java PTB tokenizer (default: when java works), else
    :func:`simple_tokenize`. One call for all texts of a run: a JVM start per
    system would cost a second or more each.
    """
    unique = list(dict.fromkeys(texts))
    problem = java_status()
    if use_java is None:
        use_java = problem is None
    if use_java:
        if problem is not None:
            raise RuntimeError(f"the Java PTB tokenizer was asked for but {problem}")
        return dict(zip(unique, ptb_tokenize(unique), strict=True)), (
            "Stanford PTB tokenizer (pycocoevalcap, Java)"
        )
    note = f"pure-Python PTB approximation (xraygpt.eval.metrics.nlg.simple_tokenize): {problem or 'Java not used'}"
    return {t: simple_tokenize(t) for t in unique}, note


def coco_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    use_java: bool | None = None,
    meteor: MeteorScorer | bool | None = None,
    tokens: Mapping[str, str] | None = None,
) -> NLGResult:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap).

    ``tokens``: ``{text: tokenized}`` from :func:`tokenize_texts` (default:
    tokenize here). ``use_java``: PTB tokenizer in Java (default: when java works).
    ``meteor``: a running :class:`MeteorScorer`, ``True`` to start one for this
    call, ``False`` to skip METEOR; default: start one when java works.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    result = NLGResult(scores={})
    if not predictions:
        raise ValueError("no predictions to score")
    problem = java_status()
    if tokens is None:
        tokens, note = tokenize_texts([*predictions, *references], use_java=use_java)
        result.notes["tokenizer"] = note
    missing = [t for t in (*predictions, *references) if t not in tokens]
    if missing:
        raise KeyError(f"no tokenization given for {len(missing)} text(s), e.g. {missing[0]!r}")
    res = {i: [tokens[t]] for i, t in enumerate(predictions)}
    gts = {i: [tokens[t]] for i, t in enumerate(references)}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        result.scores[f"BLEU-{k + 1}"] = float(bleu[k])
    result.scores["ROUGE-L (coco)"] = float(Rouge().compute_score(gts, res)[0])
    result.scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])

    if meteor is False:
        result.skipped["METEOR"] = "disabled by the caller (run.meteor: false / --no-meteor)"
    elif problem is not None:
        result.skipped["METEOR"] = f"needs Java: {problem}"
    else:
        owned = not isinstance(meteor, MeteorScorer)
        scorer = MeteorScorer() if owned else meteor
        try:
            score, segments = scorer.with_segments(gts, res)  # type: ignore[union-attr]
            result.scores["METEOR"] = score
            result.per_report["METEOR"] = segments
        except (OSError, ValueError, RuntimeError, BrokenPipeError) as err:
            result.skipped["METEOR"] = (
                f"the METEOR Java process failed: {type(err).__name__}: {err}"
            )
        finally:
            if owned:
                scorer.close()  # type: ignore[union-attr]
    return result


def nlg_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    use_java: bool | None = None,
    meteor: MeteorScorer | bool | None = None,
    tokens: Mapping[str, str] | None = None,
) -> NLGResult:
    """All NLG metrics: rouge-score's ROUGE-1/2/L and pycocoevalcap's set."""
    coco = coco_scores(predictions, references, use_java=use_java, meteor=meteor, tokens=tokens)
    scores = rouge_scores(predictions, references)
    scores.update(coco.scores)
    ordered = {name: scores[name] for name in METRIC_ORDER if name in scores}
    notes = {"rouge": "rouge-score, F-measure averaged over reports, Porter stemmer", **coco.notes}
    return NLGResult(ordered, dict(coco.skipped), notes, dict(coco.per_report))
