"""Turning a radiology report's FINDINGS and IMPRESSION into one clean summary.

The paper filtered reports by section length and then had GPT-3.5 rewrite
them; this module does the same steps with fixed rules, so that the output is
deterministic and needs no API (docs/recipe.md §6):

1. filters, on the raw section text (words = whitespace-separated tokens):
   no FINDINGS, no IMPRESSION, FINDINGS under 10 words, IMPRESSION under
   2 words — a report is counted under the first rule it fails;
2. per sentence: drop sentences that compare with prior studies; drop
   sentences that only report who was told what when (they are made of
   de-identification blanks); remove the remaining blanks (``___``, ``XXXX``);
   drop sentences that only describe the views taken and cut view phrases
   ("on the lateral view") out of the others;
3. merge: findings sentences, then impression sentences that do not repeat
   one already kept.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

MIN_FINDINGS_WORDS = 10
MIN_IMPRESSION_WORDS = 2

# Filter rules, in the order they are applied (the key of the drop counts).
FILTER_RULES = (
    "no_findings",
    "no_impression",
    "findings_under_10_words",
    "impression_under_2_words",
)
EMPTY_AFTER_CLEANING = "empty_after_cleaning"

# Sentences that compare with an earlier study. Words like "prior" alone are
# not enough ("prior granulomatous disease" describes this image), so they
# count only next to a word for a study.
_STUDY = r"(?:study|studies|exam|exams|examination|examinations|radiograph|radiographs|film|films|image|images|x-?rays?|ct|chest\s+(?:x-?ray|radiograph|film)s?|one|comparison)"
_COMPARISON = re.compile(
    r"\b(?:"
    r"compar(?:e|ed|es|ing|ison|isons)"
    r"|(?:prior|previous|preceding|earlier|recent|last|old|outside)\s+(?:\w+\s+){0,2}?"
    + _STUDY
    + r"\b"
    r"|previously|interval|intervally|unchanged|stable|stably|again|redemonstrat\w*|re-demonstrat\w*"
    r"|persist\w*|since|similar(?:ly)?|no\s+(?:\w+\s+){0,2}?change|(?:has|have|had)\s+(?:not\s+)?changed"
    r"|improv\w*|worsen\w*|progress\w*|resolv\w*|resolution|decreased\s+in|increased\s+in|new(?:ly)?\s+(?:since|compared)"
    r")\b",
    re.IGNORECASE,
)

# "Stable cardiomegaly." says "cardiomegaly" and compares: keep the finding.
_COMPARISON_LEAD = re.compile(
    r"^\s*(?:(?:grossly|overall|otherwise)\s+)?(?:stable|unchanged|persistent|persisting|"
    r"redemonstrated|re-demonstrated|again\s+(?:seen|noted|demonstrated))\s*,?\s+"
    r"(?:(?:appearance|size|position)\s+of\s+)?",
    re.IGNORECASE,
)
_AGAIN = re.compile(
    r"\bagain\s+(?=(?:seen|noted|demonstrated|identified|visualized|present)\b)", re.IGNORECASE
)

# De-identification blanks: "___" in MIMIC-CXR, "XXXX" in OpenI.
_BLANK = re.compile(r"_{2,}|X{3,}(?:\s+X{3,})*")  # also inside words: "5th-6XXXX"
# A blank standing for "ray" in "x-XXXX" (OpenI's de-identification hit it).
_XRAY_BLANK = re.compile(r"\bx-\s*X{3,}", re.IGNORECASE)
# Sentences that report a conversation; with names and times blanked they say nothing.
_COMMUNICATION = re.compile(
    r"\b(?:discussed|d/w|notified|paged|telephone|telephoned|phone|communicated|conveyed|"
    r"informed|called|relayed|spoke|reported\s+to|made\s+aware|at\s+the\s+time\s+of)\b",
    re.IGNORECASE,
)

# Views. Whole sentences that only say which views were taken, and phrases.
_VIEW_WORD = (
    r"(?:pa|ap|frontal|lateral|lat|oblique|portable|upright|erect|semi-?(?:upright|erect)|"
    r"supine|decubitus|bedside|single|two|three|four|both|views?|projections?|radiographs?|"
    r"images?|films?|x-?rays?|chest|of|the|and|or|a|an|was|were|is|are|been|has|have|"
    r"obtained|provided|submitted|acquired|performed|taken|available|included|frontal/lateral|"
    r"pa/lateral|ap/lateral|\d+)"
)
_VIEW_ONLY = re.compile(rf"^\s*(?:{_VIEW_WORD}[\s,]*)+[.!?]?\s*$", re.IGNORECASE)
_VIEW_SENTENCE_HINT = re.compile(
    r"\b(?:views?|projections?|pa|ap|frontal|lateral|chest)\b", re.IGNORECASE
)
_VIEW_NAME = r"(?:pa|ap|frontal|lateral|oblique|portable|upright|supine|decubitus)"
_VIEW_PHRASE = re.compile(
    rf",?\s*\b(?:on|in|from|at)\s+(?:the\s+|both\s+)?{_VIEW_NAME}(?:\s+(?:and|or)\s+{_VIEW_NAME})*"
    rf"\s+(?:views?|projections?|radiographs?|images?|films?)\b",
    re.IGNORECASE,
)
# "PA and lateral views of the chest demonstrate ..." -> "...".
_VIEW_LEAD = re.compile(
    rf"^\s*(?:(?:the|single|two|portable|upright|semi-?upright|supine)\s+)*{_VIEW_NAME}"
    rf"(?:\s+(?:and|or)\s+{_VIEW_NAME})*\s+(?:views?|projections?|radiographs?|images?|films?)"
    r"(?:\s+of\s+the\s+chest)?\s+(?:demonstrates?|shows?|reveals?|is|are|were|was)\s+",
    re.IGNORECASE,
)

# Sentence ends: ., ! or ? followed by space — but not after "Dr." or "vs.".
_SENTENCE_END = re.compile(r"(?<![Dd]r\.)(?<!vs\.)(?<=[.!?])\s+")
# "1. ", "2) " list markers at the start of a line or after a sentence end.
_LIST_MARKER = re.compile(r"(?:^|(?<=[\s.:]))\d{1,2}[.)]\s+(?=[A-Za-z])")
_SPACES = re.compile(r"\s+")


@dataclass
class CleaningStats:
    """Counters of what the cleaning did, summed over reports."""

    counts: Counter = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] += n


def word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def filter_reason(findings: str | None, impression: str | None) -> str | None:
    """The first filter rule the report fails (see :data:`FILTER_RULES`), or ``None``."""
    if not findings or not findings.strip():
        return "no_findings"
    if not impression or not impression.strip():
        return "no_impression"
    if word_count(findings) < MIN_FINDINGS_WORDS:
        return "findings_under_10_words"
    if word_count(impression) < MIN_IMPRESSION_WORDS:
        return "impression_under_2_words"
    return None


def split_sentences(text: str) -> list[str]:
    text = _DOTS.sub(".", text)  # "midabdomen.." ends one sentence
    text = _LIST_MARKER.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if not text:
        return []
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_REPEATED_PUNCT = re.compile(r"([,;:])(?:\s*[,;:])+")
_LEADING_PUNCT = re.compile(r"^[,;:.\s-]+")
_TRAILING_PUNCT = re.compile(r"[,;:\s-]+([.!?])$")
_DOTS = re.compile(r"\.(?:\s*\.)+")
_LETTER = re.compile(r"[A-Za-z]")


def _tidy(sentence: str) -> str:
    sentence = _SPACES.sub(" ", sentence).strip()
    sentence = _SPACE_BEFORE_PUNCT.sub(r"\1", sentence)  # "no , x ." -> "no, x."
    sentence = _EMPTY_PARENS.sub("", sentence)
    sentence = _REPEATED_PUNCT.sub(r"\1", sentence)
    sentence = _LEADING_PUNCT.sub("", sentence)
    sentence = _TRAILING_PUNCT.sub(r"\1", sentence)
    sentence = _SPACES.sub(" ", sentence).strip()
    if sentence and sentence[-1] not in ".!?":
        sentence += "."
    if sentence:
        sentence = sentence[0].upper() + sentence[1:]
    return sentence


def clean_sentence(sentence: str, stats: CleaningStats) -> str | None:
    """One sentence with blanks and view phrases removed, or ``None`` when it must go."""
    if _COMPARISON.search(sentence):
        # Keep the finding when taking the comparing word away leaves no comparison.
        rewritten = _AGAIN.sub("", _COMPARISON_LEAD.sub("", sentence, count=1))
        if rewritten == sentence or _COMPARISON.search(rewritten) or word_count(rewritten) < 1:
            stats.add("sentences_dropped_comparison")
            return None
        stats.add("comparison_words_removed")
        sentence = rewritten
    original = sentence
    sentence, fixed = _XRAY_BLANK.subn("x-ray", sentence)
    stats.add("blanks_read_as_x_ray", fixed)
    if _BLANK.search(sentence) and _COMMUNICATION.search(sentence):
        stats.add("sentences_dropped_communication")
        return None
    sentence, blanks = _BLANK.subn(" ", sentence)
    stats.add("blanks_removed", blanks)
    if _VIEW_SENTENCE_HINT.search(sentence) and _VIEW_ONLY.match(sentence):
        stats.add("sentences_dropped_view")
        return None
    sentence, n_lead = _VIEW_LEAD.subn("", sentence)
    sentence, n_phrase = _VIEW_PHRASE.subn("", sentence)
    stats.add("view_phrases_removed", n_lead + n_phrase)
    sentence = _tidy(sentence)
    # A lone word is a finding ("Cardiomegaly.") unless cutting made it a stub ("Normal XXXX.").
    if not _LETTER.search(sentence) or (word_count(sentence) < 2 and _tidy(original) != sentence):
        stats.add("sentences_dropped_too_short")
        return None
    return sentence


_NOT_ALNUM = re.compile(r"[^a-z0-9 ]")


def _sentence_key(sentence: str) -> str:
    return _NOT_ALNUM.sub("", sentence.lower()).strip()


def summarize(findings: str, impression: str, stats: CleaningStats) -> str:
    """The cleaned findings + impression as one paragraph ('' when nothing survives)."""
    kept: list[str] = []
    seen: set[str] = set()
    for section in (findings, impression):
        for sentence in split_sentences(section):
            cleaned = clean_sentence(sentence, stats)
            if cleaned is None:
                continue
            key = _sentence_key(cleaned)
            if key in seen:
                stats.add("sentences_dropped_duplicate")
                continue
            seen.add(key)
            kept.append(cleaned)
    return " ".join(kept)


# -- MIMIC-CXR free-text reports ------------------------------------------------

# Section headers are upper-case words followed by a colon at a line start
# ("FINDINGS:", "IMPRESSION:", "PA AND LATERAL VIEWS OF THE CHEST:").
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&,()'-]*[A-Z)])[ \t]*:", re.MULTILINE)
_FINDINGS_HEADERS = {"FINDINGS", "FINDING"}
_IMPRESSION_HEADERS = {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"}


def mimic_sections(text: str) -> tuple[str | None, str | None]:
    """(findings, impression) of a MIMIC-CXR report; ``None`` for a missing section.

    A section runs from its header to the next header. When a header repeats
    (addenda), the sections' texts are joined.
    """
    headers = list(_HEADER.finditer(text))
    findings: list[str] = []
    impression: list[str] = []
    for i, match in enumerate(headers):
        name = _SPACES.sub(" ", match.group(1)).strip()
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = _SPACES.sub(" ", text[match.end() : end]).strip()
        if name in _FINDINGS_HEADERS:
            findings.append(body)
        elif name in _IMPRESSION_HEADERS:
            impression.append(body)
    joined_findings = " ".join(part for part in findings if part)
    joined_impression = " ".join(part for part in impression if part)
    return joined_findings or None, joined_impression or None
