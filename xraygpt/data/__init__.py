"""Training and evaluation data: annotations, dataset builders (MIMIC-CXR, OpenI, the
phantom), folder and WebDataset shard datasets, the collater and the loaders.

Offline data tools (preparing raw downloads, report cleaning, shards, the phantom
generator) live in :mod:`xraygpt.tools`. Importing the package registers the builders.
"""

# ruff: noqa: F401 - imported for its registration side effect
import xraygpt.data.builders
import xraygpt.data.conversations
import xraygpt.data.phantom_conversations
