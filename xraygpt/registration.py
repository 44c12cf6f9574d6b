"""The one place where registering modules are imported.

The registry calls :func:`import_all` the first time a name is looked up, so
importing a model or a processor on its own never drags in the runner,
torch.distributed set-up or gradio. Add a line here for each new module that
registers a component.
"""


def import_all() -> None:
    # ruff: noqa: F401 - imported for their registration side effect
    import xraygpt.data.conversations
    import xraygpt.datasets.builders
    import xraygpt.datasets.phantom
    import xraygpt.models.causal_lm
    import xraygpt.models.cnn_encoder
    import xraygpt.models.encoder_classifier
    import xraygpt.models.mini_gpt4
    import xraygpt.models.vision_encoders
    import xraygpt.processors.blip_processors
    import xraygpt.runners.lr_schedulers
    import xraygpt.runners.runner_base
    import xraygpt.tasks.encoder_pretrain
    import xraygpt.tasks.image_text_pretrain
    import xraygpt.tasks.text_pretrain
    import xraygpt.train.tasks.conversation_sft
