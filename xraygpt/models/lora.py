"""LoRA adapters on a language model, through peft; QLoRA (4-bit base weights) on CUDA.

One place decides how adapters are put on an LLM, for every model that trains
one (``mini_gpt4`` in the image stages, ``causal_lm`` for text-only SFT):

    settings = LoraSettings.from_mapping(cfg.lora, "model.lora")
    llm = apply_lora(llm, settings)      # a peft model: base frozen, adapters trainable

A bad option is a :class:`~xraygpt.common.config.ConfigError` naming its key
(``model.lora.<key>``) and what to do; a QLoRA asked for on a machine that cannot
run it, a :class:`QLoraUnavailableError`.

Target modules are the leaf names of the LLM's ``nn.Linear`` layers
(``q_proj``, ``v_proj``, ...; ``all-linear`` for every one but the output
head); a name the model does not have is an error that lists the ones it has.
Defaults are FastChat's ``train_lora.py`` recipe: r 8, alpha 16, dropout 0.05
on ``q_proj`` and ``v_proj``.

QLoRA loads the base weights in 4-bit NF4 through bitsandbytes, which needs a
CUDA GPU: pass :func:`quantized_load_kwargs` to ``from_pretrained``, then
:func:`apply_lora`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
from torch import nn

from xraygpt.common.config import ConfigError

# peft's name for "every linear layer except the output head".
ALL_LINEAR = "all-linear"
# Where the options live in a config; each error names its key under it.
LORA_KEY = "model.lora"


class QLoraUnavailableError(ConfigError, RuntimeError):
    """``model.lora.quantize_4bit`` on a machine without what 4-bit loading needs (a CUDA
    GPU, bitsandbytes). A ``RuntimeError`` too, as this error was."""


@dataclass
class LoraSettings:
    """The LoRA options of a model config's ``lora`` section; ``key`` (not an option)
    names the section in errors."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    quantize_4bit: bool = False  # QLoRA: 4-bit NF4 base weights (CUDA + bitsandbytes)
    key: InitVar[str] = LORA_KEY

    def __post_init__(self, key: str) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        self.target_modules = [str(name) for name in self.target_modules]
        if self.r < 1:
            raise ConfigError(f"{key}.r={self.r}: the adapter rank must be >= 1 (e.g. 8)")
        if self.alpha <= 0:
            raise ConfigError(
                f"{key}.alpha={self.alpha}: the adapters' scale (alpha / r) must be > 0; "
                f"FastChat's recipe uses alpha = 2 * r"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{key}.dropout={self.dropout}: must be in [0, 1)")
        if not self.target_modules:
            raise ConfigError(
                f"{key}.target_modules is empty: name at least one linear layer "
                f"(e.g. [q_proj, v_proj]) or {ALL_LINEAR!r}"
            )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], key: str = LORA_KEY) -> LoraSettings:
        """Settings from a config mapping; an unknown key is an error naming ``key``."""
        values = dict(section)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{key}: unknown key(s) {unknown}; known: {sorted(known)} (check the spelling)"
            )
        if "target_modules" in values and not isinstance(values["target_modules"], str):
            values["target_modules"] = list(values["target_modules"])
        return cls(**values, key=key)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct leaf names of the model's linear layers (what ``target_modules`` may name).

    bitsandbytes' 4-bit layers subclass ``nn.Linear``, so a quantized model
    lists the same names.
    """
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name and isinstance(module, nn.Linear)
        }
    )


def check_target_modules(model: nn.Module, targets: Sequence[str], key: str = LORA_KEY) -> None:
    """Every target must be a linear layer's name in ``model`` (or ``all-linear`` alone)."""
    if list(targets) == [ALL_LINEAR]:
        return
    available = linear_layer_names(model)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise ConfigError(
            f"{key}.target_modules: {unknown} are not linear layers of this model; its "
            f"linear layers are {available} (or use {ALL_LINEAR!r})"
        )


def require_qlora_support(key: str = f"{LORA_KEY}.quantize_4bit") -> None:
    """Raise a clear error unless 4-bit QLoRA can run here (a CUDA GPU and bitsandbytes)."""
    if not torch.cuda.is_available():
        raise QLoraUnavailableError(
            f"{key}=true (QLoRA) loads the LLM in 4-bit through bitsandbytes, which needs a "
            f"CUDA GPU; none is available here. Set {key}=false to train LoRA on "
            f"full-precision weights."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QLoraUnavailableError(
            f"{key}=true (QLoRA) needs bitsandbytes, which is not installed "
            f"(pip install bitsandbytes), or set {key}=false"
        )


def quantized_load_kwargs(
    settings: LoraSettings, compute_dtype: torch.dtype = torch.bfloat16
) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for the base weights: 4-bit NF4 for QLoRA, else none.

    The model lands on the current GPU (under torchrun: the rank's own, set before the
    model is built),
    since 4-bit weights cannot be moved after loading.
    """
    if not settings.quantize_4bit:
        return {}
    require_qlora_support()
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        ),
        "device_map": {"": torch.cuda.current_device()},
    }


def apply_lora(model: nn.Module, settings: LoraSettings, key: str = LORA_KEY) -> nn.Module:
    """``model`` wrapped by peft with LoRA adapters: base weights frozen, adapters trainable.

    With ``settings.quantize_4bit`` the model must have been loaded with
    :func:`quantized_load_kwargs`; it is prepared for k-bit training first.
    ``key`` names the config section in error messages.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    check_target_modules(model, settings.target_modules, key)
    if settings.quantize_4bit:
        require_qlora_support(f"{key}.quantize_4bit")
        if not getattr(model, "is_loaded_in_4bit", False):
            raise ConfigError(
                f"{key}.quantize_4bit=true but the LLM was not loaded in 4-bit: load it with "
                "from_pretrained(..., **quantized_load_kwargs(settings)) (a pretrained "
                "folder is needed; a randomly initialised LLM cannot be quantized)"
            )
        # Keeps norms/head in fp32 and makes the frozen embeddings' output need grad.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets: Any = settings.target_modules
    if targets == [ALL_LINEAR]:
        targets = ALL_LINEAR
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora_model(model: nn.Module) -> bool:
    """True for a model that :func:`apply_lora` wrapped."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged_copy(model: nn.Module) -> nn.Module:
    """The base model with the adapters merged into its weights (``model`` is consumed).

    A model without adapters comes back as it is.
    """
    if not is_lora_model(model):
        return model
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False):
        raise ConfigError(
            "cannot merge LoRA adapters into 4-bit base weights: rebuild the model with "
            f"{LORA_KEY}.quantize_4bit=false (full-precision base), load the checkpoint, "
            "then merge"
        )
    return model.merge_and_unload()
