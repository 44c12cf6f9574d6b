"""Pre-flight checks of a training set-up, run by ``validate_training_setup.py``.

A training job fails hours in, or worse trains on the wrong thing, when a
Vicuna folder lacks its tokenizer, a 13B projection meets a 7B LLM, a dataset
path has a typo or one image is corrupt. Every check here is cheap (seconds):
headers and key lists are compared, nothing full-size is built or loaded into
memory, and each failure says how to fix it.

Each check has a status (:mod:`xraygpt.validate.checklist`):

* ``pass`` (✓) — fine;
* ``fail`` (✗) — a *required* check failed: training would crash or be wrong;
* ``warn`` (!) — an *optional* check failed: worth knowing, training can run;
* ``skip`` (–) — not applicable, or blocked by an earlier failure.

The validator exits 0 only when no check has status ``fail``.

Which checks are required:

* config, datasets, weights, free disk and the training packages: always.
  A sampled image that does not decode, or has a side below the dataset's
  ``min_image_size`` pixels, fails the run too, although training would skip it
  (``on_bad_image: skip``): one corrupt file usually means more.
* CUDA, the GPU count and free GPU memory: only when ``run.device`` is
  ``cuda`` *and* the model is full-size (weights and trained state above
  :data:`~xraygpt.validate.system_checks.CPU_TRAINABLE_BYTES`). A tiny model
  on a CPU-only machine falls back to the CPU
  (:func:`xraygpt.common.dist.init_distributed`), so there a missing GPU is
  a warning.
* Frozen modules left without weights (a random frozen ViT, say): a warning,
  since benchmarks do this on purpose; none for the tiny model types, random by
  design. Tasks that never run the image side declare ``uses_images = False`` on
  their class; then only the LLM counts. The rule is the model's
  (:func:`xraygpt.models.mini_gpt4_loading.frozen_random_parts`).
* Packages needed only for evaluation, the demo or the tests: optional.

Modules: ``config_checks``, ``data_checks``, ``weight_checks``,
``system_checks`` (hardware and software), each adding lines to a
:class:`~xraygpt.validate.checklist.Checklist`. Heavy libraries are imported
inside the checks, so importing this package is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from xraygpt.validate.checklist import Check, Checklist

__all__ = ["Check", "Checklist", "validate_setup"]


def validate_setup(
    cfg_path: str | os.PathLike,
    options: list[str] | None = None,
    *,
    sample_images: int = 32,
    nproc_per_node: int | None = None,
    requirements: Path | None = None,
) -> Checklist:
    """Run every check for the job ``cfg_path`` (+ ``--options`` overrides).

    ``sample_images``: images decoded per dataset (0 none, negative all);
    ``nproc_per_node``: processes the job will start per node (default: from
    torchrun's environment, else ``run.world_size``); ``requirements``: the
    requirements file to compare with (default: the repository's).
    """
    from xraygpt.common.config import REPO_ROOT
    from xraygpt.validate.config_checks import check_config
    from xraygpt.validate.data_checks import check_datasets
    from xraygpt.validate.system_checks import check_hardware, check_software
    from xraygpt.validate.weight_checks import check_weights

    out = Checklist(str(cfg_path))
    cfg = check_config(out, str(cfg_path), options)
    if cfg is None:
        for group in ("datasets", "weights", "hardware"):
            out.skip(group, group, "blocked: the config did not load")
    else:
        check_datasets(out, cfg, sample_images)
        facts = check_weights(out, cfg)
        check_hardware(
            out,
            cfg.run_cfg,
            facts.estimate,
            cfg.output_dir,
            facts.ckpt_bytes,
            nproc_per_node=nproc_per_node,
        )
    check_software(out, requirements or REPO_ROOT / "requirements.txt")
    return out
