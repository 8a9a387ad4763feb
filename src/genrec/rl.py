"""The RL stage: ``none`` passes the SFT checkpoint on unchanged; ``grpo`` refines it with GRPO.

GRPO runs on TRL's ``GRPOTrainer``. What differs from its defaults, and why:

* **Rollouts** come from our constrained decoder (:mod:`genrec.decoding`) through the trainer's
  ``rollout_func``: one decode per prompt gives its group of ``group_size`` *distinct* SIDs of the
  index, by beam search (MiniOneRec's choice) or by stochastic beam search, a sample without
  replacement at a temperature. Every rollout is a valid SID, whatever the generation config.
* **Targets travel with the sample.** The training rows are dataset rows with their own ``target``
  and ``history`` columns, which TRL hands to the reward functions row by row; nothing is looked up
  by prompt text (MiniOneRec's ``prompt2history`` lookup gives two users with the same history one
  target).
* **Rewards** are :mod:`genrec.rewards`, one TRL reward function per kind (so TRL logs each kind's
  mean and std) combined with the configured weights, then normalised per group.
* **Log-probabilities** (:class:`SIDGRPOTrainer`, the one subclass): the rows of a group share their
  prompt, so :func:`shared_prompt_logps` runs each distinct prompt once with its completions packed
  behind it under a block attention mask, instead of one prompt + completion sequence per row. For
  G = 16 three-token SIDs after a 60-token prompt that is 108 tokens instead of 1,008
  (``bench/rl_throughput.py`` measures it); the values are those of the unpacked sequences (tested).

The frozen reference for the KL term is the SFT model (``beta`` 0 loads none). The stage writes
``final_checkpoint/`` (a full model; LoRA adapters are merged), ``rl_log.json`` with per-step
rewards per kind, KL, clip ratio, learning rate and rollout vs update time, ``rl_log.png``, and
``policy.json`` naming the checkpoint that evaluation loads.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from genrec.decoding import NEG_INF, SIDTrie, attention_mask_4d, constrained_beam_search, custom_mask_attention
from genrec.io import atomic_path, read_json, write_json
from genrec.logs import log_settings
from genrec.models import RUN_INFO, is_checkpoint, load_checkpoint, peak_memory_gb, pick_device, reset_peak_memory
from genrec.prompts import prompt_ids, sid_ids
from genrec.rewards import REWARDS, Group, RewardContext
from genrec.settings import RLSettings
from genrec.sids import load_index, sid_strings

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- rollouts
def rollout_groups(
    model, prompts: Sequence[Sequence[int]], trie: SIDTrie, settings: RLSettings, pad_id: int, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's group: ``group_size`` distinct SIDs of the index, best first.

    ``beam``: the group_size best SIDs by constrained beam search. ``sample``: a sample without
    replacement at ``temperature`` (stochastic beam search), then sorted by the policy's
    log-probability, so that the ranking reward's positions mean the same thing in both modes.

    Returns:
        ``items`` ``(B, G)`` and ``scores`` ``(B, G)``, the untempered SID log-probabilities.
    """
    temperature = settings.temperature if settings.rollout == "sample" else None
    items, scores = constrained_beam_search(model, prompts, trie, settings.group_size, pad_id, temperature, generator)
    if temperature is not None:
        scores, order = scores.sort(dim=1, descending=True)
        items = items.gather(1, order)
    return items, scores


