"""Exporters: the trained model in the ecosystem's formats (``xraygpt export hf|llm``).

:mod:`.hf`: the whole model as transformers' ``Blip2ForConditionalGeneration``;
:mod:`.language_model`: the language model alone as a ``LlamaForCausalLM`` folder, LoRA merged.
"""

#: The largest safetensors shard an export writes unless told otherwise.
DEFAULT_SHARD_SIZE = "2GB"
