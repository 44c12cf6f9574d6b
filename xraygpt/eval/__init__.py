"""Evaluation: the batched generation loop (:mod:`.evaluation`) and the metrics (:mod:`.metrics`)."""
