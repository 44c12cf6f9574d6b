"""Tasks: what one training step computes (``BaseTask`` and its stages)."""

# ruff: noqa: F401 - imported for their registration side effect
import xraygpt.train.tasks.conversation_sft
import xraygpt.train.tasks.encoder_pretrain
import xraygpt.train.tasks.image_conversation
import xraygpt.train.tasks.image_text_pretrain
import xraygpt.train.tasks.text_pretrain
