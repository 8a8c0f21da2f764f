"""A small-model RL harness: a decoder-only transformer trained from scratch on tasks with exact verifiers.

Read it top to bottom: the model (a plain causal transformer with a KV cache), sampling, token log-probabilities,
the supervised warm-up, and the RL loop, which calls any policy loss of :mod:`fiberlab.gpu.losses` by name with
verl's ``(loss, metrics)`` contract. Same code on CPU and CUDA; configuration as dataclasses.

One RL iteration: sample ``prompts_per_step`` prompts, ``group_size`` responses each from the current policy
(π_old), reward them with the task's verifier, compute advantages with the advantage registry, then take
``updates_per_step`` optimiser steps over mini-batches of the rollout (every step after the first is
off-policy, as in the papers' two-mini-batch setting).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.gpu.tasks import BOS, EOS, PAD, VOCAB, Task

# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int = len(VOCAB)
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    max_len: int = 48


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model))

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, t, self.n_head, d // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        if cache is not None:                                    # decoding: attend to every cached position
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x)), (k, v)


class TinyLM(nn.Module):
    """Causal transformer LM; ``forward(tokens, caches)`` returns logits and the updated KV caches."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, caches: list | None = None, start: int = 0
                ) -> tuple[torch.Tensor, list]:
        t = tokens.shape[1]
        if start + t > self.cfg.max_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_len={self.cfg.max_len}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)[None]
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if caches is None else caches[i])
            new.append(kv)
        return self.head(self.ln(x)), new

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------------------------------
# Sampling and log-probabilities
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def sample(model: TinyLM, prompts: torch.Tensor, max_new: int, generator: torch.Generator | None = None,
           temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses after ``[BOS] + prompt`` with a KV cache (cost linear in the response length).

    Returns ``(responses [N, max_new], mask [N, max_new])``: tokens after the first EOS are PAD and masked out;
    the EOS itself is part of the response (its probability is learned like any other token).
    """
    n = prompts.shape[0]
    dev = prompts.device
    ctx = torch.cat([torch.full((n, 1), BOS, device=dev, dtype=torch.long), prompts], 1)
    logits, caches = model(ctx)
    pos = ctx.shape[1]
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
        if t + 1 < max_new:
            logits, caches = model(nxt[:, None], caches, start=pos)
            pos += 1
    return out, mask


def token_log_probs(model: TinyLM, prompts: torch.Tensor, responses: torch.Tensor,
                    with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log π(response_t | BOS, prompt, response_<t)`` as ``[N, L]`` (teacher forcing, one forward pass),
    and optionally the per-position entropy of π."""
    n, p = prompts.shape
    bos = torch.full((n, 1), BOS, device=prompts.device, dtype=torch.long)
    seq = torch.cat([bos, prompts, responses], 1)
    logits, _ = model(seq[:, :-1])
    logits = logits[:, p:].float()                                   # positions predicting the response
    logp = torch.log_softmax(logits, -1)
    lp = logp.gather(-1, responses[..., None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1) if with_entropy else None
    return lp, ent


# --------------------------------------------------------------------------------------------------------------
# Supervised warm-up
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class WarmupConfig:
    steps: int = 300
    batch: int = 64
    lr: float = 3e-3


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
    objective: str = "ppo"
    advantage: str = "grpo"
    loss_agg_mode: str = "token-mean"
    loss_config: dict = dataclasses.field(default_factory=dict)
    steps: int = 100
    prompts_per_step: int = 16
    group_size: int = 8
    updates_per_step: int = 2
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    eval_prompts: int = 64
    eval_k: int = 8
    eval_every: int = 10


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
    """Named extras the structured objectives need: rewards and group ids (LPO), group and domain ids
    (FiberPO-Domain; one domain per task), per-token state ids (APC-Obj)."""
    if objective.startswith("lpo"):
        return {"rewards": rewards, "group_ids": group_ids}
    if objective == "fiberpo_domain":
        return {"group_ids": group_ids, "domain_ids": torch.zeros_like(group_ids)}
    if objective == "apc":
        return {"state_ids": prefix_state_ids(prompts, responses)}
    return {}


@torch.no_grad()
def evaluate(model: TinyLM, task: Task, n: int, k: int, rng: np.random.Generator, device: torch.device,
             generator: torch.Generator) -> dict[str, float]:
    """pass@1 (mean reward of single samples) and pass@k (any of k samples correct) on fresh prompts."""
    prompts, info = task.prompts(n, rng)
    rep = prompts.repeat_interleave(k, 0).to(device)
    resp, _ = sample(model, rep, task.max_response, generator)
    r = task.reward([i for i in info for _ in range(k)], resp.cpu()).view(n, k)
    return {"pass@1": float(r.mean()), f"pass@{k}": float((r > 0.5).any(1).float().mean())}


def rl_train(model: TinyLM, task: Task, cfg: RLConfig, seed: int, device: torch.device,
             log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``cfg.steps`` RL iterations; returns (and passes to ``log``) one metrics dict per iteration."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device.type).manual_seed(seed)
    loss_fn = get_policy_loss(cfg.objective)
    adv_fn = get_advantage(cfg.advantage)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_model = TinyLM(model.cfg).to(device)
    start_model.load_state_dict(ref)
    history = []
    k = cfg.group_size
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        prompts, info = task.prompts(cfg.prompts_per_step, rng)
        rep = prompts.repeat_interleave(k, 0).to(device)
        resp, mask = sample(model, rep, task.max_response, gen)
        rewards = task.reward([i for i in info for _ in range(k)], resp.cpu()).to(device)
        group_ids = torch.arange(cfg.prompts_per_step, device=device).repeat_interleave(k)
        with torch.no_grad():
            # π_old recomputed by the training forward pass, not taken from the sampler, as verl does: the
            # cached decoding rounds differently, and the first update must see ratios of exactly 1.
            old_lp, _ = token_log_probs(model, rep, resp)
            start_lp, _ = token_log_probs(start_model, rep, resp)
        adv = adv_fn(rewards, group_ids)[:, None] * mask
        n = rep.shape[0]
        # Mini-batches of whole groups (LPO and FiberPO-Domain aggregate over a group), prompts shuffled.
        order = torch.randperm(cfg.prompts_per_step, generator=gen, device=device)
        chunks = torch.arange(n, device=device).view(cfg.prompts_per_step, k)[order].chunk(cfg.updates_per_step)
        agg: dict[str, list[float]] = {}
        for idx in chunks:
            idx = idx.reshape(-1)
            lp, ent = token_log_probs(model, rep[idx], resp[idx], with_entropy=True)
            loss, metrics = loss_fn(old_lp[idx], lp, adv[idx], mask[idx], cfg.loss_agg_mode, cfg.loss_config,
                                    **_extras(cfg.objective, rewards[idx], group_ids[idx], rep[idx], resp[idx]))
            # Objective-agnostic clip fractions: a token is clipped when the loss sends it no gradient although its
            # advantage is nonzero ("high": A > 0, the ratio hit the upper bound; "low": A < 0, the lower one).
            (g_tok,) = torch.autograd.grad(loss, lp, retain_graph=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            with torch.no_grad():
                m = mask[idx].float()
                ratio = torch.exp((lp.detach() - old_lp[idx]).clamp(-20, 20))
                metrics = dict(metrics)
                metrics["grad_norm"] = float(gnorm)
                metrics["entropy"] = float((ent * m).sum() / m.sum())
                metrics["ratio_mean"] = float((ratio * m).sum() / m.sum())
                metrics["ratio_max"] = float((ratio * m).max())
                blocked = (g_tok == 0) & mask[idx]
                a = adv[idx]
                metrics["clip_high_frac"] = float((blocked & (a > 0)).float().sum() / m.sum())
                metrics["clip_low_frac"] = float((blocked & (a < 0)).float().sum() / m.sum())
            for key, v in metrics.items():
                agg.setdefault(key, []).append(float(v))
        lengths = mask.float().sum(1)
        row = {"step": step, "reward": float(rewards.mean()),
               "response_length": float(lengths.mean()),
               "kl_to_start": float(((old_lp - start_lp) * mask).sum() / mask.sum()),
               **{key: float(np.mean(v)) for key, v in agg.items()}}
        if key_max := agg.get("ratio_max"):
            row["ratio_max"] = float(np.max(key_max))
        wrong = rewards < 0.5
        if bool(wrong.any()):                            # the answers a length bias acts through (Dr.GRPO)
            row["length_wrong"] = float(lengths[wrong].mean())
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
            row.update(evaluate(model, task, cfg.eval_prompts, cfg.eval_k, rng, device, gen))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if log is not None:
            log(row)
    return history


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


__all__ = ["ModelConfig", "TinyLM", "sample", "token_log_probs", "WarmupConfig", "warmup", "RLConfig", "rl_train",
           "evaluate", "set_seed"]
