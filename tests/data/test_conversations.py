"""Conversation files: validation, mixing, the loss mask, truncation, batching, the builder."""

import json

import numpy as np
import pytest
import torch

from xraygpt.common.config import Config, ConfigError
from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.common.errors import DataError
from xraygpt.data.conversations import (
    ConversationFileError,
    ConversationRecord,
    ConversationsBuilder,
    ConversationSFTDataset,
    collate_tokens,
    length_grouped_order,
    load_conversation_file,
    mix_conversations,
    pack,
    tokenize_conversation,
)
from xraygpt.models.llm import TINY_TOKENIZER_DIR, load_tokenizer, preset_config


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    pass


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


HAND_MADE = ConversationRecord(
    "hand",
    (
        ("user", "Is there an effusion?"),
        ("assistant", "No."),
        ("user", "Heart?"),
        ("assistant", "Normal size."),
    ),
)


def write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def turn(role, value):
    return {"from": role, "value": value}


def good_entry(i=0):
    return {"id": f"c{i}", "conversations": [turn("human", "Q?"), turn("gpt", "A.")]}


# -- the loss mask -----------------------------------------------------------------


def test_loss_mask_of_a_hand_made_conversation_xraygpt_template(tok):
    ids, labels, truncated = tokenize_conversation(HAND_MADE, "xraygpt", tok, 2048)
    assert not truncated and len(ids) == len(labels) == 48
    kept = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    # Pinned: the two answers and the '###' that ends each, nothing else.
    assert kept == [37, 38, 39, 45, 46, 47]
    assert [labels[i] for i in kept] == [ids[i] for i in kept]
    assert tok.convert_ids_to_tokens([ids[i] for i in kept]) == [
        "▁No",
        ".",
        "###",
        "▁Normal",
        "▁size.",
        "###",
    ]
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    # The context is the chat prompt: system, ###Patient: question###Doctor:
    context = tok.decode(ids[1:37])
    assert context.startswith("You are an experienced Doctor")
    assert context.endswith("Is there an effusion?###Doctor:")


def test_loss_mask_vicuna_template_ends_answers_with_eos(tok):
    ids, labels, _ = tokenize_conversation(HAND_MADE, "vicuna_v1.1", tok, 2048)
    kept = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    answer_tokens = [ids[i] for i in kept]
    assert answer_tokens.count(tok.eos_token_id) == 2
    assert ids[kept[-1]] == tok.eos_token_id
    text = tok.decode(answer_tokens, skip_special_tokens=True)
    assert text.replace(" ", "") == "No.Normalsize."
    assert "ASSISTANT" not in text and "USER" not in text


def test_system_turn_replaces_the_template_system_text(tok):
    record = ConversationRecord("s", (("user", "Q?"), ("assistant", "A.")), system="Be brief.")
    ids, _, _ = tokenize_conversation(record, "xraygpt", tok, 2048)
    assert tok.decode(ids[1:]).startswith("Be brief.###Patient:")


def test_unknown_template_lists_the_registered_ones(tok):
    with pytest.raises(KeyError, match="vicuna_v1.1"):
        ConversationSFTDataset([HAND_MADE], tok, template="vicuna_v9")


# -- bad files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, what",
    [
        (
            {"id": "x", "conversations": [turn("human", "a"), turn("human", "b")]},
            "roles not alternating",
        ),
        ({"id": "x", "conversations": [turn("gpt", "a"), turn("human", "b")]}, "first turn"),
        ({"id": "x", "conversations": [turn("human", "a"), turn("gpt", "  ")]}, "empty value"),
        ({"id": "x", "conversations": [turn("human", "a"), turn("robot", "b")]}, "unknown role"),
        ({"id": "x", "conversations": "human: hi"}, "not a list"),
        ({"id": "x"}, "'conversations' is missing"),
        ({"id": "x", "conversations": [turn("human", "a"), {"from": "gpt"}]}, "turn 1"),
    ],
)
def test_malformed_entry_names_file_entry_and_problem(tmp_path, entry, what):
    path = write(tmp_path / "bad.json", [good_entry(0), entry])
    with pytest.raises(ConversationFileError) as err:
        load_conversation_file(path)
    message = str(err.value)
    assert str(path) in message and "entry 1" in message and what in message
    assert isinstance(err.value, DataError)  # one line from an entry point


def test_top_level_not_a_list(tmp_path):
    path = write(tmp_path / "bad.json", {"conversations": []})
    with pytest.raises(
        ConversationFileError, match=r"bad\.json: the top level is a dict, not a list"
    ):
        load_conversation_file(path)


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(ConversationFileError, match="broken.json: not valid JSON"):
        load_conversation_file(path)
    with pytest.raises(FileNotFoundError, match="from-reports"):
        load_conversation_file(tmp_path / "absent.json")


