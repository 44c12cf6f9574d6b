"""The chat evaluation: balanced accuracy, the always-no baseline, consistency, via Chat."""

import json

import pytest

from xraygpt.common.constants import PHANTOM_OBSERVATIONS
from xraygpt.conversation.chat import Chat
from xraygpt.data.phantom.generator import generate
from xraygpt.eval.chat_eval import (
    balanced_accuracy,
    evaluate_chat,
    format_chat_metrics,
    phantom_cases,
    score,
    write_results,
)
from xraygpt.processors.blip_processors import Blip2ImageEvalProcessor


def test_balanced_accuracy_counts_missing_answers_as_wrong():
    assert balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.75)
    assert balanced_accuracy([1, 0], [None, 0]) == pytest.approx(0.5)
    assert balanced_accuracy([0, 0], [0, 1]) == pytest.approx(0.5)  # one class: its recall
    assert balanced_accuracy([], []) is None


def _records(answer_for, report_for):
    records = []
    for i in range(4):
        for obs in PHANTOM_OBSERVATIONS:
            label = int((i + len(obs)) % 2)
            common = {"image_id": f"p{i}", "observation": obs, "label": label}
            records.append({**common, "mode": "first", "answer_yes_no": answer_for(label)})
            records.append(
                {
                    **common,
                    "mode": "follow_up",
                    "answer_yes_no": answer_for(label),
                    "report_label": report_for(label),
                }
            )
    return records


def test_score_a_perfect_and_an_always_no_model():
    perfect = score(_records(lambda y: y, lambda y: y))
    for mode in ("first", "follow_up"):
        assert perfect[mode]["macro_balanced_accuracy"] == pytest.approx(1.0)
        assert perfect[mode]["always_no"]["macro_balanced_accuracy"] == pytest.approx(0.5)
        assert perfect[mode]["no_yes_no"] == 0
    assert perfect["follow_up"]["consistency"] == 1.0
    # Right answers contradicting a wrong report: accurate yet inconsistent.
    contrary = score(_records(lambda y: y, lambda y: 1 - y))
    assert contrary["follow_up"]["consistency"] == 0.0
    silent = score(_records(lambda y: None, lambda y: y))
    assert silent["first"]["no_yes_no"] == 1.0
    assert silent["first"]["macro_balanced_accuracy"] == 0.0
    assert "consistency" in format_chat_metrics(perfect)


def test_evaluate_chat_asks_through_chat_and_writes_the_files(tmp_path, make_model, one_cpu_thread):
    generate(tmp_path / "ph", n=10, seed=0, size=48, progress=False)
    cases = phantom_cases(tmp_path / "ph", limit=1)
    model = make_model(seed=0).eval()
    chat = Chat(model, Blip2ImageEvalProcessor(image_size=64))
    records = evaluate_chat(chat, cases, progress=False)
    assert len(records) == 2 * len(PHANTOM_OBSERVATIONS)
    follow = [r for r in records if r["mode"] == "follow_up"]
    assert all(r["report"] == follow[0]["report"] for r in follow)
    assert {r["observation"] for r in records} == set(PHANTOM_OBSERVATIONS)
    metrics = write_results(tmp_path / "out", records)
    saved = json.loads((tmp_path / "out" / "chat_metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert (tmp_path / "out" / "chat_answers.jsonl").read_text().count("\n") == len(records)
