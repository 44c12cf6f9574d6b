"""The benchmark scripts run and report what BENCHMARKS.md quotes; the FLOP count is docs/recipe.md §8's.

They run as a user runs them (``python benchmarks/bench_x.py ...``) on toy sizes;
the full-size runs are cut to one ViT block and one LLM layer in fp32 on the CPU,
which exercises the whole GPU path except the GPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from xraygpt.common.config import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
FULL_SMOKE = ["--size", "full", "--device", "cpu", "--precision", "fp32"]
FULL_SMOKE += ["--vit-layers", "1", "--llm-layers", "1"]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def run_benchmark(script: str, *args: str) -> dict:
    """Run a benchmark script; its first output line is the JSON record."""
    result = run_script(script, *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    record = json.loads(result.stdout.splitlines()[0])
    assert record["machine"]["torch"] == torch.__version__
    return record


def test_bench_train_tiny_reports_each_batch():
    record = run_benchmark("bench_train.py", "--batches", "2", "3", "--steps", "1", "--warmup", "1")
    assert [row["batch"] for row in record["results"]] == [2, 3]
    for row in record["results"]:
        assert row["samples_per_s"] > 0 and row["peak_mem_mb"] > 0 and row["mfu"] > 0
        assert row["llm_tokens"] > 32  # bos + prompt + queries + text
    assert record["attention"] == {"vit": "sdpa", "qformer": "sdpa", "llm": "sdpa"}
    assert record["vit_frozen"] is False and record["vit_under_inference_mode"] is False


@pytest.mark.slow
def test_bench_train_full_size_path_runs_cut_down_on_the_cpu():
    args = [*FULL_SMOKE, "--batches", "1", "2", "--steps", "1", "--warmup", "0"]
    record = run_benchmark("bench_train.py", *args)
    assert [row["batch"] for row in record["results"]] == [1, 2]
    assert record["trainable_params"] == 768 * 4096 + 4096  # llama_proj only, as in XrayGPT
    assert record["vit_frozen"] is True and record["vit_under_inference_mode"] is True
    assert record["attention"] == {"vit": "sdpa", "qformer": "sdpa", "llm": "sdpa"}


def test_batch_max_is_refused_off_cuda():
    result = run_script("bench_train.py", "--device", "cpu", "--batches", "3", "max")
    assert result.returncode != 0
    assert "--batches max needs --device cuda" in result.stderr


@pytest.fixture
def bench_train(monkeypatch):
    """``benchmarks/bench_train.py`` as a module (it imports ``common`` from its folder)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_train", BENCHMARKS / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("fits_up_to", "limit", "found"), [(61, 512, 56), (8, 512, 8), (700, 512, 512)]
)
def test_largest_batch_doubles_then_bisects(bench_train, monkeypatch, fits_up_to, limit, found):
    """The search for ``--batches max``, with out-of-memory simulated above ``fits_up_to``."""
    tried = []

    def fits(model, optimizer, precision, batch, device, caption_words):
        tried.append(batch)
        return batch <= fits_up_to

    monkeypatch.setattr(bench_train, "fits", fits)
    cuda = torch.device("cuda")  # only its type is read
    assert bench_train.largest_batch(None, None, None, cuda, 120, limit) == found
    assert len(tried) == len(set(tried)) <= 12


def test_flop_count_is_design_section_8(bench_train):
    """Full size, 160 LLM tokens: ViT ~0.5 TFLOP forward, LLM ~4.3 TFLOP (frozen: 4·P·T)."""
    from xraygpt.models.mini_gpt4 import MiniGPT4

    cfg = MiniGPT4.default_config(
        "pretrain_vicuna", {"llama_model": "", "llama_preset": "llama-7b"}
    )
    model = MiniGPT4.from_config(cfg, device="meta")  # shapes only
    total = bench_train.flops_per_sample(model, 160)
    vit = 2 * sum(p.numel() for p in model.visual_encoder.parameters()) * 257
    assert vit == pytest.approx(0.5e12, rel=0.02)
    llm = total - vit - 2 * sum(p.numel() for p in model.Qformer.parameters()) * 32
    assert llm == pytest.approx(4.3e12, rel=0.03)


@pytest.mark.slow
def test_bench_train_llm_variants_side_by_side():
    args = ["--llm-variants", "full", "lora", "fsdp", "--llm-batch", "1", "--seq-len", "16"]
    record = run_benchmark("bench_train.py", *args, "--steps", "1", "--warmup", "0")
    rows = {row["variant"]: row for row in record["results"]}
    assert list(rows) == ["full", "lora", "fsdp"]
    assert rows["full"]["trainable_params"] == rows["fsdp"]["trainable_params"]
    assert 0 < rows["lora"]["trainable_params"] < rows["full"]["trainable_params"] / 50
    assert rows["lora"]["tflop_per_step"] < rows["full"]["tflop_per_step"]
    assert rows["lora"]["train_state_mb"] < rows["full"]["train_state_mb"] / 2
    assert all(row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0 for row in rows.values())


