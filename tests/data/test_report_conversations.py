"""xraygpt conversations: conversations from reports, the validator's check."""

import json
from pathlib import Path

import pytest

from xraygpt.cli.conversations import main
from xraygpt.data.conversations import load_conversation_file
from xraygpt.data.report_conversations import (
    ANSWERS,
    QUESTIONS,
    REPORT_REQUESTS,
    report_conversation,
)
from xraygpt.validate.checklist import FAIL, PASS, Checklist


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Toy models run faster on one thread (tests/conftest.py says why)."""


REPORTS = [
    ("r1", "train", "Moderate cardiomegaly. No pleural effusion. Possible pneumonia."),
    ("r2", "train", "The lungs are clear. Heart size is normal. No pneumothorax."),
    ("r3", "val", "Small left pleural effusion. No pneumothorax."),
]


def write_annotations(path: Path) -> Path:
    entries = [
        {"image_id": f"{rid}_img", "report_id": rid, "caption": text, "split": split}
        for rid, split, text in REPORTS
    ]
    # Two images of one report give one conversation.
    entries.append({"image_id": "r1_lateral", "report_id": "r1", "caption": REPORTS[0][2]})
    path.write_text(json.dumps({"annotations": entries}), encoding="utf-8")
    return path


def answers_of(conv):
    turns = conv["conversations"]
    return {turns[i]["value"]: turns[i + 1]["value"] for i in range(0, len(turns), 2)}


def test_from_reports_writes_loadable_conversations(tmp_path, capsys):
    ann = write_annotations(tmp_path / "filter_cap.json")
    out = tmp_path / "conv" / "train.json"
    assert (
        main(["from-reports", "--annotations", str(ann), "--out", str(out), "--no-progress"]) == 0
    )
    assert "wrote 2 conversations" in capsys.readouterr().out
    records, stats = load_conversation_file(out)
    assert [r.id for r in records] == ["r1", "r2"] and stats.no_assistant == 0
    data = json.loads(out.read_text())
    first = data[0]["conversations"]
    assert first[0]["value"] in REPORT_REQUESTS and first[1]["value"] == REPORTS[0][2]
    qa = answers_of(data[0])
    by_topic = {q: a for q, a in qa.items() if q not in REPORT_REQUESTS}
    # positive -> yes, negative -> no, uncertain -> possibly; blanks are not asked about
    cardio = [a for q, a in by_topic.items() if "cardiomegaly" in q]
    effusion = [a for q, a in by_topic.items() if "pleural effusion" in q]
    pneumonia = [a for q, a in by_topic.items() if "pneumonia" in q]
    assert len(cardio) == len(effusion) == len(pneumonia) == 1
    assert cardio[0].startswith("Yes") and effusion[0].startswith("No")
    assert "ossibly" in pneumonia[0]
    assert not any("fracture" in q for q in by_topic)
    # the normal study is asked whether it is normal
    assert any("normal" in a.lower() for a in answers_of(data[1]).values())


def test_several_phrasings_seeded_per_report():
    report = "Moderate cardiomegaly. No pleural effusion. Possible pneumonia. No pneumothorax."
    convs = [report_conversation(report, f"id{i}") for i in range(40)]
    questions = {t["value"] for c in convs for t in c["conversations"][2::2]}
    answers = {t["value"] for c in convs for t in c["conversations"][3::2]}
    assert len({q.split(" ")[0] for q in questions}) >= 3 and len(answers) >= 8
    assert len({c["conversations"][0]["value"] for c in convs}) >= 3
    assert report_conversation(report, "id1") == report_conversation(report, "id1")
    assert report_conversation(report, "id1", seed=1) != report_conversation(report, "id1")
    assert len(QUESTIONS) > 1 and all(len(v) > 1 for v in ANSWERS.values())


def test_max_questions_and_caption_style(tmp_path):
    report = "Moderate cardiomegaly. No pleural effusion. Possible pneumonia. No pneumothorax."
    assert len(report_conversation(report, "a", max_questions=2)["conversations"]) == 2 + 4
    ann = write_annotations(tmp_path / "filter_cap.json")
    out = tmp_path / "c.json"
    assert (
        main(["from-reports", "--annotations", str(ann), "--out", str(out), "--caption-style"]) == 0
    )
    first = json.loads(out.read_text())[0]["conversations"]
    assert first[1]["value"] == "moderate cardiomegaly no pleural effusion possible pneumonia"
    assert first[0]["value"] in REPORT_REQUESTS  # questions keep their case


def test_from_reports_errors(tmp_path, capsys):
    ann = write_annotations(tmp_path / "filter_cap.json")
    args = ["from-reports", "--annotations", str(ann), "--out", str(tmp_path / "o.json")]
    assert main([*args, "--split", "test"]) == 2
    assert "no entry in split(s) ['test']" in capsys.readouterr().err
    assert main(["from-reports", "--annotations", str(tmp_path / "x.json"), "--out", "o"]) == 2


@pytest.fixture
def checklist_of(tmp_path):
    from xraygpt.data.conversations import ConversationsBuilder
    from xraygpt.validate.conversation_checks import check_conversation_files

    def run(entries, splits=("train",)):
        path = tmp_path / "conv.json"
        path.write_text(json.dumps(entries), encoding="utf-8")
        builder = ConversationsBuilder({"files": [{"path": str(path)}]})
        out = Checklist()
        check_conversation_files(out, "conversations", builder, splits)
        return out.checks

    return run


def test_validator_passes_a_good_file_and_names_a_bad_entry(checklist_of):
    good = [
        {
            "id": "a",
            "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
        }
    ]
    checks = checklist_of(good)
    assert [c.status for c in checks] == [PASS]
    assert "1 conversations, 2 turns" in checks[0].message
    bad = good + [
        {
            "id": "b",
            "conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}],
        }
    ]
    checks = checklist_of(bad)
    assert checks[0].status == FAIL
    assert "entry 1" in checks[0].message and "unknown role 'bot'" in checks[0].message
    checks = checklist_of(good, splits=("train", "val"))
    assert checks[-1].status == FAIL and "split(s) val" in checks[-1].message


def test_validate_setup_runs_the_conversation_check(tmp_path):
    """The set-up validator's dataset group reaches conversation files through the builder."""
    from xraygpt.common.config import Config
    from xraygpt.validate.data_checks import check_datasets

    path = tmp_path / "conv.json"
    path.write_text("{}", encoding="utf-8")
    cfg = Config(
        user_config={
            "model": {"arch": "causal_lm", "model_type": "tiny"},
            "datasets": {"conversations": {"files": [{"path": str(path)}]}},
            "run": {"task": "conversation_sft"},
        }
    )
    out = Checklist()
    check_datasets(out, cfg, sample_images=0)
    assert out.checks[0].status == FAIL and "not a list" in out.checks[0].message
