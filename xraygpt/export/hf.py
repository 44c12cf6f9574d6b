"""``xraygpt export hf``: the model as transformers' ``Blip2ForConditionalGeneration``.

The folder it writes loads with transformers alone::

    model = AutoModelForImageTextToText.from_pretrained(folder)   # Blip2ForConditionalGeneration
    processor = AutoProcessor.from_pretrained(folder, backend="pil")  # PIL: as the project

and holds: the weights in safetensors shards (written one shard at a time;
any peft LoRA of the LLM merged tensor by tensor), ``config.json``
(``Blip2Config`` with the LLaMA text config, ``num_query_tokens``,
``image_token_index``), the processor (the eval image settings, bicubic,
CLIP mean/std; the LLaMA tokenizer with the ``<image>`` token; a chat template
that renders the XrayGPT conversation exactly as
``xraygpt.conversation.chat.Chat`` does, see :func:`build_processor` for why
it is a ``LlavaProcessor``),
``generation_config.json`` (the eval settings, ``###`` as the stop string) and
``xraygpt_export.json`` (the model section it came from; the project reads a
folder back through ``model.ckpt``).

The name mapping lives in :mod:`xraygpt.models.hf_blip2`, shared with the
import path.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import xraygpt.models.hf_blip2 as hf_blip2
from xraygpt.common.constants import CLIP_MEAN, CLIP_STD, EXPORT_INFO, IMAGE_PLACEHOLDER, STOP_STR
from xraygpt.common.io import atomic_write_json
from xraygpt.export import (
    DEFAULT_SHARD_SIZE,
    ExportError,
    check_out,
    partial_folder,
    publish,
)

log = logging.getLogger(__name__)


_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


@dataclass
class ExportReport:
    out: str
    tensors: int
    shards: int
    bytes: int
    seconds: float
    image_token_index: int
    vocab_rows: int


def parse_size(text: str) -> int:
    """``"2GB"``, ``"500MB"``, ``"1GiB"`` or a number of bytes."""
    value = text.strip().upper()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * _UNITS[unit])
    try:
        return int(value)
    except ValueError:
        raise ExportError(
            f"--max-shard-size {text!r}: give bytes or a size like 2GB, 500MB"
        ) from None


# ---------------------------------------------------------------------- the conversation


def chat_template(system: str, roles: tuple[str, str], sep: str, image_slot: str) -> str:
    """A Jinja chat template rendering messages as ``Chat`` builds the prompt.

    ``Chat`` adds a Patient message ``<Img><ImageHere></Img>`` per image and
    joins the next question to it with a space; every finished turn is
    ``Role: message`` + ``sep`` after ``system + sep``, and the open turn is
    ``Doctor:``. Here an image part of a user message opens such a message
    (``image_slot`` in place of ``<ImageHere>``) and a text part right after it
    joins it; a leading system message replaces the system text.
    """
    user, assistant = (json.dumps(r) for r in roles)

    def lit(text: str) -> str:
        return json.dumps(text)

    return (
        "{%- macro text_of(content) -%}"
        "{%- if content is string -%}{{ content }}"
        "{%- else -%}{%- for part in content if part['type'] == 'text' -%}{{ part['text'] }}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        f"{{%- set ns = namespace(system={lit(system)}, open=false) -%}}"
        "{%- set msgs = messages -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set ns.system = text_of(messages[0]['content']) -%}"
        "{%- set msgs = messages[1:] -%}"
        "{%- endif -%}"
        f"{{{{- ns.system + {lit(sep)} -}}}}"
        "{%- for message in msgs -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- if message['content'] is string -%}"
        "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'image' -%}"
        f"{{%- if ns.open -%}}{{{{- {lit(sep)} -}}}}{{%- endif -%}}"
        f"{{{{- {user} + ': ' + {lit(image_slot)} -}}}}"
        "{%- set ns.open = true -%}"
        "{%- elif part['type'] == 'text' -%}"
        f"{{%- if ns.open -%}}{{{{- ' ' + part['text'] + {lit(sep)} -}}}}"
        f"{{%- else -%}}{{{{- {user} + ': ' + part['text'] + {lit(sep)} -}}}}{{%- endif -%}}"
        "{%- set ns.open = false -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{%- if ns.open -%}}{{{{- {lit(sep)} -}}}}{{%- set ns.open = false -%}}{{%- endif -%}}"
        f"{{{{- {assistant} + ': ' + text_of(message['content']) + {lit(sep)} -}}}}"
        "{%- else -%}"
        "{{- raise_exception('XrayGPT conversations have user and assistant turns (and one "
        "leading system message), not ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if ns.open -%}}{{{{- {lit(sep)} -}}}}{{%- endif -%}}"
        f"{{%- if add_generation_prompt -%}}{{{{- {assistant} + ':' -}}}}{{%- endif -%}}"
    )


def segmentwise_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that tokenizes each piece between special tokens on its own.

    ``Chat`` tokenizes the prompt's segments around each image separately, so a
    segment after an image starts like a text of its own (SentencePiece's word
    marker in front). A LLaMA tokenizer with Metaspace ``prepend_scheme="first"``
    would not do that after the image tokens; ``"always"`` does.
    """
    from tokenizers import pre_tokenizers

    tok = copy.deepcopy(tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme == "first":
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=pre.replacement, prepend_scheme="always", split=pre.split
        )
    return tok


