"""Models: ``mini_gpt4`` (:mod:`.mini_gpt4`), its vision encoders (:mod:`.vision_encoders`,
:mod:`.cnn_encoder`), the encoder-pretraining classifier (:mod:`.encoder_classifier`), the LLM
side (:mod:`.llm`), checkpoint key converters (:mod:`.convert`), what a checkpoint fits
(:mod:`.checkpoint_fit`) and the one door in (:mod:`.factory`).

Importing the package registers its models and vision encoders (``docs/architecture.md``).
"""

# ruff: noqa: F401 - imported for their registration side effect
import xraygpt.models.causal_lm
import xraygpt.models.cnn_encoder
import xraygpt.models.encoder_classifier
import xraygpt.models.mini_gpt4
import xraygpt.models.vision_encoders
