"""Hardware and software checks: GPUs and their memory against an estimate, disk, packages."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.validate.checklist import Checklist, human_bytes, human_count

GiB = 1024**3
# Models whose weights fit in this many bytes train (slowly) on a CPU: the tiny recipe.
CPU_TRAINABLE_BYTES = 1 * GiB
# Room for logs, evaluation outputs and one checkpoint being written next to the kept ones.
DISK_MARGIN_BYTES = 1 * GiB
# CUDA context, allocator fragmentation and cuBLAS workspaces, on top of tensors.
CUDA_OVERHEAD_BYTES = 1 * GiB

# Packages a training run imports; the rest of requirements.txt serves evaluation, the
# demo and the tests, so a mismatch there only warns.
TRAINING_PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "sentencepiece",
    "timm",
    "omegaconf",
    "pyyaml",
    "pillow",
    "numpy",
    "tqdm",
)


@dataclass
class MemoryEstimate:
    """Training memory per GPU (docs/recipe.md §8): frozen weights + trained state + activations.

    ``parts`` lists ``(module, parameters, bytes per parameter, trained)``. Frozen
    modules cost their weights only: the ViT and Q-Former run under ``no_grad``, so
    only the LLM keeps activations for the backward pass to ``llama_proj``.
    """

    parts: list[tuple[str, int, int, bool]]
    llm_layers: int
    llm_hidden: int
    llm_vocab: int
    seq_len: int
    batch_size: int

    # fp32 weight + fp32 gradient + AdamW's two fp32 moments
    TRAINED_BYTES_PER_PARAM = 16
    # Activations kept for the backward pass through one LLaMA layer in half precision
    # without recomputation: ~34 bytes per token and hidden unit (Korthikanti et al.
    # 2022; attention by SDPA, so no seq² term).
    ACT_BYTES = 34
    # fp32 logits and their gradient, per token and vocabulary entry
    LOGIT_BYTES = 8

    @property
    def weight_bytes(self) -> int:
        return sum(n * size for _, n, size, trained in self.parts if not trained)

    @property
    def trained_params(self) -> int:
        return sum(n for _, n, _, trained in self.parts if trained)

    @property
    def trained_bytes(self) -> int:
        return self.trained_params * self.TRAINED_BYTES_PER_PARAM

    @property
    def activation_bytes_per_sample(self) -> int:
        layers = self.llm_layers * self.seq_len * self.llm_hidden * self.ACT_BYTES
        return layers + self.seq_len * self.llm_vocab * self.LOGIT_BYTES

    @property
    def total_bytes(self) -> int:
        return (
            self.weight_bytes
            + self.trained_bytes
            + self.batch_size * self.activation_bytes_per_sample
            + CUDA_OVERHEAD_BYTES
        )

    def formula(self) -> str:
        frozen = " + ".join(
            f"{name} {human_count(n)} x {size} B"
            for name, n, size, trained in self.parts
            if not trained
        )
        if self.llm_layers:
            activations = (
                f"batch {self.batch_size} x (LLM layers {self.llm_layers} x seq {self.seq_len}"
                f" x hidden {self.llm_hidden} x 34 B + seq x vocab {self.llm_vocab} x 8 B)"
                f" = {human_bytes(self.batch_size * self.activation_bytes_per_sample)} activations"
            )
        else:
            activations = "activations not estimated (no LLM)"
        return (
            f"frozen weights ({frozen or 'none'}) = {human_bytes(self.weight_bytes)}"
            f"; + trained {human_count(self.trained_params)} x 16 B (fp32 weight, grad, 2 AdamW"
            f" moments) = {human_bytes(self.trained_bytes)}; + {activations}"
            f"; + {human_bytes(CUDA_OVERHEAD_BYTES)} CUDA context"
            f" = {human_bytes(self.total_bytes)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": [
                {"module": name, "params": n, "bytes_per_param": size, "trained": trained}
                for name, n, size, trained in self.parts
            ],
            "llm_layers": self.llm_layers,
            "llm_hidden": self.llm_hidden,
            "llm_vocab": self.llm_vocab,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "weight_bytes": self.weight_bytes,
            "trained_bytes": self.trained_bytes,
            "activation_bytes_per_sample": self.activation_bytes_per_sample,
            "total_bytes": self.total_bytes,
            "formula": self.formula(),
        }


def estimate_memory(model: Any, cfg: Any) -> MemoryEstimate:
    """The estimate for a (meta-device) ``mini_gpt4`` and the job's batch and text sizes."""
    parts = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if params:
            # A module with adapters (LoRA) is mostly frozen: count its two kinds apart.
            for trained in (False, True):
                group = [p for p in params if p.requires_grad == trained]
                if group:
                    label = f"{name} adapters" if trained and len(group) < len(params) else name
                    n = sum(p.numel() for p in group)
                    parts.append((label, n, group[0].element_size(), trained))
    query = getattr(model, "query_tokens", None)
    if query is not None:
        parts.append(("query_tokens", query.numel(), query.element_size(), query.requires_grad))
    batch = int(cfg.run_cfg.batch_size_train)
    llm = getattr(model, "llama_model", None)
    if llm is None:  # e.g. encoder pretraining: no LLM activations to keep
        return MemoryEstimate(parts, 0, 0, 0, 0, batch)
    prompt_tokens = 0
    for prompt in getattr(model, "prompt_list", []) or []:
        text = prompt.replace(IMAGE_PLACEHOLDER, " ")
        prompt_tokens = max(
            prompt_tokens, len(model.llama_tokenizer(text, add_special_tokens=False).input_ids)
        )
    queries = query.shape[1] if query is not None else 0
    text_len = getattr(model, "max_txt_len", None)
    if text_len is None:  # the LLM alone (causal_lm): conversations cut at max_length
        text_len = max(
            (int(d.get("max_length") or 0) for d in cfg.datasets_cfg.values()), default=0
        )
    seq = 1 + queries + prompt_tokens + int(text_len)
    return MemoryEstimate(
        parts=parts,
        llm_layers=int(llm.config.num_hidden_layers),
        llm_hidden=int(llm.config.hidden_size),
        llm_vocab=int(llm.config.vocab_size),
        seq_len=seq,
        batch_size=batch,
    )


