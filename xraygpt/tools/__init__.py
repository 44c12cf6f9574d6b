"""Tools: data preparation (``prepare``, ``report_cleaning``, ``shards``), the phantom
generator (``phantom``), tokenizer training (``tokenizer``), the model summary
(``summary``), the tiny-recipe summary (``tiny_recipe``) and the set-up validator
(``validate``). Each CLI runs as ``python -m xraygpt.tools.<name>``.
"""
