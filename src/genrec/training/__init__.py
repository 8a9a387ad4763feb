"""The training core shared by SFT, GRPO and every later training stage.

* :mod:`.rows`: which rows a stage trains on (seeded subsamples of a split).
* :mod:`.modes`: full, frozen, LoRA and QLoRA fine-tuning (trainable parameters, LoRA targets).
* :mod:`.batches`: left-padded batches and the response-only loss.
* :mod:`.trainer`: seeding, the Trainer arguments, and the train / save / log path of a stage.
* :mod:`.checkpoints`: saving and loading our checkpoints, and resuming interrupted runs.
* :mod:`.launch`: running a stage on several GPUs under ``accelerate launch``.
"""
