"""Training throughput, peak memory and model-FLOPs utilisation, batch sizes side by side.

    python benchmarks/bench_train.py                                   # tiny, CPU
    python benchmarks/bench_train.py --size full --device cuda --batches 3 max

``--size full`` is XrayGPT's stage-2 set-up with random weights: EVA-ViT-g +
Q-Former + LLaMA-7B in bf16, everything frozen but ``llama_proj`` (the frozen
encoders run under ``torch.inference_mode``), bf16 autocast, prompts and
160-token targets; a GPU is needed. ``--size tiny`` trains the tiny model end
to end (its recipe trains everything) on the CPU. A batch size of ``max``
searches for the largest batch that fits (CUDA only): it doubles until the
GPU runs out of memory, then bisects to a multiple of 8.

Model FLOPs per sample (docs/recipe.md §8): vision encoder forward ``2 * P_vit *
T_vit``; Q-Former forward ``2 * P_qformer * Q``; LLM ``k * P_llm * T_llm``
with k = 4 when the LLM is frozen (forward + backward to its inputs) and 6
when it is trained, P without the embedding table, T_llm the padded sequence
length the LLM actually saw (bos + prompt + queries + text), averaged over
the timed steps; attention's own T^2 term is left out, as in §8.
MFU = achieved / ``--peak-tflops``.

Smoke test without a GPU: ``--size full --device cpu --precision fp32
--vit-layers 1 --llm-layers 1 --batches 1 2 --steps 1 --warmup 0``.

Training the LLM itself (text only, as in the conversation fine-tuning),
variants side by side, each in a fresh process so that its peak memory is its own:

    python benchmarks/bench_train.py --llm-variants full lora fsdp       # tiny LLaMA, CPU
    python benchmarks/bench_train.py --llm-variants lora fsdp --size full --device cuda \
        --llm-batch 4 --seq-len 2048                                       # LLaMA-7B

``full``: every weight trains (AdamW), 6 * P * T FLOPs per step; ``lora``:
peft adapters (``--lora-r``, ``--lora-targets``) on the frozen LLM,
4 * P * T + 6 * P_adapters * T (forward and backward to the activations
through the base, weight gradients for the adapters only); ``fsdp``: full
fine-tuning sharded with FSDP2 (bf16 layers, activation checkpointing) over
the processes of ``torchrun`` (one without it). P without the embedding table,
T = batch * sequence length. At full size the LoRA base and the ``full`` weights are
bf16 on CUDA (``--precision``); ``fsdp`` keeps fp32 shards and computes in bf16.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from common import (
    REPO_ROOT,
    add_full_size_options,
    attention_backends,
    build_full_size_random,
    peak_memory_mb,
    pick_device,
    report,
    reset_peak_memory,
    sync,
)

from xraygpt.common.errors import run_main
from xraygpt.components import register_components
from xraygpt.models.factory import build_model
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.train.optim import build_optimizer, resolve_precision

CAPTION_WORDS = (
    "the heart size is normal . the lungs are clear without focal consolidation , pleural "
    "effusion or pneumothorax . the mediastinal contours are within normal limits ."
).split()


def build(args, device: torch.device) -> MiniGPT4:
    if args.size == "tiny":
        cfg = MiniGPT4.default_config("tiny")
        return build_model(cfg, device=device)
    return build_full_size_random(
        device,
        args,
        # the stage-2 text settings
        prompt_path="prompts/alignment_chest_xray.txt",
        prompt_template="###Patient: {} ###Doctor: ",
        max_txt_len=160,
        end_sym="###",
    )


def n_params(module: torch.nn.Module, skip_embeddings: bool = False) -> int:
    total = sum(p.numel() for p in module.parameters())
    if skip_embeddings and hasattr(module, "get_input_embeddings"):
        total -= module.get_input_embeddings().weight.numel()
    return total


def caption(rng: torch.Generator, words: int) -> str:
    idx = torch.randint(len(CAPTION_WORDS), (words,), generator=rng)
    return " ".join(CAPTION_WORDS[i] for i in idx)


def flops_per_sample(model: MiniGPT4, llm_tokens: float) -> float:
    encoder = model.visual_encoder
    vit_tokens = encoder.patch_embed.num_patches + encoder.num_prefix_tokens
    vit = 2 * n_params(model.visual_encoder) * vit_tokens
    qformer = 2 * n_params(model.Qformer) * model.query_tokens.shape[1]
    k = 4 if model.freeze_llm else 6
    llm = k * n_params(model.llama_model, skip_embeddings=True) * llm_tokens
    return float(vit + qformer + llm)


class StepProbe:
    """What the timed steps did: the LLM's sequence lengths and the ViT's autograd mode."""

    def __init__(self, model: MiniGPT4) -> None:
        self.llm_tokens: list[int] = []
        self.vit_inference_mode: set[bool] = set()
        model.llama_model.register_forward_pre_hook(self._llm, with_kwargs=True)
        model.visual_encoder.register_forward_hook(self._vit)

    def _llm(self, module, args, kwargs) -> None:
        self.llm_tokens.append(kwargs["inputs_embeds"].shape[1])

    def _vit(self, *_: object) -> None:
        self.vit_inference_mode.add(torch.is_inference_mode_enabled())

    def reset(self) -> None:
        self.llm_tokens.clear()
        self.vit_inference_mode.clear()


def train_step(model, optimizer, precision, samples) -> None:
    with precision.autocast():
        loss = model(samples)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_samples(model: MiniGPT4, batch: int, caption_words: int, device) -> dict:
    rng = torch.Generator().manual_seed(0)
    size = model.cfg.image_size
    return {
        "image": torch.randn(batch, 3, size, size, device=device),
        "caption": [caption(rng, caption_words) for _ in range(batch)],
    }


def measure(model, optimizer, precision, probe, batch, steps, warmup, device, caption_words):
    samples = make_samples(model, batch, caption_words, device)
    model.train()
    reset_peak_memory(device)
    for _ in range(warmup):
        train_step(model, optimizer, precision, samples)
    sync(device)
    probe.reset()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, precision, samples)
    sync(device)
    seconds = time.perf_counter() - start
    llm_tokens = sum(probe.llm_tokens) / len(probe.llm_tokens)
    return seconds, llm_tokens, peak_memory_mb(device)


def fits(model, optimizer, precision, batch, device, caption_words) -> bool:
    """Whether one training step at ``batch`` fits in GPU memory."""
    try:
        train_step(model, optimizer, precision, make_samples(model, batch, caption_words, device))
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()


def largest_batch(model, optimizer, precision, device, caption_words, limit) -> int:
    """The largest batch, a multiple of 8, whose training step fits (up to ``limit``)."""
    if device.type != "cuda":
        raise SystemExit("--batches max needs --device cuda (it probes for out-of-memory)")
    good, bad, batch = 0, None, 8
    while batch <= limit:  # double until a step runs out of memory
        if not fits(model, optimizer, precision, batch, device, caption_words):
            bad = batch
            break
        good, batch = batch, batch * 2
    if good == 0:
        raise SystemExit(f"batch {batch} does not fit on {device}; give the batches explicitly")
    if bad is None:
        return good
    while bad - good > 8:  # both multiples of 8, so the middle one lies strictly between
        middle = (good + bad) // 2 // 8 * 8
        if fits(model, optimizer, precision, middle, device, caption_words):
            good = middle
        else:
            bad = middle
    print(f"largest batch that fits: {good} (out of memory at {bad})")
    return good


def parse_batch(value: str) -> int | str:
    if value == "max":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a batch size is a positive integer or 'max': {value}")
    return int(value)


# ------------------------------------------------------------------ the LLM alone


def build_llm(args, device: torch.device, variant: str):
    """A random LLaMA (tiny preset, or 7B at ``--size full``) set up for ``variant``."""
    from xraygpt.models.llm import (
        TINY_TOKENIZER_DIR,
        build_random_llm,
        load_tokenizer,
        parse_dtype,
        preset_config,
    )

    overrides = {"num_hidden_layers": args.llm_layers} if args.llm_layers else {}
    vocab = len(load_tokenizer(TINY_TOKENIZER_DIR)) if args.size == "tiny" else None
    config = preset_config("tiny" if args.size == "tiny" else "llama-7b", overrides, vocab)
    # Weights that the optimizer updates stay fp32 (autocast on top) except plain
    # bf16 training at full size, where fp32 weights + AdamW of 7B exceed one GPU.
    half = args.size == "full" and args.precision == "bf16" and variant != "fsdp"
    dtype = parse_dtype("bf16" if half else "fp32", "--precision")
    with device:
        llm = build_random_llm(config, dtype)
    if variant == "lora":
        from xraygpt.models.lora import LoraSettings, apply_lora

        settings = LoraSettings(
            r=args.lora_r, alpha=2 * args.lora_r, target_modules=args.lora_targets
        )
        llm = apply_lora(llm, settings)
    elif variant == "fsdp":
        from xraygpt.common import dist
        from xraygpt.train import fsdp

        if not dist.is_dist():  # one process without torchrun: a group of one
            import torch.distributed as torch_dist

            store = tempfile.mkdtemp(prefix="bench_fsdp_")
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch_dist.init_process_group(
                backend, init_method=f"file://{store}/pg", rank=0, world_size=1
            )
        llm = fsdp.shard_model(llm, device, ["LlamaDecoderLayer"])
    elif args.grad_ckpt:
        llm.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    return llm


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # an FSDP shard
    return local.numel() * local.element_size()


def train_state_mb(llm, optimizer) -> float:
    """This process's weights + gradients + AdamW moments: what the variants change
    (on the CPU the peak RSS is mostly the interpreter and libraries)."""
    weights = sum(_local_bytes(p) for p in llm.parameters())
    grads = sum(_local_bytes(p) for p in llm.parameters() if p.requires_grad)
    moments = sum(
        _local_bytes(v)
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.ndim > 0
    )
    return (weights + grads + moments) / 2**20


def llm_flops_per_step(llm, variant: str, tokens: int) -> float:
    if variant != "lora":
        return 6.0 * n_params(llm, skip_embeddings=True) * tokens
    adapters = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    base = n_params(llm.get_base_model(), skip_embeddings=True) - adapters  # peft put them in
    return 4.0 * base * tokens + 6.0 * adapters * tokens


def measure_llm(args, variant: str) -> dict:
    """One variant's row (run in its own process: see :func:`llm_main`)."""
    torch.manual_seed(0)
    device = pick_device(args.device)
    llm = build_llm(args, device, variant)
    params = [p for p in llm.parameters() if p.requires_grad]

    class Run:
        weight_decay, init_lr, beta1, beta2 = 0.0, 2e-5, 0.9, 0.999

    optimizer = build_optimizer(llm, Run)
    # fsdp casts by its own policy; the others autocast on CUDA (or with --amp)
    amp = variant != "fsdp" and (args.amp or device.type == "cuda")
    precision = resolve_precision(device, amp)
    batch, length = args.llm_batch, args.seq_len
    vocab = llm.config.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    ids = ids.to(device)
    llm.train()

    def step() -> None:
        with precision.autocast():
            loss = llm(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    flops = llm_flops_per_step(llm, variant, batch * length)
    return {
        "variant": variant,
        "trainable_params": sum(p.numel() for p in params),
        "tokens_per_s": batch * length / seconds,
        "step_ms": 1000 * seconds,
        "peak_mem_mb": peak_memory_mb(device),
        "train_state_mb": train_state_mb(llm, optimizer),
        "tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "precision": "fsdp bf16 layers" if variant == "fsdp" else precision.describe(),
    }


def llm_main(args) -> None:
    """Each variant in a fresh process (its own peak memory), then the table."""
    if args.llm_one:
        row = measure_llm(args, args.llm_one)
        print("ROW " + json.dumps(row), flush=True)
        return
    rows = []
    for variant in args.llm_variants:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--llm-one", variant]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [x for x in done.stdout.splitlines() if x.startswith("ROW ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][4:]))
    report(
        "bench_train_llm",
        vars(args),
        rows,
        {"llm": "llama-7b" if args.size == "full" else "tiny preset", "layers": args.llm_layers},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batches",
        type=parse_batch,
        nargs="+",
        default=[3, 16],
        help="batch sizes to compare; 'max' = the largest that fits (CUDA)",
    )
    parser.add_argument("--max-batch", type=int, default=512, help="upper bound for 'max'")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--caption-words", type=int, default=120)
    parser.add_argument(
        "--peak-tflops", type=float, default=790.0, help="bf16 dense peak (docs/recipe.md §8)"
    )
    parser.add_argument(
        "--amp", action="store_true", help="bf16/fp16 autocast (on by default on CUDA)"
    )
    add_full_size_options(parser)
    llm = parser.add_argument_group("training the LLM alone (--llm-variants)")
    llm.add_argument(
        "--llm-variants",
        nargs="+",
        choices=["full", "lora", "fsdp"],
        default=None,
        help="benchmark LLM training (text only) instead of the image stage",
    )
    llm.add_argument("--llm-batch", type=int, default=4)
    llm.add_argument("--seq-len", type=int, default=256)
    llm.add_argument("--lora-r", type=int, default=8)
    llm.add_argument("--lora-targets", nargs="+", default=["q_proj", "v_proj"])
    llm.add_argument(
        "--grad-ckpt", action="store_true", help="activation checkpointing for full/lora"
    )
    llm.add_argument("--llm-one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    register_components()
    if args.llm_variants:
        llm_main(args)
        return

    torch.manual_seed(0)
    device = pick_device(args.device)
    model = build(args, device)

    class Run:  # the few run.* keys build_optimizer reads
        weight_decay, init_lr, beta1, beta2 = 0.05, 1e-5, 0.9, 0.999

    optimizer = build_optimizer(model, Run)
    precision = resolve_precision(device, args.amp or device.type == "cuda")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    probe = StepProbe(model)
    batches = [
        largest_batch(model, optimizer, precision, device, args.caption_words, args.max_batch)
        if b == "max"
        else b
        for b in args.batches
    ]
    rows = []
    for batch in batches:
        seconds, llm_tokens, peak = measure(
            model,
            optimizer,
            precision,
            probe,
            batch,
            args.steps,
            args.warmup,
            device,
            args.caption_words,
        )
        per_sample = flops_per_sample(model, llm_tokens)
        samples_per_s = batch * args.steps / seconds
        rows.append(
            {
                "batch": batch,
                "samples_per_s": samples_per_s,
                "step_ms": 1000 * seconds / args.steps,
                "peak_mem_mb": peak,
                "llm_tokens": llm_tokens,
                "tflop_per_sample": per_sample / 1e12,
                "achieved_tflops": per_sample * samples_per_s / 1e12,
                "mfu": per_sample * samples_per_s / (args.peak_tflops * 1e12),
            }
        )
    report(
        "bench_train",
        vars(args),
        rows,
        {
            "precision": precision.describe(),
            "trainable_params": trainable,
            "attention": attention_backends(model),
            "vit_frozen": model.freeze_vit,
            "vit_under_inference_mode": probe.vit_inference_mode == {True},
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
