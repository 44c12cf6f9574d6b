"""Chat evaluation on the phantom test split: yes/no questions through the demo's ``Chat``.

For each phantom test image, one question per finding the phantoms can show and
one "is this normal?" (:data:`xraygpt.common.constants.PHANTOM_OBSERVATIONS`), in
the held-out phrasings training never saw (``xraygpt.data.phantom.questions``),
greedy, through :class:`xraygpt.conversation.chat.Chat` as the demo uses it:

- (a) ``first``: the question is the conversation's first message, with the image;
- (b) ``follow_up``: the model first writes a report (a held-out report request),
  then the question follows in the same conversation.

The yes/no rule is :func:`xraygpt.data.phantom.questions.read_yes_no` (the first word
is yes or no; anything else is "no yes/no"). Scores, per mode:

- per observation, balanced accuracy against the phantom's label: the mean of
  the recall on images that show it and on images that do not; an answer with
  no yes/no counts as wrong for either;
- ``macro_balanced_accuracy`` over the seven, and the same for the always-"no"
  baseline (0.5 wherever both classes occur);
- ``no_yes_no``: the share of answers with no yes/no in them;
- (b) only, ``consistency``: the share of follow-up answers that agree with the
  model's own report, as the project's labeler (``xraygpt.data.labeler``)
  reads that report (positive = labelled 1; an answer with no yes/no disagrees).

Writes ``chat_metrics.json`` (and every exchange, ``chat_answers.jsonl``) to
``<run.output_dir>/<job>/``, beside test.py's ``metrics.json``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xraygpt.common.constants import PHANTOM_OBSERVATIONS
from xraygpt.common.io import atomic_write_json, atomic_write_text
from xraygpt.conversation.chat import Chat
from xraygpt.data.labeler import label_report
from xraygpt.data.phantom.questions import (
    QUESTIONS,
    case_findings,
    finding_question,
    read_yes_no,
)

MODES = ("first", "follow_up")
ANSWER_TOKENS = 48  # a yes/no answer with its sentence; a report gets REPORT_TOKENS
REPORT_TOKENS = 160


def balanced_accuracy(truth: Sequence[int], predicted: Sequence[int | None]) -> float | None:
    """Mean recall of the positives and the negatives; ``None`` predictions are wrong.

    With one class absent, the recall of the other (``None`` with no labels).
    """
    recalls = []
    for cls in (1, 0):
        idx = [i for i, t in enumerate(truth) if t == cls]
        if idx:
            recalls.append(sum(predicted[i] == cls for i in idx) / len(idx))
    return sum(recalls) / len(recalls) if recalls else None


def score(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``chat_metrics.json``'s content from the exchanges (see the module doc)."""
    out: dict[str, Any] = {
        "n_images": len({r["image_id"] for r in records}),
        "phrasing": records[0].get("phrasing", "held_out") if records else "held_out",
    }
    for mode in MODES:
        rows = [r for r in records if r["mode"] == mode]
        if not rows:
            continue
        per, base = {}, {}
        for obs in PHANTOM_OBSERVATIONS:
            sel = [r for r in rows if r["observation"] == obs]
            truth = [r["label"] for r in sel]
            per[obs] = balanced_accuracy(truth, [r["answer_yes_no"] for r in sel])
            base[obs] = balanced_accuracy(truth, [0] * len(sel))
        valid = [v for v in per.values() if v is not None]
        valid_base = [v for v in base.values() if v is not None]
        entry: dict[str, Any] = {
            "balanced_accuracy": per,
            "macro_balanced_accuracy": sum(valid) / len(valid) if valid else None,
            "always_no": {
                "balanced_accuracy": base,
                "macro_balanced_accuracy": sum(valid_base) / len(valid_base)
                if valid_base
                else None,
            },
            "no_yes_no": sum(r["answer_yes_no"] is None for r in rows) / len(rows),
            "n_questions": len(rows),
        }
        if mode == "follow_up":
            agree = [r["answer_yes_no"] == r["report_label"] for r in rows]
            entry["consistency"] = sum(agree) / len(agree)
        out[mode] = entry
    return out


def format_chat_metrics(metrics: Mapping[str, Any]) -> str:
    """The table quickstart.sh prints."""
    first, follow = metrics.get("first", {}), metrics.get("follow_up", {})

    def cell(value: float | None) -> str:
        return f"{'-' if value is None else f'{value:.3f}':>12s}"

    lines = [
        f"Chat on the phantom test split ({metrics['n_images']} images, "
        f"{metrics.get('phrasing', 'held_out').replace('_', '-')} phrasings, greedy): "
        "balanced accuracy of the yes/no answers",
        f"{'question about':20s}{'(a) first':>12s}{'(b) follow-up':>14s}{'always no':>12s}",
    ]
    for obs in PHANTOM_OBSERVATIONS:
        name = "is it normal" if obs == "No Finding" else obs
        lines.append(
            f"{name:20s}{cell(first.get('balanced_accuracy', {}).get(obs))}"
            f"  {cell(follow.get('balanced_accuracy', {}).get(obs))}"
            f"{cell(first.get('always_no', {}).get('balanced_accuracy', {}).get(obs))}"
        )
    lines.append(
        f"{'macro':20s}{cell(first.get('macro_balanced_accuracy'))}"
        f"  {cell(follow.get('macro_balanced_accuracy'))}"
        f"{cell(first.get('always_no', {}).get('macro_balanced_accuracy'))}"
    )
    lines.append(
        f"{'no yes/no (share)':20s}{cell(first.get('no_yes_no'))}  {cell(follow.get('no_yes_no'))}"
    )
    lines.append(
        f"consistency (follow-up answer agrees with the model's own report): "
        f"{follow.get('consistency', float('nan')):.3f}"
    )
    return "\n".join(lines)


