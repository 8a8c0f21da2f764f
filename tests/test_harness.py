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
    model = _model()
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(3, len(encode("0")) + 15, (5, 12), generator=g)
    full, _ = model(seq)
    logits, caches = model(seq[:, :4])
    steps = [logits[:, -1]]
    for t in range(4, 12):
        logits, caches = model(seq[:, t:t + 1], caches, start=t)
        steps.append(logits[:, -1])
    inc = torch.stack(steps[:-1], 1)
    assert float((inc - full[:, 3:11]).abs().max()) <= CACHE_TOL * max(1.0, float(full.abs().max()))


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
    task = make_task(name)
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
    model.load_state_dict(state)
    hist = rl_train(model, task, RLConfig(objective="lpo", steps=2, updates_per_step=8, lr=5e-3, eval_every=0),
                    seed=0, device=CPU)
    assert all(r["clip_high_frac"] == 0 and r["clip_low_frac"] == 0 for r in hist)
