"""The tiny recipe's stage tasks and models: encoder pretraining, text pretraining, tiny_cnn."""

import json

import pytest
import torch
from torch import nn

from xraygpt.common.config import REPO_ROOT, Config, ConfigError
from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.common.constants import PHANTOM_FINDINGS as FINDINGS
from xraygpt.common.registry import registry
from xraygpt.data.caption_dataset import collate
from xraygpt.data.losses import (
    ReportTextDataset,
    classification_scores,
    evaluate_report_loss,
    prompt_ids,
    report_loss,
    text_prompts,
)
from xraygpt.data.phantom.generator import generate
from xraygpt.models.cnn_encoder import ParamBatchNorm2d, TinyCNN
from xraygpt.train.checkpoint import trainable_state_dict

SIZE = 32  # px: the smallest image tiny_cnn takes (a 2x2 grid), fast enough for unit tests


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    generate(root, n=40, seed=0, size=48, progress=False)
    return root


def _options(phantom_dir, *extra):
    return [
        f"datasets.phantom.build_info.storage={phantom_dir}",
        f"model.image_size={SIZE}",
        f"datasets.phantom.vis_processor.train.image_size={SIZE}",
        f"datasets.phantom.vis_processor.eval.image_size={SIZE}",
        "run.device=cpu",
        *extra,
    ]


def _job(name, phantom_dir, *extra):
    if name != "xraygpt_tiny_stage1":  # the mini_gpt4 stages read the generated tokenizer
        extra = (f"model.tokenizer={phantom_dir / 'tokenizer'}", *extra)
    cfg = Config(REPO_ROOT / f"train_configs/{name}.yaml", _options(phantom_dir, *extra))
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    return cfg, task


def _text_job(phantom_dir, *extra):
    """A text_pretrain job on the phantom reports (stage 2 now trains on conversations)."""
    return _job("xraygpt_tiny_stage3", phantom_dir, "run.task=text_pretrain", "model.ckpt=", *extra)


def _batch(dataset, n=8):
    return collate([dataset[i] for i in range(n)])


# ------------------------------------------------------------------ tiny_cnn


def test_tiny_cnn_gives_pooled_tokens_then_the_grid():
    encoder = TinyCNN(image_size=64, width=8, num_classes=3)
    tokens = encoder(torch.randn(2, 3, 64, 64))
    assert encoder.num_features == 32
    assert tokens.shape == (2, 2 + 4 * 4, 32)
    features = encoder.feature_map(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 32, 4, 4)
    assert encoder.forward_head(tokens).shape == (2, 3)
    assert TinyCNN(image_size=64, width=8).head is None


def test_tiny_cnn_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiple of 16"):
        TinyCNN(image_size=72)
    cfg = registry.get_model_class("mini_gpt4").default_config(
        "tiny", {"vit_model": "tiny_cnn", "image_size": 32, "vision_config": {"depth": 3}}
    )
    with pytest.raises(ValueError, match="depth.*tiny_cnn"):
        TinyCNN.from_config(cfg)


def test_param_batchnorm_matches_batchnorm_and_keeps_its_statistics_in_parameters():
    torch.manual_seed(0)
    ours, reference = ParamBatchNorm2d(4), nn.BatchNorm2d(4)
    x = torch.randn(6, 4, 5, 5) * 3 + 1
    out = ours(x)
    assert torch.allclose(out, reference(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, atol=1e-5)
    names = dict(ours.named_parameters())
    assert {"running_mean", "running_var"} <= set(names)  # so checkpoints carry them
    out.sum().backward()
    assert torch.count_nonzero(ours.running_mean.grad) == 0  # gradient descent leaves them be
    ours.eval(), reference.eval()
    assert torch.allclose(ours(x), reference(x), atol=1e-5)


# ------------------------------------------------------------ encoder_pretrain


def test_encoder_pretrain_trains_the_classifier(phantom_dir):
    cfg, task = _job("xraygpt_tiny_stage1", phantom_dir)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    assert model.label_names == list(FINDINGS)
    batch = _batch(datasets["phantom"]["train"], 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(25):  # overfit one batch: the loss must fall
        loss = task.train_step(model, batch)["loss"]
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]
    scores = classification_scores(model, datasets["phantom"]["val"], batch_size=4)
    assert set(scores["per_label"]) == set(FINDINGS)
    assert 0.0 <= scores["macro_f1"] <= 1.0


def test_encoder_pretrain_needs_labels(phantom_dir, tmp_path):
    data = json.loads((phantom_dir / "filter_cap.json").read_text())
    for entry in data["annotations"]:
        del entry["labels"]
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "filter_cap.json").write_text(json.dumps(data))
    (unlabelled / "image").symlink_to(phantom_dir / "image")
    cfg, task = _job("xraygpt_tiny_stage1", unlabelled)
    with pytest.raises(ConfigError, match="have no 'labels'"):
        task.build_datasets(cfg)


def test_stage1_checkpoint_loads_into_the_tiny_mini_gpt4(phantom_dir, tmp_path):
    cfg, task = _job("xraygpt_tiny_stage1", phantom_dir)
    classifier = task.build_model(cfg)
    classifier.train()
    classifier(_batch(task.build_datasets(cfg)["phantom"]["train"]))  # moves the BN statistics
    state = trainable_state_dict(classifier)
    assert state and all(k.startswith("visual_encoder.") for k in state)
    path = tmp_path / "stage1.pth"
    torch.save({"model": state}, path)

    cfg3 = Config(
        REPO_ROOT / "train_configs/xraygpt_tiny_stage3.yaml",
        _options(phantom_dir, f"model.ckpt=[{path}]", f"model.tokenizer={phantom_dir}/tokenizer"),
    )
    model = registry.get_model_class("mini_gpt4").from_config(cfg3.model_cfg)
    loaded = model.visual_encoder.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("visual_encoder.")], value), key
    stats = loaded["stem.1.running_mean"]
    assert torch.count_nonzero(stats) > 0  # the running statistics came along
    assert not any(p.requires_grad for p in model.visual_encoder.parameters())


