"""A rule-based CheXpert-style labeler for chest x-ray reports.

It labels the 14 CheXpert observations (``constants.CHEXPERT_OBSERVATIONS``)
in free text, in the manner of the CheXpert labeler (Irvin et al. 2019) and
NegEx (Chapman et al. 2001), with no model and no external tool:

1. **Mentions.** Each observation has regular expressions for the phrases that
   mention it ("cardiomegaly", "enlarged cardiac silhouette", "pneumothoraces",
   "endotracheal tube", ...). Exclusions mask phrases that look like a mention
   but are not one ("pericardial effusion", "pleural line", "lytic lesion").
   A few "normal" phrases ("heart size is normal", "normal cardiomediastinal
   silhouette") state an observation is absent and label it negative directly.
2. **Scope.** The text is split into sentences and each sentence into clauses
   at contrast words ("but", "however", "although", "except", "other than",
   ...), so that "no effusion but mild cardiomegaly" keeps cardiomegaly positive.
   Text without full stops (a model trained on ``blip_caption`` text writes
   "no pleural effusion mild cardiomegaly the lungs are clear") is also cut
   where a new sentence evidently starts (see :func:`_run_on_split`).
3. **Cues.** In its clause a mention is negative or uncertain by the nearest
   cue before it ("no", "without", "free of", "negative for", "may",
   "possible", "cannot exclude", ...) or, when none precedes it, by a cue at
   most six words after it ("has resolved", "is not seen", "is not excluded",
   "?"), not across "with" or a new subject. Pseudo-cues ("no change in", "no
   interval increase") are masked first, so "no change in the effusion" stays
   positive; "to suggest" takes an earlier cue's meaning ("no opacity to
   suggest pneumonia" is negative, "findings suggest pneumonia" uncertain).
4. **Aggregation** per observation over all mentions: positive if any mention
   is positive, else uncertain if any is uncertain, else negative if any is
   negative, else blank (``None``).
5. **No Finding** is positive when no other observation is positive or
   uncertain, and nothing from a short list of other abnormal findings outside
   the 14 (granulomas, calcification, emphysema, hyperinflation, scoliosis,
   degenerative change, hernia, foreign bodies, ...) is stated without
   negation; otherwise it is blank. Two deliberate differences from the
   CheXpert labeler, which ignores Support Devices here and looks only at its
   14 observations: a study with a device or another abnormality is not "No
   Finding". That makes "No Finding" mean a normal study, as the OpenI
   "normal" tag, the phantom data set's labels and a reader take it.

Conventions worth knowing (as in the CheXpert labeler): every observation is
labelled from its own mentions only; the CheXpert hierarchy is not propagated,
so "consolidation" labels Consolidation but not Lung Opacity, and "nodular
opacity" labels both Lung Lesion and Lung Opacity because both are mentioned.
Healed or old fractures are positive; "likely X" is uncertain; "borderline
cardiomegaly" is positive; "heart size at the upper limit of normal" is
uncertain; "stable" never negates ("stable support devices" is positive).

For the clinical-efficacy metrics, :func:`to_binary` maps the four states to
positive = 1 and negative, uncertain, blank = 0.

Quality: against the MeSH tags of the 3,832 indexed OpenI reports
(``xraygpt openi-agreement``) micro-F1 is 0.94 over the 11
observations both express, 0.89 on the same reports with their punctuation
stripped. The phrase lists were written while reading OpenI disagreements, so
these are development-set figures, not held-out ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS

POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1
# A blank (the report says nothing about the observation) is ``None``.

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

BINARY_DEFINITION = (
    "Clinical efficacy: the 14 CheXpert observations are labelled in the generated "
    "and in the reference report by the project's rule-based labeler "
    "(xraygpt.data.labeler); positive = 1, and negative, uncertain and blank = 0. "
    "No Finding is positive when no other observation, Support Devices included, is "
    "positive or uncertain and no other abnormality is stated (CheXpert's labeler ignores "
    "devices there). The reference report is the truth. "
    "Per observation, true/false positives and negatives are counted over reports; "
    "micro scores pool the counts over the 14 observations, macro scores average "
    "the per-observation scores (an observation with no positive in either report set "
    "scores 0 precision/recall/F1 and is included in the macro average)."
)

# ---------------------------------------------------------------------------
# Building blocks for the patterns. Text is lower-cased before matching.

_W = r"[\w'-]+"  # one word


def _gap(n: int) -> str:
    """Up to ``n`` words between two parts of a mention, never across a comma.

    "normal", "with", "and" and friends end a mention: "heart size normal with
    increased markings" must not read as "heart ... increased".
    """
    return rf"(?:\s+(?!(?:normal|with|without|and|or|but|of\s+normal)\b){_W}){{0,{n}}}?"


_LUNG_PLACE = r"(?:bases?|basilar|bibasilar|lingula|lingular|midlung|perihilar|retrocardiac|apex|apices|apical|suprahilar|infrahilar)"
_ENLARGED = r"(?:enlarg\w*|large|larger|increased|prominen\w*|widen\w*|wide)"
_HEART = r"(?:heart|cardiac(?:\s+(?:silhouette|contours?|shadow|size|diameter))?)"
_MEDIASTINUM = (
    r"(?:cardiomediastinal|cardio-mediastinal|mediastinal|mediastinum|superior\s+mediastinum)"
)
_NORMAL = r"(?:(?<!of )normal(?!\s+limits?)|within\s+normal\s+limits|unremarkable|not\s+enlarged)"
_ULN = r"(?:(?:at\s+|on\s+|near\s+)?(?:the\s+)?upper\s+limits?\s+of\s+normal|(?:near\s+)?(?:top|high|upper)[\s-]normal)"

# observation -> patterns that mention it
_MENTIONS: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": [
        rf"\b{_MEDIASTINUM}\b(?:\s+(?:silhouette|contours?|shadow|width|size|structures))?{_gap(3)}\s+{_ENLARGED}",
        rf"\b{_ENLARGED}{_gap(2)}\s+{_MEDIASTINUM}\b",
        rf"\b{_MEDIASTINUM}\s+(?:widening|enlargement|prominence)\b",
        r"\b(?:widening|enlargement|prominence)\s+of\s+the\s+(?:\w+\s+)?(?:mediastinum|cardiomediastinal\s+silhouette)\b",
        rf"\b{_MEDIASTINUM}\b(?:\s+(?:silhouette|contours?|size|width))?{_gap(3)}\s+{_ULN}",
    ],
    "Cardiomegaly": [
        r"\bcardiomegaly\b",
        rf"\b{_HEART}\b{_gap(4)}\s+{_ENLARGED}",
        rf"\b{_ENLARGED}{_gap(2)}\s+{_HEART}\b",
        r"\b(?:enlargement|prominence)\s+of\s+the\s+(?:\w+\s+)?(?:heart|cardiac\s+(?:silhouette|contour|shadow))\b",
        r"\bcardiac\s+enlargement\b",
        rf"\bborderline(?:\s+\w+)?\s+{_HEART}\b",
        rf"\b{_HEART}(?:\s+(?:is|are|appears?|remains?))?\s+borderline\b",
        rf"\b{_HEART}\b{_gap(4)}\s+{_ULN}",
    ],
    "Lung Opacity": [
        r"\bopaci\w*",
        r"\binfiltrat\w*",
        r"\bair[\s-]?space\s+(?:disease|process|opacit\w*|filling|shadowing)\b",
        # "density" alone is too often bone, soft tissue or a hernia: lung context only
        rf"\b(?:airspace|air\s+space|parenchymal|pulmonary|lung|alveolar|interstitial|patchy|streaky|hazy|increased|{_LUNG_PLACE})\s+densit(?:y|ies)\b",
        rf"\bdensit(?:y|ies)\s+(?:\w+\s+){{0,3}}?(?:lungs?|lobes?|{_LUNG_PLACE})\b",
        r"\bhaz(?:y|iness)\b",
        r"\bground[\s-]glass\b",
    ],
    "Lung Lesion": [
        r"\bnodul\w*",
        r"\bmass(?:es)?\b",
        r"\blesions?\b",
        r"\btumou?rs?\b",
        r"\bneoplas\w*",
        r"\bcarcinoma\w*",
        r"\bmalignan\w*",
        r"\bmetasta\w*",
        r"\bcancer\w*",
        r"\bcavitary\b",
    ],
    "Edema": [
        r"\b(?:o)?edema\w*",
        r"\b(?:congestive\s+)?heart\s+failure\b",
        r"\bchf\b",
        r"\b(?:vascular|venous|pulmonary|interstitial)\s+(?:\w+\s+)?congestion\b",
        r"\bcongestive\s+(?:changes?|failure)\b",
        r"\bcephali[sz]ation\b",
        r"\bkerley\b",
        r"\bcongest\w*",
        r"\b(?:early|cardiac|left\s+heart|ventricular)\s+failure\b",
        r"\bpulmonary\s+venous\s+hypertension\b",
        r"\b(?:vascular|vasculature|vascularity|vessels?)\s+(?:\w+\s+){0,2}?(?:prominen\w*|engorge\w*|redistribution|indistinct\w*|cephali[sz]\w*)",
        r"\b(?:prominen\w*|engorge\w*|increased|indistinct\w*)\s+(?:of\s+the\s+)?(?:\w+\s+){0,2}?(?:vascular(?:ity|ture)?|vessels)\b(?!\s+(?:calcification|markings))",
        r"\bengorged\b",
    ],
    "Consolidation": [r"\bconsolidat\w*"],
    "Pneumonia": [
        r"\w*pneumoni\w*",
        r"\binfectio\w*",
        r"\baspiration\b",
    ],
    "Atelectasis": [
        r"\batelecta\w*",
        r"\b(?:lung|lobe|lobar|segmental|lobes)\s+collapse\b",
        r"\bcollapse\s+of\s+(?:\w+\s+){0,5}?(?:lungs?|lobes?)\b",
    ],
    "Pneumothorax": [r"\w*pneumothora\w*"],
    "Pleural Effusion": [
        r"\beffusions?\b",
        r"\bpleural\s+fluid\b",
        r"\bhydrothorax\b",
        r"\bhydropneumothora\w*",
        r"\bfluid\s+(?:\w+\s+){0,2}(?:fissure|pleural\s+space)\b",
    ],
    "Pleural Other": [
        r"\bpleural(?:[\s-]+parenchymal)?\s+(?:\w+\s+)?(?:thickening|scar\w*|plaques?|calcifications?|fibrosis)\b",
        r"\bthickening\s+of\s+the\s+(?:\w+\s+)?pleura\b",
        r"\bfibrothorax\b",
        r"\b(?:apical|pleural)\s+(?:pleural\s+)?(?:capping|caps?)\b",
    ],
    "Fracture": [r"\bfractur\w*", r"\bfx\b"],
    "Support Devices": [
        r"\btubes?\b",
        r"\bett\b",
        r"\bcatheters?\b",
        r"\bpicc\b",
        r"\b(?:central|venous|arterial|swan[\s-]ganz|jugular|subclavian|ij|dialysis|port|picc)\s+(?:\w+\s+)?lines?\b",
        r"\b(?:lines?\s+and\s+tubes?|tubes?\s+and\s+lines?)\b",
        r"\b(?:medi)?ports?\b",
        r"\bport[\s-]?a[\s-]?cath\b",
        r"\bpacemakers?\b",
        r"\bpacer\b",
        r"\ba?icd\b",
        r"\btracheostomy\b",
        r"\btubing\b",
        r"\bshunts?\b",
        r"\b(?:stimulator|neurostimulator|loop\s+recorder)s?\b",
        r"\bprosthe(?:sis|ses|tic)\b",
        r"\b(?:monitor|monitoring|ecg|ekg|external|telemetry)\s+(?:\w+\s+)?(?:leads?|wires?|electrodes?)\b",
        r"\bleads?\s+(?:terminat\w*|in\s+the|project\w*|overl\w*|extend\w*)",
        r"\btips?\s+(?:is\s+|are\s+)?(?:at|in|projects?|projecting|overl\w*|terminat\w*|near|approximat\w*|within|located|lies|positioned|visualized)\b",
        r"\bdefibrillators?\b",
        r"\b(?:pacing|pacemaker|pacer|cardiac|transvenous|icd)\s+(?:\w+\s+)?(?:leads?|wires?|generators?)\b",
        r"\bstents?\b",
        r"\b(?:valve\s+(?:replacement|prosthesis)|prosthetic\s+valve|(?:aortic|mitral)\s+valve\s+replacement)\b",
        r"\bdrains?\b",
        r"\bhardware\b",
        r"\bdevices?\b",
        r"\b(?:fixation|surgical)\s+(?:plates?|screws?|rods?)\b",
        r"\bcannula\w*",
        r"\bcoils?\b",
    ],
}

# observation -> phrases that look like a mention but are not one (masked first)
_EXCLUSIONS: dict[str, list[str]] = {
    "Pleural Effusion": [r"\b(?:pericardial|joint|shoulder|knee)\s+effusions?\b"],
    "Lung Lesion": [
        r"\b(?:lytic|sclerotic|blastic|bone|bony|osseous|skin|cutaneous|osteolytic)\s+(?:\w+\s+)?lesions?\b",
        r"\bmass\s+effect\b",
        r"\b(?:soft\s+tissue|breast)\s+mass(?:es)?\b",
    ],
    "Lung Opacity": [
        r"\b(?:bone|bony|mineral|osseous|breast|soft\s+tissue|nipple|calcified|calcific)\s+densit(?:y|ies)\b",
        r"\bdensit(?:y|ies)\s+(?:of|in)\s+the\s+(?:\w+\s+)?(?:bones?|spine|vertebra\w*|ribs?|breasts?|soft\s+tissues?)\b",
    ],
    "Support Devices": [
        r"\b(?:pleural|septal|kerley\s+b?|azygos|fissure|skin[\s-]?fold)\s+lines?\b",
        r"\b(?:endotracheal|et)\s+tube\s+(?:is\s+)?(?:not\s+)?(?:recommended|suggested)\b",
        r"\b(?:gastric|stomach)\s+(?:bubble|air)\b",
        r"\bfallopian\s+tubes?\b",
        r"\b(?:scapula\w*|scapular|rib|xiphoid|spinous|nose|lung|root)\s+tips?\b",
        r"\btip\s+of\s+the\s+(?:scapula|xiphoid|spinous|rib|lung)\w*",
    ],
    "Edema": [r"\bsoft\s+tissue\s+(?:o)?edema\b"],
    "Pneumonia": [
        r"\b(?:granulomatous|tuberculous|tuberculosis|tb|fungal)\s+(?:\w+\s+)?infections?\b",
    ],
}

# observation -> phrases that state it is absent (labelled negative directly)
_NORMALS: dict[str, list[str]] = {
    "Cardiomegaly": [
        rf"\b{_HEART}\b(?:\s+(?:and|is|are|appears?|remains?|size|the|pulmonary|mediastinal|cardiomediastinal|vascularity|contours?|silhouette|mediastinum|hilar|of|in|size)){{0,6}}\s+{_NORMAL}",
        rf"\bnormal(?:\s+\w+)?\s+{_HEART}\b",
        r"\bheart\s+(?:is\s+)?normal\s+in\s+size\b",
    ],
    "Enlarged Cardiomediastinum": [
        rf"\b{_MEDIASTINUM}\b(?:\s+(?:and|is|are|appears?|remains?|size|silhouettes?|contours?|structures|width|hilar|the|heart|cardiac|pulmonary|vascularity|of|in|size)){{0,6}}\s+{_NORMAL}",
        rf"\bnormal(?:\s+\w+)?\s+{_MEDIASTINUM}\b",
    ],
}

# Other abnormal findings outside the 14: stated without negation, they keep
# "No Finding" blank (see the module docstring).
_OTHER_ABNORMAL = [
    r"\bgranulom\w*",
    r"\bcalcifi\w*",
    r"\bemphysema\w*",
    r"\bcopd\b",
    r"\bchronic\s+obstructive\b",
    r"\bhyper[\s-]?(?:inflat|expan|aerat|lucen)\w*",
    r"\bflatten\w*\s+(?:of\s+the\s+)?(?:\w+\s+)?(?:hemi)?diaphragms?\b",
    r"\w*scolio\w*",
    r"\bcurvature\b",
    r"\bblunt\w*",
    r"\bcrowding\b",
    r"\bforeign\s+bod\w*",
    r"\bpiercings?\b|\bjewelry\b",
    r"\bvolume\s+loss\b",
    r"\b(?:over|hyper)[\s-]?expan\w*",
    r"\b(?:decreased|diminished|reduced|lower|increased)\s+lung\s+volumes?\b",
    r"\blung\s+volumes?\s+(?:are\s+|is\s+)?(?:\w+\s+)?(?:low|decreased|diminished|reduced|increased)\b",
    r"\b(?:bi)?hilar\s+(?:\w+\s+)?(?:prominence|fullness|enlargement)\b",
    r"\bdilat\w*",
    r"\bdissection\b",
    r"\bdegenerat\w*",
    r"\bkyphosis\b|\bkyphotic\b",
    r"\bspondylo\w*",
    r"\bosteophyt\w*",
    r"\bscar(?:ring|s)?\b",
    r"\bfibros\w*|\bfibrotic\b",
    r"\btortu\w*",
    r"\bectatic\b|\bectasia\b",
    r"\bunfold\w*",
    r"\batherosclero\w*",
    r"\baneurysm\w*",
    r"\bhernia\w*",
    r"\beventration\b",
    r"\belevat\w*\s+(?:of\s+the\s+)?(?:\w+\s+){0,2}(?:hemi)?diaphragm\w*",
    r"\b(?:hemi)?diaphragm\w*(?:\s+\w+){0,3}\s+elevat\w*",
    r"\bbronchiectasis\b",
    r"\b(?:interstitial|bronchovascular|lung|pulmonary)\s+markings\b",
    r"\bthicken\w*",
    r"\bdeformit\w*",
    r"\bsternotomy\b",
    r"\b(?:post[\s-]?(?:operative|surgical)|surgical\s+changes)\b",
    r"\b(?:hypo[\s-]?inflat\w*|low\s+(?:lung\s+)?volumes?|hypoventilat\w*)",
    r"\bcyst\w*",
    r"\bbullae?\b|\bbullous\b",
    r"\blucenc\w*",
    r"\bcavit\w*",
    r"\blymphadenopathy\b",
    r"\b(?:hilar|mediastinal)\s+(?:\w+\s+)?(?:adenopathy|prominence|enlargement|lymph\s+nodes?)\b",
]

# --- cues --------------------------------------------------------------------

_CHANGE_MODIFIERS = r"(?:(?:significant|interval|appreciable|definite|substantial|major|acute|real|radiographic)\s+){0,3}"
# Pseudo-cues: look like negation/uncertainty but are neither; masked first.
_PSEUDO = [
    rf"\b(?:no|without)\s+{_CHANGE_MODIFIERS}(?:change|increase|decrease|worsening|progression|improvement|enlargement)\b",
    r"\bnot\s+(?:significantly\s+)?(?:changed|increased|decreased|worsened|improved)\b",
    r"\bnot\s+only\b",
    r"\bgram[\s-]negative\b",
    r"\bno\s+other\b",
]

# (pattern, direction) with direction "pre" (cue before the mention) or "post"
_NEGATION: list[tuple[str, str]] = [
    (
        r"\bno\s+longer\s+(?:seen|visible|visualized|present|identified|evident|demonstrated|appreciated)\b",
        "post",
    ),
    (
        r"\b(?:is|are|was|were|has\s+been|have\s+been)?\s*not\s+(?:well\s+)?(?:seen|identified|present|visualized|visible|demonstrated|evident|appreciated|noted|detected|apparent|definitely\s+seen)\b",
        "post",
    ),
    (
        r"\b(?:has|have|had)?\s*(?:since\s+|now\s+|completely\s+|nearly\s+|largely\s+)?(?:resolved|cleared|disappeared)\b",
        "post",
    ),
    (r"\b(?:has|have|had)?\s*(?:been\s+)?removed\b", "post"),
    (r"\b(?:is|are)\s+(?:now\s+)?absent\b", "post"),
    (r"\babsent\b", "post"),
    (r"\b(?:is|are)\s+negative\b", "post"),
    (
        r"\b(?:is|are|appears?|remains?)?\s*(?:now\s+)?within\s+(?:the\s+)?(?:normal\s+limits|limits\s+of\s+normal)\b",
        "post",
    ),
    (r"\b(?:is|are|appears?|remains?)\s+(?:now\s+)?(?:normal|unremarkable)\b", "post"),
    (r"\bno\s+longer\b", "pre"),
    (r"\bno\b", "pre"),
    (r"\bnot\b", "pre"),
    (r"\bnor\b", "pre"),
    (r"\bneither\b", "pre"),
    (r"\bwithout\b", "pre"),
    (r"\bfree\s+of\b", "pre"),
    (r"\bclear\s+of\b", "pre"),
    (r"\bnegative\s+for\b", "pre"),
    (r"\babsence\s+of\b", "pre"),
    (r"\b(?:interval\s+)?(?:resolution|removal|clearing)\s+of\b", "pre"),
    (r"\bresolved\b", "pre"),
    (r"\bruled?\s+out\s+(?:for\s+)?\b", "pre"),
]

# "suggest" is uncertain on its own ("findings suggest pneumonia") but carries an
# earlier cue's meaning ("no focal opacity to suggest pneumonia" is negative).
_SUGGEST = r"\b(?:to\s+)?(?:suggest\w*|indicat\w*)(?:\s+of)?\b"
_SUGGEST_RE = re.compile(_SUGGEST)

_UNCERTAINTY: list[tuple[str, str]] = [
    (
        r"\b(?:cannot|can\s*not|can't|could\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|definitely\s+|totally\s+)?(?:excluded|ruled\s+out|exclude|rule\s+out)\b",
        "pre",
    ),
    (
        r"\b(?:cannot|can\s*not|can't|could\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|definitely\s+|totally\s+)?(?:excluded|ruled\s+out)\b",
        "post",
    ),
    (
        r"\b(?:is|are)\s+(?:also\s+)?(?:possible|suspected|questioned|questionable|likely|probable|not\s+excluded)\b",
        "post",
    ),
    (r"\b(?:difficult|hard)\s+to\s+(?:\w+\s+)?(?:exclude|rule\s+out)\b", "pre"),
    (r"\b(?:difficult|hard)\s+to\s+(?:\w+\s+)?(?:exclude|rule\s+out)\b", "post"),
    (
        r"\b(?:may|might|could)\s+(?:not\s+)?be\s+(?:present|seen|demonstrated|visible|visualized|identified|occult)\b",
        "post",
    ),
    (r"\bversus\b|\bvs\.?(?=\s)", "pre"),
    (r"\bversus\b|\bvs\.?(?=\s)", "post"),
    (r"\?", "pre"),
    (r"\?", "post"),
    (rf"{_ULN}", "pre"),
    (rf"{_ULN}", "post"),
    (r"\b(?:may|might|could|can)\b", "pre"),
    (
        r"\b(?:possible|possibly|probable|probably|likely|presumed|presumably|perhaps|maybe)\b",
        "pre",
    ),
    (r"\bquestion(?:able|ably)?(?:\s+of)?\b", "pre"),
    (r"\bsuspect\w*|\bsuspicio(?:us|n)\s+(?:for|of)\b", "pre"),
    (r"\bconcern(?:ing)?(?:\s+(?:for|of))?\b", "pre"),
    (r"\b(?:rule|r/o)\s+out\b", "pre"),
    (r"\bdifferential\b", "pre"),
    (r"\b(?:is|are)?\s*(?:in|within)\s+the\s+differential\b", "post"),
    (r"\b(?:would\s+be|is|are)\s+(?:a|another)\s+(?:\w+\s+)?consideration\b", "post"),
    (r"\bcorrelat\w*(?:\s+clinically)?(?:\s+(?:for|with|to))?\b", "pre"),
    (r"\b(?:to\s+)?(?:evaluate|assess)\s+for\b", "pre"),
    (r"\b(?:to\s+)?exclude\b", "pre"),
    (r"\bconsider\w*\b", "pre"),
    (r"\bworrisome\b", "pre"),
    (_SUGGEST, "pre"),
    (r"\b(?:indeterminate|equivocal|uncertain|nonspecific|non-specific)\b", "pre"),
    (r"\bfavou?r\w*", "pre"),
    (r"\braises?\s+(?:the\s+)?(?:possibility|question)\b", "pre"),
    (r"\bnot\s+(?:entirely\s+)?(?:clear|certain)\b", "pre"),
    (r"\b(?:or|and/or)\b(?=[^,]*\b(?:may|might|could|possible|possibly|versus|likely)\b)", "pre"),
]

# Words that end the scope of a cue inside a sentence.
_TERMINATORS = (
    r"\b(?:but|however|although|though|whereas|while|yet|except(?:\s+for)?|aside\s+from|"
    r"apart\s+from|other\s+than|besides|with\s+the\s+exception\s+of)\b"
    r"|;|:|,\s+(?:and\s+)?there\s+(?:is|are)\b|\band\s+there\s+(?:is|are)\b"
)


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    value: int  # NEGATIVE or UNCERTAIN
    direction: str  # "pre" or "post"
    carries: bool = False  # a "suggest" cue: takes an earlier cue's meaning


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One alternation of all the patterns: one scan of the text instead of many."""
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTION_RE = {obs: _compile(p) for obs, p in _MENTIONS.items()}
_EXCLUSION_RE = {obs: _compile(p) for obs, p in _EXCLUSIONS.items()}
_NORMAL_RE = {obs: _compile(p) for obs, p in _NORMALS.items()}
_OTHER_RE = _compile(_OTHER_ABNORMAL)
_PSEUDO_RE = _compile(_PSEUDO)
_CUE_RE = [(re.compile(p), NEGATIVE, d) for p, d in _NEGATION] + [
    (re.compile(p), UNCERTAIN, d) for p, d in _UNCERTAINTY
]
_TERMINATOR_RE = re.compile(_TERMINATORS)
# Run-on text (see _run_on_split): text with none of these characters.
# (``blip_caption`` keeps commas and "?", so they do not count.)
_PUNCTUATION_RE = re.compile(r"[.;:!]")
_STARTERS = {"impression", "conclusion"}
_DETERMINERS = {"the", "this", "these"}
_UNITS = {"cm", "mm", "centimeter", "centimeters", "millimeter", "millimeters", "x", "by"}
_VERBS = {
    "is", "are", "was", "were", "appears", "appear", "remains", "remain", "has", "have",
    "demonstrates", "shows",
}  # fmt: skip
_MODIFIERS = {
    "mild", "mildly", "moderate", "moderately", "severe", "severely", "marked", "markedly",
    "small", "large", "minimal", "trace", "tiny", "stable", "unchanged", "new", "persistent",
    "bilateral", "left", "right", "moderate-to-large", "small-to-moderate",
}  # fmt: skip
_CONNECTORS = {
    "no", "not", "or", "and", "nor", "of", "for", "without", "with", "a", "an", "any", "the",
    "is", "are", "was", "were", "be", "been", "to", "in", "on", "at", "than", "evidence",
    "signs", "definite", "significant", "focal", "there", "very", "but", "by", "from", "as",
    "this", "that", "which", "these", "its", "both", "into", "within", "over", "upper", "lower",
    "otherwise", "again", "also", "now", "slightly", "more", "less", "vs", "versus", "and/or",
    "possible", "possibly", "probable", "probably", "likely", "suspected", "suspicion",
    "questionable", "may", "might", "could", "suggest", "suggests", "suggesting", "xxxx",
    "minimally", "concerning", "cannot", "exclude", "represent", "reflect", "due",
}  # fmt: skip
# A cue after a mention reaches back at most this many words, and not across
# "with" or a new subject ("heart is enlarged the mediastinum is normal").
_POST_SCOPE_WORDS = 6
_POST_STOP_RE = re.compile(
    r"\bwith\b|(?<!\bof)(?<!\bon)(?<!\bin)(?<!\bat)(?<!\bto)(?<!\bfor)(?<!\bfrom)(?<!\bover) the\b"
)
# Sentence ends: a full stop that is not a decimal point, "!", or a line break.
_SENTENCE_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|!|\n+")

