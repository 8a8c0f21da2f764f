"""The verifier tasks added for the bias experiments (symbols, pairsum, filler), the vocabulary extension and the
Task hooks (choices, adapt, accuracy). Statistical checks use fixed seeds and tolerances of several binomial
standard errors of their sample sizes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fiberlab.gpu.tasks import (EOS, LETTERS, PAD, TASKS, TOK, VOCAB, Task, decode, encode, make_task,
                                zipf_weights)

OLD_VOCAB = ["<pad>", "<bos>", "<eos>"] + list("0123456789+=!x.?")


def _batch(seqs, width):
    """Token-id lists (each ending in EOS, or not) → a PAD-padded [n, width] tensor."""
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _answers(texts, width):
    return _batch([encode(t) + [EOS] for t in texts], width)


def test_vocabulary_appends_letters_without_moving_old_ids():
    assert VOCAB[:len(OLD_VOCAB)] == OLD_VOCAB
    assert VOCAB[len(OLD_VOCAB):] == list("abcdefghijklmnop") and LETTERS == "abcdefghijklmnop"
    assert len(set(VOCAB)) == len(VOCAB) == 35
    assert decode(encode("ab.x?p") + [EOS, TOK["a"]]) == "ab.x?p"


def test_registry_and_defaults():
    assert {"symbols", "pairsum", "filler"} <= set(TASKS)
    s, p, f = make_task("symbols"), make_task("pairsum"), make_task("filler")
    assert (s.classes, s.valid, s.length, s.zipf, s.invalid_frac) == (4, 6, 3, 1.5, 0.1)
    assert (s.prompt_len, s.max_response) == (2, 4)
    assert (p.zipf, p.wrong_frac, p.prompt_len, p.max_response) == (1.5, 0.2, 2, 3)
    assert (f.max_n, f.max_pad, f.target, f.prompt_len, f.max_response) == (4, 8, None, 2, 13)
    assert make_task("symbols", length=5).max_response == 6
    for bad in ({"valid": 0}, {"valid": 17}, {"classes": 11}, {"invalid_frac": 1.5}, {"valid": 16}):
        with pytest.raises(ValueError):
            make_task("symbols", **bad)
    with pytest.raises(ValueError):
        make_task("filler", target=0.0)
    with pytest.raises(ValueError):
        make_task("pairsum", wrong_frac=-0.1)


def test_base_hooks_defaults():
    t = make_task("addition")
    _, info = t.prompts(3, np.random.default_rng(0))
    assert t.choices(info, t.max_response) is None
    assert t.adapt(torch.ones(3)) is None
    assert Task.choices is make_task("count").__class__.choices            # count keeps the default


@pytest.mark.parametrize("name", TASKS)
def test_accuracy_equals_reward_without_lottery(name):
    task = make_task(name)
    rng = np.random.default_rng(3)
    _, info = task.prompts(50, rng)
    resp = _batch([task.demonstration(i, rng) for i in info], task.max_response)
    resp[::7, 0] = TOK["?"]                                                # some wrong answers
    assert torch.equal(task.accuracy(info, resp), task.reward(info, resp))


# ---------------------------------------------------------------------------------------------------------------
# symbols
# ---------------------------------------------------------------------------------------------------------------

def _valid_sets(classes=4, valid=6):
    """Independent of the implementation: the brief's construction of each class's ranked valid letters."""
    return [[LETTERS[j] for j in np.random.default_rng(1000 + c).choice(16, valid, replace=False)]
            for c in range(classes)]


def test_symbols_verifier_and_demonstrations():
    task = make_task("symbols")
    ranked = _valid_sets()
    assert [task.valid_letters(c) for c in range(4)] == ["".join(r) for r in ranked]
    rng = np.random.default_rng(0)
    prompts, info = task.prompts(2000, rng)
    assert [decode(p) for p in prompts[:3]] == [f"{c}=" for c in info[:3]] and set(info) == {0, 1, 2, 3}
    demos = [task.demonstration(c, rng) for c in info]
    assert all(len(d) == 4 and d[-1] == EOS for d in demos)
    r = task.reward(info, _batch(demos, task.max_response))
    expect = torch.tensor([float(all(ch in ranked[c] for ch in decode(d))) for c, d in zip(info, demos)])
    assert torch.equal(r, expect)
    # P(all 3 letters valid) = 0.9^3 = 0.729; binomial SE over 2000 is 0.0099
    assert abs(float(r.mean()) - 0.729) < 4 * math.sqrt(0.729 * 0.271 / 2000)
    # wrong answers: an invalid letter, wrong lengths, no EOS
    for c in range(4):
        v = ranked[c]
        inv = next(ch for ch in LETTERS if ch not in v)
        texts = [v[0] * 3, v[0] + v[1] + v[2], v[0] + inv + v[1], v[0] * 2, v[0] * 4, "", "0" + v[0] * 2]
        got = task.reward([c] * len(texts), _answers(texts, 6)).tolist()
        assert got == [1, 1, 0, 0, 0, 0, 0]
    assert float(task.reward([0], torch.tensor([[TOK[ranked[0][0]]] * 4]))[0]) == 0.0        # no EOS


def test_symbols_letter_frequencies_follow_zipf():
    """Per class, the demonstrated letter frequencies (all positions pooled) match (1-f)·Zipf over the ranked
    valid letters and f/10 over the invalid ones; tolerance 5 binomial SEs of n = 3 × 4000 letters per class
    (64 comparisons; a uniform draw over the valid letters would miss rank 1 by > 50 SE)."""
    task = make_task("symbols")
    ranked = _valid_sets()
    w = np.arange(1, 7) ** -1.5
    w /= w.sum()
    rng = np.random.default_rng(1)
    for c in range(4):
        letters = "".join(decode(task.demonstration(c, rng)) for _ in range(4000))
        n = len(letters)
        for ch in LETTERS:
            p = 0.9 * w[ranked[c].index(ch)] if ch in ranked[c] else 0.1 / 10
            obs = letters.count(ch) / n
            assert abs(obs - p) < 5 * math.sqrt(p * (1 - p) / n), (c, ch, obs, p)
    # positions are drawn alike: the first letter alone also puts the most weight on rank 1
    firsts = [decode(task.demonstration(0, rng))[0] for _ in range(3000)]
    p1 = 0.9 * w[0]
    assert abs(firsts.count(ranked[0][0]) / 3000 - p1) < 5 * math.sqrt(p1 * (1 - p1) / 3000)


def test_symbols_choices_mark_exactly_the_valid_letters():
    task = make_task("symbols")
    ranked = _valid_sets()
    info = [0, 1, 2, 3, 2]
    ch = task.choices(info, task.max_response)
    assert ch.dtype == torch.bool and ch.shape == (5, 4, len(VOCAB))
    for row, c in enumerate(info):
        want = torch.zeros(len(VOCAB), dtype=torch.bool)
        want[[TOK[x] for x in ranked[c]]] = True
        for pos in range(3):
            assert torch.equal(ch[row, pos], want)
        assert not ch[row, 3].any()                                           # EOS: unique
    assert task.choices(info, 2).shape == (5, 2, len(VOCAB))
    # and through the verifier: an answer is correct iff each of its letters is marked at its position
    for c in range(4):
        answers = ["".join(t) for t in itertools.product(LETTERS, repeat=3)]
        r = task.reward([c] * len(answers), _answers(answers, 4))
        mark = task.choices([c], 3)[0]
        pred = torch.tensor([float(all(mark[i, TOK[x]] for i, x in enumerate(a))) for a in answers])
        assert torch.equal(r, pred) and int(r.sum()) == 6 ** 3


# ---------------------------------------------------------------------------------------------------------------
# pairsum
# ---------------------------------------------------------------------------------------------------------------

def test_pairsum_has_exactly_ten_correct_answers_per_sum():
    task = make_task("pairsum")
    answers = [f"{x}{y}" for x in range(10) for y in range(10)]
    for s in range(10):
        r = task.reward([s] * 100, _answers(answers, 3))
        got = {a for a, v in zip(answers, r.tolist()) if v == 1.0}
        assert got == {f"{x}{(s - x) % 10}" for x in range(10)} and len(got) == 10
    bad = ["5", "555", "", "a5", "5+"]
    assert task.reward([0] * 5, _answers(bad, 4)).tolist() == [0.0] * 5
    assert float(task.reward([0], torch.tensor([[TOK["5"], TOK["5"], TOK["0"]]]))[0]) == 0.0   # no EOS


def test_pairsum_demonstrations():
    """Wrong fraction ≈ 0.2 and the first digit of correct demonstrations follows Zipf over a fixed per-s
    permutation (5 binomial SEs); wrong demonstrations are really wrong (x + y ≠ s) and spread over all 9."""
    task = make_task("pairsum")
    rng = np.random.default_rng(2)
    prompts, info = task.prompts(20, rng)
    assert [decode(p) for p in prompts[:2]] == [f"{s}=" for s in info[:2]]
    w = np.arange(1, 11) ** -1.5
    w /= w.sum()
    for s in (0, 7):
        perm = np.random.default_rng(2000 + s).permutation(10)
        assert task.first_digits(s) == "".join(map(str, perm))
        demos = [task.demonstration(s, rng) for _ in range(6000)]
        assert all(len(d) == 3 and d[-1] == EOS for d in demos)
        r = task.reward([s] * len(demos), _batch(demos, 3))
        n = len(demos)
        assert abs(1 - float(r.mean()) - 0.2) < 5 * math.sqrt(0.16 / n)
        texts = [decode(d) for d in demos]
        good = [t for t, v in zip(texts, r.tolist()) if v]
        assert all((int(t[0]) + int(t[1])) % 10 == s for t in good)
        wrong_y = {(int(t[1]) - (s - int(t[0]))) % 10 for t, v in zip(texts, r.tolist()) if not v}
        assert wrong_y == set(range(1, 10))
        for rank, x in enumerate(perm):
            p = w[rank]
            obs = sum(t[0] == str(x) for t in good) / len(good)
            assert abs(obs - p) < 5 * math.sqrt(p * (1 - p) / len(good)), (s, rank, obs, p)
    ch = task.choices(info[:3], 3)
    assert ch.shape == (3, 3, len(VOCAB))
    digits = torch.zeros(len(VOCAB), dtype=torch.bool)
    digits[[TOK[d] for d in "0123456789"]] = True
    assert all(torch.equal(ch[i, 0], digits) for i in range(3)) and not ch[:, 1:].any()


# ---------------------------------------------------------------------------------------------------------------
# filler
# ---------------------------------------------------------------------------------------------------------------

def test_filler_verifier_and_demonstrations():
    task = make_task("filler")
    rng = np.random.default_rng(4)
    prompts, info = task.prompts(3000, rng)
    assert [decode(p) for p in prompts[:2]] == [f"{n}?" for n in info[:2]] and set(info) == {1, 2, 3, 4}
    demos = [task.demonstration(n, rng) for n in info]
    assert max(len(d) for d in demos) <= task.max_response
    assert bool((task.reward(info, _batch(demos, task.max_response)) == 1).all())
    pads = np.array([len(decode(d)) - n for d, n in zip(demos, info)])
    assert set(pads.tolist()) == set(range(9))                               # k uniform in 0..max_pad
    assert abs(pads.mean() - 4.0) < 5 * math.sqrt((81 - 1) / 12 / len(pads))
    texts = ["xx", "..xx", "........" + "xx", "x", "xxx", ".x.x", "xx.", "", "..", "?xx"]
    assert task.reward([2] * len(texts), _answers(texts, 13)).tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    ch = task.choices([1, 2], 13)
    assert ch[:, 0].sum(-1).tolist() == [2, 2] and bool(ch[0, 0, TOK["."]] and ch[0, 0, TOK["x"]])
    assert not ch[:, 1:].any()


def _filler_round(task, rng, n, acc):
    """One rollout of n responses, a fraction `acc` of them (exactly, rounded) correct."""
    _, info = task.prompts(n, rng)
    n_ok = round(acc * n)
    texts = ["x" * v if i < n_ok else "x" * (v + 1) for i, v in enumerate(info)]
    return info, _answers(texts, task.max_response)


@pytest.mark.parametrize("target", [0.25, 0.75])
def test_filler_controller_tracks_target(target):
    """At a fixed accuracy 0.9 the controller's estimate converges to 0.9, q to target/0.9, and the realised
    mean reward over the last 150 rollouts (n = 150 × 128) is within 4 binomial SEs of target."""
    task = make_task("filler", target=target)
    assert task.lottery_rate == target and task.accuracy_estimate is None
    rng = np.random.default_rng(5)
    rewards = []
    for it in range(200):
        info, resp = _filler_round(task, rng, 128, 0.9)
        r = task.reward(info, resp)
        assert torch.equal(task.accuracy(info, resp) * r, r)                 # wrong answers get 0
        task.adapt(r)
        if it >= 50:
            rewards.append(r)
    assert abs(task.accuracy_estimate - round(0.9 * 128) / 128) < 1e-9
    assert abs(task.lottery_rate - target / (round(0.9 * 128) / 128)) < 1e-9
    assert abs(task.lottery_rate - target / 0.9) < 0.005
    allr = torch.cat(rewards)
    assert abs(float(allr.mean()) - target) < 4 * math.sqrt(target * (1 - target) / len(allr))


def test_filler_controller_reads_stored_correctness_and_falls_back():
    """adapt() uses the correctness behind the matching rollout even after another reward() call (an
    evaluation) and, for rewards it never produced, the unbiased mean(rewards)/q; accuracy below the target
    gives q = 1."""
    task = make_task("filler", target=0.75)
    rng = np.random.default_rng(6)
    info, resp = _filler_round(task, rng, 64, 0.5)
    r = task.reward(info, resp)
    info2, resp2 = _filler_round(task, rng, 32, 1.0)
    task.reward(info2, resp2)                                                  # an evaluation in between
    task.adapt(r)
    assert task.accuracy_estimate == 0.5 and task.lottery_rate == 1.0
    task.adapt(torch.full((10,), 0.5))                                       # unknown batch: 0.5 / q(=1)
    assert abs(task.accuracy_estimate - 0.5) < 1e-12
    plain = make_task("filler")
    plain.adapt(torch.ones(4))
    assert plain.accuracy_estimate is None and plain.lottery_rate == 1.0


def test_filler_lottery_is_per_response_and_seeded():
    task = make_task("filler", target=0.5)
    rng = np.random.default_rng(7)
    _, info = task.prompts(1, rng)
    same = [info[0]] * 400                                                   # one prompt, 400 correct responses
    resp = _answers(["x" * info[0]] * 400, task.max_response)
    r = task.reward(same, resp)
    assert 0 < float(r.mean()) < 1 and float(r.min()) == 0 and float(r.max()) == 1
    assert abs(float(r.mean()) - 0.5) < 4 * math.sqrt(0.25 / 400)
    assert bool((task.accuracy(same, resp) == 1).all())
    # reproducible from the rng passed to prompts
    t2 = make_task("filler", target=0.5)
    t2.prompts(1, np.random.default_rng(7))
    assert torch.equal(t2.reward(same, resp), r)
    # without a target the stream of prompts' rng is the plain task's (no lottery draw)
    a, b = np.random.default_rng(8), np.random.default_rng(8)
    make_task("filler").prompts(5, a)
    make_task("count", max_n=4).prompts(5, b)
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_zipf_weights():
    w = zipf_weights(4, 1.0)
    assert np.allclose(w, np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