def test_encoder_classifier_rejects_a_head_of_another_size(phantom_dir):
    with pytest.raises(ValueError, match="num_classes=3 but model.label_names has 6"):
        _job("xraygpt_tiny_stage1", phantom_dir, "model.vision_config.num_classes=3")[
            1
        ].build_model()


# -------------------------------------------------------------- text_pretrain


def test_text_pretrain_reads_reports_without_images(phantom_dir):
    cfg, task = _text_job(phantom_dir)
    datasets = task.build_datasets(cfg)
    train = datasets["phantom"]["train"]
    assert isinstance(train, ReportTextDataset) and len(train) == 32
    sample = train[0]
    assert sample["image"].numel() == 0 and "Impression:" in sample["caption"]
    batch = collate([train[i] for i in range(4)])
    assert batch["image"].shape == (4, 0) and len(batch["caption"]) == 4


def test_text_pretrain_trains_the_llm_only(phantom_dir):
    cfg, task = _text_job(phantom_dir)
    model = task.build_model(cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("llama_model.") for n in trainable)
    batch = _batch(task.build_datasets(cfg)["phantom"]["train"])
    model.train()
    loss = task.train_step(model, batch)["loss"]
    assert torch.isfinite(loss) and loss > 1.0  # an untrained LLM over a 1024-token vocabulary
    loss.backward()
    assert model.llama_model.get_input_embeddings().weight.grad is not None
    assert all(k.startswith("llama_model.") for k in trainable_state_dict(model))


def test_text_pretrain_lays_out_tokens_as_the_alignment_stage(phantom_dir):
    cfg, task = _text_job(phantom_dir)
    model = task.build_model(cfg)
    prompts = text_prompts(model)
    assert prompts == model.prompt_list and all(IMAGE_PLACEHOLDER in p for p in prompts)
    tok = model.llama_tokenizer
    before, after = prompts[0].split(IMAGE_PLACEHOLDER)
    expected = [tok.bos_token_id]
    expected += tok(before, add_special_tokens=False).input_ids
    expected += tok(after, add_special_tokens=False).input_ids
    assert prompt_ids(tok, prompts[0]) == expected
    assert prompt_ids(tok, "") == [tok.bos_token_id]
    with pytest.raises(ValueError, match="at most once"):
        prompt_ids(tok, f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER}")


def test_report_loss_counts_only_the_report_tokens(phantom_dir):
    cfg, task = _text_job(phantom_dir)
    model = task.build_model(cfg).eval()
    captions = ["no pleural effusion", "mild cardiomegaly is present impression mild cardiomegaly"]
    prompt = text_prompts(model)[0]
    with torch.no_grad():
        joint = float(report_loss(model, captions, prompt))
        singles = [float(report_loss(model, [c], prompt)) for c in captions]
        n = [len(model.llama_tokenizer(c + model.end_sym).input_ids) - 1 for c in captions]
    # Right padding must not change a report's loss: the batch mean is token-weighted.
    assert joint == pytest.approx((singles[0] * n[0] + singles[1] * n[1]) / sum(n), rel=1e-4)
    dataset = torch.utils.data.Subset(task.build_datasets(cfg)["phantom"]["val"], range(4))
    assert evaluate_report_loss(model, dataset, batch_size=3) > 0


def test_text_pretrain_needs_a_trainable_llm(phantom_dir):
    cfg, task = _text_job(phantom_dir, "model.freeze_llm=true")
    with pytest.raises(ConfigError, match="freeze_llm: false"):
        task.build_model(cfg)


def test_text_pretrain_also_sees_the_chat_rendering(phantom_dir):
    from xraygpt.conversation.templates import get_conv_template
    from xraygpt.data.losses import chat_prompts

    cfg, task = _text_job(phantom_dir)
    model = task.build_model(cfg)
    chats = chat_prompts(model)
    assert len(chats) == len(model.prompt_list)
    conv = get_conv_template("xraygpt")
    conv.append_message(
        conv.roles[0], "<Img><ImageHere></Img> Describe the given chest x-ray image in detail."
    )
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() in chats  # what the demo's Chat sends for that question
    assert all(c.startswith(conv.system) and c.endswith("###Doctor:") for c in chats)


# ------------------------------------------------- stage 2: text-only conversations


def test_stage2_trains_the_llm_only_on_conversations_that_open_with_the_report(phantom_dir):
    cfg = Config(
        REPO_ROOT / "train_configs/xraygpt_tiny_stage2.yaml",
        [
            f"datasets.phantom_conversations.build_info.storage={phantom_dir}",
            f"model.tokenizer={phantom_dir / 'tokenizer'}",
            "run.device=cpu",
        ],
    )
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("llama_model.") for n in trainable)
    train = task.build_datasets(cfg)["phantom_conversations"]["train"]
    batch = _batch(train, 4)
    assert batch["image"].shape == (4, 0)
    assert all(conv[1][1].startswith("Findings: ") for conv in batch["conversation"])
    loss = task.train_step(model.train(), batch)["loss"]
    assert torch.isfinite(loss) and loss > 1.0
