"""Models: ``mini_gpt4`` (:mod:`.mini_gpt4`), its vision encoders (:mod:`.vision_encoders`,
:mod:`.cnn_encoder`), the encoder-pretraining classifier (:mod:`.encoder_classifier`), the LLM
side (:mod:`.llm`), checkpoint key converters (:mod:`.convert`), what a checkpoint fits
(:mod:`.checkpoint_fit`), parameter counts (:mod:`.summary`) and the one door in
(:mod:`.factory`). Registration: :mod:`xraygpt.components`.
"""
