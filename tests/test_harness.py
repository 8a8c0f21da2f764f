"""The training harness: the KV-cached sampler against a full forward pass, the verifiers against their own
demonstrations, and one short RL run per registered objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fiberlab.gpu.harness import (ModelConfig, RLConfig, TinyLM, WarmupConfig, evaluate, rl_train, sample,
                                  token_log_probs, warmup)
from fiberlab.gpu.losses import POLICY_LOSSES
from fiberlab.gpu.tasks import EOS, PAD, TASKS, decode, encode, make_task

CPU = torch.device("cpu")
# float32 attention with and without a cache sums the same products in a different order: ~1e-6 relative.
CACHE_TOL = 1e-5


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyLM(ModelConfig(**kw)).eval()


@torch.no_grad()
def test_cached_decoding_equals_full_forward():
    """Incremental decoding into the preallocated cache (a prefill, a chunk after a prefix, then one token at a
    time) against one full teacher-forced forward pass."""
    model = _model()
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(3, len(encode("0")) + 15, (5, 12), generator=g)
    full, _ = model(seq)
    caches = model.new_cache(5, 12)
    assert caches[0][0].shape == (5, 4, 12, 16)
    logits, caches = model(seq[:, :4], caches)                 # prefill, causal
    steps = [logits]
    logits, caches = model(seq[:, 4:7], caches, start=4)       # a chunk after the prefix (explicit mask)
    steps.append(logits)
    for t in range(7, 12):                                     # one token at a time
        logits, caches = model(seq[:, t:t + 1], caches, start=t)
        steps.append(logits)
    inc = torch.cat(steps, 1)
    assert inc.shape == full.shape
    assert float((inc - full).abs().max()) <= CACHE_TOL * max(1.0, float(full.abs().max()))
    with pytest.raises(ValueError, match="cache"):
        model(seq[:, :1], model.new_cache(5, 4), start=4)


@torch.no_grad()
def test_sampling_stops_early_with_the_same_output():
    """A model that ends most answers at once: early stopping skips the remaining steps (fewer forward passes)
    and returns exactly what decoding all max_new steps returns with the same generator."""
    model = _model(8)
    model.head.weight.zero_()
    model.ln.weight.zero_()
    model.ln.bias.zero_()
    model.ln.bias[0] = 3.0
    model.head.weight[EOS, 0] = 1.0        # logit(EOS) = 3, the rest 0: P(EOS) = e³/(e³+18) ≈ 0.53 per step
    prompts = torch.randint(3, 10, (16, 5), generator=torch.Generator().manual_seed(0))
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    early = sample(model, prompts, 30, torch.Generator().manual_seed(3))
    n_early = len(calls)
    calls.clear()
    full = sample(model, prompts, 30, torch.Generator().manual_seed(3), stop_early=False)
    n_full = len(calls)
    hook.remove()
    assert n_early < n_full == 30                  # it did stop early
    assert torch.equal(early[0], full[0]) and torch.equal(early[1], full[1])
    assert not bool(early[1][:, -1].any()) and bool((early[0][:, n_early:] == PAD).all())


def test_sample_masks_after_eos_and_log_probs_match_the_sampler():
    model = _model(3)
    task = make_task("reversal")
    prompts, _ = task.prompts(64, np.random.default_rng(0))
    resp, mask = sample(model, prompts, task.max_response, torch.Generator().manual_seed(0))
    for r, m in zip(resp.tolist(), mask.tolist()):
        if EOS in r:
            e = r.index(EOS)
            assert all(m[:e + 1]) and not any(m[e + 1:]) and all(x == PAD for x in r[e + 1:])
        else:
            assert all(m)
    lp, ent = token_log_probs(model, prompts, resp, with_entropy=True)
    assert lp.shape == resp.shape and bool((lp[mask] <= 0).all()) and bool((ent >= -1e-6).all())
    # the same log-probs by an explicit per-position forward pass (no teacher-forcing shortcut)
    row = 0
    ctx = torch.cat([torch.tensor([1]), prompts[row]])
    for t in range(int(mask[row].sum())):
        logits, _ = model(torch.cat([ctx, resp[row, :t]])[None])
        ref = torch.log_softmax(logits[0, -1], -1)[resp[row, t]]
        assert abs(float(ref - lp[row, t])) < 1e-5


@pytest.mark.parametrize("name", TASKS)
def test_verifiers_accept_their_demonstrations(name):
    # symbols and pairsum demonstrate some wrong answers on purpose (tests/test_tasks.py checks those rates);
    # without them every demonstration must score
    task = make_task(name, **{"symbols": {"invalid_frac": 0.0}, "pairsum": {"wrong_frac": 0.0}}.get(name, {}))
    rng = np.random.default_rng(0)
    prompts, info = task.prompts(200, rng)
    assert prompts.shape == (200, task.prompt_len)
    demos = [task.demonstration(i, rng) for i in info]
    assert max(len(d) for d in demos) <= task.max_response
    resp = torch.full((200, task.max_response), PAD)
    for i, d in enumerate(demos):
        resp[i, :len(d)] = torch.tensor(d)
    r = task.reward(info, resp)
    if name == "tail":       # mostly the unrewarded habit; the rewarded answer starts with the rare '!'
        starts = np.array([decode(d).startswith("!") for d in demos])
        assert np.array_equal(r.numpy() > 0.5, starts) and 0 < starts.mean() < 0.2
    else:
        assert bool((r == 1).all())
    # a response without EOS never scores; a wrong answer scores 0
    assert float(task.reward(info[:1], torch.full((1, task.max_response), encode("1")[0]))[0]) == 0.0


def test_tail_with_two_markers():
    """Two rewarded answers, one per marker, each demonstrated about half of the tail fraction of the time; a
    marker on the wrong string, a doubled marker or the bare reversal scores 0; bad markers are refused."""
    task = make_task("tail", bits=5, tail_fraction=0.5, markers="!?")
    rng = np.random.default_rng(0)
    prompts, info = task.prompts(400, rng)
    demos = [decode(task.demonstration(i, rng)) for i in info]
    firsts = [d[0] for d in demos]
    # each marker with probability 0.25: 100 expected of 400, binomial sd ≈ 8.7, so 60..140 is ±4.6 sd
    assert all(60 < firsts.count(m) < 140 for m in "!?") and firsts.count("!") + firsts.count("?") < 260
    s = info[0]
    cases = {"!" + s[::-1]: 1.0, "?" + s[::-1]: 1.0, "!" + s: float(s == s[::-1]), "!!" + s[::-1][:-1]: 0.0,
             s[::-1]: 0.0, "x" + s[::-1]: 0.0}
    for answer, want in cases.items():
        resp = torch.full((1, task.max_response), PAD)
        ids = encode(answer) + [EOS]
        resp[0, :len(ids)] = torch.tensor(ids)
        assert float(task.reward(info[:1], resp)[0]) == want, answer
    for bad in ("", "!!", "é"):
        with pytest.raises(ValueError, match="markers"):
            make_task("tail", markers=bad)


def test_unknown_task():
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("sudoku")


def test_warmup_lowers_the_loss():
    model = _model(4).train()
    losses = warmup(model, make_task("parity"), WarmupConfig(steps=40), np.random.default_rng(0), CPU)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.parametrize("objective", sorted(POLICY_LOSSES))
def test_rl_runs_with_every_registered_objective(objective):
    model = _model(5).train()
    task = make_task("addition", digits=1)
    warmup(model, task, WarmupConfig(steps=20), np.random.default_rng(0), CPU)
    hist = rl_train(model, task, RLConfig(objective=objective, steps=2, prompts_per_step=4, group_size=4,
                                          eval_prompts=8, eval_k=4, eval_every=1), seed=0, device=CPU)
    assert len(hist) == 2
    for row in hist:
        for key in ("reward", "entropy", "ratio_mean", "grad_norm", "kl_to_start", "pass@1", "pass@4"):
            assert math.isfinite(row[key]), (key, row)
    assert hist[0]["kl_to_start"] == pytest.approx(0.0, abs=1e-6)     # first rollout is the start policy
    for row in hist:   # the wrong answers' length is logged exactly when some answer is wrong, and is a length
        assert ("length_wrong" in row) == (row["reward"] < 1.0), row
        if "length_wrong" in row:
            assert 1.0 <= row["length_wrong"] <= task.max_response


def test_evaluate_pass_at_k_dominates_pass_at_1():
    model = _model(6)
    out = evaluate(model, make_task("parity"), 32, 8, np.random.default_rng(0), CPU, torch.Generator().manual_seed(0))
    assert 0 <= out["pass@1"] <= out["pass@8"] <= 1


def test_prefix_state_ids_identify_equal_prefixes():
    from fiberlab.gpu.harness import prefix_state_ids
    prompts = torch.tensor([[3, 4], [3, 4], [5, 4]])
    resp = torch.tensor([[6, 7, 8], [6, 9, 8], [6, 7, 8]])
    ids = prefix_state_ids(prompts, resp)
    # position 0: rows 0 and 1 share the prompt; position 1: rows 0 and 1 share prompt+6; position 2 differs
    assert ids[0, 0] == ids[1, 0] != ids[2, 0]
    assert ids[0, 1] == ids[1, 1] != ids[2, 1]
    assert ids[0, 2] != ids[1, 2]
    assert len(set(ids.flatten().tolist())) == 7          # 9 positions, two shared


def test_clip_fractions_see_ppo_clipping():
    """Eight updates at a high learning rate push PPO's ratios out of [0.8, 1.2]: the harness's gradient-based
    clip fractions must see it; LPO (no clip) never blocks a token with a nonzero weight."""
    model = _model(7).train()
    task = make_task("addition", digits=1)
    warmup(model, task, WarmupConfig(steps=30), np.random.default_rng(0), CPU)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RLConfig(objective="ppo", steps=3, updates_per_step=8, lr=5e-3, eval_every=0)
    hist = rl_train(model, task, cfg, seed=0, device=CPU)
    assert max(r["clip_high_frac"] + r["clip_low_frac"] for r in hist) > 0
    assert max(v for r in hist for key, v in r.items() if key.startswith("clip_frac/")) > 0
    model.load_state_dict(state)
    hist = rl_train(model, task, RLConfig(objective="lpo", steps=2, updates_per_step=8, lr=5e-3, eval_every=0),
                    seed=0, device=CPU)
    assert all(r["clip_high_frac"] == 0 and r["clip_low_frac"] == 0 for r in hist)


# --------------------------------------------------------------------------------------------------------------
# Off-policy knobs and mechanism metrics
# --------------------------------------------------------------------------------------------------------------

import fiberlab.gpu.harness as H  # noqa: E402


def _warm(seed=5, steps=20):
    model = _model(seed).train()
    task = make_task("addition", digits=1)
    warmup(model, task, WarmupConfig(steps=steps), np.random.default_rng(0), CPU)
    return model, task


def _recording_loss(monkeypatch, calls):
    """Patch the harness's loss lookup: every call records (old_log_prob, log_prob, extras) and runs the loss."""
    real = H.get_policy_loss

    def lookup(name):
        fn = real(name)

        def wrapped(old, lp, *a, **kw):
            calls.append((old.detach().clone(), lp.detach().clone(), kw))
            return fn(old, lp, *a, **kw)
        return wrapped
    monkeypatch.setattr(H, "get_policy_loss", lookup)