def _world_size(run_cfg: Any, nproc_per_node: int | None) -> tuple[int, str]:
    """Processes per node wanted, and where that number came from."""
    if nproc_per_node is not None:
        return nproc_per_node, "--nproc-per-node"
    for var in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]), f"${var}"
    return int(getattr(run_cfg, "world_size", 1) or 1), "run.world_size"


def check_hardware(
    out: Checklist,
    run_cfg: Any,
    estimate: MemoryEstimate | None,
    output_dir: Path,
    ckpt_bytes: int,
    *,
    nproc_per_node: int | None = None,
) -> None:
    """CUDA, GPU count and free GPU memory against the job; free disk for checkpoints."""
    import torch

    group = "hardware"
    device = str(getattr(run_cfg, "device", "cuda"))
    wants_cuda = device.startswith("cuda")
    full_size = estimate is None or (
        estimate.weight_bytes + estimate.trained_bytes > CPU_TRAINABLE_BYTES
    )
    required = wants_cuda and full_size
    if estimate is not None:
        out.facts["memory_estimate"] = estimate.to_dict()
    need = f"~{human_bytes(estimate.total_bytes)} per GPU" if estimate else "unknown"
    formula = [f"estimate: {estimate.formula()}"] if estimate else []

    available = wants_cuda and torch.cuda.is_available()
    if not wants_cuda:
        out.skip(group, "cuda", f"run.device={device}: no GPU needed")
    else:
        why = (
            "the model is full-size"
            if full_size
            else "the model is tiny and falls back to the CPU, so this is only a warning"
        )
        out.add(
            group,
            "cuda",
            available,
            f"CUDA {'available' if available else 'not available'} (torch {torch.__version__},"
            f" built for CUDA {torch.version.cuda}); {why}",
            "install a CUDA build of torch on a machine with an NVIDIA driver (`nvidia-smi` "
            "must list the GPUs), or set run.device=cpu for the tiny recipe",
            required=required,
        )
    if not available:
        reason = "no CUDA" if wants_cuda else f"run.device={device}"
        out.skip(group, "gpu count", reason, required=required)
        out.skip(
            group, "gpu memory", f"{reason}; on a GPU the job would need {need}", details=formula
        )
    else:
        world, source = _world_size(run_cfg, nproc_per_node)
        count = torch.cuda.device_count()
        out.add(
            group,
            "gpu count",
            count >= world,
            f"{count} GPU(s) visible, {world} process(es) per node wanted ({source})",
            f"launch with `torchrun --nproc-per-node {count}` (or fewer), or make more GPUs "
            "visible (CUDA_VISIBLE_DEVICES)",
            required=required,
        )
        if estimate is None:
            out.skip(group, "gpu memory", "no estimate: the model did not build")
        else:
            short, free_all = [], []
            for index in range(min(count, max(world, 1))):
                free, total = torch.cuda.mem_get_info(index)
                free_all.append(f"cuda:{index} {human_bytes(free)} free of {human_bytes(total)}")
                if free < estimate.total_bytes:
                    short.append(f"cuda:{index}")
            out.add(
                group,
                "gpu memory",
                not short,
                f"needs {need}; " + "; ".join(free_all),
                f"free {', '.join(short)} (other processes hold memory: see `nvidia-smi`), lower "
                "run.batch_size_train and raise run.accum_grad_iters to keep the effective "
                "batch, or use GPUs with more memory",
                required=required,
                details=formula,
            )

    # Disk: the nearest existing folder on the way to the output folder holds the files.
    probe = Path(output_dir).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    keep = int(getattr(run_cfg, "keep_last_checkpoints", 2) or 0)
    if keep <= 0:  # 0 keeps every checkpoint: one per epoch at least
        keep = max(int(getattr(run_cfg, "max_epoch", 1) or 1), 1)
    want = (keep + 1) * ckpt_bytes + DISK_MARGIN_BYTES
    out.add(
        group,
        "disk",
        free >= want,
        f"{human_bytes(free)} free at {probe} for {output_dir}; needs ~{human_bytes(want)}"
        f" ({keep}+1 checkpoints of ~{human_bytes(ckpt_bytes)} + {human_bytes(DISK_MARGIN_BYTES)}"
        " for logs and results)",
        "free disk space there, point run.output_dir at a larger disk, or lower "
        "run.keep_last_checkpoints",
    )


