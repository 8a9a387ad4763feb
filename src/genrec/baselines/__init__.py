"""Non-LLM baselines: rules ``baseline_popularity`` (:mod:`.popularity`), ``baseline_seqrec_train`` and
``baseline_seqrec`` (:mod:`.seqrec`).

They write the same result files as the LLM cells through :mod:`genrec.results`.
"""
