"""``mini_gpt4``: image -> vision encoder -> ln_vision -> Q-Former -> llama_proj -> LLaMA.

The MiniGPT-4 / XrayGPT model (docs/recipe.md §2-4) assembled from maintained
libraries: timm's ``Eva`` (or any registered vision encoder), transformers'
``Blip2QFormerModel`` and ``LlamaForCausalLM``. Attribute names are the
original's (``visual_encoder``, ``ln_vision``, ``Qformer``, ``query_tokens``,
``llama_proj``, ``llama_model``, ``llama_tokenizer``), so MiniGPT-4 / XrayGPT
checkpoints load by name.

Model types: ``pretrain_vicuna`` (full size; EVA-ViT-g, BLIP-2 Q-Former,
Vicuna from ``llama_model``) and ``tiny`` (the same architecture at toy size,
random init, the shipped tokenizer; for tests and the tiny recipe).

This module holds the network: its modules, ``forward`` (the loss) and the prompt
wrapping. Beside it: :mod:`.mini_gpt4_loading` (the weight files the config names),
:mod:`.mini_gpt4_generation` (answers and streaming) and :func:`.llm.build_llm`
(tokenizer + LLM); the methods of the same names call them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

import xraygpt.models.mini_gpt4_generation as generation
import xraygpt.models.mini_gpt4_loading as loading
from xraygpt.common.config import ConfigError, default_yaml_of, require_path
from xraygpt.common.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from xraygpt.common.registry import registry
from xraygpt.models.llm import build_llm, parse_dtype
from xraygpt.models.lora import LoraSettings, require_qlora_support
from xraygpt.models.vision_encoders import LayerNormFp32, build_vision_encoder

log = logging.getLogger(__name__)

# The Q-Former of BLIP-2 (docs/recipe.md §2); ``model.qformer_config`` overrides these.
QFORMER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "cross_attention_frequency": 2,
    "layer_norm_eps": 1e-12,
}


@dataclass
class MiniGPT4Config:
    """Every key the ``model:`` section may hold. Paths are relative to the repo root."""

    arch: str = "mini_gpt4"
    model_type: str = "pretrain_vicuna"
    # vision encoder
    vit_model: str = "eva_clip_g"  # a registered vision encoder
    vit_ckpt: str = ""  # eva_vit_g.pth-style weights; empty = random init
    vision_config: dict[str, Any] = field(default_factory=dict)  # the encoder's own options
    image_size: int = 224
    drop_path_rate: float = 0.0
    use_grad_checkpoint: bool = False
    vit_precision: str = "fp16"
    freeze_vit: bool = True
    # Q-Former
    q_former_model: str = ""  # LAVIS BLIP-2 checkpoint; empty = random init
    num_query_token: int = 32
    qformer_config: dict[str, Any] = field(default_factory=dict)  # Blip2QFormerConfig overrides
    freeze_qformer: bool = True
    # LLM
    llama_model: str = ""  # HF folder of Vicuna; empty = random init from llama_preset
    llama_preset: str | None = None  # llama-7b | llama-13b | tiny: used when llama_model is empty
    llama_config: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields over the preset
    tokenizer: str = ""  # tokenizer folder; empty = llama_model's
    llm_dtype: str = "float16"
    freeze_llm: bool = True
    low_resource: bool = False  # LLM in 8-bit on GPU device_8bit, ViT kept on the CPU
    device_8bit: int = 0
    # LoRA adapters on the LLM (keys of xraygpt.models.lora.LoraSettings: r, alpha, dropout,
    # target_modules, quantize_4bit); null = none. With adapters the LLM's own weights stay
    # frozen (freeze_llm: true) and llama_proj + the adapters train, as in LLaVA-Rad.
    lora: dict[str, Any] | None = None
    # text
    prompt_path: str = ""
    prompt_template: str = ""
    max_txt_len: int = 32
    end_sym: str = "\n"
    # checkpoints in the MiniGPT-4 format, loaded in order: a path or a list of paths; a
    # folder written by ``xraygpt export hf`` counts as a checkpoint of every weight
    ckpt: Any = ""


def as_model_config(cfg: Any) -> DictConfig:
    """A validated ``MiniGPT4Config`` DictConfig from a DictConfig, dict or the dataclass."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.structured(cfg)
    try:
        return OmegaConf.merge(OmegaConf.structured(MiniGPT4Config), cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"model config: {err}") from err


