"""What the tiny recipe reached: per-finding scores and the alignment loss against the floor.

``quickstart.sh`` ends with::

    xraygpt recipe-summary --output output --data dataset/phantom

It reads the evaluation's ``metrics.json`` and prints the clinical F1 of each
phantom finding for the model and the baselines, with the macro average over
the findings the phantoms can show (the project's table averages over all 14
CheXpert observations, 7 of which never occur in phantom reports). Then the
evidence that the model reads the image: the alignment stage's training loss
curve, and on held-out reports the text-only floor (the stage-2 LLM, no
image) against the stage-3 model with each report's own image and with
another study's image; and the stage-1 encoder's own per-finding F1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xraygpt.common.constants import PHANTOM_OBSERVATIONS
from xraygpt.common.errors import MissingFileError

STAGES = (
    "xraygpt_tiny_stage1",
    "xraygpt_tiny_stage2",
    "xraygpt_tiny_stage3",
    "xraygpt_tiny_stage4",
)
EVAL_JOB = "xraygpt_tiny_eval"


def phantom_scores(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-finding F1, macro F1 over the phantom observations and ROUGE-L, per system."""
    systems = {"model": metrics, **metrics.get("baselines", {})}
    out = {}
    for name, system in systems.items():
        per = system["clinical"]["per_observation"]
        f1 = {obs: per[obs]["f1"] for obs in PHANTOM_OBSERVATIONS}
        out[name] = {
            "f1": f1,
            "macro_f1": sum(f1.values()) / len(f1),
            "rouge_l": system["nlg"].get("ROUGE-L"),
        }
    return out


def format_scores(scores: dict[str, dict[str, Any]]) -> str:
    names = list(scores)
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'finding':20s}" + "".join(f"{n:>{width}s}" for n in names)]
    for obs in PHANTOM_OBSERVATIONS:
        lines.append(f"{obs:20s}" + "".join(f"{scores[n]['f1'][obs]:>{width}.3f}" for n in names))
    lines.append(
        f"{'macro F1 (7 above)':20s}"
        + "".join(f"{scores[n]['macro_f1']:>{width}.3f}" for n in names)
    )
    rouge = [scores[n]["rouge_l"] for n in names]
    lines.append(
        f"{'ROUGE-L':20s}" + "".join(f"{'-' if r is None else f'{r:.3f}':>{width}s}" for r in rouge)
    )
    return "\n".join(lines)


def loss_curve(log_path: str | Path) -> list[tuple[int, float]]:
    """(step, mean training loss) from a runner's ``log.jsonl``."""
    points = []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("loss") is not None:
            points.append((int(record["step"]), float(record["loss"])))
    return points


def _config(name: str, options: list[str]):
    from xraygpt.common.config import REPO_ROOT, Config

    folder = "eval_configs" if name == EVAL_JOB else "train_configs"
    return Config(REPO_ROOT / folder / f"{name}.yaml", options)


def held_out_losses(output: Path, data: Path, split: str = "val") -> dict[str, float]:
    """Loss (nats / token) on the ``split`` reports: stage-2 LLM without images, the final
    model (stages 1-4) with them.

    The model reads the reports after the first prompt of the prompt file.
    The floor is the stage-2 LLM's loss on the same reports after the same
    question, rendered as in alignment or as in the chat (the format stage 2
    trained on), whichever is lower. The model is also scored with each report
    after another study's image: if the gain came from more language training
    rather than from reading the image, that control would score as well as
    the matched pairs.
    """
    import torch

    from xraygpt.common.constants import IMAGE_PLACEHOLDER
    from xraygpt.common.registry import registry
    from xraygpt.data.caption_dataset import collate
    from xraygpt.data.losses import (
        ReportTextDataset,
        chat_prompts,
        evaluate_report_loss,
        text_prompts,
    )
    from xraygpt.models.factory import load_model_and_processors

    common = [f"datasets.phantom.build_info.storage={data}", f"model.tokenizer={data}/tokenizer"]
    ckpts = [str(output / stage / "checkpoint_last.pth") for stage in STAGES]
    cfg3 = _config(EVAL_JOB, [*common, f"model.ckpt=[{','.join(ckpts)}]"])
    task3 = registry.get_task_class(cfg3.run_cfg.task).setup_task(cfg3)
    dataset = task3.build_datasets(cfg3)["phantom"][split]

    cfg2 = _config(
        STAGES[1],
        [
            f"datasets.phantom_conversations.build_info.storage={data}",
            f"model.tokenizer={data}/tokenizer",
            f"model.ckpt=[{ckpts[1]}]",
        ],
    )
    task2 = registry.get_task_class(cfg2.run_cfg.task).setup_task(cfg2)
    llm = task2.build_model(cfg2)
    reports = ReportTextDataset(dataset, "phantom")
    floor = min(
        evaluate_report_loss(llm, reports, prompt=prompt)
        for prompt in (text_prompts(llm)[0], *chat_prompts(llm)[:1])
    )

    model, _ = load_model_and_processors(cfg3)
    prompt = text_prompts(model)[0]
    if IMAGE_PLACEHOLDER not in prompt:
        raise ValueError("the alignment model has no prompt with an image slot")
    model.prompt_list = [prompt]  # the same prompt as the floor, not a random one
    tok = model.llama_tokenizer
    total, shuffled, tokens = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=64, collate_fn=collate):
            ids = tok(
                [c + model.end_sym for c in batch["caption"]],
                add_special_tokens=False,
                truncation=True,
                max_length=model.max_txt_len,
            ).input_ids
            n = sum(len(i) for i in ids)
            total += float(model(batch)["loss"]) * n
            # Control: each report after another study's image.
            other = {**batch, "image": batch["image"].roll(1, dims=0)}
            shuffled += float(model(other)["loss"]) * n
            tokens += n
    return {
        "text_only_floor": floor,
        "with_image": total / tokens,
        "with_another_image": shuffled / tokens,
    }


