"""Conversations: templates (:mod:`.templates`) and the model-side ``Chat`` (:mod:`.chat`)."""