_OBSERVATIONS = tuple(o for o in CHEXPERT_OBSERVATIONS if o != NO_FINDING)
assert set(_MENTIONS) == set(_OBSERVATIONS), "every observation needs mention patterns"


def _run_on_split(clause: str) -> list[str]:
    """Cut a clause where a new sentence evidently starts without a full stop.

    Model output trained on ``blip_caption`` text has no punctuation at all
    ("no pleural effusion mild cardiomegaly the lungs are clear"), so a
    negation would otherwise run to the end of the report. A new sentence is
    taken to start at "there is/are", at "impression", at a list number, at
    "the/this" followed within five words by a verb, and at a severity or
    side word ("mild", "small", "left", ...) that follows a word which is not
    a connector ("no large effusion" and "effusion or small pneumothorax"
    stay one clause).
    """
    words = clause.split()
    pieces: list[list[str]] = [[]]
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        start = False
        if i:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if word in _STARTERS or (word == "there" and nxt in _VERBS):
                start = True
            elif word.isdigit() and len(word) <= 2 and nxt.isalpha() and nxt not in _UNITS:
                start = True  # a list number: "1 no acute disease 2 mild cardiomegaly"
            elif word in _DETERMINERS and any(w in _VERBS for w in words[i + 1 : i + 6]):
                start = prev not in _CONNECTORS
            elif word in _MODIFIERS and prev not in _CONNECTORS and prev not in _MODIFIERS:
                start = prev.isalpha()
        if start and pieces[-1]:
            pieces.append([])
        pieces[-1].append(word)
    return [" ".join(piece) for piece in pieces if piece]


