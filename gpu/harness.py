"""A small-model RL harness: a decoder-only transformer trained from scratch on tasks with exact verifiers.

Read it top to bottom: the model (a plain causal transformer with a preallocated KV cache), sampling, token
log-probabilities, the supervised warm-up, and the RL loop, which calls any policy loss of
:mod:`fiberlab.gpu.losses` by name with verl's ``(loss, metrics)`` contract. Same code on CPU and CUDA;
configuration as dataclasses.

One RL iteration: sample ``prompts_per_step`` prompts, ``group_size`` responses each from the behaviour policy
(π_old: the current policy, or the policy of ``rollout_lag`` iterations earlier), reward them with the task's
verifier (and let an adaptive task see the rewards), compute advantages with the advantage registry, then take
``epochs`` passes over the rollout, each split into ``updates_per_step`` mini-batches of whole groups: one
optimiser step per mini-batch, every step after the first off-policy, as in the papers' two-mini-batch setting.
The metrics of an iteration (:data:`METRICS`) are accumulated as tensors and read to the host once.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu import losses as _losses
from fiberlab.gpu.losses import batch_extras, get_policy_loss
from fiberlab.gpu.tasks import BOS, EOS, PAD, VOCAB, Task, decode

# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    """The small causal transformer trained by the harness (pre-LayerNorm blocks, learned positions)."""

    vocab_size: int = len(VOCAB)
    """tokens in the vocabulary (the tasks' shared one: PAD, BOS, EOS, digits, operators, letters a–p)"""
    d_model: int = 64
    """embedding width, split evenly across the heads"""
    n_layer: int = 2
    """transformer blocks"""
    n_head: int = 4
    """attention heads per block (must divide d_model)"""
    max_len: int = 48
    """longest sequence (BOS + prompt + response) the position table covers"""


#: One layer's KV cache: preallocated ``(k, v)`` buffers ``[B, n_head, length, head_dim]``, filled in place.
KVCache = tuple[torch.Tensor, torch.Tensor]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start: int = 0
                ) -> tuple[torch.Tensor, KVCache]:
        """``x [B, t, d]`` at positions ``start .. start+t-1``. Without a cache: the whole sequence, causal; with
        one: ``k, v`` are written into the buffers at those positions and ``q`` attends to positions ``< start+t``
        (the filled prefix). Returns the block's output and the cache (the buffers, or this pass's ``(k, v)``)."""
        b, t, d = x.shape                      # batch size, tokens in this pass, embedding width (n_embd)
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, t, self.n_head, d // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))         # [B, n_head, t, head_dim]
        if cache is None:                                                      # teacher forcing
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            kv = (k, v)
        else:
            k_buf, v_buf = cache                                               # [B, n_head, length, head_dim]
            end = start + t
            k_buf[:, :, start:end] = k
            v_buf[:, :, start:end] = v
            k, v = k_buf[:, :, :end], v_buf[:, :, :end]                        # [B, n_head, end, head_dim]
            if t == 1:                                                         # decoding: every filled position
                y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
            elif start == 0:                                                   # prefill: causal, as without cache
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:                                   # a chunk after a prefix: query i sees positions ≤ start + i
                allowed = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            kv = cache
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x)), kv


