"""``xraygpt export llm``: the trained LLM as a plain transformers folder.

    xraygpt export llm --cfg-path <the training config> \\
        --ckpt output/<job>/checkpoint_last.pth --out <folder>

Builds the model of the config (``causal_lm`` or ``mini_gpt4``), loads the
training checkpoint (a runner ``.pth`` file, or an FSDP ``checkpoint_<step>/``
folder), merges LoRA adapters into the weights, and writes ``config.json``,
safetensors shards, the tokenizer and ``generation_config.json``: a folder
``LlamaForCausalLM.from_pretrained`` reads with no peft, and that
``model.llama_model: <folder>`` takes in the XrayGPT image stages.

Adapters trained on 4-bit base weights (QLoRA) are merged into the base in
``model.llm_dtype`` (the base folder's full-precision weights), as usual for QLoRA.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from xraygpt.common.errors import CheckpointError, UsageError
from xraygpt.export import DEFAULT_SHARD_SIZE, EXPORT_INFO, check_out, partial_folder, publish

log = logging.getLogger(__name__)


def export_llm(
    cfg_path: str | Path,
    ckpt: str | Path,
    out: str | Path,
    *,
    options: list[str] | None = None,
    dtype: str | None = None,
    max_shard_size: str = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the trained LLM of a checkpoint to ``out``; its provenance (``xraygpt_export.json``).

    ``overwrite`` replaces an earlier export at ``out`` (never a folder of anything else).
    """
    out = Path(out)
    check_out(out, overwrite=overwrite)
    llm, tokenizer, info = load_trained_llm(cfg_path, ckpt, list(options or []), dtype)
    write_folder(llm, tokenizer, out, str(max_shard_size), info)
    return info


def load_trained_llm(
    cfg_path: str | Path, ckpt: str | Path, options: list[str], dtype: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(the merged ``LlamaForCausalLM``, its tokenizer, provenance) of a training checkpoint."""
    import xraygpt.train.fsdp as fsdp
    from xraygpt.common.config import Config
    from xraygpt.common.io import load_checkpoint
    from xraygpt.common.registry import registry
    from xraygpt.models.checkpoint_fit import load_trainable_state_dict
    from xraygpt.models.llm import parse_dtype
    from xraygpt.models.lora import is_lora_model, merged_copy

    cfg = Config(str(cfg_path), options)
    model_cfg = cfg.model_cfg
    lora = model_cfg.get("lora")
    if lora is not None and lora.get("quantize_4bit"):
        log.info("model.lora.quantize_4bit ignored: adapters merge into full-precision weights")
        model_cfg.lora.quantize_4bit = False
    model = registry.get_model_class(model_cfg.arch).from_config(model_cfg)
    for name in ("llama_model", "llama_tokenizer"):
        if not hasattr(model, name):
            raise UsageError(
                f"model.arch={model_cfg.arch} has no {name}: export llm takes a model that "
                f"trains an LLM (causal_lm, mini_gpt4)"
            )
    frozen = [n for n, p in model.llama_model.named_parameters() if not p.requires_grad]
    if frozen and not model_cfg.get("llama_model") and not model_cfg.get("ckpt"):
        # A training checkpoint holds the trained tensors only; the frozen base must come
        # from files, or the exported LLM would pair the adapters with another random base.
        raise CheckpointError(
            f"{cfg_path}: the LLM's frozen weights ({len(frozen)} tensors, e.g. {frozen[0]}) "
            f"were randomly initialised (model.llama_model and model.ckpt are empty), and a "
            f"training checkpoint does not hold them: export needs the base they were "
            f"trained on (model.llama_model or model.ckpt)"
        )
    ckpt = Path(ckpt)
    if fsdp.is_sharded_checkpoint(ckpt):
        fsdp.load_sharded(model, None, ckpt)
    else:
        state = load_checkpoint(ckpt, "--ckpt")
        if "model" not in state:
            raise CheckpointError(f"--ckpt {ckpt} has no 'model' entry: not a training checkpoint")
        load_trainable_state_dict(model, state["model"], str(ckpt))
    llm = model.llama_model
    had_lora = is_lora_model(llm)
    llm = merged_copy(llm)
    if dtype is not None:
        llm = llm.to(parse_dtype(dtype, "--dtype"))
    info = {
        "config": str(cfg_path),
        "checkpoint": str(ckpt),
        "lora_merged": had_lora,
        "dtype": str(next(llm.parameters()).dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in llm.parameters()),
    }
    return llm, model.llama_tokenizer, info


def write_folder(llm: Any, tokenizer: Any, out: Path, max_shard_size: str, info: dict) -> None:
    """Write the folder under a temporary name, then rename it: complete or absent."""
    from transformers import GenerationConfig

    from xraygpt.common.io import atomic_write_text

    # Greedy by default, stopping at eos; the project's code sets its own options anyway.
    llm.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llm.config.use_cache = True
    partial = partial_folder(out)
    llm.save_pretrained(str(partial), max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(partial))
    atomic_write_text(json.dumps(info, indent=2) + "\n", partial / EXPORT_INFO)
    publish(partial, out)
