"""Weight checks: the Vicuna folder, a meta-device build of the model, every checkpoint.

Nothing full-size is loaded: safetensors headers are read, ``.pth`` files are
memory-mapped, and the model is built on the meta device so that its keys and
shapes can be compared with the files' (through :mod:`xraygpt.models.convert`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraygpt.models.checkpoint_fit import (
    blip2_targets,
    fit_state,
    llama_proj_problems,
    model_ckpt_keys,
    shapes_of,
)
from xraygpt.models.llm import llama_size
from xraygpt.validate.checklist import Checklist, human_count, read_json
from xraygpt.validate.system_checks import MemoryEstimate, estimate_memory

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a ``.safetensors`` file, read without loading any tensor.

    Raises ``ValueError`` when the header is malformed or the file is shorter than
    the tensors it lists (an interrupted download).
    """
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024**2:
            raise ValueError(f"{path}: implausible safetensors header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: safetensors header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    try:
        end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"{path}: malformed safetensors header ({err!r})") from err
    size = path.stat().st_size
    if size < 8 + length + end:
        raise ValueError(f"{path} is truncated: {size} bytes, its header lists {8 + length + end}")
    return header


def _shard_problem(path: Path, names: Iterable[str]) -> str | None:
    """Why a weight shard cannot serve ``names``, or None when it can (cheap checks only)."""
    if not path.is_file():
        return f"{path.name}: missing"
    if path.suffix == ".safetensors":
        try:
            header = read_safetensors_header(path)
        except (ValueError, OSError) as err:
            return str(err)
        absent = [n for n in names if n not in header]
        if absent:
            return (
                f"{path.name}: lacks {len(absent)} tensor(s) the index puts there, e.g. {absent[0]}"
            )
        return None
    import zipfile

    # torch.save files are zip archives whose directory sits at the end: a truncated
    # download fails to open.
    if not zipfile.is_zipfile(path):
        return f"{path.name}: not a readable torch checkpoint (truncated download?)"
    return None


def check_llm_folder(out: Checklist, folder: Path, key: str = "model.llama_model") -> dict | None:
    """A Hugging Face LLaMA folder: config.json, tokenizer and weight shards.

    Returns the parsed config.json when it is usable (its ``hidden_size`` sizes
    ``llama_proj``), else None.
    """
    group = "weights"
    if not folder.is_dir():
        out.failed(
            group,
            "llm folder",
            f"{key}={folder} is not a folder",
            f"put the Hugging Face format Vicuna weights in {folder}/ (config.json, tokenizer.model,"
            f" *.safetensors), or set {key} to the folder that holds them",
        )
        for name in ("llm config", "llm tokenizer", "llm weights"):
            out.skip(group, name, "no LLM folder")
        return None
    out.passed(group, "llm folder", f"{folder}")

    config, error = (None, f"{folder / 'config.json'} not found")
    if (folder / "config.json").is_file():
        config, error = read_json(folder / "config.json")
    wanted = ("hidden_size", "num_hidden_layers", "vocab_size")
    if error is None and not isinstance(config, dict):
        error = f"{folder / 'config.json'} must hold a JSON object"
    if error is None:
        absent = [k for k in wanted if not isinstance(config.get(k), int)]
        if absent:
            error = f"{folder / 'config.json'} lacks integer {', '.join(absent)}"
    if error is None:
        kind = config.get("model_type", "?")
        out.add(
            group,
            "llm config",
            kind == "llama",
            f"model_type {kind}, {config['num_hidden_layers']} layers, "
            f"{llama_size(config['hidden_size'])}, vocab {config['vocab_size']}",
            f"{folder} holds a {kind!r} model; XrayGPT needs a LLaMA/Vicuna in Hugging Face "
            "format (convert original LLaMA weights with transformers' "
            "convert_llama_weights_to_hf)",
        )
    else:
        out.failed(
            group,
            "llm config",
            error,
            "copy config.json from the Vicuna release next to the weights (re-download it if "
            "it is damaged); the folder must be in Hugging Face format",
        )
        config = None

    tokenizer = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not tokenizer:
        out.failed(
            group,
            "llm tokenizer",
            f"no tokenizer in {folder} (looked for {' or '.join(TOKENIZER_FILES)})",
            "copy tokenizer.model (and tokenizer_config.json, special_tokens_map.json) from the "
            "LLaMA/Vicuna release into the folder",
        )
    else:
        problem = _tokenizer_problem(folder, tokenizer, config)
        out.add(
            group,
            "llm tokenizer",
            problem is None,
            problem or ", ".join(tokenizer),
            "replace the tokenizer files with the ones of this model's release (the "
            "tokenizer must not have more tokens than config.json's vocab_size)",
        )

    _check_llm_weights(out, folder, config)
    return config