# --------------------------------------------------------------------------- software


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):  # skip pip options such as -r / --extra-index-url
            lines.append(line)
    return lines


def _requires_python(pyproject: Path, default: str = ">=3.11") -> str:
    """``project.requires-python`` of pyproject.toml (the default when unreadable)."""
    try:
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["requires-python"]
    except (ImportError, OSError, KeyError, ValueError):  # tomllib is new in Python 3.11
        return default


def check_software(out: Checklist, requirements: Path) -> None:
    """Python (against pyproject.toml) and every package of ``requirements.txt``."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    requires_python = _requires_python(requirements.parent / "pyproject.toml")
    py = platform.python_version()
    out.add(
        "software",
        "python",
        SpecifierSet(requires_python).contains(py),
        f"Python {py} (project needs {requires_python})",
        f"create the environment with Python {requires_python}, e.g. "
        f"`conda env create -f env.yml` or `python3.11 -m venv .venv`",
    )
    if not requirements.is_file():
        out.failed(
            "software",
            "requirements",
            f"{requirements} not found",
            "run the validator from the repository root, where requirements.txt lives",
        )
        return

    training = {canonicalize_name(n) for n in TRAINING_PACKAGES}
    bad: dict[bool, list[str]] = {True: [], False: []}
    good: dict[bool, list[str]] = {True: [], False: []}
    for line in _requirement_lines(requirements):
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            out.failed(
                "software",
                "requirements",
                f"{requirements}: cannot parse {line!r}: {err}",
                "fix that line of requirements.txt",
            )
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        needed = canonicalize_name(req.name) in training
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad[needed].append(f"{req.name}: not installed (wants {req.specifier or 'any'})")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            bad[needed].append(
                f"{req.name}: {version} installed, requirements.txt wants {req.specifier}"
            )
        else:
            good[needed].append(f"{req.name} {version}")

    fix = (
        f"`.venv/bin/pip install -r {requirements.name}` "
        "(or ./setup_xraygpt_training.sh, which does it)"
    )
    for needed, name in ((True, "training packages"), (False, "other packages")):
        what = "for training" if needed else "for evaluation, the demo and tests"
        if bad[needed]:
            out.add(
                "software",
                name,
                False,
                f"{len(bad[needed])} of {len(bad[needed]) + len(good[needed])} packages {what} "
                "do not match requirements.txt",
                fix,
                required=needed,
                details=bad[needed],
            )
        elif good[needed]:
            shown = ", ".join(good[needed][:6]) + (", ..." if len(good[needed]) > 6 else "")
            out.passed("software", name, f"{len(good[needed])} match requirements.txt ({shown})")
