"""The phantom data set of the embedded default, in one package: the generator of the
synthetic drawings and their reports (:mod:`.generator`), what each image shows and the
conversations about it with the yes/no rule (:mod:`.conversations`), and the
``phantom_conversations`` dataset (:mod:`.dataset`; the ``phantom`` image builder is
OpenI's layout, :class:`xraygpt.data.builders.PhantomBuilder`).
"""