def _clauses(text: str) -> list[str]:
    """Lower-cased clauses: sentences cut at the words that end a cue's scope.

    Text without any punctuation is also cut by :func:`_run_on_split`;
    punctuated text is trusted to mark its own sentences.
    """
    text = re.sub(r"\s+", " ", text.lower())
    run_on = _PUNCTUATION_RE.search(text) is None
    out = []
    for sentence in _SENTENCE_RE.split(text):
        for clause in _TERMINATOR_RE.split(sentence):
            clause = clause.strip(" ,")
            for piece in _run_on_split(clause) if run_on else [clause]:
                piece = piece.strip(" ,")
                if piece:
                    out.append(f" {piece} ")
    return out


def _mask(text: str, pattern: re.Pattern[str] | None) -> str:
    """Blank out matches, keeping offsets, so nothing else can match there."""
    if pattern is None:
        return text
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _cues(clause: str) -> list[_Cue]:
    """All cues of a clause; a longer cue hides the shorter ones inside it."""
    candidates = []
    for pattern, value, direction in _CUE_RE:
        for m in pattern.finditer(clause):
            if m.end() > m.start():
                candidates.append((m.start(), m.end(), value, direction))
    # Longest first, so "cannot be excluded" wins over the "not" inside it.
    candidates.sort(key=lambda c: (-(c[1] - c[0]), c[0]))
    found: list[_Cue] = []
    spans: set[tuple[int, int]] = set()
    for start, end, value, direction in candidates:
        # the same span may carry two readings ("resolved" before or after)
        if (start, end) not in spans and any(start < e and s < end for s, e in spans):
            continue
        spans.add((start, end))
        carries = bool(_SUGGEST_RE.fullmatch(clause, start, end))
        found.append(_Cue(start, end, value, direction, carries))
    return found