def test_on_policy_first_update_sees_ratio_exactly_one(monkeypatch):
    calls = []
    _recording_loss(monkeypatch, calls)
    model, task = _warm()
    hist = rl_train(model, task, RLConfig(steps=1, prompts_per_step=4, group_size=4, updates_per_step=1,
                                          eval_every=0), seed=0, device=CPU)
    assert len(calls) == 1 and torch.equal(calls[0][0], calls[0][1])
    row = hist[0]
    assert row["ratio_mean"] == 1.0 and row["ratio_max"] == 1.0
    assert row["kl_old_k3"] == 0.0 and row["kl_old_k3_last"] == 0.0 and row["drift_p90"] == 0.0
    assert row["kl_start_k3"] == pytest.approx(0.0, abs=1e-7)


def test_policy_lag_fifo():
    lag = H.PolicyLag(2)
    got = [int(lag.push({"w": torch.tensor(float(s))})["w"]) for s in range(6)]
    assert got == [0, 0, 0, 1, 2, 3]                 # the start policy during the first 2 iterations
    assert [int(H.PolicyLag(0).push({"w": torch.tensor(float(s))})["w"]) for s in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("lag", [0, 2])
def test_rollout_lag_makes_pi_old_stale(monkeypatch, lag):
    """The first mini-batch of every iteration: with lag 0, π_old is the current policy (ratio exactly 1);
    with lag 2 it is the start policy at iterations 1 and 2 and the policy of two iterations earlier after, so
    the ratios differ from 1 from iteration 1 on (iteration 0 samples the current = start policy)."""
    calls = []
    _recording_loss(monkeypatch, calls)
    model, task = _warm()
    steps, updates = 5, 2
    hist = rl_train(model, task, RLConfig(steps=steps, prompts_per_step=4, group_size=4, updates_per_step=updates,
                                          rollout_lag=lag, lr=3e-3, eval_every=0), seed=0, device=CPU)
    firsts = calls[::updates]
    assert len(firsts) == steps
    assert torch.equal(firsts[0][0], firsts[0][1])
    for it in range(1, steps):
        old, lp, _ = firsts[it]
        if lag == 0:
            assert torch.equal(old, lp), it
        else:
            assert float((old - lp).abs().max()) > 1e-4, it
            assert hist[it]["kl_old_k3"] > 0
    # π_old is the start policy through iteration `lag`: KL(π_old ‖ π_start) vanishes there
    for it in range(lag + 1):
        assert hist[it]["kl_start_k3"] == pytest.approx(0.0, abs=1e-7)
        assert hist[it]["kl_to_start"] == pytest.approx(0.0, abs=1e-6)


def test_epochs_times_minibatches_optimiser_steps(monkeypatch):
    """epochs=2, updates_per_step=2: four optimiser steps (and loss calls) per iteration, and each epoch's
    mini-batches cover every group exactly once (whole groups; LPO's extras carry the group ids)."""
    count = []

    class Counting(torch.optim.AdamW):
        def step(self, *a, **kw):
            count.append(1)
            return super().step(*a, **kw)
    model, task = _warm()                            # the warm-up's own optimiser is not counted
    monkeypatch.setattr(torch.optim, "AdamW", Counting)
    calls = []
    _recording_loss(monkeypatch, calls)
    rl_train(model, task, RLConfig(objective="lpo", steps=3, prompts_per_step=4, group_size=4, updates_per_step=2,
                                   epochs=2, eval_every=0), seed=0, device=CPU)
    assert len(count) == 12 and len(calls) == 12
    for it in range(3):
        for ep in range(2):
            ids = [c[2]["group_ids"] for c in calls[4 * it + 2 * ep: 4 * it + 2 * ep + 2]]
            seen = torch.cat(ids)
            assert sorted(seen.tolist()) == sorted(list(range(4)) * 4)          # every group, whole, once
            assert all(len(set(i.tolist())) == 2 and len(i) == 8 for i in ids)  # two whole groups each
    with pytest.raises(ValueError, match="epochs"):
        rl_train(model, task, RLConfig(epochs=0), seed=0, device=CPU)
    with pytest.raises(ValueError, match="updates_per_step"):
        rl_train(model, task, RLConfig(prompts_per_step=2, updates_per_step=3), seed=0, device=CPU)


def test_clip_bucket_fractions_by_hand():
    """Two rows of four tokens; π_old probabilities 0.05 / 0.3 / 0.2 / 0.5 (the boundary, exact in float: top
    bucket); the last token of row 1 is masked, and an A = 0 token counts in no cell."""
    p = torch.tensor([[0.05, 0.3, 0.2, 0.5], [0.05, 0.05, 0.9, 0.9]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    g = torch.tensor([[0.0, 0.1, 0.0, 0.2], [0.0, 0.3, 0.0, 0.0]])       # g == 0: sent no gradient
    blocked, tokens = H.clip_bucket_counts(g, p.log(), adv, mask)
    # cells: p<0.1 pos: (0,0) blocked, (1,1) not → 1/2; p<0.1 neg: (1,0) blocked → 1/1;
    # 0.1<=p<0.5 pos: (0,1) not → 0/1; 0.1<=p<0.5 neg: (0,2) blocked → 1/1; p>=0.5 neg: (0,3) not → 0/1;
    # p>=0.5 pos: (1,3) masked, (1,2) has A = 0 → no token, key absent
    assert tokens.tolist() == [[2, 1], [1, 1], [0, 1]]
    assert blocked.tolist() == [[1, 1], [0, 1], [0, 0]]
    fr = H.clip_bucket_fractions(blocked * 2, tokens * 2)                  # pooled counts over mini-batches
    assert fr == {"clip_frac/p<0.1/pos": 0.5, "clip_frac/p<0.1/neg": 1.0, "clip_frac/0.1<=p<0.5/pos": 0.0,
                  "clip_frac/0.1<=p<0.5/neg": 1.0, "clip_frac/p>=0.5/neg": 0.0}


def test_decision_entropies_closed_form():
    """π over 5 tokens; position 0: valid {0, 1, 2} with equal π → H(q) = log 3; position 1: valid {3, 4} with
    π ∝ (1, 3) there → H(q) = binary entropy of 1/4; position 2: one valid token → not a decision position;
    position 3 is masked out."""
    probs = torch.tensor([[[0.1, 0.1, 0.1, 0.3, 0.4], [0.2, 0.2, 0.4, 0.05, 0.15],
                           [0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]]])
    valid = torch.zeros(1, 4, 5, dtype=torch.bool)
    valid[0, 0, :3] = True
    valid[0, 1, 3:] = True
    valid[0, 2, 0] = True
    valid[0, 3, :] = True
    mask = torch.tensor([[True, True, True, False]])
    decision, full, hv = H.decision_entropies(probs.log(), valid, mask)
    assert decision.tolist() == [[True, True, False, False]]
    assert float(hv[0, 0]) == pytest.approx(math.log(3), abs=1e-6)
    assert float(hv[0, 1]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    assert float(full[0, 0]) == pytest.approx(-sum(x * math.log(x) for x in probs[0, 0].tolist()), abs=1e-6)
    assert bool(torch.isfinite(hv[decision]).all())


def test_count_distinct_correct():
    def resp(*answers):
        out = torch.full((len(answers), 6), PAD)
        for i, a in enumerate(answers):
            ids = encode(a) + [EOS]
            out[i, :len(ids)] = torch.tensor(ids)
        return out
    r = resp("01", "01", "10", "1", "0", "1")
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    # prompt 0: {"01", "10"} correct → 2; prompt 1: "1" twice correct, "0" wrong → 1
    assert H.count_distinct_correct(r, rewards, 3) == 1.5
    assert H.count_distinct_correct(r, torch.zeros(6), 3) == 0.0


class _AdaptiveChoiceTask:
    """Reversal with the two hooks: ``adapt`` records every rollout's rewards; ``choices`` marks two tokens at
    every position (so every response position is a decision position)."""

    def __init__(self):
        self.base = make_task("reversal", bits=3)
        self.seen = []

    def __getattr__(self, name):
        return getattr(self.base, name)

    def adapt(self, rewards):
        self.seen.append(rewards.clone())

    def choices(self, info, length):
        v = torch.zeros(len(info), length, len(H.VOCAB), dtype=torch.bool)
        v[..., encode("0")[0]] = v[..., encode("1")[0]] = True
        return v


def test_task_hooks_and_metric_keys():
    task = _AdaptiveChoiceTask()
    model = _model(9).train()
    cfg = RLConfig(steps=2, prompts_per_step=4, group_size=4, eval_prompts=8, eval_k=4, eval_every=1)
    hist = rl_train(model, task, cfg, seed=0, device=CPU)
    assert len(task.seen) == 2 and all(r.shape == (16,) for r in task.seen)     # rollouts only, not evaluation
    assert [float(r.mean()) for r in task.seen] == [row["reward"] for row in hist]
    patterns = [k.split("<")[0] for key in H.METRICS for k in key.split(", ")]
    for row in hist:
        assert 0 <= row["entropy_valid"] <= math.log(2) + 1e-6
        assert 0 <= row["entropy_decision"] <= math.log(len(H.VOCAB)) + 1e-6
        assert row["eval_seconds"] <= row["seconds"] and 0 <= row["distinct_correct"] <= 4
        assert row["grad_norm_max"] >= row["grad_norm"] and row["drift_p90"] >= row["drift_p50"] >= 0
        assert 0 <= row["empty_frac"] <= 1
        for key, v in row.items():
            assert any(key == p or (key.startswith(p) and p.endswith("/") or key.startswith(p) and p == "pass@")
                       for p in patterns), key
            assert math.isfinite(v), key
