"""Evaluation throughput: the original's way against the batched deterministic path.

    python benchmarks/bench_generate.py                       # tiny model, CPU
    python benchmarks/bench_generate.py --size full --device cuda --n 64 --batch 32

Variant ``original``: what XrayGPT's ``test.py`` does — one image at a time
through the chat (system prompt, conversation template), sampling
(temperature 1.0, top-p 0.9). Variant ``batched``: ``model.generate`` on
batches of ``--batch`` with left padding and greedy decoding, as ``test.py``
does here. Both generate at most ``--max-new-tokens``; reports/s and
generated tokens/s are measured on the same images. The run also checks that
greedy answers at batch ``--batch`` equal those at batch 1.

``--size tiny`` with ``--cfg-path eval_configs/xraygpt_tiny_eval.yaml``
uses the trained tiny model of ``quickstart.sh`` on phantom test images
(random weights and random images without it); ``--size full`` builds EVA-ViT-g +
Q-Former + LLaMA-7B with random weights in bf16 (a GPU is needed; smoke test
without one: ``--size full --device cpu --precision fp32 --vit-layers 1
--llm-layers 1 --n 2 --batch 2 --max-new-tokens 3``).
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import (
    add_full_size_options,
    build_full_size_random,
    peak_memory_mb,
    pick_device,
    report,
    reset_peak_memory,
    timed,
)

from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.common.errors import run_main
from xraygpt.conversation.chat import Chat
from xraygpt.models.factory import build_model, load_model_and_processors
from xraygpt.models.mini_gpt4 import MiniGPT4

QUESTION = "Describe the given chest x-ray image in detail."


def benchmark_model(args, device: torch.device) -> tuple[MiniGPT4, torch.Tensor | None]:
    """The model, and the test images of its config's dataset when it names one."""
    if args.size == "full":
        return build_full_size_random(device, args, ckpt=args.ckpt or "").eval(), None
    if args.cfg_path:  # e.g. the trained tiny model of quickstart.sh, on phantom test images
        from xraygpt.components import register_components

        register_components()
        from xraygpt.common.config import Config
        from xraygpt.train.tasks.base_task import BaseTask

        cfg = Config(args.cfg_path, ["model.ckpt=" + args.ckpt] if args.ckpt else [])
        task = BaseTask(cfg)
        model, _ = load_model_and_processors(cfg, device=device)
        split = next(iter(task.build_datasets().values()))["test"]
        images = torch.stack([split[i % len(split)]["image"] for i in range(args.n)])
        return model, images.to(device)
    cfg = MiniGPT4.default_config("tiny", {"ckpt": args.ckpt or ""})
    return build_model(cfg, device=device).eval(), None


def count_tokens(model: MiniGPT4, texts: list[str]) -> int:
    return sum(len(model.llama_tokenizer(t, add_special_tokens=False).input_ids) for t in texts)


def run_original(model, images, max_new_tokens) -> tuple[list[str], dict]:
    chat = Chat(model)
    answers = []
    out: dict = {}
    with timed(model.device, out):
        for image in images:
            conv, img_list = chat.new_conversation(), []
            chat.upload_img(image, conv, img_list)
            chat.ask(QUESTION, conv)
            text, _ = chat.answer(
                conv, img_list, max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9
            )
            answers.append(text)
    return answers, out


def run_batched(model, images, batch, max_new_tokens) -> tuple[list[str], dict]:
    prompt = f"<Img>{IMAGE_PLACEHOLDER}</Img> {QUESTION}"
    answers: list[str] = []
    out: dict = {}
    with timed(model.device, out):
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            answers += model.generate(
                chunk, [prompt] * len(chunk), max_new_tokens=max_new_tokens, do_sample=False
            )
    return answers, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--ckpt", default=None, help="trained checkpoint(s) for the model")
    parser.add_argument(
        "--cfg-path",
        default=None,
        help="tiny: build the model (and take test images) from this eval config, "
        "e.g. eval_configs/xraygpt_tiny_eval.yaml after quickstart.sh",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=32, help="reports per variant")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    add_full_size_options(parser)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    model, images = benchmark_model(args, device)
    if images is None:
        size = model.cfg.image_size
        images = torch.randn(args.n, 3, size, size, device=device)

    # warm-up (kernels, allocator), not timed
    run_batched(model, images[: min(2, args.n)], 2, 4)

    rows = []
    torch.manual_seed(args.seed)
    reset_peak_memory(device)
    original, t_orig = run_original(model, images, args.max_new_tokens)
    rows.append(
        {
            "variant": "original (batch 1, sampling, chat)",
            "reports": args.n,
            "seconds": t_orig["seconds"],
            "reports_per_s": args.n / t_orig["seconds"],
            "tokens_per_s": count_tokens(model, original) / t_orig["seconds"],
            "peak_mem_mb": peak_memory_mb(device),
        }
    )
    reset_peak_memory(device)
    batched, t_batch = run_batched(model, images, args.batch, args.max_new_tokens)
    rows.append(
        {
            "variant": f"batched greedy (batch {args.batch})",
            "reports": args.n,
            "seconds": t_batch["seconds"],
            "reports_per_s": args.n / t_batch["seconds"],
            "tokens_per_s": count_tokens(model, batched) / t_batch["seconds"],
            "peak_mem_mb": peak_memory_mb(device),
        }
    )
    check_n = min(args.n, args.batch)
    one_by_one, _ = run_batched(model, images[:check_n], 1, args.max_new_tokens)
    report(
        "bench_generate",
        vars(args),
        rows,
        {
            "speedup": rows[1]["reports_per_s"] / rows[0]["reports_per_s"],
            "greedy_batch_equals_batch1": one_by_one == batched[:check_n],
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
