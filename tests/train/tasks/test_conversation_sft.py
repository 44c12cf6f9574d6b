"""conversation_sft: the task, the causal_lm model (full and LoRA), a short run, the tiny SFT."""

import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch

from xraygpt.common.config import REPO_ROOT, Config, ConfigError
from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.common.errors import run_main
from xraygpt.common.registry import registry
from xraygpt.data.caption_dataset import collate
from xraygpt.data.conversations import ConversationSFTDataset
from xraygpt.data.losses import evaluate_answer_loss, sft_batch
from xraygpt.models.causal_lm import CausalLM
from xraygpt.models.llm import TINY_TOKENIZER_DIR

SMALL_LLM = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Toy models run faster on one thread (tests/conftest.py says why)."""


def conversation(i):
    return {
        "id": f"c{i}",
        "conversations": [
            {"from": "human", "value": "Describe the given chest x-ray image in detail."},
            {"from": "gpt", "value": f"Findings: study {i}. No pleural effusion."},
            {"from": "human", "value": "Is there a pneumothorax?"},
            {"from": "gpt", "value": "No, there is no pneumothorax." if i % 2 else "Yes."},
        ],
    }


@pytest.fixture
def files(tmp_path):
    train = tmp_path / "train.json"
    val = tmp_path / "val.json"
    train.write_text(json.dumps([conversation(i) for i in range(24)]))
    val.write_text(json.dumps([conversation(i) for i in range(100, 104)]))
    return train, val


def options(files, out, *extra):
    train, val = files
    return [
        f"datasets.conversations.files=[{{path: {train}}}, {{path: {val}, split: val}}]",
        f"model.tokenizer={TINY_TOKENIZER_DIR}",
        "model.ckpt=",
        f"model.llama_config={json.dumps(SMALL_LLM)}",
        "run.device=cpu",
        f"run.output_dir={out}",
        *extra,
    ]


def job(files, out, *extra):
    cfg = Config(REPO_ROOT / "train_configs/xraygpt_tiny_sft.yaml", options(files, out, *extra))
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    return cfg, task


def test_task_builds_tokenised_datasets_and_a_lora_model(files, tmp_path):
    cfg, task = job(files, tmp_path)
    datasets = task.build_datasets(cfg)
    train = datasets["conversations"]["train"]
    assert isinstance(train, ConversationSFTDataset) and train.batching == "grouped"
    assert train.stats.conversations == 24 and len(train) == 24
    model = task.build_model(cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    samples = collate([train[i] for i in range(2)])
    loss = task.train_step(model, samples)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert set(grads) == set(trainable)


def test_loss_is_the_mean_over_answer_tokens(files, tmp_path):
    cfg, task = job(files, tmp_path, "model.lora=null", "datasets.conversations.batching=random")
    dataset = task.build_datasets(cfg)["conversations"]["val"]
    torch.manual_seed(0)
    model = task.build_model(cfg)
    samples = collate([dataset[i] for i in range(3)])
    batch = sft_batch(samples, model.llama_tokenizer.pad_token_id)
    loss = task.train_step(model, samples)["loss"]
    with torch.no_grad():
        logits = model.llama_model(input_ids=batch["input_ids"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(loss, manual, atol=1e-5)
    assert float(evaluate_answer_loss(model, dataset)) == pytest.approx(
        float(
            sum(
                task.train_step(model, collate([dataset[i]]))["loss"].item()
                * int((dataset[i]["labels"][1:] != IGNORE_INDEX).sum())
                for i in range(len(dataset))
            )
            / sum(
                int((dataset[i]["labels"][1:] != IGNORE_INDEX).sum()) for i in range(len(dataset))
            )
        ),
        rel=1e-4,
    )


def test_ckpt_loads_the_llm_of_a_stage_2_checkpoint(tmp_path):
    torch.manual_seed(1)
    cfg = CausalLM.default_config("tiny", {"llama_config": SMALL_LLM})
    source = CausalLM.from_config(cfg)
    # A mini_gpt4 checkpoint: its LLM under llama_model.*, next to other modules.
    state = {f"llama_model.{k}": v for k, v in source.llama_model.state_dict().items()}
    state["llama_proj.weight"] = torch.zeros(2, 2)
    path = tmp_path / "stage2.pth"
    torch.save({"model": state}, path)
    torch.manual_seed(2)
    loaded = CausalLM.from_config(
        CausalLM.default_config("tiny", {"llama_config": SMALL_LLM, "ckpt": str(path)})
    )
    for key, value in source.llama_model.state_dict().items():
        assert torch.equal(loaded.llama_model.state_dict()[key], value), key
    torch.save({"model": {"llama_proj.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match="holds no llama_model"):
        CausalLM.from_config(
            CausalLM.default_config("tiny", {"llama_config": SMALL_LLM, "ckpt": str(path)})
        )
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="shapes do not match"):
        CausalLM.from_config(
            CausalLM.default_config(
                "tiny", {"llama_config": {**SMALL_LLM, "hidden_size": 64}, "ckpt": str(path)}
            )
        )


def test_config_errors(files, tmp_path):
    with pytest.raises(ConfigError, match="lora_rank"):
        Config(
            REPO_ROOT / "train_configs/xraygpt_tiny_sft.yaml",
            options(files, tmp_path, "model.lora_rank=4"),
        )
    cfg, task = job(files, tmp_path, "model.lora.target_modules=[qq_proj]")
    with pytest.raises(ConfigError, match="model.lora.target_modules.*q_proj"):  # lists them
        task.build_model(cfg)
    with pytest.raises(ConfigError, match="model.llama_preset is not set"):
        CausalLM(CausalLM.default_config("tiny", {"llama_preset": None}))
    with pytest.raises(ConfigError, match="model config .causal_lm.*lora_rank"):
        CausalLM.default_config("tiny", {"lora_rank": 4})
    cfg = Config(
        user_config={
            "model": {"arch": "mini_gpt4", "model_type": "tiny"},
            "run": {"task": "conversation_sft"},
        }
    )
    with pytest.raises(ConfigError, match="causal_lm"):
        registry.get_task_class("conversation_sft").setup_task(cfg).build_model(cfg)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("model.lora.rank=4", r"model.lora: unknown key\(s\) \['rank'\]"),
        ("model.lora.r=0", "model.lora.r=0: the adapter rank must be >= 1"),
        ("model.lora.target_modules=[qq_proj]", r"model.lora.target_modules: \['qq_proj'\]"),
    ],
)
def test_train_py_reports_a_lora_option_error_in_one_line(files, tmp_path, capsys, option, message):
    spec = importlib.util.spec_from_file_location("xraygpt_train_entry", REPO_ROOT / "train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    argv = ["--cfg-path", str(REPO_ROOT / "train_configs/xraygpt_tiny_sft.yaml")]
    assert run_main(entry.main, [*argv, "--options", *options(files, tmp_path, option)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), lines
    assert not any(line.startswith("Traceback") for line in lines)


def test_a_short_run_lowers_the_loss_and_saves_only_adapters(files, tmp_path, caplog):
    from xraygpt.common.io import load_checkpoint
    from xraygpt.train.runner import RunnerBase

    cfg, task = job(
        files,
        tmp_path,
        "run.iters_per_epoch=10",
        "run.max_epoch=2",
        "run.log_freq=10",
        "run.warmup_steps=2",
        "run.init_lr=1e-2",
        "run.amp=false",
    )
    torch.manual_seed(0)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    val = datasets["conversations"]["val"]
    before = evaluate_answer_loss(model, val)
    with caplog.at_level("INFO", logger="xraygpt.train.tasks.conversation_sft"):
        RunnerBase(cfg, task, model, datasets, device=torch.device("cpu")).train()
    after = evaluate_answer_loss(model, val)
    assert after < before - 0.2  # LoRA on a random LLM learns slowly; 0.47 seen
    assert sum("truncated to max_length" in r.getMessage() for r in caplog.records) == 2
    out = cfg.output_dir
    ckpt = load_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["model"] and all("lora_" in k for k in ckpt["model"])
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < lines[0]["loss"]


@pytest.mark.slow
def test_tiny_sft_end_to_end_lowers_held_out_answer_loss(make_phantom, tmp_path):
    """From phantom reports to conversations, train.py, then the held-out loss before/after."""
    data = make_phantom(200)
    env_cmd = [sys.executable, "-m", "xraygpt", "conversations"]
    paths = {}
    for split in ("train", "val"):
        paths[split] = tmp_path / f"phantom_{split}.json"
        subprocess.run(
            [*env_cmd, "from-reports", "--annotations", str(data / "filter_cap.json")]
            + ["--split", split, "--caption-style", "--out", str(paths[split]), "--no-progress"],
            cwd=REPO_ROOT,
            check=True,
            env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(REPO_ROOT)},
        )
    opts = [
        f"datasets.conversations.files=[{{path: {paths['train']}}}, "
        f"{{path: {paths['val']}, split: val}}]",
        f"model.tokenizer={data / 'tokenizer'}",
        "model.ckpt=",  # random init: the quickstart's stage-2 LLM is not made here
        "run.device=cpu",
        f"run.output_dir={tmp_path / 'out'}",
        "run.iters_per_epoch=40",
    ]
    cfg_path = str(REPO_ROOT / "train_configs/xraygpt_tiny_sft.yaml")
    env = {"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--cfg-path", cfg_path, "--options", *opts],
        cwd=REPO_ROOT,
        check=True,
        env=env,
        capture_output=True,
    )
    ckpt = tmp_path / "out" / "xraygpt_tiny_sft" / "checkpoint_last.pth"
    done = subprocess.run(
        [*env_cmd, "loss", "--cfg-path", cfg_path, "--ckpt", str(ckpt), "--options", *opts],
        cwd=REPO_ROOT,
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    losses = json.loads(done.stdout)["assistant_token_loss_nats"]
    print(losses)  # the figures of the report (pytest -s)
    # Seen: 6.74 -> 5.46 nats; a random LLM starts near ln(vocabulary).
    assert losses["conversations/val tuned"] < losses["conversations/val untuned"] - 0.5


def test_meta_build_for_the_set_up_validator():
    """On the meta device: nothing loaded, adapters counted, ckpt shapes without peft's names."""
    cfg = CausalLM.default_config("vicuna", {"llama_model": "", "llama_preset": None, "lora": {}})
    model = CausalLM.from_config(cfg, device="meta")
    assert model.llm_source == "preset llama-7b (random init)"
    assert next(model.parameters()).device.type == "meta"
    assert 4_000_000 < model.num_trainable() < 4_300_000  # r 8 on q_proj, v_proj of 32 layers
    assert "llama_model.model.layers.0.self_attn.q_proj.weight" in model.ckpt_shapes


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_activation_checkpointing_keeps_every_gradient(lora):
    cfg = CausalLM.default_config(
        "tiny", {"gradient_checkpointing": True, "lora": lora, "llama_config": SMALL_LLM}
    )
    model = CausalLM.from_config(cfg).train()
    ids = torch.randint(3, 100, (2, 10))
    model({"input_ids": ids, "labels": ids})["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


def _entry(*turns):
    return {"id": "x", "conversations": [{"from": r, "value": v} for r, v in turns]}


BAD_FILES = {  # name: (what the file holds, the message's part)
    "roles not alternating": (
        json.dumps([_entry(("human", "a"), ("human", "b"))]),
        r"train.json: entry 0 \(id 'x'\): turn 1 is 'human' where assistant was due "
        r"\(roles not alternating\)",
    ),
    "empty value": (
        json.dumps([_entry(("human", "a"), ("gpt", " "))]),
        r"train.json: entry 0 \(id 'x'\): turn 1 \(gpt\) has an empty value",
    ),
    "unknown role": (
        json.dumps([_entry(("human", "a"), ("robot", "b"))]),
        r"train.json: entry 0 \(id 'x'\): turn 1 has unknown role 'robot'; roles are",
    ),
    "top level not a list": (
        json.dumps({"conversations": []}),
        r"train.json: the top level is a dict, not a list of conversations",
    ),
    "not UTF-8": (
        json.dumps([_entry(("human", "é?"), ("gpt", "b"))], ensure_ascii=False).encode("latin-1"),
        r"train.json: not UTF-8 text \(byte 0xe9 at offset \d+\): save it as UTF-8",
    ),
    "JSON Lines": (
        "\n".join(json.dumps(_entry(("human", "a"), ("gpt", "b"))) for _ in range(3)),
        r"train.json: one JSON value per line \(JSON Lines\), not one JSON list: .*\[",
    ),
    "missing": (None, r"conversation file .*train.json not found .*from-reports"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_xraygpt_train_reports_a_bad_conversation_file_in_one_line(files, tmp_path, capsys, case):
    from xraygpt.cli.train import main

    content, message = BAD_FILES[case]
    train, _ = files
    if content is None:
        train.unlink()
    elif isinstance(content, bytes):
        train.write_bytes(content)
    else:
        train.write_text(content, encoding="utf-8")
    argv = ["--cfg-path", str(REPO_ROOT / "train_configs/xraygpt_tiny_sft.yaml")]
    assert run_main(main, [*argv, "--options", *options(files, tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), lines
    assert not any(line.startswith("Traceback") for line in lines)