def project_prompt_ids(model: Any, prompt: str, image_id: int, n_query: int) -> list[int]:
    """The ids ``Chat.get_context_emb`` embeds for ``prompt``, with ``image_id`` per image slot."""
    ids = list(model.bos_ids().tolist())
    segments = prompt.split(IMAGE_PLACEHOLDER)
    for i, segment in enumerate(segments):
        ids += model.tokenize(segment).tolist()
        if i < len(segments) - 1:
            ids += [image_id] * n_query
    return ids


def check_prompts(model: Any, processor: Any, image_id: int, n_query: int) -> None:
    """The exported template + processor give exactly the ids ``Chat`` gives; else an error."""
    from PIL import Image

    from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template

    conv = get_conv_template("xraygpt")
    conv.append_message(conv.roles[0], f"{IMAGE_MESSAGE} Describe the given chest x-ray image.")
    conv.append_message(conv.roles[1], "No acute findings.")
    conv.append_message(conv.roles[0], "Is there a pleural effusion?")
    conv.append_message(conv.roles[1], None)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "Describe the given chest x-ray image."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "No acute findings."}]},
        {"role": "user", "content": [{"type": "text", "text": "Is there a pleural effusion?"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    expected_text = conv.get_prompt()
    if text.replace(processor.image_token, IMAGE_PLACEHOLDER) != expected_text:
        raise ExportError(
            f"the exported chat template renders {text!r}, but Chat builds {expected_text!r}"
        )
    image = Image.new("RGB", (32, 32))
    got = processor(images=[image], text=text).input_ids[0]
    want = project_prompt_ids(model, expected_text, image_id, n_query)
    if list(got) != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        raise ExportError(
            "the exported processor turns the XrayGPT prompt into other ids than the project "
            f"({len(got)} vs {len(want)} ids; first difference at {first}); this tokenizer's "
            "pre-tokenizer is not one the exporter knows how to align"
        )


def build_processor(model: Any, cfg: Any) -> Any:
    """The processor: eval image settings, the tokenizer with ``<image>``, the chat template.

    It is transformers' ``LlavaProcessor``, not ``Blip2Processor``: in transformers
    5.24 ``Blip2Processor.__init__`` does not pass ``chat_template`` on, so a
    loaded one has no chat template, and it always puts ``num_query_tokens``
    image tokens before the whole prompt, where XrayGPT has them mid-prompt.
    ``LlavaProcessor`` expands each ``<image>`` of the rendered prompt in place to
    (image side / patch side)^2 + additional tokens; with the patch as large as
    the (fixed-size) image and ``num_query_tokens - 1`` additional ones that is
    exactly the query tokens Blip2ForConditionalGeneration fills in.
    """
    from tokenizers import AddedToken
    from transformers import LlavaProcessor

    from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template

    n_query = int(model.query_tokens.shape[1])
    tokenizer = segmentwise_tokenizer(model.llama_tokenizer)
    tokenizer.add_tokens(
        [AddedToken(hf_blip2.IMAGE_TOKEN, normalized=False, special=True)], special_tokens=True
    )
    conv = get_conv_template("xraygpt")
    images = image_processor(cfg)
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=int(images.size["height"]),
        vision_feature_select_strategy="full",
        num_additional_image_tokens=n_query - 1,
        image_token=hf_blip2.IMAGE_TOKEN,
        chat_template=chat_template(
            conv.system,
            conv.roles,
            conv.sep,
            IMAGE_MESSAGE.replace(IMAGE_PLACEHOLDER, hf_blip2.IMAGE_TOKEN),
        ),
    )


# ---------------------------------------------------------------------- the parts


def check_exportable(model_cfg: Any) -> None:
    """Fail before building anything if the config cannot become a Blip2 model."""
    arch = str(model_cfg.get("arch", ""))
    if arch != "mini_gpt4":
        raise ExportError(f"model.arch={arch!r}: only mini_gpt4 models export to BLIP-2")
    encoder = str(model_cfg.get("vit_model", ""))
    if encoder not in hf_blip2.EXPORTABLE_ENCODERS:
        raise ExportError(
            f"model.vit_model={encoder!r}: this vision encoder has no counterpart in "
            f"transformers (Blip2VisionModel is a ViT with the layout of timm's Eva), so the "
            f"model cannot be written as Blip2ForConditionalGeneration. Encoders that export: "
            f"{', '.join(hf_blip2.EXPORTABLE_ENCODERS)}"
        )
    if model_cfg.get("low_resource", False):
        raise ExportError(
            "model.low_resource=true loads an 8-bit LLM; export needs low_resource=false"
        )


def image_processor(cfg: Any) -> Any:
    """The eval image settings as transformers' PIL-based BLIP image processor.

    ``BlipImageProcessorPil`` resizes with PIL's bicubic filter like the project's
    ``blip2_image_eval`` (the tensor-based processor's bicubic differs by ~1e-2).
    """
    from omegaconf import OmegaConf
    from transformers import BlipImageProcessorPil

    size = OmegaConf.select(cfg.model_cfg, "image_size", default=224)
    mean, std = list(CLIP_MEAN), list(CLIP_STD)
    for ds_cfg in cfg.datasets_cfg.values():
        proc = OmegaConf.select(ds_cfg, "vis_processor.eval")
        if proc is not None:
            if proc.get("name") != "blip2_image_eval":
                raise ExportError(
                    f"vis_processor.eval {proc.get('name')!r}: only blip2_image_eval has a "
                    f"transformers counterpart"
                )
            size = proc.get("image_size", size)
            mean = list(proc.get("mean") or mean)
            std = list(proc.get("std") or std)
            break
    if int(size) != int(cfg.model_cfg.image_size):
        raise ExportError(
            f"the eval image size {size} differs from model.image_size {cfg.model_cfg.image_size}"
        )
    return BlipImageProcessorPil(
        size={"height": int(size), "width": int(size)},
        resample=3,  # PIL.Image.BICUBIC
        do_rescale=True,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=True,
    )


def generation_config(cfg: Any, tokenizer: Any, image_id: int) -> Any:
    """The eval settings (``run.*``, greedy by default), stopping at ``###``."""
    from omegaconf import OmegaConf
    from transformers import GenerationConfig

    run = cfg.run_cfg

    def pick(key: str, default: Any) -> Any:
        return OmegaConf.select(run, key, default=default)

    return GenerationConfig(
        max_new_tokens=int(pick("max_new_tokens", 160)),
        min_new_tokens=int(pick("min_new_tokens", 1)),
        num_beams=int(pick("num_beams", 1)),
        do_sample=False,
        repetition_penalty=float(pick("repetition_penalty", 1.0)),
        length_penalty=float(pick("length_penalty", 1.0)),
        stop_strings=[STOP_STR],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[int(image_id)],  # its output row is zero: never a real answer
    )


# ---------------------------------------------------------------------- writing


def write_shards(
    plan: list[hf_blip2.Entry],
    get: Callable[[str], torch.Tensor],
    folder: Path,
    max_shard_bytes: int,
    dtype: torch.dtype | None = None,
) -> tuple[int, int]:
    """Compute and save the plan's tensors shard by shard; returns (shards, bytes).

    Only the current shard's tensors are held (most are views of the model's
    own parameters; a LoRA-merged or re-cut tensor is one tensor's copy).
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    groups: list[list[hf_blip2.Entry]] = [[]]
    sizes = [0]

    def nbytes(entry: hf_blip2.Entry) -> int:
        first = get(entry.sources[0])
        n = first.numel() * (dtype.itemsize if dtype is not None else first.element_size())
        if entry.combine == "qkv_bias":
            n *= 3
        elif entry.combine == "rows":
            n = n // max(first.shape[0], 1) * entry.rows
        return n

    for entry in plan:
        size = nbytes(entry)
        if groups[-1] and sizes[-1] + size > max_shard_bytes:
            groups.append([])
            sizes.append(0)
        groups[-1].append(entry)
        sizes[-1] += size
    n = len(groups)
    names = (
        [hf_blip2.SINGLE_FILE]
        if n == 1
        else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    weight_map: dict[str, str] = {}
    with tqdm(total=len(plan), desc="writing tensors", unit="tensor") as bar:
        for name, group in zip(names, groups, strict=True):
            shard: dict[str, torch.Tensor] = {}
            storages: set[int] = set()
            for entry in group:
                tensor = entry.compute(get).detach()
                if dtype is not None and tensor.is_floating_point() and not _keeps_fp32(entry):
                    tensor = tensor.to(dtype)
                tensor = tensor.cpu().contiguous()
                if tensor.untyped_storage().data_ptr() in storages:
                    tensor = tensor.clone()  # tied weights: safetensors stores each on its own
                storages.add(tensor.untyped_storage().data_ptr())
                shard[entry.target] = tensor
                weight_map[entry.target] = name
                bar.update()
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            del shard
    total = sum(sizes)
    if n > 1:
        atomic_write_json(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
            folder / hf_blip2.INDEX_FILE,
        )
    return n, total


def _keeps_fp32(entry: hf_blip2.Entry) -> bool:
    """transformers keeps BLIP-2's Q-Former and query tokens in fp32 whatever the dtype."""
    return entry.target == "query_tokens" or entry.target.startswith("qformer.")


def check_names(config: Any, targets: list[str]) -> None:
    """The plan's names are exactly ``Blip2ForConditionalGeneration``'s (built on meta)."""
    from transformers import Blip2ForConditionalGeneration

    with torch.device("meta"):
        reference = Blip2ForConditionalGeneration(copy.deepcopy(config))
    want = set(reference.state_dict())
    got = set(targets)
    if want != got:
        raise ExportError(
            f"the mapped names do not match Blip2ForConditionalGeneration: missing "
            f"{sorted(want - got)[:5]}, unexpected {sorted(got - want)[:5]}"
        )


def export_model(
    model: Any,
    cfg: Any,
    out: str | Path,
    *,
    max_shard_size: str = DEFAULT_SHARD_SIZE,
    dtype: str | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``model`` (a built ``mini_gpt4``) and its processor as a transformers folder.

    ``cfg``: the job's Config (image settings from its dataset's eval processor,
    generation settings from ``run``). The folder appears complete or not at all.
    """
    from xraygpt.models.llm import parse_dtype

    start = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite=overwrite)
    check_exportable(cfg.model_cfg)
    cast = parse_dtype(dtype, "--dtype") if dtype else None
    n_query = int(model.query_tokens.shape[1])

    processor = build_processor(model, cfg)
    image_id = int(processor.image_token_id)
    check_prompts(model, processor, image_id, n_query)

    vocab = int(hf_blip2.llm_config(model.llama_model).vocab_size)
    vocab_rows = max(vocab, image_id + 1)
    config = hf_blip2.blip2_config(model, image_id, vocab_rows)
    llm_dtype = model.llama_model.get_input_embeddings().weight.dtype
    config.dtype = str(cast or llm_dtype).removeprefix("torch.")

    tensors = hf_blip2.model_tensors(model)
    plan = hf_blip2.to_hf_plan(tensors, vocab_rows=vocab_rows if vocab_rows != vocab else None)
    check_names(config, [e.target for e in plan])

    tmp = partial_folder(out)
    try:
        shards, size = write_shards(
            plan, lambda k: tensors[k](), tmp, parse_size(max_shard_size), cast
        )
        config.architectures = ["Blip2ForConditionalGeneration"]
        config.save_pretrained(tmp)
        generation_config(cfg, processor.tokenizer, image_id).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_json(export_info(cfg, vocab, image_id, n_query), tmp / EXPORT_INFO)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = ExportReport(
        out=str(out),
        tensors=len(plan),
        shards=shards,
        bytes=size,
        seconds=round(time.perf_counter() - start, 2),
        image_token_index=image_id,
        vocab_rows=vocab_rows,
    )
    log.info("exported %s", asdict(report))
    return report


def export_info(cfg: Any, vocab: int, image_id: int, n_query: int) -> dict[str, Any]:
    from omegaconf import OmegaConf

    model_section = OmegaConf.to_container(cfg.model_cfg, resolve=True)
    assert isinstance(model_section, Mapping)
    return {
        "format": 1,
        "written_by": "xraygpt export hf",
        "model": dict(model_section),
        "llm_vocab_size": vocab,
        "image_token_index": image_id,
        "num_query_tokens": n_query,
        "note": (
            "post_layernorm uses the vision layer_norm_eps; the project's ln_vision uses 1e-5"
        ),
    }


def export_from_config(
    cfg_path: str | Path,
    options: list[str],
    out: str | Path,
    *,
    max_shard_size: str | int = DEFAULT_SHARD_SIZE,
    dtype: str | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Build the model of a config (with the weights it names) and export it to ``out``."""
    from xraygpt.common.config import Config
    from xraygpt.common.registry import registry

    cfg = Config(cfg_path, options)
    check_exportable(cfg.model_cfg)  # before the (possibly long) build
    check_out(Path(out), overwrite=overwrite)
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()
    return export_model(
        model, cfg, out, max_shard_size=max_shard_size, dtype=dtype, overwrite=overwrite
    )