def test_conversation_without_assistant_turn_is_skipped_and_counted(tmp_path):
    lonely = {"id": "q", "conversations": [turn("human", "Anyone there?")]}
    system_only = {"id": "s", "conversations": [turn("system", "Be kind.")]}
    trailing = {
        "id": "t",
        "conversations": [turn("human", "Q?"), turn("gpt", "A."), turn("human", "And?")],
    }
    path = write(tmp_path / "c.json", [good_entry(0), lonely, system_only, trailing])
    records, stats = load_conversation_file(path)
    assert [r.id for r in records] == ["c0", "t"]
    assert stats.no_assistant == 2 and stats.trailing_user == 1
    assert records[1].turns == (("user", "Q?"), ("assistant", "A."))


def test_aliases_and_system_turn(tmp_path):
    entry = {
        "id": "a",
        "conversations": [turn("system", "Sys."), turn("user", "Q?"), turn("assistant", "A.")],
    }
    records, _ = load_conversation_file(write(tmp_path / "c.json", [entry]))
    assert records[0].system == "Sys." and records[0].turns[1] == ("assistant", "A.")


# -- mixing, truncation, packing ---------------------------------------------------------


def test_mix_ratios_scale_each_file():
    a = [ConversationRecord(f"a{i}", HAND_MADE.turns) for i in range(10)]
    b = [ConversationRecord(f"b{i}", HAND_MADE.turns) for i in range(4)]
    mixed = mix_conversations([(a, 0.5), (b, 2.5)], seed=0)
    ids = [r.id for r in mixed]
    assert sum(i.startswith("a") for i in ids) == 5 and len(set(i for i in ids if "a" in i)) == 5
    assert sum(i.startswith("b") for i in ids) == 10  # twice each, plus a seeded half
    assert mix_conversations([(a, 0.5)], seed=0) == mix_conversations([(a, 0.5)], seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        mix_conversations([(a, -1.0)])


def test_truncation_counted_and_conversations_without_answer_left_dropped(tok):
    long_q = ConversationRecord("long", (("user", "word " * 300), ("assistant", "Yes.")))
    ds = ConversationSFTDataset([HAND_MADE, long_q], tok, max_length=60, batching="random")
    assert ds.stats.no_answer_left == 1 and len(ds) == 1  # its answer fell past the cut
    ds = ConversationSFTDataset([HAND_MADE, HAND_MADE], tok, max_length=40, batching="random")
    assert ds.stats.truncated == 2 and ds[0]["truncated"] == 1
    assert len(ds[0]["input_ids"]) == 40


def test_pack_is_greedy_and_keeps_order():
    assert pack([3, 3, 5, 2, 6], 8) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="more than max_length"):
        pack([9], 8)


def test_packed_rows_restart_positions(tok):
    records = [ConversationRecord(f"c{i}", HAND_MADE.turns) for i in range(5)]
    ds = ConversationSFTDataset(records, tok, max_length=100, batching="packed")
    assert len(ds) == 3  # 48 tokens each: two per row of 100
    item = ds[0]
    assert item["position_ids"].tolist() == list(range(48)) * 2
    assert (item["labels"] != IGNORE_INDEX).sum() == 12