def _ask(chat: Chat, conv: Any, img_list: list, question: str, tokens: int) -> str:
    chat.ask(question, conv)
    text, _ = chat.answer(conv, img_list, do_sample=False, num_beams=1, max_new_tokens=tokens)
    return text


def _exchange(
    image_id: str,
    mode: str,
    phrasing: str,
    observation: str,
    context: Mapping[str, str],
    question: str,
    answer: str,
    present: bool,
) -> dict[str, Any]:
    """The record of one question: what was asked, in what context, the answer and its truth."""
    return {
        "image_id": image_id,
        "mode": mode,
        "phrasing": phrasing,
        "observation": observation,
        **context,
        "question": question,
        "answer": answer,
        "answer_yes_no": read_yes_no(answer),
        "label": int(present),
    }


def evaluate_chat(
    chat: Chat,
    cases: Sequence[tuple[str, Path, Mapping[str, Any]]],
    *,
    seed: int = 0,
    progress: bool = True,
    phrasing: str = "held_out",
) -> list[dict[str, Any]]:
    """Every exchange of the evaluation for ``cases`` ``[(image id, image path, case)]``.

    ``phrasing="train"`` asks in the training phrasings instead (a diagnosis:
    how much of an error is the wording's).
    """
    records = []
    for image_id, path, case in tqdm(cases, desc="chat eval", unit="img", disable=not progress):
        truth = case_findings(case)
        rng = random.Random(f"{seed}/{image_id}")
        questions = {obs: finding_question(obs, rng, phrasing) for obs in PHANTOM_OBSERVATIONS}
        # (a) each question first, with the image.
        base_conv, base_imgs = chat.new_conversation(), []
        chat.upload_img(path, base_conv, base_imgs)
        for obs, question in questions.items():
            conv = base_conv.copy()
            answer = _ask(chat, conv, base_imgs, question, ANSWER_TOKENS)
            records.append(
                _exchange(image_id, "first", phrasing, obs, {}, question, answer, truth[obs])
            )
        # (b) a report first, then each question as a follow-up.
        conv = base_conv.copy()
        report_request = rng.choice(QUESTIONS["report"][phrasing])
        report = _ask(chat, conv, base_imgs, report_request, REPORT_TOKENS)
        report_labels = label_report(report)
        for obs, question in questions.items():
            follow = conv.copy()
            answer = _ask(chat, follow, base_imgs, question, ANSWER_TOKENS)
            context = {"report_request": report_request, "report": report}
            record = _exchange(
                image_id, "follow_up", phrasing, obs, context, question, answer, truth[obs]
            )
            records.append({**record, "report_label": int(report_labels.get(obs) == 1)})
    return records


def phantom_cases(storage: str | Path, split: str = "test", limit: int | None = None):
    """``[(image id, image path, case)]`` of a phantom folder's ``split``."""
    storage = Path(storage)
    ann_path = storage / "filter_cap.json"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path} not found: generate the phantoms with xraygpt phantom")
    entries = json.loads(ann_path.read_text(encoding="utf-8"))["annotations"]
    cases = []
    for entry in entries:
        if entry.get("split") != split:
            continue
        if "case" not in entry:
            raise ValueError(
                f"{ann_path}: {entry['image_id']} has no 'case' (what the image shows); the "
                f"folder predates the conversations: delete it and regenerate it"
            )
        cases.append(
            (entry["image_id"], storage / "image" / f"{entry['image_id']}.png", entry["case"])
        )
    return cases[:limit] if limit else cases


def write_results(out_dir: str | Path, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = score(records)
    atomic_write_json(metrics, out_dir / "chat_metrics.json")
    atomic_write_text(
        "".join(json.dumps(r) + "\n" for r in records), out_dir / "chat_answers.jsonl"
    )
    return metrics


def run_chat_eval(cfg: Any, *, limit: int | None = None, phrasing: str = "held_out") -> dict:
    """The chat evaluation of the model of ``cfg`` (test.py's config) on its phantom test
    split: ``chat_metrics.json`` and ``chat_answers.jsonl`` into ``cfg.output_dir``; the
    metrics."""
    import torch

    from xraygpt.common.config import ConfigError
    from xraygpt.models.factory import load_model_and_processors

    if "phantom" not in cfg.datasets_cfg:
        raise ConfigError(
            f"{cfg.cfg_path}: the chat evaluation reads the phantom test split; the config "
            f"names no datasets.phantom"
        )
    storage = cfg.datasets_cfg.phantom.build_info.storage or "dataset/phantom"
    device = "cuda" if cfg.run_cfg.device == "cuda" and torch.cuda.is_available() else "cpu"
    model, vis_processor = load_model_and_processors(cfg, device=device)
    chat = Chat(model, vis_processor)
    cases = phantom_cases(storage, limit=limit)
    records = evaluate_chat(chat, cases, seed=cfg.run_cfg.seed, phrasing=phrasing)
    return write_results(cfg.output_dir, records)