def _mention_value(clause: str, start: int, end: int, cues: list[_Cue]) -> int:
    """The state of a mention at [start, end) given its clause's cues."""
    # A cue before the mention, or inside it ("heart is not enlarged"); nearest wins.
    before = [c for c in cues if c.direction == "pre" and c.start < end and c.end <= end]
    before = [c for c in before if c.start < start or c.end <= end]
    if before:
        before.sort(key=lambda c: (c.end, c.value == UNCERTAIN))
        nearest = before[-1]
        if nearest.carries and len(before) > 1:
            nearest = before[-2]
        return nearest.value
    after = [c for c in cues if c.direction == "post" and c.start >= end]
    if after:
        nearest = min(after, key=lambda c: c.start)
        between = clause[end : nearest.start]
        # "effusion has resolved", but not "cardiomegaly with vascularity that is normal"
        if len(between.split()) <= _POST_SCOPE_WORDS and not _POST_STOP_RE.search(between):
            return nearest.value
    return POSITIVE


def _combine(current: int | None, new: int) -> int:
    """Positive beats uncertain beats negative beats blank."""
    if current is None:
        return new
    order = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    return new if order[new] > order[current] else current


def label_report(text: str) -> dict[str, int | None]:
    """The 14 CheXpert observations of one report.

    Returns ``{observation: state}`` for every observation in
    ``CHEXPERT_OBSERVATIONS``, with state 1 (positive), 0 (negative),
    -1 (uncertain) or ``None`` (blank: not mentioned).
    """
    if not isinstance(text, str):
        raise TypeError(f"label_report expects a report string, got {type(text).__name__}")
    labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_OBSERVATIONS)
    if not re.search(r"\w", text):
        return labels  # an empty report states nothing, not a normal study
    other_abnormal = False
    for clause in _clauses(text):
        clause = _mask(clause, _PSEUDO_RE)
        cues = _cues(clause)
        for obs in _OBSERVATIONS:
            view = _mask(clause, _EXCLUSION_RE.get(obs))
            normal = _NORMAL_RE.get(obs)
            if normal is not None and normal.search(view):
                labels[obs] = _combine(labels[obs], NEGATIVE)
            for m in _MENTION_RE[obs].finditer(view):
                labels[obs] = _combine(labels[obs], _mention_value(view, m.start(), m.end(), cues))
        if not other_abnormal:
            other_abnormal = any(
                _mention_value(clause, m.start(), m.end(), cues) == POSITIVE
                for m in _OTHER_RE.finditer(clause)
            )
    findings = [labels[obs] for obs in _OBSERVATIONS]
    if not other_abnormal and not any(v in (POSITIVE, UNCERTAIN) for v in findings):
        labels[NO_FINDING] = POSITIVE
    return labels


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    return [label_report(t) for t in texts]


def to_binary(labels: dict[str, int | None]) -> dict[str, int]:
    """The clinical-efficacy view: positive = 1; negative, uncertain, blank = 0."""
    missing = [o for o in CHEXPERT_OBSERVATIONS if o not in labels]
    if missing:
        raise KeyError(f"labels lack observation(s) {', '.join(missing)}")
    return {o: int(labels[o] == POSITIVE) for o in CHEXPERT_OBSERVATIONS}
