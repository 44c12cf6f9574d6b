"""Tokens/s of conversation fine-tuning: random padded batches, length-grouped, packed.

    python benchmarks/bench_sft_batching.py --conversations dataset/conversations/phantom_train.json \\
        [--tokenizer dataset/phantom/tokenizer] [--steps 20] [--batch 8] [--max-length 1024]
        [--vary-turns]

Tokenises the file as ``conversation_sft`` does (``xraygpt`` template), then
times forward + backward of the tiny ``causal_lm`` (full fine-tuning, fp32,
one process) on the same conversations batched three ways:

- ``padded``: ``--batch`` conversations drawn at random, right-padded to the
  longest of the batch (what training without grouping or packing does);
- ``length-grouped``: the same, batches cut from length-sorted megabatches of
  50 batches (``batching: grouped``, as transformers' ``LengthGroupedSampler``);
- ``packed``: whole conversations packed into rows of ``--max-length`` tokens
  (``batching: packed``),
  rows per batch chosen so a batch holds about as many real tokens as a padded one.

Throughput counts real (non-padding) tokens only. ``--vary-turns`` keeps a
seeded random number of question-answer pairs per conversation, for a corpus
whose lengths vary as real chat data does (the generated phantom
conversations are nearly all the same length).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import torch
from common import REPO_ROOT, report

from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.common.errors import run_main
from xraygpt.data.conversations import (
    ConversationRecord,
    collate_tokens,
    length_grouped_order,
    load_conversation_file,
    pack,
    tokenize_conversation,
)
from xraygpt.models.causal_lm import CausalLM


def vary(records: list[ConversationRecord], seed: int) -> list[ConversationRecord]:
    rng = random.Random(seed)
    out = []
    for r in records:
        pairs = len(r.turns) // 2
        keep = rng.randint(1, pairs)
        out.append(ConversationRecord(r.id, r.turns[: 2 * keep], r.system, r.source))
    return out


def time_batches(model, batches, pad_id, steps, warmup=2) -> dict[str, float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    real, padded, seconds = 0, 0, 0.0
    for i, rows in enumerate(batches[: steps + warmup]):
        batch = collate_tokens(*zip(*rows, strict=True), pad_id)
        start = time.perf_counter()
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds += time.perf_counter() - start
            real += sum(int(r[0].numel()) for r in rows)
            padded += int(batch["input_ids"].numel())
    return {
        "tokens_per_s": real / seconds,
        "padding_share": 1 - real / padded,
        "tokens_per_step": real / steps,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", required=True)
    parser.add_argument(
        "--tokenizer", default=str(REPO_ROOT / "xraygpt/models/assets/tiny_tokenizer")
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--vary-turns", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = CausalLM.from_config(CausalLM.default_config("tiny", {"tokenizer": args.tokenizer}))
    tok = model.llama_tokenizer
    records, _ = load_conversation_file(args.conversations)
    if args.vary_turns:
        records = vary(records, args.seed)
    seqs = []
    for r in records:
        ids, labels, _ = tokenize_conversation(r, "xraygpt", tok, args.max_length)
        if any(label != IGNORE_INDEX for label in labels):
            t = torch.tensor(ids)
            seqs.append((t, torch.tensor(labels), torch.arange(len(ids))))
    lengths = [int(s[0].numel()) for s in seqs]

    rng = random.Random(args.seed)
    order = list(range(len(seqs)))
    rng.shuffle(order)
    random_batches = [
        [seqs[i] for i in order[k : k + args.batch]] for k in range(0, len(order), args.batch)
    ]
    grouped_order = length_grouped_order(lengths, args.batch, np.random.default_rng(args.seed))
    grouped = [
        [seqs[i] for i in grouped_order[k : k + args.batch]]
        for k in range(0, len(grouped_order), args.batch)
    ]
    rows = []
    for row in pack([lengths[i] for i in order], args.max_length):
        members = [seqs[order[i]] for i in row]
        rows.append(
            (
                torch.cat([m[0] for m in members]),
                torch.cat([m[1] for m in members]),
                torch.cat([m[2] for m in members]),
            )
        )
    per_row = sum(int(r[0].numel()) for r in rows) / len(rows)
    mean_len = sum(lengths) / len(lengths)
    rows_per_batch = max(1, round(args.batch * mean_len / per_row))
    packed = [rows[k : k + rows_per_batch] for k in range(0, len(rows), rows_per_batch)]

    needed = args.steps + 2
    if min(len(random_batches), len(grouped), len(packed)) < needed:
        raise SystemExit(f"the file gives fewer than {needed} batches: lower --steps or --batch")
    results = []
    for name, batches in (
        ("padded", random_batches),
        ("length-grouped", grouped),
        ("packed", packed),
    ):
        row = {"batching": name, **time_batches(model, batches, tok.pad_token_id, args.steps)}
        results.append(row)
    base = results[0]["tokens_per_s"]
    for row in results:
        row["speed-up"] = row["tokens_per_s"] / base
    report(
        "bench_sft_batching",
        vars(args),
        results,
        {
            "conversations": len(seqs),
            "mean_tokens": round(mean_len, 1),
            "min_max_tokens": [min(lengths), max(lengths)],
            "packed_rows_per_batch": rows_per_batch,
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