def test_packing_gives_the_loss_of_separate_conversations(tok):
    """Packed conversations attend only to themselves: the same summed loss as one by one."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = preset_config(
        "tiny",
        {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
        len(tok),
    )
    llm = LlamaForCausalLM(config).eval()
    other = ConversationRecord("o", (("user", "Any fracture?"), ("assistant", "No fracture.")))
    seqs = [tokenize_conversation(r, "xraygpt", tok, 2048) for r in (HAND_MADE, other)]

    def summed_loss(batch):
        with torch.no_grad():
            # use_cache=False as causal_lm passes: with a cache transformers ignores packing.
            logits = llm(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )

    def tensors(ids, labels):
        return torch.tensor(ids), torch.tensor(labels), torch.arange(len(ids))

    separate = sum(
        summed_loss(collate_tokens(*[[t] for t in tensors(ids, labels)], tok.pad_token_id))
        for ids, labels, _ in seqs
    )
    ids = seqs[0][0] + seqs[1][0]
    labels = seqs[0][1] + seqs[1][1]
    positions = torch.tensor(list(range(len(seqs[0][0]))) + list(range(len(seqs[1][0]))))
    packed = collate_tokens(
        [torch.tensor(ids)], [torch.tensor(labels)], [positions], tok.pad_token_id
    )
    assert torch.allclose(summed_loss(packed), separate, atol=1e-3)
    # Padded next to a longer row, a row keeps its loss too (padding is a block of its own).
    padded = collate_tokens(
        [torch.tensor(seqs[1][0]), torch.tensor(ids)],
        [torch.tensor(seqs[1][1]), torch.tensor(labels)],
        [torch.arange(len(seqs[1][0])), positions],
        tok.pad_token_id,
    )
    assert torch.allclose(
        summed_loss({k: v[:1] for k, v in padded.items()}),
        summed_loss(collate_tokens(*[[t] for t in tensors(*seqs[1][:2])], tok.pad_token_id)),
        atol=1e-4,
    )


def test_length_grouped_order_groups_chunks_and_puts_the_longest_first():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(5, 500, size=64)]
    order = length_grouped_order(lengths, chunk=4, rng=np.random.default_rng(1), megabatch=4)
    assert sorted(order) == list(range(64))
    chunks = [order[i : i + 4] for i in range(0, 64, 4)]
    assert max(lengths[i] for i in chunks[0]) == max(lengths)
    spread = np.mean([max(lengths[i] for i in c) - min(lengths[i] for i in c) for c in chunks])
    random_spread = np.mean(
        [max(c) - min(c) for c in np.array(lengths)[rng.permutation(64)].reshape(16, 4)]
    )
    assert spread < random_spread / 2
    assert order == length_grouped_order(lengths, 4, np.random.default_rng(1), megabatch=4)


def test_grouped_batches_through_the_training_loader(tok):
    """The loader takes the dataset's epoch order: each global batch is of similar length."""
    from xraygpt.data.loaders import build_train_loader

    records = [
        ConversationRecord(f"c{i}", (("user", "word " * (3 + 7 * (i % 9))), ("assistant", "Yes.")))
        for i in range(72)
    ]
    grouped = ConversationSFTDataset(records, tok, batching="grouped")
    plain = ConversationSFTDataset(records, tok, batching="random")

    def spread(dataset, rank=0, world=1):
        loader = build_train_loader(dataset, batch_size=4, rank=rank, world_size=world, seed=3)
        batches = [next(loader) for _ in range(9)]
        return [
            max(len(t) for t in b["input_ids"]) - min(len(t) for t in b["input_ids"])
            for b in batches
        ]

    assert np.mean(spread(grouped)) < np.mean(spread(plain)) / 3
    assert np.mean(spread(grouped, rank=1, world=2)) < np.mean(spread(plain, rank=1, world=2)) / 3
    # Resumable: the batches from step 5 on are those of an uninterrupted run.
    first = build_train_loader(grouped, batch_size=4, seed=3)
    run = [next(first)["input_ids"] for _ in range(8)]
    resumed = build_train_loader(grouped, batch_size=4, seed=3, start_step=5)
    for expected in run[5:]:
        got = next(resumed)["input_ids"]
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# -- the builder -------------------------------------------------------------------------------


def test_builder_mixes_files_per_split(tmp_path):
    train_a = write(tmp_path / "a.json", [good_entry(i) for i in range(4)])
    train_b = write(tmp_path / "b.json", [good_entry(i) for i in range(10, 12)])
    val = write(tmp_path / "v.json", [good_entry(99)])
    builder = ConversationsBuilder(
        {
            "files": [
                {"path": str(train_a), "ratio": 1.0},
                {"path": str(train_b), "ratio": 2.0},
                {"path": str(val), "split": "val"},
            ],
            "template": "vicuna_v1.1",
        }
    )
    corpora = builder.build_datasets()
    assert sorted(corpora) == ["train", "val"]
    assert len(corpora["train"]) == 8 and len(corpora["val"]) == 1
    assert corpora["train"].template == "vicuna_v1.1" and corpora["train"].batching == "grouped"


def test_builder_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="files is empty"):
        ConversationsBuilder({})
    with pytest.raises(ConfigError, match="template.*xraygpt"):
        ConversationsBuilder({"files": [{"path": "x.json"}], "template": "nope"})
    with pytest.raises(ConfigError, match="batching must be one of grouped, packed, random"):
        ConversationsBuilder({"files": [{"path": "x.json"}], "batching": "sorted"})
    with pytest.raises(ConfigError, match="batching must be one of grouped, packed, random"):
        Config(
            user_config={
                "datasets": {"conversations": {"files": [{"path": "x.json"}], "batching": "sorted"}}
            }
        )
    with pytest.raises(ConfigError, match="datasets.conversations"):
        ConversationsBuilder({"files": [{"path": "x.json"}], "max_lenght": 10})
    for ratio in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"files\[0\].ratio must be a finite number >= 0"):
            ConversationsBuilder({"files": [{"path": "x.json", "ratio": ratio}]})
