"""Training: the runner (loop, DDP, AMP, checkpoints), optimizers, LR schedulers, the
tasks (what one training step computes) and the training curves (:mod:`.plots`).
Registration: :mod:`xraygpt.components`.
"""