class TinyLM(nn.Module):
    """Causal transformer LM. ``forward(tokens, caches=None, start=0)`` returns logits ``[B, t, V]`` and the
    caches: without ``caches``, every layer's ``(k, v)`` of this pass (teacher forcing); with ``caches`` from
    :meth:`new_cache`, the same buffers, filled at positions ``start .. start+t-1`` (incremental decoding)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def new_cache(self, batch: int, length: int | None = None) -> list[KVCache]:
        """Empty per-layer KV buffers ``[batch, n_head, length, head_dim]`` (``length`` ≤ ``max_len``, default
        ``max_len``) on the model's device and dtype, allocated once and written in place by :meth:`forward`."""
        length = self.cfg.max_len if length is None else min(length, self.cfg.max_len)
        w = self.head.weight
        shape = (batch, self.cfg.n_head, length, self.cfg.d_model // self.cfg.n_head)
        return [(torch.empty(shape, device=w.device, dtype=w.dtype), torch.empty(shape, device=w.device, dtype=w.dtype))
                for _ in self.blocks]

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None, start: int = 0
                ) -> tuple[torch.Tensor, list[KVCache]]:
        t = tokens.shape[1]                                                # tokens in this pass
        if start + t > self.cfg.max_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_len={self.cfg.max_len}")
        if caches is not None and start + t > caches[0][0].shape[2]:
            raise ValueError(f"sequence of {start + t} tokens exceeds the cache's {caches[0][0].shape[2]} positions")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)[None]
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if caches is None else caches[i], start)
            new.append(kv)
        return self.head(self.ln(x)), new

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------------------------------
# Sampling and log-probabilities
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def sample(model: TinyLM, prompts: torch.Tensor, max_new: int, generator: torch.Generator | None = None,
           temperature: float = 1.0, stop_early: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses after ``[BOS] + prompt`` with a preallocated KV cache (cost linear in the response length).

    Returns ``(responses [N, max_new], mask [N, max_new])``: tokens after the first EOS are PAD and masked out;
    the EOS itself is part of the response (its probability is learned like any other token). With
    ``stop_early`` decoding stops once every row has emitted EOS; every step draws for the whole batch, so the
    output equals that of decoding all ``max_new`` steps with the same generator (only the generator's final
    state differs).
    """
    n = prompts.shape[0]                                                # prompts (rows) to sample
    dev = prompts.device
    ctx = torch.cat([torch.full((n, 1), BOS, device=dev, dtype=torch.long), prompts], 1)      # [N, P+1]
    pos = ctx.shape[1]                                                  # BOS + prompt length P
    caches = model.new_cache(n, pos + max(max_new - 1, 0))      # the last sampled token is never fed back
    logits, _ = model(ctx, caches)
    out = torch.full((n, max_new), PAD, dtype=torch.long, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    mask = torch.zeros(n, max_new, dtype=torch.bool, device=dev)
    for t in range(max_new):                   # autoregressive: one step per token, the whole batch at once
        probs = torch.softmax(logits[:, -1].float() / temperature, -1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out[:, t] = nxt
        mask[:, t] = ~done
        done = done | (nxt == EOS)
        if t + 1 == max_new or (stop_early and bool(done.all())):   # one sync per token; the rest stays PAD
            break
        logits, _ = model(nxt[:, None], caches, start=pos)
        pos += 1
    return out, mask


def token_log_probs(model: TinyLM, prompts: torch.Tensor, responses: torch.Tensor, with_entropy: bool = False,
                    full_log_probs: bool = False) -> tuple[torch.Tensor, ...]:
    """``log π(response_t | BOS, prompt, response_<t)`` as ``[N, L]`` (teacher forcing, one forward pass),
    and optionally the per-position entropy of π (else ``None``); with ``full_log_probs`` also a third element,
    the whole ``log π(· | prefix)`` as ``[N, L, V]``."""
    n, p = prompts.shape                                             # rows, prompt length
    bos = torch.full((n, 1), BOS, device=prompts.device, dtype=torch.long)
    seq = torch.cat([bos, prompts, responses], 1)
    logits, _ = model(seq[:, :-1])
    logits = logits[:, p:].float()                                   # positions predicting the response
    logp = torch.log_softmax(logits, -1)                             # [N, L, V]
    lp = logp.gather(-1, responses[..., None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1) if with_entropy else None     # H = −Σ_v π_v log π_v
    return (lp, ent, logp) if full_log_probs else (lp, ent)


# --------------------------------------------------------------------------------------------------------------
# Supervised warm-up
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class WarmupConfig:
    """Supervised warm-up on the task's demonstrations, before RL (teacher-forced cross-entropy)."""

    steps: int = 300
    """optimiser steps"""
    batch: int = 64
    """demonstrations per step"""
    lr: float = 3e-3
    """AdamW learning rate"""


def warmup(model: TinyLM, task: Task, cfg: WarmupConfig, rng: np.random.Generator,
           device: torch.device) -> list[float]:
    """Teacher-forced cross-entropy on the task's demonstrations; returns the loss curve."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(cfg.steps):
        prompts, info = task.prompts(cfg.batch, rng)
        demos = [task.demonstration(i, rng) for i in info]
        resp = torch.full((cfg.batch, task.max_response), PAD, dtype=torch.long)
        m = torch.zeros(cfg.batch, task.max_response, dtype=torch.bool)
        for row, d in enumerate(demos):                          # host-side data assembly, not the model loop
            resp[row, :len(d)] = torch.tensor(d)
            m[row, :len(d)] = True
        lp, _ = token_log_probs(model, prompts.to(device), resp.to(device))
        loss = -(lp * m.to(device)).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# --------------------------------------------------------------------------------------------------------------
# RL
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RLConfig:
    """One RL run: rollouts of ``prompts_per_step × group_size`` responses, then ``epochs × updates_per_step``
    optimiser steps on them with the chosen policy loss and advantage estimator."""

    objective: str = "ppo"
    """policy loss, by its registry name (fiberlab.gpu.losses)"""
    advantage: str = "grpo"
    """advantage estimator, by its registry name (fiberlab.gpu.advantages)"""
    loss_agg_mode: str = "token-mean"
    """verl's loss aggregation (token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm)"""
    loss_config: dict = dataclasses.field(default_factory=dict)
    """the objective's hyper-parameters, read as verl's actor config (e.g. ``{"band_delta": 0.05}``)"""
    steps: int = 100
    """RL iterations (rollout + updates)"""
    prompts_per_step: int = 16
    """prompts (groups) per rollout"""
    group_size: int = 8
    """responses per prompt"""
    updates_per_step: int = 2
    """mini-batches per epoch (of whole groups): one optimiser step each"""
    lr: float = 1e-3
    """AdamW learning rate"""
    max_grad_norm: float = 1.0
    """gradient-norm clip per optimiser step"""
    eval_prompts: int = 64
    """fresh prompts per evaluation"""
    eval_k: int = 8
    """samples per evaluation prompt (pass@k)"""
    eval_every: int = 10
    """evaluate every this many iterations and at the last (0: never)"""
    epochs: int = 1
    """passes over each rollout batch; groups are reshuffled every epoch (optimiser steps per iteration:
    ``epochs × updates_per_step``)"""
    rollout_lag: int = 0
    """responses are sampled by the policy as it was ``rollout_lag`` iterations earlier (the start policy during
    the first ``rollout_lag`` iterations), and π_old is that behaviour policy: ratios start away from 1"""


#: Every key of an RL iteration's row (patterns in ``<>``), with its meaning: what a book can print.
METRICS: dict[str, str] = {
    "step": "iteration index (0-based)",
    "reward": "mean verifier reward of the rollout responses",
    "response_length": "mean response length in tokens (EOS included) of the rollout",
    "length_correct": "mean response length of rewarded (reward > 0.5) rollout responses; absent when none",
    "length_wrong": "mean response length of unrewarded rollout responses; absent when none",
    "empty_frac": "fraction of rollout responses whose first token is EOS (empty answers)",
    "mixed_frac": "fraction of groups with both rewarded and unrewarded responses (the ones a group baseline "
                  "learns from)",
    "kl_to_start": "k1 estimate of KL(π_old ‖ π_start): mean of log π_old − log π_start over rollout tokens",
    "kl_start_k3": "k3 estimate of KL(π_old ‖ π_start): mean of e^Δ − 1 − Δ, Δ = log π_start − log π_old",
    "entropy": "entropy of the current policy π_θ per response token, mean over mini-batches",
    "entropy_decision": "entropy of π_old at decision positions (≥ 2 tokens keep the answer correct; tasks "
                        "with choices only)",
    "entropy_valid": "entropy of π_old renormalised over the answer-keeping tokens at decision positions "
                     "(tasks with choices only)",
    "ratio_mean": "mean ratio π_θ/π_old over tokens before each optimiser step, mean over mini-batches",
    "ratio_max": "largest token ratio π_θ/π_old over the iteration's mini-batches",
    "kl_old_k3": "k3 estimate of KL(π_old ‖ π_θ) before each optimiser step, mean over mini-batches",
    "kl_old_k3_last": "kl_old_k3 of the last mini-batch of the last epoch",
    "drift_p50": "median over trajectories of |mean over the trajectory's tokens of log r|, mean over mini-batches",
    "drift_p90": "90th percentile of the same trajectory drift, mean over mini-batches",
    "drift_p90_last": "drift_p90 of the last mini-batch of the last epoch",
    "grad_norm": "gradient norm before clipping, mean over mini-batches",
    "grad_norm_max": "largest gradient norm before clipping over the iteration's mini-batches",
    "clip_high_frac": "fraction of tokens with A > 0 sent zero gradient (of all tokens), mean over mini-batches",
    "clip_low_frac": "fraction of tokens with A < 0 sent zero gradient (of all tokens), mean over mini-batches",
    "clip_frac/<bucket>/<sign>": "among tokens with π_old in bucket (p<0.1, 0.1<=p<0.5, p>=0.5) and advantage "
                                 "sign (pos, neg), the fraction sent zero gradient, pooled over the iteration; "
                                 "absent when no such token",
    "actor/<name>, fiberlab/<name>": "the objective's own metrics (verl's names), mean over mini-batches",
    "pass@1": "evaluation: mean reward of single samples on fresh prompts",
    "pass@<k>": "evaluation: fraction of prompts with a correct answer among k samples",
    "distinct_correct": "evaluation: mean over prompts of the number of distinct correct answers among k samples",
    "correct_mass": "evaluation (tasks with correct_answers): mean over prompts of the total probability of the "
                    "correct answers",
    "weakest_correct_mass": "evaluation (tasks with correct_answers): mean over prompts of the probability of "
                            "the least likely correct answer",
    "weakest_correct_logp": "evaluation (tasks with correct_answers): mean over prompts of log π of the least "
                           "likely correct answer (nats; a ratio of masses is a difference here)",
    "correct_entropy": "evaluation (tasks with correct_answers): entropy of the policy restricted to the correct "
                       "answers",
    "eval_seconds": "wall time of the iteration's evaluation (evaluation iterations only)",
    "seconds": "wall time of the whole iteration, evaluation included",
}

#: π_old-probability buckets of ``clip_frac/<bucket>/<sign>``: names for p < 0.1, 0.1 ≤ p < 0.5, p ≥ 0.5.
CLIP_BUCKETS = ("p<0.1", "0.1<=p<0.5", "p>=0.5")
CLIP_BUCKET_EDGES = (0.1, 0.5)
CLIP_SIGNS = ("pos", "neg")

#: Log-ratios are clamped before ``exp`` in the metrics with the losses' own bound.
LOG_RATIO_CLAMP = _losses.LOG_RATIO_CLAMP


def prefix_state_ids(prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """A state id per response token: equal ids exactly when the prefixes (prompt + response so far) are equal,
    the LLM reading of FiberPO's state s_t. Computed by a rolling 64-bit hash (wrapping int64 arithmetic) and
    densified; collisions have probability ~ n²/2^64."""
    mult = 1_000_003
    h = torch.zeros(prompts.shape[0], dtype=torch.int64, device=prompts.device)
    for t in range(prompts.shape[1]):                    # prompt length is a small constant of the task
        h = h * mult + prompts[:, t] + 1
    hs = []
    for t in range(responses.shape[1]):                  # the state before token t is the prefix up to t-1
        hs.append(h)
        h = h * mult + responses[:, t] + 1
    return torch.unique(torch.stack(hs, 1), return_inverse=True)[1]


def _extras(objective: str, rewards: torch.Tensor, group_ids: torch.Tensor, prompts: torch.Tensor,
            responses: torch.Tensor) -> dict[str, Any]:
    """The batch quantities the objective declares it takes (``losses.batch_extras``): rewards and group ids,
    one domain per task, per-token state ids (the response prefix, built only for an objective that takes it)."""
    return batch_extras(objective, rewards=rewards, group_ids=group_ids,
                        domain_ids=lambda: torch.zeros_like(group_ids),
                        state_ids=lambda: prefix_state_ids(prompts, responses))


# ---- mechanism metrics: tensor helpers (no host sync), read to the host once per iteration ---------------------

def k3(delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π_old ‖ π): masked mean of e^Δ − 1 − Δ with Δ = log π − log π_old on tokens drawn
    from π_old (unbiased, ≥ 0 token by token). Δ is clamped to ±:data:`LOG_RATIO_CLAMP`."""
    d = delta.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    m = mask.to(d.dtype)
    return ((torch.expm1(d) - d) * m).sum() / m.sum()                # e^Δ − 1 − Δ, expm1 exact near Δ = 0


def trajectory_drift(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N]``: |mean over a trajectory's tokens of log r|, log r = log π_θ − log π_old (every response has a
    token: the first is always in the mask)."""
    m = mask.to(log_ratio.dtype)
    return ((log_ratio * m).sum(1) / m.sum(1).clamp(min=1)).abs()


def clip_bucket_counts(g_tok: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(blocked [3, 2], tokens [3, 2])``: per π_old-probability bucket (:data:`CLIP_BUCKETS`, p = exp(old_log_prob))
    and advantage sign (:data:`CLIP_SIGNS`: A > 0, A < 0; A = 0 tokens are in neither), the number of response
    tokens, and of those the loss sends zero gradient (``g_tok == 0``, the objective-agnostic clip)."""
    edges = torch.tensor(CLIP_BUCKET_EDGES, device=old_log_prob.device, dtype=old_log_prob.dtype)
    bucket = torch.bucketize(old_log_prob.exp(), edges, right=True)          # 0: p<0.1, 1: 0.1≤p<0.5, 2: p≥0.5
    cell = (bucket * 2 + (advantages < 0).long()).reshape(-1)               # bucket-major, pos before neg
    counted = (mask & (advantages != 0)).reshape(-1)
    blocked = counted & (g_tok == 0).reshape(-1)
    zeros = torch.zeros(6, device=g_tok.device, dtype=torch.float64)
    return (zeros.index_add(0, cell, blocked.to(torch.float64)).view(3, 2),
            zeros.index_add(0, cell, counted.to(torch.float64)).view(3, 2))


def clip_bucket_fractions(blocked: Any, tokens: Any) -> dict[str, float]:
    """``{"clip_frac/<bucket>/<sign>": blocked / tokens}`` from the (summed) counts of
    :func:`clip_bucket_counts`, omitting the cells without tokens."""
    b, n = torch.as_tensor(blocked).reshape(-1).tolist(), torch.as_tensor(tokens).reshape(-1).tolist()
    keys = [f"clip_frac/{bk}/{s}" for bk in CLIP_BUCKETS for s in CLIP_SIGNS]
    return {key: bi / ni for key, bi, ni in zip(keys, b, n) if ni > 0}


def decision_entropies(log_probs: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``log π [N, L, V]``, the answer-keeping tokens ``valid [N, L, V]`` and the response ``mask [N, L]``:
    ``(decision [N, L], H(π) [N, L], H(q) [N, L])``, decision = a response position where ≥ 2 tokens are valid,
    q = π restricted to the valid tokens and renormalised (H(q) is meaningful at decision positions only)."""
    decision = mask & (valid.sum(-1) >= 2)
    full = -(log_probs.exp() * log_probs).sum(-1)                            # H(π) = −Σ_v π_v log π_v
    restricted = log_probs.masked_fill(~valid, -math.inf)
    log_q = restricted - torch.logsumexp(restricted, -1, keepdim=True)      # log q = log π − log Σ_valid π
    h_valid = -torch.where(valid, log_q.exp() * log_q, torch.zeros_like(log_q)).sum(-1)   # H(q) = −Σ q log q
    return decision, full, h_valid


def count_distinct_correct(responses: torch.Tensor, rewards: torch.Tensor, k: int) -> float:
    """Mean over prompts of the number of distinct correct (reward > 0.5) decoded answers among its ``k``
    responses; ``responses [n·k, L]`` with a prompt's responses adjacent, ``rewards [n·k]``."""
    answers = [decode(r) for r in responses.tolist()]
    ok = (rewards > 0.5).tolist()
    n = len(answers) // k
    return float(np.mean([len({a for a, c in zip(answers[i * k:(i + 1) * k], ok[i * k:(i + 1) * k]) if c})
                          for i in range(n)]))


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Every tensor flattened to a list of Python floats, all in one device-to-host copy (one sync)."""
    if not tensors:
        return {}
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors.values()]).tolist()
    out, i = {}, 0
    for key, t in tensors.items():
        out[key], i = flat[i:i + t.numel()], i + t.numel()
    return out


class PolicyLag:
    """A FIFO of policy snapshots: :meth:`push` the current state at the start of an iteration and get the
    state ``lag`` iterations earlier (the oldest held, i.e. the start policy, during the first ``lag``)."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.snapshots: collections.deque[dict[str, torch.Tensor]] = collections.deque()

    def push(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.snapshots.append({k: v.detach().clone() for k, v in state.items()})
        if len(self.snapshots) > self.lag + 1:
            self.snapshots.popleft()
        return self.snapshots[0]


@torch.no_grad()
def evaluate(model: TinyLM, task: Task, n: int, k: int, rng: np.random.Generator, device: torch.device,
             generator: torch.Generator) -> dict[str, float]:
    """pass@1 (mean reward of single samples), pass@k (any of k samples correct) and the mean number of distinct
    correct answers among the k samples, on fresh prompts."""
    prompts, info = task.prompts(n, rng)
    rep = prompts.repeat_interleave(k, 0).to(device)
    resp, _ = sample(model, rep, task.max_response, generator)
    resp = resp.cpu()
    r = task.reward([i for i in info for _ in range(k)], resp)
    acc = task.accuracy([i for i in info for _ in range(k)], resp)
    out = {"pass@1": float(r.mean()), f"pass@{k}": float((r > 0.5).view(n, k).any(1).float().mean()),
           "distinct_correct": count_distinct_correct(resp, acc, k)}
    answers = getattr(task, "correct_answers", None)
    if answers is not None:
        out.update(correct_answer_mass(model, prompts, [answers(i) for i in info], device))
    return out


@torch.no_grad()
def correct_answer_mass(model: TinyLM, prompts: torch.Tensor, answers: list[list[list[int]]],
                        device: torch.device) -> dict[str, float]:
    """Exact probabilities of every correct answer (token ids ending in EOS; equal lengths per prompt) by teacher
    forcing: ``correct_mass`` = mean over prompts of Σ_y π(y), ``weakest_correct_mass`` = mean over prompts of
    min_y π(y) (Cor. 2's mode coverage), ``correct_entropy`` = entropy of π restricted to the correct answers."""
    counts = [len(a) for a in answers]
    rows = torch.tensor([y for a in answers for y in a], device=device)                    # [Σ counts, L]
    rep = prompts.to(device).repeat_interleave(torch.tensor(counts, device=device), 0)
    lp, _ = token_log_probs(model, rep, rows)
    seq = lp.sum(1).split(counts)                                                         # log π(y) per prompt
    mass = torch.stack([s.exp().sum() for s in seq])
    weakest = torch.stack([s.exp().min() for s in seq])
    log_weakest = torch.stack([s.min() for s in seq])
    ent = torch.stack([-(torch.softmax(s, 0) * torch.log_softmax(s, 0)).sum() for s in seq])
    return {"correct_mass": float(mass.mean()), "weakest_correct_mass": float(weakest.mean()),
            "weakest_correct_logp": float(log_weakest.mean()),
            "correct_entropy": float(ent.mean())}


def _check_config(cfg: RLConfig) -> None:
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {cfg.epochs}")
    if cfg.rollout_lag < 0:
        raise ValueError(f"rollout_lag must be ≥ 0, got {cfg.rollout_lag}")
    if not 1 <= cfg.updates_per_step <= cfg.prompts_per_step:
        raise ValueError(f"updates_per_step (mini-batches of whole groups) must be in [1, prompts_per_step="
                         f"{cfg.prompts_per_step}], got {cfg.updates_per_step}")


@dataclasses.dataclass
class _Rollout:
    """One iteration's rollout batch of ``n = prompts × group_size`` responses and its per-iteration metrics
    (device tensors, read to the host once with the rest of the iteration)."""

    rep: torch.Tensor             # [n, P] prompts, each repeated group_size times
    resp: torch.Tensor            # [n, L] responses
    mask: torch.Tensor            # [n, L] response tokens (EOS included)
    rewards: torch.Tensor         # [n]
    old_lp: torch.Tensor          # [n, L] log π_old of the sampled tokens
    adv: torch.Tensor             # [n, L] advantages, zero off the mask
    metrics: dict[str, torch.Tensor]


def _collect_rollout(behaviour: TinyLM, start_model: TinyLM, task: Task, cfg: RLConfig, adv_fn: Callable,
                     group_ids: torch.Tensor, rng: np.random.Generator, gen: torch.Generator,
                     device: torch.device) -> _Rollout:
    """Sample ``prompts_per_step`` groups from the behaviour policy, score them, and measure the rollout."""
    g, k = cfg.prompts_per_step, cfg.group_size
    prompts, info = task.prompts(g, rng)
    rep = prompts.repeat_interleave(k, 0).to(device)
    resp, mask = sample(behaviour, rep, task.max_response, gen)          # resp, mask: [n, L]
    resp_info = [i for i in info for _ in range(k)]
    rewards_cpu = task.reward(resp_info, resp.cpu())
    if (adapt := getattr(task, "adapt", None)) is not None:            # e.g. a difficulty controller
        adapt(rewards_cpu)
    rewards = rewards_cpu.to(device)
    with torch.no_grad():
        # π_old recomputed by the training forward pass, not taken from the sampler, as verl does: the
        # cached decoding rounds differently, and without lag the first update must see ratios of exactly 1.
        old_lp, _, old_logp = token_log_probs(behaviour, rep, resp, full_log_probs=True)   # [n, L], [n, L, V]
        start_lp, _ = token_log_probs(start_model, rep, resp)
    adv = adv_fn(rewards, group_ids)[:, None] * mask
    lengths = mask.float().sum(1)                                        # [n]
    # correctness without a task's reward lottery (fiberlab.gpu.tasks.Filler), for the lengths
    correct = (task.accuracy(resp_info, resp.cpu()) > 0.5).to(device)
    rewarded = (rewards > 0.5).view(g, k)
    metrics: dict[str, torch.Tensor] = {
        "reward": rewards.mean(),
        "response_length": lengths.mean(),
        "kl_to_start": ((old_lp - start_lp) * mask).sum() / mask.sum(),
        "kl_start_k3": k3(start_lp - old_lp, mask),                     # Δ = log π_start − log π_old
        "empty_frac": (resp[:, 0] == EOS).float().mean(),
        # groups with both rewarded and unrewarded responses: the only ones a group baseline learns from
        "mixed_frac": (rewarded.any(1) & ~rewarded.all(1)).float().mean(),
        "_len_correct": torch.stack([(lengths * correct).sum(), correct.float().sum()]),
        "_len_wrong": torch.stack([(lengths * ~correct).sum(), (~correct).float().sum()]),
    }
    choices = getattr(task, "choices", None)
    valid = choices(resp_info, resp.shape[1]) if choices is not None else None
    if valid is not None:
        decision, h_full, h_valid = decision_entropies(old_logp, valid.to(device), mask)
        metrics["_decision"] = torch.stack([(h_full * decision).sum(), (h_valid * decision).sum(),
                                            decision.float().sum()])
    return _Rollout(rep, resp, mask, rewards, old_lp, adv, metrics)


def _update(model: TinyLM, opt: torch.optim.Optimizer, ro: _Rollout, idx: torch.Tensor, cfg: RLConfig,
            loss_fn: Callable, group_ids: torch.Tensor
            ) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor, torch.Tensor]:
    """One optimiser step on the rows ``idx`` of the rollout; returns its metric tensors, the loss's own metrics
    and the clip-bucket counts (blocked, tokens)."""
    m, a, old = ro.mask[idx], ro.adv[idx], ro.old_lp[idx]
    lp, ent = token_log_probs(model, ro.rep[idx], ro.resp[idx], with_entropy=True)
    lp.retain_grad()                  # g_tok = ∂loss/∂lp, from the same backward pass as the parameters'
    loss, loss_metrics = loss_fn(old, lp, a, m, cfg.loss_agg_mode, cfg.loss_config,
                                 **_extras(cfg.objective, ro.rewards[idx], group_ids[idx], ro.rep[idx], ro.resp[idx]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    g_tok = lp.grad
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()
    with torch.no_grad():
        mbf = m.float()
        ntok = mbf.sum()
        log_r = lp.detach() - old                    # log r = log π_θ − log π_old, before the step
        ratio = torch.exp(log_r.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        # Objective-agnostic clip fractions: a token is clipped when the loss sends it no gradient although its
        # advantage is nonzero ("high": A > 0, the ratio hit the upper bound; "low": A < 0, the lower one).
        blocked = (g_tok == 0) & m
        b_cnt, t_cnt = clip_bucket_counts(g_tok, old, a, m)
        drift = torch.quantile(trajectory_drift(log_r, m), torch.tensor([0.5, 0.9], device=lp.device,
                                                                          dtype=log_r.dtype))
        metrics = {"grad_norm": gnorm, "entropy": (ent * mbf).sum() / ntok,
                   "ratio_mean": (ratio * mbf).sum() / ntok, "ratio_max": (ratio * mbf).max(),
                   "clip_high_frac": (blocked & (a > 0)).float().sum() / ntok,
                   "clip_low_frac": (blocked & (a < 0)).float().sum() / ntok,
                   "kl_old_k3": k3(log_r, m), "drift_p50": drift[0], "drift_p90": drift[1]}
    return ({key: v.detach() for key, v in metrics.items()}, {key: float(v) for key, v in loss_metrics.items()},
            b_cnt, t_cnt)


def _iteration_row(step: int, host: dict[str, list[float]], loss_metrics: dict[str, list[float]]
                   ) -> dict[str, Any]:
    """The iteration's metrics row (:data:`METRICS`) from its host values."""
    row: dict[str, Any] = {"step": step}
    for key in ("reward", "response_length", "kl_to_start", "kl_start_k3", "empty_frac", "mixed_frac"):
        row[key] = host[key][0]
    for key, (total, count) in (("length_correct", host["_len_correct"]), ("length_wrong", host["_len_wrong"])):
        if count > 0:                                    # the answers a length bias acts through (Dr.GRPO)
            row[key] = total / count
    if "_decision" in host and host["_decision"][2] > 0:
        h_full, h_valid, count = host["_decision"]
        row["entropy_decision"], row["entropy_valid"] = h_full / count, h_valid / count
    row.update({key: float(np.mean(v)) for key, v in loss_metrics.items()})
    mb = {key[3:]: v for key, v in host.items() if key.startswith("mb/")}
    row.update({key: float(np.mean(v)) for key, v in mb.items()})
    row["ratio_max"] = max(mb["ratio_max"])
    row["grad_norm_max"] = max(mb["grad_norm"])
    row["kl_old_k3_last"] = mb["kl_old_k3"][-1]
    row["drift_p90_last"] = mb["drift_p90"][-1]
    row.update(clip_bucket_fractions(host["_blocked"], host["_tokens"]))
    return row


def rl_train(model: TinyLM, task: Task, cfg: RLConfig, seed: int, device: torch.device,
             log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``cfg.steps`` RL iterations; returns (and passes to ``log``) one metrics dict per iteration
    (keys: :data:`METRICS`). A task with ``adapt(rewards)`` is shown every rollout's rewards ``[n]`` (CPU; not
    the evaluation's); a task with ``choices(info, length) -> [n, length, V] bool | None`` gets the decision
    entropies."""
    _check_config(cfg)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device.type).manual_seed(seed)
    loss_fn, adv_fn = get_policy_loss(cfg.objective), get_advantage(cfg.advantage)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    start_model = TinyLM(model.cfg).to(device)
    start_model.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    # The behaviour policy π_old: the model itself without lag, else a second instance loaded with a snapshot.
    behaviour, lag = model, None
    if cfg.rollout_lag > 0:
        behaviour, lag = TinyLM(model.cfg).to(device), PolicyLag(cfg.rollout_lag)
    G, K = cfg.prompts_per_step, cfg.group_size                          # groups per iteration, responses per group
    group_ids = torch.arange(G, device=device).repeat_interleave(K)
    groups = torch.arange(G * K, device=device).view(G, K)              # [G, K]: rows of each group
    history = []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        if lag is not None:
            behaviour.load_state_dict(lag.push(model.state_dict()))
        ro = _collect_rollout(behaviour, start_model, task, cfg, adv_fn, group_ids, rng, gen, device)
        per_mb: dict[str, list[torch.Tensor]] = {}
        loss_metrics: dict[str, list[float]] = {}
        blocked = torch.zeros(3, 2, dtype=torch.float64, device=device)
        tokens = torch.zeros(3, 2, dtype=torch.float64, device=device)
        for _epoch in range(cfg.epochs):
            # Mini-batches of whole groups (LPO and FiberPO-Domain aggregate over a group), reshuffled each epoch.
            order = torch.randperm(G, generator=gen, device=device)
            for idx in groups[order].tensor_split(cfg.updates_per_step):
                mb, lm, b_cnt, t_cnt = _update(model, opt, ro, idx.reshape(-1), cfg, loss_fn, group_ids)
                for key, v in mb.items():
                    per_mb.setdefault(key, []).append(v)
                for key, v in lm.items():
                    loss_metrics.setdefault(key, []).append(v)
                blocked += b_cnt
                tokens += t_cnt
        host = _to_host({**ro.metrics, **{f"mb/{key}": torch.stack(v) for key, v in per_mb.items()},
                         "_blocked": blocked, "_tokens": tokens})                  # the iteration's one sync
        row = _iteration_row(step, host, loss_metrics)
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
            t_eval = time.perf_counter()
            row.update(evaluate(model, task, cfg.eval_prompts, cfg.eval_k, rng, device, gen))
            row["eval_seconds"] = time.perf_counter() - t_eval
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if log is not None:
            log(row)
    return history


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


__all__ = ["ModelConfig", "TinyLM", "sample", "token_log_probs", "WarmupConfig", "warmup", "RLConfig", "rl_train",
           "evaluate", "set_seed", "METRICS", "PolicyLag", "k3", "trajectory_drift", "clip_bucket_counts",
           "clip_bucket_fractions", "decision_entropies", "count_distinct_correct"]