@registry.register_model("mini_gpt4")
class MiniGPT4(nn.Module):
    config_class = MiniGPT4Config
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_vicuna": "configs/models/minigpt4_vicuna.yaml",
        "tiny": "configs/models/minigpt4_tiny.yaml",
        "tiny_phantom": "configs/models/minigpt4_tiny_phantom.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_vicuna"  # as the original's configs assume
    # Toy sizes for the tests and the tiny recipe, random by design: a frozen part left
    # random there is expected, not a forgotten weight file (no warning about it).
    RANDOM_INIT_MODEL_TYPES = frozenset({"tiny", "tiny_phantom"})

    def __init__(self, cfg: Any, *, meta: bool = False) -> None:
        """Build every module (random init, or Vicuna from ``llama_model``); load nothing else.

        Use :meth:`from_config`, which also loads the weights the config names.
        ``meta`` marks a build on the meta device: the LLM's architecture is
        read from its folder's ``config.json`` (or the preset) instead of loading it.
        """
        super().__init__()
        cfg = as_model_config(cfg)
        self.cfg = cfg
        self.freeze_vit = bool(cfg.freeze_vit)
        self.freeze_qformer = bool(cfg.freeze_qformer)
        self.freeze_llm = bool(cfg.freeze_llm)
        self.low_resource = bool(cfg.low_resource)
        self.lora = self._lora_settings(cfg)
        self.max_txt_len = int(cfg.max_txt_len)
        self.end_sym = str(cfg.end_sym)
        if not self.end_sym:
            raise ConfigError("model.end_sym must not be empty")

        # --- vision encoder + ln_vision
        vit_dtype = parse_dtype(cfg.vit_precision, "model.vit_precision")
        if self.low_resource:
            vit_dtype = torch.float32  # it runs on the CPU then, as in the original
        if vit_dtype != torch.float32 and not self.freeze_vit:
            raise ConfigError(
                f"model.vit_precision={cfg.vit_precision} with freeze_vit=false would train "
                f"half-precision weights; use vit_precision=fp32 (AMP still applies)"
            )
        self.visual_encoder = build_vision_encoder(cfg).to(vit_dtype)
        width = self.visual_encoder.num_features
        self.ln_vision = LayerNormFp32(width)

        # --- Q-Former + query tokens
        qcfg = self._qformer_config(cfg, width)
        self.Qformer = Blip2QFormerModel(qcfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, int(cfg.num_query_token), qcfg.hidden_size))
        nn.init.normal_(self.query_tokens, std=qcfg.initializer_range)

        # --- tokenizer + LLM
        llm_parts = build_llm(cfg, self.lora, meta=meta)
        self.llama_tokenizer, self.llama_model, self.llm_source, self.llm_pretrained = llm_parts
        self.llama_proj = nn.Linear(qcfg.hidden_size, self.llama_model.config.hidden_size)

        # --- prompts
        self.prompt_template = str(cfg.prompt_template or "{}")
        if self.prompt_template.count("{}") != 1:
            raise ConfigError(
                f"model.prompt_template={cfg.prompt_template!r} must hold exactly one '{{}}' "
                f"(where the prompt goes)"
            )
        self.prompt_list = self._load_prompts(cfg, meta)

        self._freeze()
        (log.debug if meta else log.info)(  # a meta build loads nothing: no news there
            "mini_gpt4 built: %s, %d query tokens, LLM %s; trainable %.2f M parameters",
            cfg.vit_model,
            cfg.num_query_token,
            self.llm_source,
            self.num_trainable() / 1e6,
        )

    # ------------------------------------------------------------------ build

    @staticmethod
    def _qformer_config(cfg: DictConfig, width: int) -> Blip2QFormerConfig:
        overrides = dict(cfg.qformer_config or {})
        reference = Blip2QFormerConfig()
        unknown = sorted(k for k in overrides if not hasattr(reference, k))
        if unknown or "encoder_hidden_size" in overrides:
            bad = unknown + (["encoder_hidden_size"] if "encoder_hidden_size" in overrides else [])
            raise ConfigError(
                f"model.qformer_config: key(s) {bad} not allowed (encoder_hidden_size comes "
                f"from the vision encoder; others must be Blip2QFormerConfig fields)"
            )
        return Blip2QFormerConfig(**{**QFORMER_DEFAULTS, **overrides, "encoder_hidden_size": width})

    @staticmethod
    def _lora_settings(cfg: DictConfig) -> LoraSettings | None:
        if cfg.lora is None:
            return None
        settings = LoraSettings.from_mapping(cfg.lora, "model.lora")
        if not cfg.freeze_llm:
            raise ConfigError(
                "model.lora is set with freeze_llm=false: LoRA trains adapters on a frozen "
                "LLM; set model.freeze_llm=true (or model.lora=null for full fine-tuning)"
            )
        if settings.quantize_4bit:
            if cfg.low_resource:
                raise ConfigError(
                    "model.lora.quantize_4bit=true and model.low_resource=true both quantize "
                    "the LLM (4-bit vs 8-bit): choose one"
                )
            require_qlora_support("model.lora.quantize_4bit")
        return settings

    @staticmethod
    def _load_prompts(cfg: DictConfig, meta: bool) -> list[str]:
        if not cfg.prompt_path:
            return []
        path = require_path(cfg.prompt_path, "prompt_path")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        usable = [line for line in lines if IMAGE_PLACEHOLDER in line]
        if not usable:
            raise ConfigError(
                f"model.prompt_path {path} has no line with {IMAGE_PLACEHOLDER}; each prompt "
                f"must say where the image goes"
            )
        template = cfg.prompt_template or "{}"
        prompts = [template.format(line) for line in usable]
        (log.debug if meta else log.info)("loaded %d prompts from %s", len(prompts), path)
        return prompts

    def _frozen_modules(self) -> list[nn.Module]:
        frozen: list[nn.Module] = []
        if self.freeze_vit:
            frozen += [self.visual_encoder, self.ln_vision]
        if self.freeze_qformer:
            frozen.append(self.Qformer)
        if self.freeze_llm and self.lora is None:
            # With adapters the LLM stays in train mode (LoRA dropout); peft froze its base.
            frozen.append(self.llama_model)
        return frozen

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.requires_grad_(False)
            module.eval()
        if self.freeze_qformer:
            self.query_tokens.requires_grad_(False)

    def train(self, mode: bool = True) -> MiniGPT4:
        """As ``nn.Module.train``, but frozen parts stay in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    # ---------------------------------------------------------- constructors

    @classmethod
    def default_config(
        cls, model_type: str = "tiny", overrides: Mapping[str, Any] | None = None
    ) -> DictConfig:
        """The validated default config of ``model_type``, with ``overrides`` on top."""
        default = default_yaml_of(cls, "mini_gpt4", model_type).model
        return as_model_config(OmegaConf.merge(default, dict(overrides or {})))

    @classmethod
    def from_config(cls, cfg: Any, *, device: str | torch.device | None = None) -> MiniGPT4:
        """Build the model and load every weight file the config names.

        ``device`` is the device the modules are created on (``"meta"`` for a
        parameter count without memory: nothing is loaded then; ``"cuda"`` to
        initialise a large random model on the GPU). Default: the CPU.
        """
        cfg = as_model_config(cfg)
        meta = device is not None and torch.device(device).type == "meta"
        context = torch.device(device) if device is not None else contextlib.nullcontext()
        with context:
            model = cls(cfg, meta=meta)
        if not meta:
            model.load_pretrained()
        return model

    # ------------------------------------------------------------- helpers

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only: what a MiniGPT-4-format checkpoint's ``model`` holds."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llama_model.get_input_embeddings()(ids)

    def tokenize(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` without special tokens, as a 1-D tensor on the model's device."""
        ids = self.llama_tokenizer(text, add_special_tokens=False).input_ids
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def bos_ids(self) -> torch.Tensor:
        return torch.tensor([self.llama_tokenizer.bos_token_id], device=self.device)

    @staticmethod
    def _frozen_context(frozen: bool):
        """Frozen parts run under inference mode: no autograd bookkeeping at all."""
        return torch.inference_mode() if frozen else contextlib.nullcontext()

    @staticmethod
    def _leave_inference_mode(tensor: torch.Tensor) -> torch.Tensor:
        """A copy that autograd may save for backward (an inference tensor may not be)."""
        if tensor.is_inference() and not torch.is_inference_mode_enabled():
            return tensor.clone()
        return tensor

    # ------------------------------------------------------------- forward

    def encode_img(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> LLM-space embeddings [B, Q, H_llm] and their mask [B, Q]."""
        device = self.device
        if self.low_resource:
            # Keep the ViT on the CPU next to an 8-bit LLM, as the original does.
            self.visual_encoder.to("cpu")
        vit_param = next(self.visual_encoder.parameters())
        with self._frozen_context(self.freeze_vit):
            feats = self.visual_encoder(images.to(vit_param.device, vit_param.dtype))
            feats = self.ln_vision(feats).to(device)
        qformer_frozen = self.freeze_vit and self.freeze_qformer
        if not qformer_frozen:  # the Q-Former's weights need these for their gradients
            feats = self._leave_inference_mode(feats)
        query = self.query_tokens.expand(feats.shape[0], -1, -1)
        with self._frozen_context(qformer_frozen):
            out = self.Qformer(query_embeds=query, encoder_hidden_states=feats)
        hidden = self._leave_inference_mode(out.last_hidden_state)
        embeds = self.llama_proj(hidden)
        atts = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        return embeds, atts

    def prompt_wrap(
        self, img_embeds: torch.Tensor, atts: torch.Tensor, prompt: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the image embeddings at the prompt's ``<ImageHere>``; one prompt for the batch."""
        before, after = self._split_prompt(prompt)
        batch = img_embeds.shape[0]
        pieces = [
            self.embed_tokens(self.tokenize(before)).expand(batch, -1, -1),
            img_embeds.to(self.embeds_dtype()),
            self.embed_tokens(self.tokenize(after)).expand(batch, -1, -1),
        ]
        wrapped = torch.cat(pieces, dim=1)
        return wrapped, torch.ones(wrapped.shape[:2], dtype=atts.dtype, device=atts.device)

    def question_embeds(self, img_embeds: torch.Tensor, prompt: str) -> torch.Tensor:
        """[bos] + template-wrapped prompt with the image in place, as one [L, H] sequence."""
        before, after = self._split_prompt(self.prompt_template.format(prompt))
        before_ids = torch.cat([self.bos_ids(), self.tokenize(before)])
        return torch.cat(
            [
                self.embed_tokens(before_ids),
                img_embeds.to(self.embeds_dtype()),
                self.embed_tokens(self.tokenize(after)),
            ]
        )

    @staticmethod
    def _split_prompt(prompt: str) -> tuple[str, str]:
        parts = prompt.split(IMAGE_PLACEHOLDER)
        if len(parts) != 2:
            raise ValueError(
                f"a prompt must hold {IMAGE_PLACEHOLDER} exactly once, got {len(parts) - 1} "
                f"in {prompt!r}"
            )
        return parts[0], parts[1]

    def embeds_dtype(self) -> torch.dtype:
        """The dtype of the LLM's input embeddings: what image embeddings are cast to."""
        return self.llama_model.get_input_embeddings().weight.dtype

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The training loss of docs/recipe.md §3 for a batch ``{"image": [B,3,H,W], "caption": [str]}``."""
        images, captions = samples["image"], samples["caption"]
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions in the batch")
        img_embeds, atts = self.encode_img(images.to(self.device))
        if self.prompt_list:
            img_embeds, atts = self.prompt_wrap(img_embeds, atts, random.choice(self.prompt_list))
        img_embeds = img_embeds.to(self.embeds_dtype())

        text = self.llama_tokenizer(
            [caption + self.end_sym for caption in captions],
            return_tensors="pt",
            padding="longest",
            padding_side="right",
            truncation=True,
            max_length=self.max_txt_len,
            add_special_tokens=False,
        ).to(self.device)
        targets = text.input_ids.masked_fill(text.attention_mask == 0, IGNORE_INDEX)

        batch = images.shape[0]
        bos = self.embed_tokens(self.bos_ids()).expand(batch, 1, -1)
        inputs_embeds = torch.cat([bos, img_embeds, self.embed_tokens(text.input_ids)], dim=1)
        attention_mask = torch.cat([atts[:, :1], atts, text.attention_mask], dim=1)
        prefix = torch.full(
            (batch, 1 + img_embeds.shape[1]), IGNORE_INDEX, dtype=torch.long, device=self.device
        )
        labels = torch.cat([prefix, targets], dim=1)
        out = self.llama_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            labels=labels,
            return_dict=True,
        )
        return {"loss": out.loss}

    # ------------------------------------------------------ loading (mini_gpt4_loading)

    def load_pretrained(self) -> None:
        """Load ``vit_ckpt``, ``q_former_model`` and each ``ckpt`` in order; report the result."""
        loading.load_pretrained(self)

    def load_vit_state(self, obj: Any, source: str = "vision weights") -> None:
        """An ``eva_vit_g.pth``-style state dict into ``visual_encoder``: every key must fit."""
        loading.load_vit_state(self, obj, source)

    def load_blip2_state(self, obj: Any, source: str = "BLIP-2 checkpoint") -> None:
        """A LAVIS BLIP-2 checkpoint into ``Qformer``, ``query_tokens`` and ``ln_vision``."""
        loading.load_blip2_state(self, obj, source)

    def load_ckpt_state(self, obj: Any, source: str = "checkpoint") -> list[str]:
        """A MiniGPT-4/XrayGPT checkpoint; the top-level modules that received tensors."""
        return loading.load_ckpt_state(self, obj, source)

    def load_hf_folder(self, folder: Path) -> list[str]:
        """A folder written by ``xraygpt export hf``; the modules it filled."""
        return loading.load_hf_folder(self, folder)

    # -------------------------------------------------- generation (mini_gpt4_generation)

    @staticmethod
    def left_pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack [L_i, H] sequences into [B, L, H] padded on the left, with the attention mask."""
        return generation.left_pad(seqs)

    def generate_from_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B, T] from prepared LLM inputs, stopping each row at ``end_sym``.

        ``kwargs``: ``end_sym``, ``streamer``, ``extra_stopping`` and the fields of
        :class:`~xraygpt.common.generation.GenerationOptions`.
        """
        return generation.generate_from_embeds(self, inputs_embeds, attention_mask, **kwargs)

    def stream_from_embeds(
        self, inputs_embeds: torch.Tensor, *, end_sym: str | None = None, **options: Any
    ) -> Iterator[str]:
        """Yield the growing answer text (batch of one) while it is generated."""
        return generation.stream_from_embeds(self, inputs_embeds, end_sym=end_sym, **options)

    def generate(
        self, images: torch.Tensor, prompts: str | Sequence[str], **options: Any
    ) -> list[str]:
        """Answers for a batch: each prompt (one ``<ImageHere>``) wrapped in ``prompt_template``,
        cut at ``end_sym``; ``options``: the fields of ``GenerationOptions``."""
        return generation.generate(self, images, prompts, **options)
