"""Conversation files (FastChat / ShareGPT layout) for fine-tuning the LLM on text alone.

A file is a JSON list of entries::

    [{"id": "r1", "conversations": [
        {"from": "human", "value": "What does the x-ray show?"},
        {"from": "gpt", "value": "A small left pleural effusion."},
        ...]}, ...]

Roles alternate, human first; one ``system`` turn may lead (it replaces the
template's system text). ``user`` / ``assistant`` are accepted for ``human`` /
``gpt``. A malformed file is an error naming the file, the entry and what is
wrong; a conversation with no assistant turn (nothing to learn from) is
skipped and counted, as is a trailing unanswered question dropped.

Several files mix with ratios (:func:`mix_conversations`); the conversations
are rendered with a template of :mod:`xraygpt.conversation.templates`
(``xraygpt``: ``###Patient: … ###Doctor: …###``; ``vicuna_v1.1``:
``USER: … ASSISTANT: …</s>``) and tokenised piece by piece, so the labels
are exact: only the assistant's answers and the separator that ends each
(the stop string the model must learn to write) carry loss.

:class:`ConversationSFTDataset` yields token ids, labels and position ids,
truncated to ``max_length``, batched one of three ways (``batching``):

- ``grouped`` (the default): one conversation per row; each epoch's order
  puts conversations of similar length in the same global batch
  (:func:`length_grouped_order`, as transformers' ``LengthGroupedSampler``),
  so little is padded; the order is a pure function of (seed, epoch), so a
  resumed run sees the same batches;
- ``packed``: several whole conversations share a row of up to
  ``max_length`` tokens, position ids restarting at 0 for each, from which
  transformers builds a block-diagonal causal mask (none attends to another);
- ``random``: one conversation per row, random order, padded to the batch.

Length grouping was chosen as the default because it measured fastest:
``python benchmarks/bench_sft_batching.py --conversations <file> --max-length 512``
on the tiny LLM (CPU, one thread; two runs each, the machine shared) gave
1.02-1.15x the tokens/s of random batches on the phantom conversations
(180-350 tokens, 19 % padding at random) and 1.35-1.48x with ``--vary-turns``
(66-341 tokens, 34 % padding), while packing gave 0.66-0.90x and 0.99-1.01x:
a packed row pays attention over its whole length and an explicit block mask
instead of the plain causal kernel. (On a GPU with variable-length attention
kernels packing may do better: ``batching: packed``.)
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import Dataset

from xraygpt.common.config import PACKAGE_ROOT, ConfigError, load_yaml
from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.common.errors import DataError, MissingFileError
from xraygpt.common.registry import registry
from xraygpt.conversation.templates import get_conv_template

log = logging.getLogger(__name__)

BATCHING = ("grouped", "packed", "random")
# Batches per megabatch whose conversations are sorted by length (transformers' value).
MEGABATCH = 50

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
# The role names FastChat / ShareGPT files use, and what each means here.
ROLE_ALIASES = {
    "human": USER,
    "user": USER,
    "gpt": ASSISTANT,
    "assistant": ASSISTANT,
    "system": SYSTEM,
}


class ConversationFileError(DataError):
    """A conversation file that does not follow the FastChat / ShareGPT layout."""


@dataclass(frozen=True)
class ConversationRecord:
    """One validated conversation: optional system text, then (role, text) turns."""

    id: str
    turns: tuple[tuple[str, str], ...]
    system: str | None = None
    source: str = ""  # the file it came from (for messages)


@dataclass
class LoadStats:
    """What reading a file dropped: conversations with no answer, unanswered last questions."""

    no_assistant: int = 0
    trailing_user: int = 0


def parse_conversation(entry: Any, where: str, index: int) -> ConversationRecord | None:
    """One entry of a conversation file; ``None`` when it has no assistant turn.

    Raises :class:`ConversationFileError` naming ``where`` (the file), the
    entry index and what is wrong.
    """
    at = f"{where}: entry {index}"
    if not isinstance(entry, dict):
        raise ConversationFileError(f"{at}: is a {type(entry).__name__}, not an object")
    conv_id = str(entry.get("id", index))
    at = f"{at} (id {conv_id!r})"
    turns = entry.get("conversations")
    if not isinstance(turns, list):
        got = "missing" if turns is None else f"a {type(turns).__name__}"
        raise ConversationFileError(
            f"{at}: 'conversations' is {got}, not a list of {{from, value}} turns"
        )
    system = None
    parsed: list[tuple[str, str]] = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ConversationFileError(f"{at}: turn {j} is not an object with 'from' and 'value'")
        role = ROLE_ALIASES.get(str(turn["from"]).lower())
        if role is None:
            raise ConversationFileError(
                f"{at}: turn {j} has unknown role {turn['from']!r}; roles are "
                f"{', '.join(sorted(ROLE_ALIASES))}"
            )
        value = turn["value"]
        if not isinstance(value, str) or not value.strip():
            raise ConversationFileError(f"{at}: turn {j} ({turn['from']}) has an empty value")
        if role == SYSTEM:
            if j != 0:
                raise ConversationFileError(
                    f"{at}: turn {j} is a system turn; only the first turn may be one"
                )
            system = value.strip()
            continue
        expected = USER if not parsed or parsed[-1][0] == ASSISTANT else ASSISTANT
        if role != expected:
            what = "the first turn must be the human's" if not parsed else "roles not alternating"
            raise ConversationFileError(
                f"{at}: turn {j} is {turn['from']!r} where {expected} was due ({what}); "
                f"roles alternate human, gpt, human, ..."
            )
        parsed.append((role, value.strip()))
    if not any(role == ASSISTANT for role, _ in parsed):
        return None
    return ConversationRecord(id=conv_id, turns=tuple(parsed), system=system, source=where)


def load_conversation_file(path: str | Path) -> tuple[list[ConversationRecord], LoadStats]:
    """The conversations of one file, and what was skipped (see :class:`LoadStats`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"conversation file {path} not found (relative paths start at {Path.cwd()}); make "
            f"one from prepared reports with: xraygpt conversations "
            f"from-reports --annotations <filter_cap.json> --out {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConversationFileError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}): "
            f"save it as UTF-8"
        ) from err
    except OSError as err:
        raise ConversationFileError(f"cannot read conversation file {path}: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and _is_json_lines(text):
            raise ConversationFileError(
                f"{path}: one JSON value per line (JSON Lines), not one JSON list: put the "
                f"entries in one list, [entry, entry, ...] (FastChat / ShareGPT layout: "
                f"[{{'id': ..., 'conversations': [...]}}, ...])"
            ) from err
        raise ConversationFileError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise ConversationFileError(
            f"{path}: the top level is a {type(data).__name__}, not a list of conversations "
            f"(FastChat / ShareGPT layout: [{{'id': ..., 'conversations': [...]}}, ...])"
        )
    records, stats = [], LoadStats()
    for index, entry in enumerate(data):
        record = parse_conversation(entry, str(path), index)
        if record is None:
            stats.no_assistant += 1
            continue
        if record.turns[-1][0] == USER:  # an unanswered last question teaches nothing
            stats.trailing_user += 1
            record = ConversationRecord(record.id, record.turns[:-1], record.system, record.source)
        records.append(record)
    if stats.no_assistant:
        log.warning(
            "%s: skipped %d of %d conversation(s) with no assistant turn",
            path,
            stats.no_assistant,
            len(data),
        )
    return records, stats


def _is_json_lines(text: str) -> bool:
    """Each non-blank line of ``text`` a JSON value of its own."""
    try:
        for line in text.splitlines():
            if line.strip():
                json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def mix_conversations(
    groups: Sequence[tuple[Sequence[ConversationRecord], float]], seed: int = 0
) -> list[ConversationRecord]:
    """Several files' conversations in one list, each file weighted by its ratio.

    ``ratio`` multiplies a file's size per epoch: 1 takes each conversation
    once, 0.5 a seeded half, 2.5 each twice plus a seeded half. So a large
    general corpus and a small radiology one can be balanced without editing
    either file.
    """
    rng = random.Random(seed)
    mixed: list[ConversationRecord] = []
    for records, ratio in groups:
        if ratio < 0 or not math.isfinite(ratio):
            raise ValueError(f"a conversation file's ratio must be >= 0, got {ratio}")
        whole, frac = divmod(ratio, 1.0)
        mixed.extend(list(records) * int(whole))
        extra = round(frac * len(records))
        if extra:
            mixed.extend(rng.sample(list(records), extra))
    return mixed


def render(record: ConversationRecord, template: str) -> list[tuple[str, bool]]:
    """The conversation as ``(text, is_answer)`` pieces of the named template."""
    conv = get_conv_template(template)
    if record.system is not None:
        conv.system = record.system
    for role, text in record.turns:
        conv.append_message(conv.roles[0] if role == USER else conv.roles[1], text)
    return conv.segments()


def tokenize_conversation(
    record: ConversationRecord, template: str, tokenizer: Any, max_length: int
) -> tuple[list[int], list[int], bool]:
    """``(input ids, labels, truncated)``: bos + the rendered pieces, cut at ``max_length``.

    Each piece is tokenised alone, so an answer's tokens are exactly its own
    (the tokenizer cannot merge across the boundary); labels copy the answer
    tokens and are ``IGNORE_INDEX`` everywhere else.
    """
    ids = [tokenizer.bos_token_id]
    labels = [IGNORE_INDEX]
    for text, is_answer in render(record, template):
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece
        labels += piece if is_answer else [IGNORE_INDEX] * len(piece)
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


@dataclass
class TokenStats:
    """What tokenising a corpus did: conversations truncated, dropped, and the token counts."""

    conversations: int = 0
    truncated: int = 0
    no_answer_left: int = 0  # truncation cut off every answer: nothing to learn, dropped
    tokens: int = 0
    answer_tokens: int = 0
    rows: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)