def encoder_scores(output: Path, data: Path, split: str = "val") -> dict[str, Any]:
    """The stage-1 encoder's own per-finding F1 on ``split``."""
    from xraygpt.common.registry import registry
    from xraygpt.data.losses import classification_scores

    cfg = _config(
        STAGES[0],
        [
            f"datasets.phantom.build_info.storage={data}",
            f"model.ckpt={output / STAGES[0] / 'checkpoint_last.pth'}",
        ],
    )
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    return classification_scores(task.build_model(cfg), task.build_datasets(cfg)["phantom"][split])


def summarize(output: str | Path, data: str | Path, *, losses: bool = True) -> dict[str, Any]:
    """Everything :func:`main` prints, as a dict."""
    output, data = Path(output), Path(data)
    metrics_path = output / EVAL_JOB / "metrics.json"
    if not metrics_path.is_file():
        raise MissingFileError(
            f"{metrics_path} not found: run test.py --cfg-path eval_configs/xraygpt_tiny_eval.yaml "
            f"(or quickstart.sh) first"
        )
    summary: dict[str, Any] = {
        "scores": phantom_scores(json.loads(metrics_path.read_text(encoding="utf-8")))
    }
    log_path = output / STAGES[2] / "log.jsonl"
    if log_path.is_file():
        summary["alignment_curve"] = loss_curve(log_path)
    text_log = output / STAGES[1] / "log.jsonl"
    if text_log.is_file() and loss_curve(text_log):
        summary["text_only_train_loss"] = loss_curve(text_log)[-1][1]
    chat_path = output / EVAL_JOB / "chat_metrics.json"
    if chat_path.is_file():
        summary["chat"] = json.loads(chat_path.read_text(encoding="utf-8"))
    if losses:
        summary["held_out"] = held_out_losses(output, data)
        summary["encoder"] = encoder_scores(output, data)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        "Phantom test split: clinical F1 per finding (the project's labeler on the generated",
        "and the reference reports); phantom images are synthetic.",
        format_scores(summary["scores"]),
    ]
    held = summary.get("held_out")
    curve = summary.get("alignment_curve")
    if curve:
        reference = summary.get("text_only_train_loss")
        lines += [
            "",
            "Alignment (stage 3) training loss, nats/token"
            + (
                f" (the stage-2 LLM's text-only training loss at its end: {reference:.4f}):"
                if reference is not None
                else ":"
            ),
        ]
        lines += [f"  step {step:5d}  {loss:.4f}" for step, loss in curve]
    if held:
        lines += [
            "Held-out (val) reports, nats/token, the fair comparison:",
            f"  text-only floor (stage-2 LLM, no image)  {held['text_only_floor']:.4f}",
            f"  aligned model, with its image            {held['with_image']:.4f}",
            f"  aligned model, with another study's image {held['with_another_image']:.4f}",
        ]
    encoder = summary.get("encoder")
    if encoder:
        per = ", ".join(f"{k} {v['f1']:.2f}" for k, v in encoder["per_label"].items())
        lines.append(f"Stage-1 encoder on val, F1: {per} (macro {encoder['macro_f1']:.3f})")
    return "\n".join(lines)
