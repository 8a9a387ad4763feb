"""The experiment's tables and figures: rules ``summary`` (:mod:`.summary`) and ``plots`` (:mod:`.plots`).

:mod:`.plots` is also where every stage draws its own figure (loss curves, RL log, SID code use).
"""
