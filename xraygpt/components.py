"""Every registered component, loaded by one explicit call.

Models, vision encoders, processors, dataset builders, tasks, runners and LR
schedulers register themselves with a decorator of
:data:`xraygpt.common.registry.registry` where their class is defined. Which
modules those are is written here, once: :func:`register_components` imports
them, and every entry point (each ``xraygpt`` command, ``train.py``, ``test.py``,
the tests' ``conftest.py``) calls it before it reads a config. No package imports
its modules for their side effect (docs/architecture.md, "Registry").

A new component's module goes into :data:`COMPONENT_MODULES`;
``tests/test_layers.py`` fails on a registering module missing from it.
"""

from __future__ import annotations

import importlib

from xraygpt.common.registry import Registry, registry

#: The modules that register components, library first (their imports run downward).
COMPONENT_MODULES = (
    "xraygpt.processors.blip_processors",
    "xraygpt.models.vision_encoders",
    "xraygpt.models.cnn_encoder",
    "xraygpt.models.encoder_classifier",
    "xraygpt.models.causal_lm",
    "xraygpt.models.mini_gpt4",
    "xraygpt.data.builders",
    "xraygpt.data.conversations",
    "xraygpt.data.phantom.dataset",
    "xraygpt.train.lr_schedulers",
    "xraygpt.train.runner",
    "xraygpt.train.tasks.conversation_sft",
    "xraygpt.train.tasks.encoder_pretrain",
    "xraygpt.train.tasks.image_conversation",
    "xraygpt.train.tasks.image_text_pretrain",
    "xraygpt.train.tasks.text_pretrain",
)


def register_components() -> Registry:
    """Register every component (once; later calls cost nothing) and return the registry."""
    for name in COMPONENT_MODULES:
        importlib.import_module(name)
    return registry