def _tokenizer_problem(folder: Path, present: list[str], config: dict | None) -> str | None:
    vocab = config.get("vocab_size") if config else None
    if "tokenizer.model" in present:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(folder / "tokenizer.model"))
        except (OSError, RuntimeError) as err:
            return f"{folder / 'tokenizer.model'} is not a SentencePiece model: {err}"
        size = processor.GetPieceSize()
    else:
        data, error = read_json(folder / "tokenizer.json")
        if error:
            return error
        try:
            table = data["model"]["vocab"]
            # BPE keeps {token: id}, Unigram a list; added tokens may reuse ids or extend them
            ids = list(table.values()) if isinstance(table, dict) else list(range(len(table)))
            ids += [int(t["id"]) for t in data.get("added_tokens") or []]
            size = max(ids) + 1
        except (KeyError, TypeError, ValueError):
            return f"{folder / 'tokenizer.json'} has no usable model.vocab"
    if vocab is not None and size > vocab:
        return f"tokenizer has {size} tokens but config.json's vocab_size is {vocab}"
    return None


def _check_llm_weights(out: Checklist, folder: Path, config: dict | None) -> None:
    group = "weights"
    fix = (
        "re-download the missing or damaged shard(s) from the same release as the index "
        "file, and keep the index and the shards together"
    )
    index_path = next((folder / n for n in WEIGHT_INDEX_FILES if (folder / n).is_file()), None)
    if index_path is None:
        single = next((folder / n for n in SINGLE_WEIGHT_FILES if (folder / n).is_file()), None)
        if single is None:
            out.failed(
                group,
                "llm weights",
                f"no weights in {folder} (looked for {', '.join(WEIGHT_INDEX_FILES + SINGLE_WEIGHT_FILES)})",
                "copy the Vicuna weight shards and their index into the folder (Hugging Face "
                "format: model-0000N-of-0000M.safetensors + model.safetensors.index.json)",
            )
            return
        problem = _shard_problem(single, ())
        names = (
            list(read_safetensors_header(single))
            if problem is None and single.suffix == ".safetensors"
            else []
        )
        problem = problem or _layers_problem(names, config)
        out.add(group, "llm weights", problem is None, problem or single.name, fix)
        return

    index, error = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if error is None and not isinstance(weight_map, dict):
        error = f"{index_path} has no 'weight_map' object"
    if error:
        out.failed(group, "llm weights", error, fix)
        return
    by_file: dict[str, list[str]] = {}
    for name, file in weight_map.items():
        by_file.setdefault(str(file), []).append(name)
    problems = [
        p for f, names in sorted(by_file.items()) if (p := _shard_problem(folder / f, names))
    ]
    problems += [p] if (p := _layers_problem(list(weight_map), config)) else []
    out.add(
        group,
        "llm weights",
        not problems,
        (
            f"{index_path.name}: {len(weight_map)} tensors in {len(by_file)} shard(s), all present"
            if not problems
            else f"{index_path.name} names {len(by_file)} shard(s); {len(problems)} problem(s)"
        ),
        fix,
        details=problems,
    )