def test_llm_flop_count_full_and_lora(bench_train):
    """Full: 6·P·T; LoRA: 4·P·T through the frozen base + 6·P_adapters·T; P without embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from xraygpt.models.lora import LoraSettings, apply_lora

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    llm = LlamaForCausalLM(config)
    p = sum(t.numel() for t in llm.parameters()) - 50 * 16
    assert bench_train.llm_flops_per_step(llm, "full", 10) == 6 * p * 10
    lora = apply_lora(llm, LoraSettings(r=2, target_modules=["q_proj"]))
    adapters = 2 * (2 * 16 + 16 * 2)  # A and B of q_proj in 2 layers
    assert bench_train.llm_flops_per_step(lora, "lora", 10) == 4 * p * 10 + 6 * adapters * 10


def test_bench_generate_tiny_compares_the_two_ways():
    record = run_benchmark("bench_generate.py", "--n", "2", "--batch", "2", "--max-new-tokens", "3")
    assert [row["reports"] for row in record["results"]] == [2, 2]
    assert record["speedup"] > 0
    assert record["greedy_batch_equals_batch1"] is True


@pytest.mark.slow
def test_bench_generate_full_size_path_runs_cut_down_on_the_cpu():
    args = [*FULL_SMOKE, "--n", "2", "--batch", "2", "--max-new-tokens", "3"]
    record = run_benchmark("bench_generate.py", *args)
    assert all(row["reports_per_s"] > 0 for row in record["results"])
    assert isinstance(record["greedy_batch_equals_batch1"], bool)


def test_bench_data_compares_raw_and_prepared():
    args = ["--n", "2", "--dicom-n", "1", "--width", "600", "--height", "720", "--repeats", "1"]
    record = run_benchmark("bench_data.py", *args)
    variants = [row["variant"] for row in record["results"]]
    assert variants == [
        "raw full decode",
        "raw draft decode",
        "prepared copy",
        "raw DICOM, uncompressed",
        "raw DICOM, JPEG 2000 lossless",
    ]
    assert record["prepared_vs_raw_full"] > 0
    assert all(row["decode_ms"] > 0 for row in record["results"][3:])
    sizes = record["mean_file_mb"]
    assert sizes["raw DICOM, JPEG 2000 lossless"] < sizes["raw DICOM, uncompressed"]
    assert "JPEG 2000 Image Compression (Lossless Only)" in record["decodable_transfer_syntaxes"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_bench_train_full_size_on_cuda():
    args = ["--size", "full", "--device", "cuda", "--batches", "3", "--steps", "2"]
    record = run_benchmark("bench_train.py", *args, "--warmup", "1")
    assert record["precision"] == "bf16 autocast"
    assert record["vit_frozen"] is True and record["vit_under_inference_mode"] is True
    assert record["attention"] == {"vit": "sdpa", "qformer": "sdpa", "llm": "sdpa"}
    assert record["results"][0]["mfu"] > 0


@pytest.mark.gpu
@needs_cuda
def test_bench_train_llm_7b_lora_and_fsdp_on_cuda():
    args = ["--llm-variants", "lora", "fsdp", "--size", "full", "--device", "cuda"]
    args += ["--llm-layers", "2", "--llm-batch", "1", "--seq-len", "128", "--steps", "1"]
    record = run_benchmark("bench_train.py", *args, "--warmup", "1")
    assert [row["variant"] for row in record["results"]] == ["lora", "fsdp"]
    assert all(row["mfu"] > 0 for row in record["results"])


@pytest.mark.gpu
@needs_cuda
def test_bench_generate_full_size_on_cuda():
    args = ["--size", "full", "--device", "cuda", "--n", "4", "--batch", "4"]
    record = run_benchmark("bench_generate.py", *args, "--max-new-tokens", "8")
    assert all(row["reports_per_s"] > 0 for row in record["results"])


def test_bench_bootstrap_times_each_step():
    record = run_benchmark("bench_bootstrap.py", "--n", "40", "--resamples", "50", "--repeats", "1")
    assert [row["step"] for row in record["results"]] == [
        "statistics (once per system)",
        "intervals, 50 resamples",
        "paired comparison, 50 resamples",
    ]
    assert all(row["seconds"] > 0 for row in record["results"])
    assert record["metrics"] >= 20 and "[" in record["example"]["ROUGE-L"]


@pytest.mark.slow
def test_bench_demo_soak_short_run_passes_its_checks():
    args = ["--sessions", "4", "--questions", "2", "--max-seconds", "90"]
    record = run_benchmark("bench_demo_soak.py", *args)
    row = record["results"][0]
    assert row["requests"] == 4 * 3 and row["answers"] == 4 * 2  # an upload and 2 questions each
    assert row["errors"] == 0 and row["cross_talk"] == 0 and row["peak_generations"] == 1
    assert 0 < row["ttft_p50_s"] <= row["answer_p95_s"]
    assert all(record["checks"].values()), record["checks"]


def test_bench_demo_soak_finds_cross_talk(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbour common.py
    soak = importlib.import_module("bench_demo_soak")
    image = BENCHMARKS / "soak_03.png"  # only its name matters here
    mine = soak.SessionResult(3, questions=["q0", "q1"])
    notice = {"role": "assistant", "content": "X-ray 'soak_03.png' loaded (86 × 99 pixels)."}
    turn = [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a"}]
    mine.final = [
        notice,
        *turn,
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "b"},
    ]
    assert soak.cross_talk(mine, image) is None
    mine.final = [notice, *turn, {"role": "user", "content": "someone else's"}, turn[1]]
    assert "its questions came back as" in soak.cross_talk(mine, image)
    mine.final[0] = {"role": "assistant", "content": "X-ray 'soak_04.png' loaded"}
    assert "not its image's notice" in soak.cross_talk(mine, image)
