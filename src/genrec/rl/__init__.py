"""The RL stage: rules ``rl_none`` and ``rl_grpo`` (:func:`.run.run_rl`).

:mod:`.grpo` trains with TRL's GRPOTrainer; :mod:`.rollouts` draws each prompt's group from the
constrained decoder; :mod:`.logps` scores a group's completions behind one shared prompt;
:mod:`.rewards` is the registry of reward kinds.
"""