def _layers_problem(names: list[str], config: dict | None) -> str | None:
    """The weights' layer count against config.json's (a 13B folder with a 7B config...)."""
    if not names or config is None:
        return None
    parts = [n.split(".") for n in names if n.startswith("model.layers.")]
    layers = {int(p[2]) for p in parts if len(p) > 2 and p[2].isdigit()}
    if layers and max(layers) + 1 != config["num_hidden_layers"]:
        return (
            f"the weights have {max(layers) + 1} layers, config.json says "
            f"{config['num_hidden_layers']}: config.json belongs to another model size"
        )
    return None


def load_state_file(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file format allows.

    Mapping means a 2 GB ``eva_vit_g.pth`` is checked without reading it all.
    Raises :class:`~xraygpt.common.errors.CheckpointError` (empty, truncated,
    not weights-only) with the file named.
    """
    from xraygpt.common.io import load_checkpoint

    return load_checkpoint(path, what, mmap=True)


@dataclass
class ModelFacts:
    """What the weight checks learn about the model, for the hardware checks."""

    estimate: MemoryEstimate | None = None
    ckpt_bytes: int = 0


def check_weights(out: Checklist, cfg: Any) -> ModelFacts:
    """The LLM folder, a meta-device build, every checkpoint the config names."""
    from xraygpt.common.registry import registry

    facts = ModelFacts()
    group = "weights"
    if "model" not in cfg.config:
        out.skip(group, "model", "the config has no model section")
        return facts
    model_cfg = cfg.model_cfg
    model_cls = registry.get_model_class(model_cfg.arch)

    llm_config = None
    llama_model = str(model_cfg.get("llama_model") or "")
    if llama_model:
        llm_config = check_llm_folder(out, _model_path(llama_model), "model.llama_model")
    elif "llama_model" in model_cfg:
        preset = model_cfg.get("llama_preset")
        out.skip(
            group,
            "llm folder",
            f"model.llama_model is empty: LLM from preset {preset!r}, random init",
        )
    tokenizer_ok = not out.has_failure(group, "llm tokenizer")
    model = _meta_model(out, model_cls, model_cfg, llm_config, tokenizer_ok)
    if model is None:
        return facts
    facts.estimate = estimate_memory(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    facts.ckpt_bytes = trainable * 12 + 1024**2  # weights + two AdamW moments, fp32

    # A model whose ckpt fills it before adapters are put on says what that ckpt holds.
    expected = getattr(model, "ckpt_shapes", None) or shapes_of(model.state_dict())
    llm = getattr(model, "llama_model", None)
    hidden = int(llm_config["hidden_size"]) if llm_config else None
    if hidden is None and llm is not None:
        hidden = int(llm.config.hidden_size)
    vit_ckpt = str(model_cfg.get("vit_ckpt") or "")
    if vit_ckpt:
        _check_vit_ckpt(out, _model_path(vit_ckpt), model, "model.vit_ckpt")
    q_former = str(model_cfg.get("q_former_model") or "")
    if q_former:
        _check_blip2_ckpt(out, _model_path(q_former), expected, "model.q_former_model")
    ckpts = model_cfg.get("ckpt") or []
    ckpts = [ckpts] if isinstance(ckpts, str) else list(ckpts)
    proj = None  # the llama_proj a real build ends with: the last checkpoint's that has one
    from_ckpts: set[str] | None = set()  # top-level modules the checkpoints fill; None: unknown
    for index, item in enumerate(ckpts):
        key = "model.ckpt" if len(ckpts) == 1 else f"model.ckpt[{index}]"
        mapped = _check_model_ckpt(out, _model_path(str(item)), expected, key)
        if mapped is None:
            from_ckpts = None
        elif from_ckpts is not None:
            from_ckpts |= {k.split(".")[0] for k in mapped}
        if mapped and "llama_proj.weight" in mapped:
            proj = (mapped["llama_proj.weight"], key)
    if from_ckpts is not None:  # else a checkpoint failed, already reported: no guessing
        uses_images = getattr(registry.get_task_class(cfg.run_cfg.task), "uses_images", True)
        _check_frozen_random(out, model_cfg, model, from_ckpts, uses_images)
    if llm_config is not None:
        llm_source = str(Path(llama_model) / "config.json")
    else:
        llm_source = f"preset {model_cfg.get('llama_preset') or 'llama-7b'}"
    _check_llama_proj(out, expected.get("llama_proj.weight"), proj, hidden, llm_source)
    resume = cfg.run_cfg.get("resume_ckpt_path")
    if resume:
        names = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
        _check_resume_ckpt(out, _model_path(str(resume)), names)
    return facts


def _model_path(value: str) -> Path:
    """A model config path as the model resolves it (cwd first, then the repo root)."""
    from xraygpt.common.config import resolve_path

    return resolve_path(value) or Path(value)


def _build_on_meta(cfg: Any) -> Any:
    """The model on the meta device: parameters with shapes and dtypes, no memory, no loading."""
    from xraygpt.models.factory import build_model

    return build_model(cfg, device="meta")


def _meta_model(
    out: Checklist, model_cls: type, model_cfg: Any, llm_config: dict | None, tokenizer_ok: bool
):
    """The model built on the meta device (no memory), or None with a ✗ saying why.

    When the LLM folder failed its checks (reported already), the build borrows
    what is missing, the preset's architecture or the shipped tokenizer, so that
    the checkpoints can still be checked against the rest of the model.
    """
    from omegaconf import OmegaConf

    from xraygpt.models.llm import TINY_TOKENIZER_DIR

    group = "weights"
    patch: dict[str, Any] = {}
    notes = []
    if model_cfg.get("llama_model") and llm_config is None:
        patch["llama_model"] = ""
        notes.append(f"LLM architecture of preset {model_cfg.get('llama_preset') or 'llama-7b'}")
    if model_cfg.get("llama_model") and not tokenizer_ok and not model_cfg.get("tokenizer"):
        patch["tokenizer"] = str(TINY_TOKENIZER_DIR)
        notes.append("the shipped tiny tokenizer")
    note = f" (with {' and '.join(notes)}, since the LLM folder failed)" if notes else ""
    build_cfg = OmegaConf.merge(model_cfg, patch) if patch else model_cfg
    try:
        model = _build_on_meta(build_cfg)
    except Exception as err:  # noqa: BLE001 - any build error is the user's config to fix
        out.failed(
            group,
            "model build",
            f"{model_cls.__name__} does not build from the model config: "
            f"{type(err).__name__}: {err}",
            "fix the model key named in the message (the defaults are in xraygpt/configs/models/)",
        )
        return None
    counts = {}
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            counts[name] = n
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = ", ".join(f"{k} {human_count(v)}" for k, v in counts.items())
    out.passed(
        group,
        "model build",
        f"meta-device build: {parts}; trainable {human_count(trainable)}{note}",
    )
    return model


def _check_frozen_random(
    out: Checklist, model_cfg: Any, model: Any, from_ckpts: set[str], uses_images: bool
) -> None:
    """A frozen module without weights makes training useless; benchmarks do it on purpose,
    so it is a warning. The rule is the model's own (it logs the same when it loads).
    ``from_ckpts``: modules that ``model.ckpt`` files fill; ``uses_images``: False for
    tasks that never run the image side (a task class attribute, e.g. text-only LLM
    training)."""
    from xraygpt.models.mini_gpt4_loading import PART_SOURCES, frozen_random_parts

    if model_cfg.get("model_type") in getattr(model, "RANDOM_INIT_MODEL_TYPES", ()):
        return  # a toy model (the tiny recipe's): random by design
    frozen_random = [
        f"{part} (model.{PART_SOURCES[part][1]} is empty)"
        for part in frozen_random_parts(model_cfg, from_ckpts, images=uses_images)
        if hasattr(model, part)
    ]
    if frozen_random:
        out.add(
            "weights",
            "frozen weights",
            False,
            "frozen but randomly initialised: " + ", ".join(frozen_random),
            "set those weight paths in the config; a frozen random module makes training useless",
            required=False,
        )


def _load_for_check(out: Checklist, name: str, path: Path, key: str, hint: str = "") -> Any:
    """The loaded file, or None after reporting why it cannot be used."""
    if not path.is_file():
        out.failed(
            "weights",
            name,
            f"{key}={path} not found",
            hint
            or f"download/copy the file to {path}, or set {key} to its location (README, "
            "'Real weights')",
        )
        return None
    from xraygpt.common.errors import CheckpointError

    try:
        return load_state_file(path, key)
    except CheckpointError as err:
        out.failed(
            "weights",
            name,
            str(err),
            "re-download or re-copy the file (an empty or truncated one fails like this); "
            "files holding pickled objects beyond tensors are refused for safety",
        )
        return None


def _load_state_for_check(
    out: Checklist, name: str, path: Path, key: str, hint: str = ""
) -> dict | None:
    """The file's state dict (unwrapped from its checkpoint), or None after reporting why not."""
    from xraygpt.models.convert import unwrap_checkpoint

    obj = _load_for_check(out, name, path, key, hint)
    if obj is None:
        return None
    try:
        return unwrap_checkpoint(obj, str(path))
    except ValueError as err:
        out.failed("weights", name, str(err), "point the config key at a model checkpoint")
        return None


def _check_vit_ckpt(out: Checklist, path: Path, model: Any, key: str) -> None:
    from xraygpt.models.convert import strip_vit_prefix

    name = "vision weights"
    state = _load_state_for_check(out, name, path, key)
    if state is None:
        return
    try:
        state = strip_vit_prefix(state)
        adapt = getattr(model.visual_encoder, "adapt_state_dict", None)
        dropped: list[str] = []
        if adapt is not None:
            state, dropped = adapt(state)
    except ValueError as err:
        out.failed("weights", name, f"{path}: {err}", f"{key} must be the vision encoder's weights")
        return
    expected = shapes_of(model.visual_encoder.state_dict())
    problems = fit_state(shapes_of(state), expected).problems()
    out.add(
        "weights",
        name,
        not problems,
        f"{path}: {len(state)} tensors fit visual_encoder"
        + (f" ({len(dropped)} unused by BLIP-2 dropped)" if dropped else "")
        if not problems
        else f"{path} does not fit vision encoder {model.cfg.vit_model!r}",
        f"{key} must be EVA-ViT-g weights (eva_vit_g.pth from LAVIS) for vit_model "
        f"{model.cfg.vit_model!r}",
        details=problems,
    )


def _check_blip2_ckpt(out: Checklist, path: Path, expected: dict, key: str) -> None:
    from xraygpt.models.convert import convert_blip2_checkpoint

    name = "q-former weights"
    state = _load_state_for_check(out, name, path, key)
    if state is None:
        return
    converted = convert_blip2_checkpoint(state)
    problems = fit_state(shapes_of(converted.tensors), blip2_targets(expected)).problems()
    out.add(
        "weights",
        name,
        not problems,
        f"{path}: {len(converted.tensors)} tensors fit Qformer/query_tokens/ln_vision after the "
        f"LAVIS key mapping ({len(converted.dropped)} text-side keys dropped by design, "
        f"{len(converted.unused)} unused)"
        if not problems
        else f"{path} does not fit the Q-Former (after the LAVIS -> transformers key mapping)",
        f"{key} must be the LAVIS BLIP-2 checkpoint (blip2_pretrained_flant5xxl.pth) and "
        "model.qformer_config must match it",
        details=problems,
    )


def _check_model_ckpt(
    out: Checklist, path: Path, expected: dict, key: str
) -> dict[str, tuple[int, ...]] | None:
    """A MiniGPT-4-format checkpoint (``{"model": {...}}``): a subset of the model's keys.

    ``llama_proj`` is left to :func:`_check_llama_proj`, which knows the LLM's size.
    Returns the checkpoint's ``{model key: shape}``, or None when it does not load.
    """
    name = f"checkpoint {key}"
    state = _load_state_for_check(out, name, path, key, _producer_hint(path, key))
    if state is None:
        return None
    mapped = shapes_of(model_ckpt_keys(state))
    others = {k: v for k, v in mapped.items() if not k.startswith("llama_proj.")}
    problems = [] if mapped else ["holds no tensor of this model"]
    problems += fit_state(others, expected, subset=True).problems()
    heads = sorted({k.split(".")[0] for k in mapped})
    out.add(
        "weights",
        name,
        not problems,
        f"{path}: {len(mapped)} tensors ({', '.join(heads)})"
        if not problems
        else f"{path} does not fit this model",
        f"{key} must be a checkpoint of this model configuration (a MiniGPT-4 / XrayGPT "
        "checkpoint, or one written by train.py with the same model section)",
        details=problems,
    )
    return mapped


def _producer_hint(path: Path, key: str) -> str:
    """For a missing ``output/<job>/checkpoint_*.pth``: the training job that writes it."""
    if not path.name.startswith("checkpoint_"):
        return ""
    from xraygpt.common.config import REPO_ROOT

    job = path.parent.name  # run.output_dir / job name, the job name being the config's stem
    config = REPO_ROOT / "train_configs" / f"{job}.yaml"
    if config.is_file():
        first = f"`python train.py --cfg-path train_configs/{job}.yaml` writes it: run that first"
    else:
        first = "it is written by an earlier training job: run that first"
    return f"{first}, or set {key} to a released MiniGPT-4 / XrayGPT checkpoint"


def _check_llama_proj(
    out: Checklist,
    expected: tuple[int, ...] | None,
    loaded: tuple[tuple[int, ...], str] | None,
    hidden: int | None,
    llm_source: str,
) -> None:
    """``llama_proj`` from the checkpoints against the LLM's hidden size (13B vs 7B...)."""
    if expected is None or hidden is None:
        out.skip("weights", "llama_proj", "the model has no llama_proj / LLM")
        return
    if loaded is None:
        out.passed(
            "weights",
            "llama_proj",
            f"{expected[1]} -> {expected[0]} for the LLM's {llama_size(hidden)} ({llm_source}); "
            "no checkpoint sets it: trained from scratch",
        )
        return
    shape, key = loaded
    problems = [
        f"{key}: {problem}"
        for problem in llama_proj_problems(shape, hidden, expected[1], f"the LLM ({llm_source})")
    ]
    out.add(
        "weights",
        "llama_proj",
        not problems,
        f"llama_proj.weight {list(shape)} from {key} fits the LLM's {llama_size(hidden)} "
        f"({llm_source})"
        if not problems
        else problems[0],
        "use the checkpoint made for this LLM size (a 7B checkpoint with Vicuna-7B), or point "
        "model.llama_model at the LLM the checkpoint was trained with",
        details=problems[1:],
    )


def _check_resume_ckpt(out: Checklist, path: Path, trainable: dict) -> None:
    name = "resume checkpoint"
    obj = _load_for_check(
        out,
        name,
        path,
        "run.resume_ckpt_path",
        "point run.resume_ckpt_path at a checkpoint_<step>.pth of this job, or use "
        "run.resume=auto to pick the newest in the output folder",
    )
    if obj is None:
        return
    absent = (
        [k for k in ("model", "optimizer", "lr_sched", "step") if k not in obj]
        if isinstance(obj, dict)
        else ["model"]
    )
    if absent:
        out.failed(
            "weights",
            name,
            f"{path} lacks {', '.join(absent)}: it is not a training checkpoint of this project",
            "to start from weights only, name the file in model.ckpt instead of "
            "run.resume_ckpt_path",
        )
        return
    try:
        problems = fit_state(shapes_of(obj["model"]), trainable).problems()
    except (AttributeError, TypeError):
        problems = ["its 'model' entry is not a state dict of tensors"]
    out.add(
        "weights",
        name,
        not problems,
        f"{path}: step {obj['step']}, {len(obj['model'])} trained tensors fit"
        if not problems
        else f"{path} was written by a run with other trainable parameters",
        "resume only with the config that wrote the checkpoint (same freeze_* flags and sizes)",
        details=problems,
    )
