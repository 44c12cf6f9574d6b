"""Models: ``mini_gpt4`` (:mod:`.mini_gpt4`), its vision encoders (:mod:`.vision_encoders`),
the LLM side (:mod:`.llm`), checkpoint key converters (:mod:`.convert`) and the meta-device
parameter summary (:mod:`.summary`). Import the submodule you need; nothing heavy loads here.
"""
