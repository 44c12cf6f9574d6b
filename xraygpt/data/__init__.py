"""Training and evaluation data: annotations, dataset builders (MIMIC-CXR, OpenI, the
phantom), folder and WebDataset shard datasets, the collater and the loaders; and the
offline data work: preparing raw downloads (:mod:`.prepare`, :mod:`.report_cleaning`),
shards (:mod:`.shards`), the rule-based report labeler (:mod:`.labeler`), conversations
from reports (:mod:`.report_conversations`), tokenizer training (:mod:`.tokenizer`) and
the phantom data set (:mod:`.phantom`). Registration: :mod:`xraygpt.components`.
"""
