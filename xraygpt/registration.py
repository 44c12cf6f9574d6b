"""The one place where registering modules are imported.

The registry calls :func:`import_all` the first time a name is looked up, so
importing a model or a processor on its own never drags in the runner,
torch.distributed set-up or gradio. Add a line here for each new module that
registers a component.
"""


def import_all() -> None:
    # ruff: noqa: F401 - imported for their registration side effect
    pass
