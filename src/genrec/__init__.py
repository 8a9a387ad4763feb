"""genrec: generative recommendation with LLMs, from item text to semantic IDs, SFT, RL and evaluation."""

__version__ = "0.1.0"
