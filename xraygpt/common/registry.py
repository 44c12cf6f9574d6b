"""A strict name → class registry, one table per kind of component.

Configs name components (``arch: mini_gpt4``, ``task: image_text_pretrain``);
this module maps those names to classes. Registering a name twice, or asking
for a name nobody registered, is an error that lists what *is* registered.

Components register themselves with a decorator when their module is
imported; :func:`xraygpt.components.register_components`, which every entry
point calls, imports each such module (the list is written there, once). The
registry itself imports none of them: it is the ground floor
(``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from xraygpt.common.errors import XrayGPTError

T = TypeVar("T")

KINDS = (
    "builder",
    "model",
    "processor",
    "task",
    "runner",
    "lr_scheduler",
    "vision_encoder",
)


class RegistryError(XrayGPTError, KeyError):
    """An unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}

    def _table(self, kind: str) -> dict[str, Any]:
        if kind not in self._tables:
            raise RegistryError(f"unknown registry kind {kind!r}; kinds are: {', '.join(KINDS)}")
        return self._tables[kind]

    def register(self, kind: str, name: str) -> Callable[[T], T]:
        table = self._table(kind)

        def wrap(obj: T) -> T:
            if name in table:
                raise RegistryError(
                    f"{kind} name {name!r} is already registered to {table[name]!r}; "
                    f"names must be unique"
                )
            table[name] = obj
            return obj

        return wrap

    def get(self, kind: str, name: str) -> Any:
        table = self._table(kind)
        if name not in table:
            if not table:
                raise RegistryError(
                    f"unknown {kind} {name!r}: no {kind} is registered yet; call "
                    f"xraygpt.components.register_components() first (every xraygpt "
                    f"command does)"
                )
            known = ", ".join(sorted(table))
            raise RegistryError(f"unknown {kind} {name!r}; registered {kind} names: {known}")
        return table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    # One decorator and one getter per kind, as the configs use them.
    def register_builder(self, name: str) -> Callable[[T], T]:
        return self.register("builder", name)

    def register_model(self, name: str) -> Callable[[T], T]:
        return self.register("model", name)

    def register_processor(self, name: str) -> Callable[[T], T]:
        return self.register("processor", name)

    def register_task(self, name: str) -> Callable[[T], T]:
        return self.register("task", name)

    def register_runner(self, name: str) -> Callable[[T], T]:
        return self.register("runner", name)

    def register_lr_scheduler(self, name: str) -> Callable[[T], T]:
        return self.register("lr_scheduler", name)

    def register_vision_encoder(self, name: str) -> Callable[[T], T]:
        return self.register("vision_encoder", name)

    def get_builder_class(self, name: str) -> Any:
        return self.get("builder", name)

    def get_model_class(self, name: str) -> Any:
        return self.get("model", name)

    def get_processor_class(self, name: str) -> Any:
        return self.get("processor", name)

    def get_task_class(self, name: str) -> Any:
        return self.get("task", name)

    def get_runner_class(self, name: str) -> Any:
        return self.get("runner", name)

    def get_lr_scheduler_class(self, name: str) -> Any:
        return self.get("lr_scheduler", name)

    def get_vision_encoder(self, name: str) -> Any:
        return self.get("vision_encoder", name)


registry = Registry()
