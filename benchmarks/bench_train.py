"""Training throughput, peak memory and model-FLOPs utilisation, two batch sizes side by side.

    python benchmarks/bench_train.py                                   # tiny, CPU
    python benchmarks/bench_train.py --size full --device cuda --batches 3 24

``--size full`` is XrayGPT's stage-2 set-up with random weights: EVA-ViT-g +
Q-Former + LLaMA-7B in bf16, everything frozen but ``llama_proj``, prompts
and 160-token targets; a GPU is needed. ``--size tiny`` trains the tiny
model end to end (its recipe trains everything) on the CPU.

Model FLOPs per sample (DESIGN §8): vision encoder forward ``2 * P_vit *
T_vit``; Q-Former forward ``2 * P_qformer * Q``; LLM ``k * P_llm * T_llm``
with k = 4 when the LLM is frozen (forward + backward to its inputs) and 6
when it is trained, P without the embedding table, T_llm the padded sequence
(bos + prompt + queries + text). MFU = achieved / ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    build_full_size_random,
    peak_memory_mb,
    pick_device,
    report,
    reset_peak_memory,
    sync,
)

from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.runners.optim import build_optimizer, resolve_precision

CAPTION_WORDS = (
    "the heart size is normal . the lungs are clear without focal consolidation , pleural "
    "effusion or pneumothorax . the mediastinal contours are within normal limits ."
).split()


def build(size: str, device: torch.device, llm_layers: int | None) -> MiniGPT4:
    if size == "tiny":
        cfg = MiniGPT4.default_config("tiny")
        return MiniGPT4.from_config(cfg).to(device)
    overrides = {  # the stage-2 text settings
        "prompt_path": "prompts/alignment_chest_xray.txt",
        "prompt_template": "###Patient: {} ###Doctor: ",
        "max_txt_len": 160,
        "end_sym": "###",
    }
    if llm_layers:  # a cut-down LLM for smoke tests of this script
        overrides["llama_config"] = {"num_hidden_layers": llm_layers}
    return build_full_size_random(device, **overrides)


def n_params(module: torch.nn.Module, skip_embeddings: bool = False) -> int:
    total = sum(p.numel() for p in module.parameters())
    if skip_embeddings and hasattr(module, "get_input_embeddings"):
        total -= module.get_input_embeddings().weight.numel()
    return total


def caption(rng: torch.Generator, words: int) -> str:
    idx = torch.randint(len(CAPTION_WORDS), (words,), generator=rng)
    return " ".join(CAPTION_WORDS[i] for i in idx)


def flops_per_sample(model: MiniGPT4, llm_tokens: int) -> float:
    size = model.cfg.image_size
    with torch.no_grad():
        vit_tokens = model.visual_encoder(
            torch.zeros(
                1,
                3,
                size,
                size,
                device=model.device,
                dtype=next(model.visual_encoder.parameters()).dtype,
            )
        ).shape[1]
    vit = 2 * n_params(model.visual_encoder) * vit_tokens
    qformer = 2 * n_params(model.Qformer) * model.query_tokens.shape[1]
    k = 4 if model.freeze_llm else 6
    llm = k * n_params(model.llama_model, skip_embeddings=True) * llm_tokens
    return float(vit + qformer + llm)


def measure(model, optimizer, precision, batch, steps, warmup, device, caption_words):
    rng = torch.Generator().manual_seed(0)
    size = model.cfg.image_size
    samples = {
        "image": torch.randn(batch, 3, size, size, device=device),
        "caption": [caption(rng, caption_words) for _ in range(batch)],
    }
    model.train()
    reset_peak_memory(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with precision.autocast():
            loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = time.perf_counter() - start
    text_tokens = min(
        model.max_txt_len,
        max(len(model.tokenize(c + model.end_sym)) for c in samples["caption"]),
    )
    prompt_tokens = max(
        (len(model.tokenize(p.replace("<ImageHere>", ""))) for p in model.prompt_list), default=0
    )
    llm_tokens = 1 + prompt_tokens + model.query_tokens.shape[1] + text_tokens
    return seconds, llm_tokens, peak_memory_mb(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs=2, default=[3, 16], help="two batch sizes")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--caption-words", type=int, default=120)
    parser.add_argument(
        "--peak-tflops", type=float, default=790.0, help="bf16 dense peak (DESIGN §8)"
    )
    parser.add_argument(
        "--amp", action="store_true", help="bf16/fp16 autocast (on by default on CUDA)"
    )
    parser.add_argument("--llm-layers", type=int, default=None, help="cut the 7B LLM (smoke tests)")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = pick_device(args.device)
    model = build(args.size, device, args.llm_layers)

    class Run:  # the few run.* keys build_optimizer reads
        weight_decay, init_lr, beta1, beta2 = 0.05, 1e-5, 0.9, 0.999

    optimizer = build_optimizer(model, Run)
    precision = resolve_precision(device, args.amp or device.type == "cuda")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = []
    for batch in args.batches:
        seconds, llm_tokens, peak = measure(
            model, optimizer, precision, batch, args.steps, args.warmup, device, args.caption_words
        )
        per_sample = flops_per_sample(model, llm_tokens)
        samples_per_s = batch * args.steps / seconds
        rows.append(
            {
                "batch": batch,
                "samples_per_s": samples_per_s,
                "step_ms": 1000 * seconds / args.steps,
                "peak_mem_mb": peak,
                "tflop_per_sample": per_sample / 1e12,
                "achieved_tflops": per_sample * samples_per_s / 1e12,
                "mfu": per_sample * samples_per_s / (args.peak_tflops * 1e12),
            }
        )
    report(
        "bench_train",
        vars(args),
        rows,
        {"precision": precision.describe(), "trainable_params": trainable},
    )


if __name__ == "__main__":
    main()