def pack(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Greedy packing in the given order: indices of whole sequences per row of ≤ max_length."""
    rows: list[list[int]] = []
    used = max_length + 1
    for index, n in enumerate(lengths):
        if n > max_length:
            raise ValueError(f"sequence {index} has {n} tokens, more than max_length {max_length}")
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += n
    return rows


class ConversationSFTDataset(Dataset):
    """Token ids and labels of conversations, one (packed) row per item.

    An item: ``input_ids``, ``labels``, ``position_ids`` (LongTensor [L]),
    ``truncated`` (conversations in the row that were cut at ``max_length``),
    and the empty ``image`` / ``skipped`` the shared collater expects.
    Tokenising happens once, here; ``stats`` reports what it did.
    """

    def __init__(
        self,
        records: Sequence[ConversationRecord],
        tokenizer: Any,
        *,
        template: str = "xraygpt",
        max_length: int = 2048,
        batching: str = "grouped",
        seed: int = 0,
        name: str = "conversations",
        split: str = "train",
    ) -> None:
        get_conv_template(template)  # an unknown name fails now, listing the known ones
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.name, self.split, self.template = name, split, template
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        self.max_length, self.batching = max_length, batching
        self.stats = TokenStats(conversations=len(records))
        sequences: list[tuple[list[int], list[int], bool]] = []
        for record in records:
            ids, labels, truncated = tokenize_conversation(record, template, tokenizer, max_length)
            if all(label == IGNORE_INDEX for label in labels):
                self.stats.no_answer_left += 1
                continue
            self.stats.truncated += int(truncated)
            self.stats.tokens += len(ids)
            self.stats.answer_tokens += sum(label != IGNORE_INDEX for label in labels)
            sequences.append((ids, labels, truncated))
        if not sequences:
            raise ConfigError(
                f"dataset {name} ({split}): no conversation with an answer token within "
                f"max_length {max_length}: raise datasets.{name}.max_length"
            )
        self.sequences = sequences
        self.stats.lengths = [len(ids) for ids, _, _ in sequences]
        if batching == "packed":
            # A seeded shuffle first, so that a row mixes conversations from the whole corpus.
            order = list(range(len(sequences)))
            random.Random(seed).shuffle(order)
            rows = pack([len(sequences[i][0]) for i in order], max_length)
            self.rows = [[order[i] for i in row] for row in rows]
        else:
            self.rows = [[i] for i in range(len(sequences))]
        self.stats.rows = len(self.rows)
        log.info(
            "dataset %s (%s): %d conversations, %d tokens (%d answer tokens) in %d rows%s; "
            "%d truncated to %d tokens, %d dropped (no answer left)",
            name,
            split,
            len(sequences),
            self.stats.tokens,
            self.stats.answer_tokens,
            len(self.rows),
            f" ({batching})",
            self.stats.truncated,
            max_length,
            self.stats.no_answer_left,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def row_lengths(self) -> list[int]:
        return [sum(len(self.sequences[i][0]) for i in row) for row in self.rows]

    def epoch_order(self, rng: np.random.Generator, chunk: int) -> np.ndarray | None:
        """This epoch's order of the rows (``None``: a plain random permutation).

        Called by the training loader with the epoch's seeded generator and
        ``chunk`` = the global batch (batch size x world size), whose
        consecutive rows form one step's batches on all ranks.
        """
        if self.batching != "grouped":
            return None
        return np.asarray(length_grouped_order(self.row_lengths(), chunk, rng), dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        truncated = 0
        for i in self.rows[index]:
            seq_ids, seq_labels, cut = self.sequences[i]
            ids += seq_ids
            labels += seq_labels
            positions += range(len(seq_ids))
            truncated += int(cut)
        return {
            "image": torch.empty(0),
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
            "truncated": truncated,
            "skipped": 0,
        }


def collate_tokens(
    input_ids: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    position_ids: Sequence[torch.Tensor],
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest: [B, L] ``input_ids``, ``labels``, ``position_ids``.

    Padding gets ``IGNORE_INDEX`` labels and position ids counting from 0
    again, so it forms a block of its own that no real token attends to: no
    attention mask is needed: transformers derives the block-diagonal causal
    mask from the position ids — when called with ``use_cache=False`` and no
    attention mask (with a cache, it silently lets rows attend across blocks).
    """
    length = max(int(t.numel()) for t in input_ids)
    batch = len(input_ids)
    device = input_ids[0].device
    ids = torch.full((batch, length), pad_id, dtype=torch.long, device=device)
    labs = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
    pos = torch.arange(length, device=device).repeat(batch, 1)
    for row, (a, b, c) in enumerate(zip(input_ids, labels, position_ids, strict=True)):
        n = int(a.numel())
        ids[row, :n], labs[row, :n], pos[row, :n] = a, b, c
        pos[row, n:] = torch.arange(length - n, device=device)
    return {"input_ids": ids, "labels": labs, "position_ids": pos}


def length_grouped_order(
    lengths: Sequence[int], chunk: int, rng: np.random.Generator, megabatch: int = MEGABATCH
) -> list[int]:
    """A permutation in which each run of ``chunk`` indices has similar lengths.

    A random permutation is cut into megabatches of ``megabatch * chunk``,
    each sorted by length and cut into chunks; the chunks are shuffled and
    the one with the longest sequence goes first, so a batch that does not
    fit in memory fails at the first step, not hours in.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    perm = rng.permutation(len(lengths)).tolist()
    size = megabatch * chunk
    chunks: list[list[int]] = []
    for start in range(0, len(perm), size):
        mega = sorted(perm[start : start + size], key=lambda i: -lengths[i])
        chunks += [mega[i : i + chunk] for i in range(0, len(mega), chunk)]
    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    longest = max(range(len(chunks)), key=lambda c: lengths[chunks[c][0]])
    chunks[0], chunks[longest] = chunks[longest], chunks[0]
    return [i for c in chunks for i in c]


# -- the dataset builder ------------------------------------------------------------


@dataclass
class ConversationFileConfig:
    """One file of the mix: its path, its ratio (see :func:`mix_conversations`), its split."""

    path: str = "???"
    ratio: float = 1.0
    split: str = "train"


@dataclass
class ConversationsConfig:
    """Every key allowed under ``datasets.conversations``."""

    files: list[ConversationFileConfig] = field(default_factory=list)
    template: str = "xraygpt"  # a conversation template's name (xraygpt, vicuna_v1.1)
    max_length: int = 2048  # tokens per conversation (and per packed row); longer ones are cut
    batching: str = "grouped"  # grouped (by length) | packed | random: see the module docstring
    mix_seed: int = 0  # seeds the fractional ratios' subsets and the packing order
    sample_ratio: float = 1.0  # weight of this dataset when several train together


@dataclass
class ConversationCorpus:
    """The validated, mixed conversations of one split, before tokenising.

    Not a torch ``Dataset``: the tokenizer belongs to the model, so the task
    that trains on it makes the :class:`ConversationSFTDataset` (:meth:`tokenize`).
    """

    records: list[ConversationRecord]
    template: str
    max_length: int
    batching: str
    seed: int = 0
    name: str = "conversations"
    split: str = "train"
    sample_ratio: float = 1.0
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def tokenize(self, tokenizer: Any) -> ConversationSFTDataset:
        dataset = ConversationSFTDataset(
            self.records,
            tokenizer,
            template=self.template,
            max_length=self.max_length,
            batching=self.batching,
            seed=self.seed,
            name=self.name,
            split=self.split,
        )
        dataset.sample_ratio = self.sample_ratio
        return dataset


@registry.register_builder("conversations")
class ConversationsBuilder:
    """``datasets.conversations``: FastChat / ShareGPT files, mixed by ratio, per split."""

    name = "conversations"
    config_class = ConversationsConfig
    DATASET_CONFIG_DICT = {"default": "configs/datasets/conversations/defaults.yaml"}
    PREPARE_COMMAND = (
        "xraygpt conversations from-reports --annotations <filter_cap.json> --out <file.json>"
    )

    def __init__(self, cfg: Any = None) -> None:
        default = load_yaml(PACKAGE_ROOT / self.DATASET_CONFIG_DICT["default"]).datasets[self.name]
        try:
            self.config = OmegaConf.merge(
                OmegaConf.structured(ConversationsConfig), default, cfg or {}
            )
        except OmegaConfBaseException as err:
            raise ConfigError(f"datasets.{self.name}: {getattr(err, 'msg', err)}") from err
        # Not a rule of check_config: the default section, which lists no files yet, loads.
        if not self.config.files:
            raise ConfigError(
                f"datasets.{self.name}.files is empty: list the conversation files, e.g. "
                f"[{{path: dataset/conversations/radiology_train.json, ratio: 1.0, split: train}}]"
            )
        self.check_config(self.config)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The rules on values that the schema's types cannot state (``Config`` runs them
        at load, ``__init__`` for a builder made from a plain mapping)."""
        where = f"datasets.{cls.name}"
        for i, item in enumerate(cfg.files):
            if OmegaConf.is_missing(item, "path"):
                raise ConfigError(f"{where}.files[{i}] needs a path")
            if not (math.isfinite(item.ratio) and item.ratio >= 0):
                raise ConfigError(
                    f"{where}.files[{i}].ratio must be a finite number >= 0, got {item.ratio}"
                )
        try:
            get_conv_template(cfg.template)
        except KeyError as err:
            raise ConfigError(f"{where}.template: {err.args[0]}") from err
        if cfg.batching not in BATCHING:
            raise ConfigError(
                f"{where}.batching must be one of {', '.join(BATCHING)}, got {cfg.batching!r}"
            )
        if cfg.max_length < 2:
            raise ConfigError(f"{where}.max_length must be >= 2, got {cfg.max_length}")

    @property
    def conversation_files(self) -> list[tuple[Path, float, str]]:
        """``(path, ratio, split)`` of every configured file."""
        return [(Path(f.path), float(f.ratio), str(f.split)) for f in self.config.files]

    def build_datasets(self) -> dict[str, ConversationCorpus]:
        """``{split: ConversationCorpus}``; every file is read and validated now."""
        by_split: dict[str, list[tuple[list[ConversationRecord], float, str]]] = {}
        for path, ratio, split in self.conversation_files:
            records, stats = load_conversation_file(path)
            log.info(
                "%s: %d conversations (ratio %g, split %s); skipped %d with no assistant turn",
                path,
                len(records),
                ratio,
                split,
                stats.no_assistant,
            )
            by_split.setdefault(split, []).append((records, ratio, str(path)))
        corpora = {}
        for split, groups in by_split.items():
            records = mix_conversations(
                [(r, ratio) for r, ratio, _ in groups], self.config.mix_seed
            )
            if not records:
                raise ConfigError(
                    f"datasets.{self.name}: the {split} split has no conversation "
                    f"(files {[p for _, _, p in groups]}, ratios {[r for _, r, _ in groups]}); "
                    f"give one of its files a ratio > 0 in datasets.{self.name}.files"
                )
            corpora[split] = ConversationCorpus(
                records=records,
                template=str(self.config.template),
                max_length=int(self.config.max_length),
                batching=str(self.config.batching),
                seed=int(self.config.mix_seed),
                name=self.name,
                split=split,
                sample_ratio=float(self.config.sample_ratio),
                files=[p for _, _, p in groups],
            )
        return corpora
