"""The saliency stage and everything one image's explanation takes.

- :mod:`.stage`: the runner: select images by query, hand them out, summarise;
- :mod:`.algorithm`: the xaitk-saliency algorithm built from ``saliency:`` (seeded masks drawn once);
- :mod:`.image`: one image's maps, metrics, pictures and run, in the stage's process or a worker;
- :mod:`.quality`: the quality metrics of one image's map (hooks into :mod:`xaitk_exp.metrics`).
"""
