"""Scoring generated reports: NLG metrics, the CheXpert-style labeler, clinical efficacy.

Modules (import what you need; nothing heavy is imported here):

* :mod:`~xraygpt.data.labeler` — ``label_report(text)`` over the 14 CheXpert observations
* :mod:`~xraygpt.eval.metrics.clinical` — precision / recall / F1 of label sets
* :mod:`~xraygpt.eval.metrics.nlg` — ROUGE (rouge-score), BLEU, METEOR, ROUGE-L, CIDEr (pycocoevalcap)
* :mod:`~xraygpt.eval.metrics.baselines` — most-frequent and nearest-neighbour reports
* :mod:`~xraygpt.eval.metrics.scoring` — predictions files, ``metrics.json``, the printed table
* :mod:`~xraygpt.eval.openi_agreement` — the labeler against OpenI's MeSH tags
"""