class Rollouts:
    """TRL's ``rollout_func``: the constrained decoder for each group of identical prompts in a batch.

    TRL repeats every dataset row ``group_size`` times in a row; the prompt of each run of copies is
    decoded once and its group spread over the copies. ``seconds`` accumulates decoding time (read
    and reset by :class:`_StepTimer`).
    """

    def __init__(
        self,
        prompt_of: Mapping[str, list[int]],
        completion: Mapping[int, list[int]],
        trie: SIDTrie,
        settings: RLSettings,
        pad_id: int,
        seed: int,
    ):
        self.prompt_of = prompt_of  # prompt text (the dataset's prompt column) -> token ids
        self.completion = completion  # item -> SID token ids
        self.trie = trie
        self.settings = settings
        self.pad_id = pad_id
        self.generator = torch.Generator().manual_seed(seed)
        self.seconds = 0.0

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        g = self.settings.group_size
        if len(prompts) % g or any(prompts[i] != prompts[i - i % g] for i in range(len(prompts))):
            raise RuntimeError(f"a rollout batch of {len(prompts)} prompts is not whole groups of {g} copies")
        ids = [self.prompt_of[p] for p in prompts[::g]]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        if self.trie.children.device != model.device:
            self.trie = self.trie.to(model.device)
        with torch.no_grad():
            items, scores = rollout_groups(model, ids, self.trie, self.settings, self.pad_id, self.generator)
        self.seconds += time.perf_counter() - start
        model.train(was_training)
        if (items < 0).any():
            raise RuntimeError(f"the index has fewer than group_size={g} SIDs; lower group_size")
        flat = items.view(-1).tolist()
        return {
            "prompt_ids": [ids[i // g] for i in range(len(flat))],
            "completion_ids": [self.completion[i] for i in flat],
            "logprobs": None,  # TRL needs these only to correct vLLM sampling; rollouts here are the policy's own
            "item": flat,
            "rollout_logp": scores.view(-1).tolist(),
        }


# ----------------------------------------------------------------------------- rewards
def reward_functions(settings: RLSettings, ctx: RewardContext) -> tuple[list, list[float]]:
    """One TRL reward function per configured kind (named after it, for TRL's per-kind logs), and the weights.

    Each function cuts the batch into groups of ``group_size`` rows, builds a :class:`~genrec.rewards.Group`
    from the rollouts' items and the row's own ``target`` and ``history`` columns, and returns the kind's
    reward per row.
    """
    g = settings.group_size
    funcs, weights = [], []
    for kind in settings.reward_kinds:

        def reward(prompts, completions, item, target, history, _kind=kind, **_) -> list[float]:
            out: list[float] = []
            for s in range(0, len(item), g):
                if len(set(target[s : s + g])) != 1:
                    raise RuntimeError("rows of one rollout group carry different targets")
                out += REWARDS[_kind](Group(item[s : s + g], target[s], history[s]), ctx)
            return out

        reward.__name__ = kind
        funcs.append(reward)
        weights.append(float(settings.rewards[kind]))
    return funcs, weights


# ----------------------------------------------------------------------------- training rows
def sft_seen_rows(sft_checkpoint: str | os.PathLike[str], n_rows: int) -> set[int]:
    """Indices of the training rows the SFT stage trained on, from the checkpoint's ``run_info.json``.

    Our SFT stage draws ``split_rows(train, max_train_samples, seed)``; a checkpoint without that
    record (not made by our SFT stage) counts as having seen every row.
    """
    from genrec.sft import subsample

    info_path = Path(sft_checkpoint) / RUN_INFO
    info = read_json(info_path) if info_path.is_file() else {}
    sft = info.get("settings", {}) if info.get("stage") == "sft" else {}
    if "max_train_samples" not in sft or "seed" not in sft:
        return set(range(n_rows))
    return set(subsample(range(n_rows), sft["max_train_samples"], sft["seed"]))


def rl_rows(
    train_csv: str, n_items: int, settings: RLSettings, sft_checkpoint: str | os.PathLike[str]
) -> list[tuple[list[int], int]]:
    """GRPO's ``(history, target)`` prompts: a seeded subsample of the training split, unseen rows first.

    When ``max_train_samples`` asks for fewer rows than the split holds, they come from the rows the
    SFT stage did not train on (:func:`sft_seen_rows`), topped up from the seen ones only if too few;
    drawing them from the rows SFT has already fitted teaches the policy little.
    """
    from genrec.sft import split_rows, subsample

    rows = split_rows(train_csv, n_items)
    k = settings.max_train_samples
    if not k or k >= len(rows):
        return rows
    seen = sft_seen_rows(sft_checkpoint, len(rows))
    unseen = [i for i in range(len(rows)) if i not in seen]
    pick = subsample(unseen, k, settings.seed)
    if len(pick) < k:
        pick = sorted(pick + subsample(sorted(seen), k - len(pick), settings.seed))
    fresh = min(k, len(unseen))
    log.info("%d training rows: %d the SFT stage did not train on, %d it did", k, fresh, k - fresh)
    return [rows[i] for i in pick]


# ----------------------------------------------------------------------------- shared-prompt log-probs
def trl_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device=None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """GRPOTrainer's layout of rollouts: left-padded prompts, then right-padded completions.

    Returns:
        ``input_ids`` and ``attention_mask`` ``(B, P + K)``, and ``K``.
    """
    p, k = max(map(len, prompts)), max(map(len, completions))
    ids = torch.full((len(prompts), p + k), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for r, (a, c) in enumerate(zip(prompts, completions)):
        ids[r, p - len(a) : p] = torch.tensor(a)
        mask[r, p - len(a) : p] = 1
        ids[r, p : p + len(c)] = torch.tensor(c)
        mask[r, p : p + len(c)] = 1
    return ids, mask, k


def allowed_tokens(trie: SIDTrie, completions: torch.Tensor) -> torch.Tensor:
    """The SID tokens allowed at each position of each completion: ``(B, K, C)`` token ids, -1 where none.

    Position ``j`` of a completion may hold any child of the trie node its first ``j`` tokens lead to.
    Positions past a completion's end (padding) get whatever node the walk reaches; callers mask them.
    """
    b, k = completions.shape
    node = torch.zeros(b, dtype=torch.long, device=completions.device)
    out = []
    for j in range(k):
        kids = trie.children[node]  # (B, C)
        out.append(kids.masked_fill(kids < 0, -1))  # STAY (a finished shorter SID) is no token
        pick = (kids == completions[:, j : j + 1]).float().argmax(-1, keepdim=True)
        node = trie.child_node[node].gather(1, pick).squeeze(1)
    return torch.stack(out, 1)


def shared_prompt_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    compute_entropy: bool = False,
    trie: SIDTrie | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the completions, running each distinct prompt once.

    Args:
        model: the causal LM (sdpa or eager attention).
        input_ids: ``(B, P + K)``: left-padded prompts, then right-padded completions of width K.
        attention_mask: ``(B, P + K)``, 0 on padding.
        logits_to_keep: ``K``.
        compute_entropy: also return each completion position's entropy.
        trie: score under the policy restricted to the index: at each position, the softmax over the
            SID tokens the trie allows there (the distribution the rollouts were drawn from). ``None``:
            the softmax over the whole vocabulary.

    Rows with the same prompt are packed into one sequence: the prompt, then each row's completion
    in its own slot. A completion token attends to the prompt and to the earlier tokens of its own
    slot, at the positions it has in prompt + completion; the prompt's last position predicts the
    first token of every slot. The result equals running each row on its own (tested), for one
    prompt per group instead of one per row.

    Returns:
        ``logps`` ``(B, K)`` and ``entropies`` ``(B, K)`` or ``None``.
    """
    attn = custom_mask_attention(model, "shared-prompt scoring")
    device = input_ids.device
    k = logits_to_keep
    p = input_ids.shape[1] - k
    prompt, pmask = input_ids[:, :p], attention_mask[:, :p]
    comp, cmask = input_ids[:, p:], attention_mask[:, p:]
    keys, inv = torch.unique(prompt.masked_fill(pmask == 0, -1), dim=0, return_inverse=True)
    u = keys.shape[0]
    counts = torch.bincount(inv, minlength=u)
    m = int(counts.max())
    order = torch.argsort(inv, stable=True)
    first = torch.cumsum(counts, 0) - counts  # first sorted row of each prompt
    slot = torch.empty_like(inv)
    slot[order] = torch.arange(len(inv), device=device) - first[inv[order]]
    rep = torch.zeros(u, dtype=torch.long, device=device)
    rep[inv] = torch.arange(len(inv), device=device)  # a row of each prompt
    width = p + m * k
    ids = torch.full((u, width), 0, dtype=input_ids.dtype, device=device)
    ids[:, :p] = prompt[rep]
    cols = p + slot.unsqueeze(1) * k + torch.arange(k, device=device)  # (B, K) packed columns of each row
    ids[inv.unsqueeze(1), cols] = comp
    pm = pmask[rep].bool()  # (U, P)
    n = pm.sum(1)  # prompt lengths
    pos = torch.zeros((u, width), dtype=torch.long, device=device)
    pos[:, :p] = (pm.cumsum(1) - 1).clamp(min=0)
    pos[:, p:] = (n.unsqueeze(1) + torch.arange(k, device=device).repeat(m)).clamp(min=0)
    allowed = torch.zeros((u, width, width), dtype=torch.bool, device=device)
    causal = torch.ones((p, p), dtype=torch.bool, device=device).tril()
    allowed[:, :p, :p] = causal & pm.unsqueeze(1)
    allowed[:, p:, :p] = pm.unsqueeze(1)
    block = torch.block_diag(*[torch.ones((k, k), dtype=torch.bool, device=device).tril()] * m)
    allowed[:, p:, p:] = block
    allowed |= torch.eye(width, dtype=torch.bool, device=device)  # padding attends to itself (no empty rows)
    mask4 = attention_mask_4d(allowed, attn, next(model.parameters()).dtype)
    out = model(input_ids=ids, attention_mask=mask4, position_ids=pos, logits_to_keep=m * k + 1, use_cache=False)
    logits = out.logits  # (U, 1 + m*K, V): the prompt's last position, then every slot's tokens
    at = torch.zeros((len(inv), k), dtype=torch.long, device=device)  # (B, K) kept position predicting token j
    at[:, 1:] = 1 + slot.unsqueeze(1) * k + torch.arange(k - 1, device=device)
    row_logits = logits[inv.unsqueeze(1), at].float()  # (B, K, V)
    if trie is None:
        row_logp = torch.log_softmax(row_logits, dim=-1)  # (B, K, V)
        logps = row_logp.gather(-1, comp.unsqueeze(-1)).squeeze(-1) * cmask
        entropies = -(row_logp.exp() * row_logp).sum(-1) * cmask if compute_entropy else None
        return logps, entropies
    allowed = allowed_tokens(trie, comp.masked_fill(cmask == 0, -1))  # (B, K, C)
    sub = row_logits.gather(-1, allowed.clamp(min=0)).masked_fill(allowed < 0, NEG_INF)  # (B, K, C)
    sub = sub.masked_fill((cmask == 0).unsqueeze(-1), 0.0)  # padding: any finite row
    sub_logp = torch.log_softmax(sub, dim=-1)
    chosen = (allowed == comp.unsqueeze(-1)).float().argmax(-1, keepdim=True)  # (B, K, 1)
    logps = sub_logp.gather(-1, chosen).squeeze(-1) * cmask
    entropies = None
    if compute_entropy:
        p = sub_logp.exp()
        entropies = -(p * sub_logp.masked_fill(p == 0, 0.0)).sum(-1) * cmask
    return logps, entropies


def _trainer_class():
    from trl import GRPOTrainer

    class SIDGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose log-probabilities run each group's shared prompt once (:func:`shared_prompt_logps`).

        ``sid_trie``: when set, the policy (and the reference) are scored restricted to the index.
        """

        sid_trie: SIDTrie | None = None

        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
            compute_aux_loss=False, **multimodal,
        ):  # fmt: skip
            if any(v is not None for v in multimodal.values()) or compute_aux_loss:
                raise ValueError("SID GRPO takes text prompts only (no images, no MoE auxiliary loss)")
            trie = self.sid_trie
            if trie is not None and trie.children.device != input_ids.device:
                trie = self.sid_trie = trie.to(input_ids.device)
            with self.accelerator.autocast():
                logps, entropies = shared_prompt_logps(
                    model, input_ids, attention_mask, logits_to_keep, compute_entropy, trie
                )
            return logps, entropies, None

    return SIDGRPOTrainer


# ----------------------------------------------------------------------------- logs
class _StepTimer:
    """A TrainerCallback recording each optimizer step's wall time and its rollout (decoding) share."""

    def __init__(self, rollouts: Rollouts):
        from transformers import TrainerCallback

        self.rollouts = rollouts
        self.steps: list[dict] = []
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.start = time.perf_counter()
                timer.rollouts.seconds = 0.0

            def on_step_end(self, args, state, control, **kwargs):
                total = time.perf_counter() - timer.start
                rollout = timer.rollouts.seconds
                timer.steps.append({"step": state.global_step, "rollout_s": rollout, "update_s": total - rollout})

        self.callback = Callback()


LOG_KEYS = {  # TRL's logged names -> ours
    "loss": "loss",
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "kl": "kl",
    "clip_ratio/region_mean": "clip_ratio",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "entropy": "entropy",
    "frac_reward_zero_std": "frac_groups_zero_std",
}


def step_log(log_history: list[dict], timings: list[dict], kinds: Sequence[str], prompts_per_step: int) -> list[dict]:
    """One record per optimizer step: loss, rewards (mean/std per kind), KL, clip ratio, lr, rollout and update time.

    Rewards exist on steps that generated rollouts; with ``num_iterations`` > 1 the further passes over
    the same rollouts have ``None`` there (and a rollout time of 0).
    """
    by_step = {t["step"]: t for t in timings}
    out = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue  # the end-of-training summary
        rec = {"step": entry["step"], "epoch": round(entry.get("epoch") or 0.0, 4)}
        for theirs, ours in LOG_KEYS.items():
            rec[ours] = float(entry[theirs]) if theirs in entry else None
        for kind in kinds:
            for stat in ("mean", "std"):
                value = entry.get(f"rewards/{kind}/{stat}")
                rec[f"reward_{kind}_{stat}"] = None if value is None else float(value)
        t = by_step.get(entry["step"])
        if t:
            rec.update(rollout_s=t["rollout_s"], update_s=t["update_s"])
            rec["rollout_prompts_per_s"] = prompts_per_step / t["rollout_s"] if t["rollout_s"] > 0 else None
            rec["update_prompts_per_s"] = prompts_per_step / t["update_s"] if t["update_s"] > 0 else None
        out.append(rec)
    return out


def _series(steps: list[dict], key: str) -> list[float]:
    return [math.nan if s.get(key) is None else s[key] for s in steps]


def plot_rl_log(steps: list[dict], kinds: Sequence[str], path: str) -> None:
    """Rewards per kind, KL, learning rate and time per step, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["step"] for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    ax = axes[0][0]
    for kind in kinds:
        ax.plot(x, _series(steps, f"reward_{kind}_mean"), ".-", label=kind)
    ax.plot(x, _series(steps, "reward_mean"), "k.--", label="weighted total")
    ax.set_title("reward (mean over rollouts)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(x, _series(steps, "kl"), label="KL to SFT")
    ax.plot(x, _series(steps, "clip_ratio"), label="clip ratio")
    ax.set_title("KL and clip ratio")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(x, _series(steps, "learning_rate"))
    ax.set_title("learning rate")
    ax = axes[1][1]
    ax.plot(x, _series(steps, "rollout_s"), label="rollout (decoding)")
    ax.plot(x, _series(steps, "update_s"), label="update (scoring, loss, step)")
    ax.set_title("seconds per step")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.set_xlabel("optimizer step")
        a.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- training
def _policy_record(settings: RLSettings, checkpoint: str, train_time: float, peak: float | None, **extra) -> dict:
    return {
        "method": settings.method,
        "checkpoint": os.path.abspath(checkpoint),
        "settings": settings.to_dict(),
        "train_time_s": train_time,
        "peak_memory_gb": peak,
        **extra,
    }


def run_rl(
    settings: RLSettings,
    sft_checkpoint: str,
    policy_json: str,
    train_csv: str | None = None,
    sid_index: str | None = None,
    out_dir: str | None = None,
    log_json: str | None = None,
    plot_png: str | None = None,
    scorer_dir: str | None = None,
    threads: int | None = None,
) -> None:
    """Run the RL method and write ``policy.json`` (and for GRPO the checkpoint, log and plot).

    Raises:
        FileNotFoundError: the SFT checkpoint (or the collaborative reward's scorer) does not exist.
        ValueError: GRPO without its inputs, or a group larger than the catalogue.
    """
    log_settings(log, "rl", settings)
    if not is_checkpoint(sft_checkpoint):
        raise FileNotFoundError(f"SFT checkpoint not found: {sft_checkpoint}")
    if settings.method == "none":
        write_json(policy_json, _policy_record(settings, sft_checkpoint, 0.0, None))
        log.info("rl method none: evaluating the SFT checkpoint %s as is", sft_checkpoint)
        return
    missing = [n for n, v in {"train_csv": train_csv, "sid_index": sid_index, "out_dir": out_dir}.items() if not v]
    if missing:
        raise ValueError(f"grpo needs {missing}")
    if threads:
        torch.set_num_threads(threads)
    log_json = log_json or os.path.join(os.path.dirname(os.path.abspath(out_dir)), "rl_log.json")
    plot_png = plot_png or os.path.join(os.path.dirname(os.path.abspath(log_json)), "rl_log.png")
    train_time, peak, steps, extra = train_grpo(settings, sft_checkpoint, train_csv, sid_index, out_dir, scorer_dir)
    write_json(log_json, {**extra, "train_time_s": train_time, "peak_memory_gb": peak, "steps": steps})
    plot_rl_log(steps, settings.reward_kinds, plot_png)
    write_json(
        policy_json, _policy_record(settings, out_dir, train_time, peak, started_from=os.path.abspath(sft_checkpoint))
    )


def train_grpo(
    settings: RLSettings,
    sft_checkpoint: str,
    train_csv: str,
    sid_index: str,
    out_dir: str,
    scorer_dir: str | None = None,
) -> tuple[float, float, list[dict], dict]:
    """GRPO from an SFT checkpoint; writes ``out_dir`` (a full model) atomically.

    Returns:
        Training seconds, peak memory (GB), the per-step log and run facts for ``rl_log.json``.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL
    from datasets import Dataset
    from trl import GRPOConfig

    from genrec.seqrec import load_scorer
    from genrec.sft import save_checkpoint, seed_everything, shared_training_arguments

    seed_everything(settings.seed)
    device = pick_device()
    model, tokenizer = load_checkpoint(sft_checkpoint)
    index = load_index(sid_index)
    if settings.group_size > len(index):
        raise ValueError(f"group_size {settings.group_size} > the {len(index)} items of the index; lower group_size")
    trie = SIDTrie.from_index(index, tokenizer)
    sids = sid_strings(index)
    scorer = None
    if settings.needs_scorer:
        if not scorer_dir or not os.path.isdir(scorer_dir):
            raise FileNotFoundError(
                f"the collaborative reward needs the {settings.scorer} scorer (baselines: {{{settings.scorer}: ...}}); "
                f"not found: {scorer_dir}"
            )
        scorer = load_scorer(scorer_dir).eval()
        if scorer.n_items != len(index):
            raise ValueError(f"scorer {scorer_dir} covers {scorer.n_items} items, the index {len(index)}")
    rows = rl_rows(train_csv, len(index), settings, sft_checkpoint)
    prompt_of: dict[str, list[int]] = {}
    records = []
    for history, target in rows:
        ids = prompt_ids(tokenizer, [sids[i] for i in history], settings.max_length)
        text = tokenizer.decode(ids)  # the prompt's key (TRL passes prompts to the rollout function as text)
        prompt_of.setdefault(text, ids)
        records.append({"prompt": text, "target": int(target), "history": [int(i) for i in history]})
    log.info("%d training prompts (%d distinct), groups of %d", len(records), len(prompt_of), settings.group_size)

    reference = _reference_path(model, sft_checkpoint, settings, out_dir)
    if settings.mode == "full":
        model.requires_grad_(True)  # a merged adapter checkpoint loads with its weights frozen
    else:
        from peft import LoraConfig, get_peft_model

        from genrec.sft import lora_target_names

        model = get_peft_model(
            model,
            LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=lora_target_names(model, settings.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    gpu = device.type == "cuda"
    work = Path(out_dir).resolve().parent / ".rl_work"
    shutil.rmtree(work, ignore_errors=True)
    g = settings.group_size
    world = int(os.environ.get("WORLD_SIZE", 1))
    total_steps = math.ceil(
        math.ceil(len(records) / (settings.prompts_per_step * settings.grad_accum * world)) * settings.epochs
    )
    args = GRPOConfig(
        output_dir=str(work),
        per_device_train_batch_size=settings.prompts_per_step * g,
        gradient_accumulation_steps=settings.grad_accum,
        num_generations=g,
        max_completion_length=trie.depth,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings.warmup_ratio * total_steps)),
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        beta=settings.beta,
        epsilon=settings.epsilon,
        num_iterations=settings.num_iterations,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        temperature=1.0,  # the loss scores the untempered policy; only sample rollouts use settings.temperature
        model_init_kwargs={"local_files_only": True},
        logging_steps=1,
        save_strategy="no",
        disable_dropout=True,
        **shared_training_arguments(settings.seed, settings.gradient_checkpointing),
        log_completions=False,
    )
    ctx = RewardContext(index=index, scorer=scorer)
    funcs, weights = reward_functions(settings, ctx)
    args.reward_weights = weights
    completion = {i: sid_ids(tokenizer, sids[i]) for i in index}
    rollouts = Rollouts(prompt_of, completion, trie, settings, tokenizer.pad_token_id, settings.seed)
    timer = _StepTimer(rollouts)
    if reference:
        model.config._name_or_path = reference  # TRL builds the frozen reference model from this path
    trainer = _trainer_class()(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        rollout_func=rollouts,
        callbacks=[timer.callback],
    )
    if settings.constrained_logps:
        trainer.sid_trie = trie
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train()
    train_time = time.perf_counter() - start
    peak = peak_memory_gb()
    policy = trainer.model
    if hasattr(policy, "merge_and_unload"):
        policy = policy.merge_and_unload()
    policy.config._name_or_path = os.path.abspath(out_dir)
    save_checkpoint(
        policy,
        tokenizer,
        out_dir,
        {
            "stage": "rl",
            "method": "grpo",
            "settings": settings.to_dict(),
            "started_from": os.path.abspath(sft_checkpoint),
        },
    )
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(Path(out_dir).resolve().parent / ".rl_reference", ignore_errors=True)
    steps = step_log(
        trainer.state.log_history, timer.steps, settings.reward_kinds, settings.prompts_per_step * settings.grad_accum
    )
    rollout_s = sum(s.get("rollout_s", 0.0) for s in steps)
    update_s = sum(s.get("update_s", 0.0) for s in steps)
    n_prompts = trainer.state.global_step * settings.prompts_per_step * settings.grad_accum
    extra = {
        "method": "grpo",
        "rollout": settings.rollout,
        "group_size": g,
        "train_prompts": len(records),
        "optimizer_steps": trainer.state.global_step,
        "rollout_prompts_per_s": n_prompts / rollout_s if rollout_s else None,
        "update_prompts_per_s": n_prompts / update_s if update_s else None,
        "rollout_time_s": rollout_s,
        "update_time_s": update_s,
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "bf16": bool(args.bf16),
        "started_from": os.path.abspath(sft_checkpoint),
    }
    log.info(
        "GRPO: %d steps in %.1fs (rollouts %.1fs, updates %.1fs); final reward %.4f",
        trainer.state.global_step,
        train_time,
        rollout_s,
        update_s,
        next((s["reward_mean"] for s in reversed(steps) if s["reward_mean"] is not None), math.nan),
    )
    return train_time, peak, steps, extra


def _reference_path(model, sft_checkpoint: str, settings: RLSettings, out_dir: str) -> str | None:
    """A plain model directory holding the SFT policy, for TRL to load the frozen reference from.

    A full or frozen-mode SFT checkpoint is one already. A LoRA/QLoRA checkpoint is adapters; its
    merged model (what :func:`~genrec.models.load_checkpoint` returned) is saved beside the output
    once. With ``beta`` 0, or new LoRA adapters (whose reference is the model with them switched
    off), no reference model is loaded.
    """
    if settings.beta == 0 or settings.mode == "lora":
        return None
    if (Path(sft_checkpoint) / "config.json").is_file():
        return os.path.abspath(sft_checkpoint)
    where = Path(out_dir).resolve().parent / ".rl_reference"
    shutil.rmtree(where, ignore_errors=True)
    model.save_pretrained(where)
    return str(where)
