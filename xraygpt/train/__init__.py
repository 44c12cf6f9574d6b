"""Training: the runner (loop, DDP, AMP, checkpoints), optimizers, LR schedulers and the
tasks (what one training step computes).

Importing the package registers the tasks, the runner and the LR schedulers, and through
them the library below (models, processors, data builders).
"""

# ruff: noqa: F401 - imported for their registration side effect
import xraygpt.data
import xraygpt.models
import xraygpt.processors.blip_processors
import xraygpt.train.lr_schedulers
import xraygpt.train.runner
import xraygpt.train.tasks
