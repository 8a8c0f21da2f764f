"""Tasks with exact verifiers for the training harness: they generate their own data, no hub needed.

Every task shares one character vocabulary (:data:`VOCAB`: three specials, then ``0123456789+=!x.?``, then the
16 letters ``abcdefghijklmnop``; new symbols are only ever appended, so token ids never change) and gives

* ``prompts(n, rng)`` → ``(tokens [n, P] int64, info)``: fixed-length prompts and what the verifier needs;
* ``demonstration(info, rng)`` → one response (a list of token ids ending in EOS) for the supervised warm-up;
* ``correct(info, answer)``: the exact verifier on a decoded answer;
* ``reward(info, responses)`` → ``[n]`` float rewards for responses ``[n, L]`` (token ids; everything after the
  first EOS is ignored; a response without EOS gets 0);
* ``accuracy(info, responses)`` → ``[n]`` float correctness (0/1): the reward without any lottery (see
  ``filler``); equal to ``reward`` for every other task;
* ``max_response`` (tokens, EOS included);
* two hooks for the harness, with defaults on :class:`Task`: ``choices(info, length)`` (which tokens keep the
  answer correct where the correct answer is not unique, for entropy at decision positions; default ``None``)
  and ``adapt(rewards)`` (called once per RL iteration with the rollout rewards: a difficulty controller;
  default no-op).

Tasks and what each exposes:

* ``addition``: ``a+b=`` with k-digit operands, answer the decimal sum — a binary reward with controllable
  difficulty; answers have k or k+1 digits (mild length variation).
* ``reversal``: a bit string, answer it reversed.
* ``parity``: a bit string, answer its parity — one-token answers.
* ``tail``: a bit string; the warm-up demonstrations mostly copy it (rewarded 0) and only a fraction
  ``tail_fraction`` answer ``!`` + the reversed string (rewarded 1): after warm-up the correct answer starts with
  a low-probability token, the case BandPO's tail-token argument is about.
* ``count``: a digit n; answer ``n`` copies of ``x`` — the answer length is the task, and extra padding tokens
  ``.`` may precede it (rewarded the same), so response length can drift freely: the length behaviour GRPO,
  Dr.GRPO and FiberPO differ on.
* ``symbols``: a class digit c and ``=``; answer ``length`` letters, each from the class's fixed set of
  ``valid`` letters — many correct answers, demonstrated with Zipf-skewed letter frequencies (plus a fraction
  ``invalid_frac`` of invalid letters): the entropy / tail-token predictions of BandPO, with ``choices`` marking
  the valid letters at every answer position.
* ``pairsum``: a digit s and ``=``; answer two digits ``xy`` with ``(x + y) mod 10 == s`` — 10 correct answers
  of 100, demonstrated with Zipf-skewed first digits (some correct answers start out rare) and a fraction
  ``wrong_frac`` of wrong ones: LPO's mode-coverage prediction.
* ``filler``: ``count`` with free fillers, for the length bias of per-sequence ``1/|y|`` normalisation; with
  ``target`` set, the reward of a correct answer is a Bernoulli lottery, independent of the response, whose
  rate ``adapt`` controls so that the rollout pass rate tracks ``target`` (the pass rate at which the bias is
  measured), without the reward carrying any information about length.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

PAD, BOS, EOS = 0, 1, 2
LETTERS = "abcdefghijklmnop"
_SYMBOLS = list("0123456789+=!x.?") + list(LETTERS)
VOCAB: list[str] = ["<pad>", "<bos>", "<eos>"] + _SYMBOLS
TOK = {s: i for i, s in enumerate(VOCAB)}
DIGITS = "0123456789"


def encode(text: str) -> list[int]:
    return [TOK[c] for c in text]


def decode(ids: Any) -> str:
    out = []
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == EOS:
            break
        out.append(VOCAB[i] if i > EOS else "")
    return "".join(out)


def _answers(responses: torch.Tensor) -> list[str | None]:
    """Decoded answers; ``None`` where a response has no EOS (it never finished)."""
    rows = responses.tolist()
    return [decode(r) if EOS in r else None for r in rows]


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Normalised weights :math:`p_r \\propto r^{-s}` over ranks ``r = 1..n``."""
    w = np.arange(1, n + 1, dtype=np.float64) ** (-float(exponent))
    return w / w.sum()


@dataclasses.dataclass
class Task:
    name: str
    prompt_len: int
    max_response: int

    def prompts(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[Any]]:
        raise NotImplementedError

    def demonstration(self, info: Any, rng: np.random.Generator) -> list[int]:
        raise NotImplementedError

    def correct(self, info: Any, answer: str) -> float:
        raise NotImplementedError

    def accuracy(self, info: list[Any], responses: torch.Tensor) -> torch.Tensor:
        """``[n]`` float32 correctness (1/0) of responses ``[n, L]``: the exact verifier, no lottery; a response
        without EOS is wrong."""
        answers = _answers(responses)
        return torch.tensor([0.0 if a is None else float(self.correct(i, a)) for i, a in zip(info, answers)],
                            dtype=torch.float32)

    def reward(self, info: list[Any], responses: torch.Tensor) -> torch.Tensor:
        """``[n]`` float32 rewards; the correctness itself unless a task adds a lottery (``filler``)."""
        return self.accuracy(info, responses)

    def choices(self, info: list[Any], length: int) -> torch.Tensor | None:
        """Where the correct answer is not unique: a bool tensor ``[n, length, len(VOCAB)]`` marking, at each
        response position (0-based, ``length`` of them), the tokens that keep the answer correct; all ``False``
        at positions where the correct continuation is unique (or not known without the response). ``None``
        (the default) where no position is marked. The harness reads it for the entropy at decision positions
        (positions with a marked token) and the entropy of π renormalised over the marked tokens."""
        return None

    def adapt(self, rewards: torch.Tensor) -> None:
        """Called by the harness once per RL iteration with that iteration's rollout rewards ``[N]``: a
        difficulty controller's hook. Default: nothing."""
        return None


@dataclasses.dataclass
class Addition(Task):
    digits: int = 2

    def prompts(self, n, rng):
        hi = 10 ** self.digits
        a, b = rng.integers(0, hi, n), rng.integers(0, hi, n)
        text = [f"{x:0{self.digits}d}+{y:0{self.digits}d}=" for x, y in zip(a, b)]
        return torch.tensor([encode(t) for t in text]), [int(x + y) for x, y in zip(a, b)]

    def demonstration(self, info, rng):
        return encode(str(info)) + [EOS]

    def correct(self, info, answer):
        return answer == str(info)


@dataclasses.dataclass
class Reversal(Task):
    bits: int = 6

    def prompts(self, n, rng):
        s = rng.integers(0, 2, (n, self.bits))
        text = ["".join(map(str, row)) + "=" for row in s]
        return torch.tensor([encode(t) for t in text]), [t[:-1] for t in text]

    def demonstration(self, info, rng):
        return encode(info[::-1]) + [EOS]

    def correct(self, info, answer):
        return answer == info[::-1]


@dataclasses.dataclass
class Parity(Reversal):
    def demonstration(self, info, rng):
        return encode(str(info.count("1") % 2)) + [EOS]

    def correct(self, info, answer):
        return answer == str(info.count("1") % 2)


@dataclasses.dataclass
class Tail(Reversal):
    tail_fraction: float = 0.05
    #: The rare first tokens of the rewarded answers: one correct answer per marker, each demonstrated with
    #: probability ``tail_fraction / len(markers)``.
    markers: str = "!"

    def __post_init__(self):
        if not self.markers or any(c not in TOK for c in self.markers) or len(set(self.markers)) != len(self.markers):
            raise ValueError(f"markers must be distinct vocabulary symbols, got {self.markers!r}")

    def demonstration(self, info, rng):
        if rng.random() < self.tail_fraction:
            # one marker draws nothing more, so the single-answer task keeps its random stream
            m = self.markers[int(rng.integers(len(self.markers)))] if len(self.markers) > 1 else self.markers
            return encode(m + info[::-1]) + [EOS]
        return encode(info) + [EOS]                      # the common, unrewarded habit

    def correct(self, info, answer):
        return len(answer) > 0 and answer[0] in self.markers and answer[1:] == info[::-1]


@dataclasses.dataclass
class Count(Task):
    max_n: int = 6
    max_pad: int = 4

    def prompts(self, n, rng):
        k = rng.integers(1, self.max_n + 1, n)
        return torch.tensor([encode(f"{v}?") for v in k]), [int(v) for v in k]

    def demonstration(self, info, rng):
        return encode("." * int(rng.integers(0, self.max_pad + 1)) + "x" * info) + [EOS]

    def correct(self, info, answer):
        return answer.lstrip(".") == "x" * info and set(answer) <= {".", "x"}


def _check_prob(name: str, v: float) -> None:
    if not (0.0 <= float(v) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {v!r}")


@dataclasses.dataclass
class Symbols(Task):
    """Prompt ``c=`` (class digit c); answer exactly ``length`` letters, each in class c's valid set, then EOS.

    Class c's valid letters are ``np.random.default_rng(1000 + c).choice(16, valid, replace=False)`` (indices
    into :data:`LETTERS`), in that order, which is also their rank order (rank 1 first). A demonstration letter
    is, independently per position, with probability ``1 - invalid_frac`` a valid letter of rank r with
    probability :math:`\\propto r^{-zipf}`, else a uniformly random invalid letter: the per-position demonstrated
    frequency of a valid letter of rank r is ``(1 - invalid_frac) * zipf_weights(valid, zipf)[r-1]``, of an
    invalid one ``invalid_frac / (16 - valid)``. The reward is 1 iff the length is right and every letter is
    valid, so a class has ``valid ** length`` correct answers."""

    classes: int = 4
    valid: int = 6
    length: int = 3
    zipf: float = 1.5
    invalid_frac: float = 0.1

    def __post_init__(self):
        if not 1 <= self.classes <= 10:
            raise ValueError(f"classes must be in 1..10 (one digit), got {self.classes}")
        if not 1 <= self.valid <= len(LETTERS):
            raise ValueError(f"valid must be in 1..{len(LETTERS)}, got {self.valid}")
        if self.length < 1:
            raise ValueError(f"length must be ≥ 1, got {self.length}")
        if self.zipf < 0:
            raise ValueError(f"zipf must be ≥ 0, got {self.zipf}")
        _check_prob("invalid_frac", self.invalid_frac)
        if self.valid == len(LETTERS) and self.invalid_frac > 0:
            raise ValueError("invalid_frac must be 0 when every letter is valid")
        self._ranked = [np.random.default_rng(1000 + c).choice(len(LETTERS), self.valid, replace=False)
                        for c in range(self.classes)]
        self._weights = zipf_weights(self.valid, self.zipf)
        self._valid_sets = [frozenset(LETTERS[j] for j in r) for r in self._ranked]
        self._invalid = [np.array(sorted(set(range(len(LETTERS))) - set(r.tolist())), dtype=np.int64)
                         for r in self._ranked]

    def valid_letters(self, c: int) -> str:
        """Class ``c``'s valid letters in rank order (most demonstrated first)."""
        return "".join(LETTERS[j] for j in self._ranked[c])

    def prompts(self, n, rng):
        c = rng.integers(0, self.classes, n)
        return torch.tensor([encode(f"{v}=") for v in c]), [int(v) for v in c]

    def demonstration(self, info, rng):
        out = []
        for _ in range(self.length):
            if rng.random() >= self.invalid_frac:
                j = self._ranked[info][int(rng.choice(self.valid, p=self._weights))]
            else:
                j = self._invalid[info][int(rng.integers(len(self._invalid[info])))]
            out.append(LETTERS[j])
        return encode("".join(out)) + [EOS]

    def correct(self, info, answer):
        return len(answer) == self.length and all(ch in self._valid_sets[info] for ch in answer)

    def choices(self, info, length):
        out = torch.zeros(len(info), length, len(VOCAB), dtype=torch.bool)
        ids = torch.tensor([[TOK[LETTERS[j]] for j in r] for r in self._ranked])        # [classes, valid]
        cls = torch.as_tensor(info, dtype=torch.long)
        mark = torch.zeros(self.classes, len(VOCAB), dtype=torch.bool)
        mark.scatter_(1, ids, True)
        p = min(self.length, length)                     # position `length` is EOS: unique
        out[:, :p] = mark[cls][:, None, :]
        return out


@dataclasses.dataclass
class PairSum(Task):
    """Prompt ``s=`` (digit s); answer two digits ``xy`` with ``(x + y) mod 10 == s``: 10 correct answers of 100.

    A demonstration is, with probability ``1 - wrong_frac``, correct: x of rank r in the fixed permutation
    ``np.random.default_rng(2000 + s).permutation(10)`` with probability :math:`\\propto r^{-zipf}`, and
    ``y = (s - x) mod 10``; else x uniform and y uniform among the 9 digits that make it wrong."""

    zipf: float = 1.5
    wrong_frac: float = 0.2

    def __post_init__(self):
        if self.zipf < 0:
            raise ValueError(f"zipf must be ≥ 0, got {self.zipf}")
        _check_prob("wrong_frac", self.wrong_frac)
        self._ranked = [np.random.default_rng(2000 + s).permutation(10) for s in range(10)]
        self._weights = zipf_weights(10, self.zipf)

    def first_digits(self, s: int) -> str:
        """The first digits of sum ``s``'s correct answers in rank order (most demonstrated first)."""
        return "".join(str(int(x)) for x in self._ranked[s])

    def prompts(self, n, rng):
        s = rng.integers(0, 10, n)
        return torch.tensor([encode(f"{v}=") for v in s]), [int(v) for v in s]

    def demonstration(self, info, rng):
        if rng.random() >= self.wrong_frac:
            x = int(self._ranked[info][int(rng.choice(10, p=self._weights))])
            y = (info - x) % 10
        else:
            x = int(rng.integers(10))
            y = ((info - x) + 1 + int(rng.integers(9))) % 10          # any of the 9 wrong digits
        return encode(f"{x}{y}") + [EOS]

    def correct(self, info, answer):
        return len(answer) == 2 and answer[0] in DIGITS and answer[1] in DIGITS and \
            (int(answer[0]) + int(answer[1])) % 10 == info

    def correct_answers(self, info):
        """The 10 correct answers of sum ``info`` as token ids (EOS included), for exact probabilities."""
        return [encode(f"{x}{(info - x) % 10}") + [EOS] for x in range(10)]

    def choices(self, info, length):
        """Position 0 marks all 10 digits (each starts exactly one correct answer). Position 1's correct digit is
        unique given the sampled x, which ``choices`` does not see, and the EOS is unique: all ``False``."""
        out = torch.zeros(len(info), length, len(VOCAB), dtype=torch.bool)
        if length > 0:
            out[:, 0, [TOK[d] for d in DIGITS]] = True
        return out


@dataclasses.dataclass
class Filler(Task):
    """Prompt ``n?`` (n in 1..max_n); answer any number of fillers ``.`` then exactly n copies of ``x``, then
    EOS. Fillers are free: any count that fits in ``max_response = max_n + max_pad + 1`` is correct (a
    demonstration uses k uniform in 0..max_pad).

    ``target`` None: reward = correctness. ``target`` a pass rate in (0, 1]: the reward of a correct answer is
    additionally a Bernoulli(q) lottery drawn per response, independent of the response (wrong answers get 0),
    so the reward carries no information about length beyond correctness; :meth:`adapt` sets
    ``q = min(1, target / max(acc, target))`` from a running estimate ``acc`` of the rollout accuracy
    (exponential average with rate ``rate`` of the correctness that :meth:`reward` stored; the first batch sets
    it; before any, ``q = target``), so that the rollout pass rate ``acc * q`` tracks ``target`` whenever the
    policy's accuracy is at least ``target``. Note that ``pass@1`` (the mean reward) of a lottery task measures
    the lottery too; :meth:`accuracy` is the correctness without it.

    The lottery's generator is re-seeded from the rng each :meth:`prompts` call consumes (one draw, only when
    ``target`` is set), so runs are reproducible from the harness's seed."""

    max_n: int = 4
    max_pad: int = 8
    target: float | None = None
    #: the controller's exponential-average rate for the accuracy estimate
    rate: float = 0.3
    _acc: float | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _lottery: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _recent: list = dataclasses.field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not 1 <= self.max_n <= 9:
            raise ValueError(f"max_n must be in 1..9 (one digit), got {self.max_n}")
        if self.max_pad < 0:
            raise ValueError(f"max_pad must be ≥ 0, got {self.max_pad}")
        if self.target is not None and not (0.0 < float(self.target) <= 1.0):
            raise ValueError(f"target must be None or a pass rate in (0, 1], got {self.target!r}")
        if not (0.0 < self.rate <= 1.0):
            raise ValueError(f"rate must be in (0, 1], got {self.rate!r}")

    @property
    def accuracy_estimate(self) -> float | None:
        """The controller's running accuracy estimate (``None`` before the first :meth:`adapt`)."""
        return self._acc

    @property
    def lottery_rate(self) -> float:
        """q, the probability that a correct answer is rewarded (1 without a target)."""
        if self.target is None:
            return 1.0
        acc = 1.0 if self._acc is None else self._acc
        return min(1.0, self.target / max(acc, self.target))

    def prompts(self, n, rng):
        k = rng.integers(1, self.max_n + 1, n)
        if self.target is not None:
            self._lottery = np.random.default_rng(int(rng.integers(2 ** 63)))
        return torch.tensor([encode(f"{v}?") for v in k]), [int(v) for v in k]

    def demonstration(self, info, rng):
        return encode("." * int(rng.integers(0, self.max_pad + 1)) + "x" * info) + [EOS]

    def correct(self, info, answer):
        return answer.lstrip(".") == "x" * info

    def reward(self, info, responses):
        acc = self.accuracy(info, responses)
        if self.target is None:
            return acc
        if self._lottery is None:                        # reward() before any prompts(): a fixed seed
            self._lottery = np.random.default_rng(0)
        win = torch.from_numpy(self._lottery.random(len(acc)) < self.lottery_rate).to(torch.float32)
        r = acc * win
        # what adapt() needs: the correctness behind these rewards (a few batches, so that an evaluation's
        # reward call between the rollout and adapt() does not hide the rollout's)
        self._recent = ([(r, acc)] + self._recent)[:4]
        return r

    def adapt(self, rewards):
        """Update the accuracy estimate from the rollout whose rewards are ``rewards`` (matched against the
        batches :meth:`reward` produced recently; if none matches, ``mean(rewards) / q``, an unbiased estimate)."""
        if self.target is None:
            return
        r = torch.as_tensor(rewards).detach().to("cpu", torch.float32).reshape(-1)
        batch_acc = None
        for past_r, past_acc in self._recent:
            if past_r.shape == r.shape and torch.equal(past_r, r):
                batch_acc = float(past_acc.mean())
                break
        if batch_acc is None:
            batch_acc = min(1.0, float(r.mean()) / self.lottery_rate)
        self._acc = batch_acc if self._acc is None else (1 - self.rate) * self._acc + self.rate * batch_acc

    def choices(self, info, length):
        """Position 0 is a decision between a filler and the answer's first ``x`` (both keep it correct when
        ``max_pad ≥ 1``); later positions depend on the response, which ``choices`` does not see: ``False``."""
        out = torch.zeros(len(info), length, len(VOCAB), dtype=torch.bool)
        if length > 0 and self.max_pad >= 1:
            out[:, 0, [TOK["."], TOK["x"]]] = True
        return out


def make_task(name: str, **kw: Any) -> Task:
    """A task by name with its default sizes (keyword overrides allowed)."""
    if name == "addition":
        d = kw.pop("digits", 2)
        return Addition("addition", prompt_len=2 * d + 2, max_response=d + 2, digits=d, **kw)
    if name in ("reversal", "parity", "tail"):
        b = kw.pop("bits", 6)
        cls = {"reversal": Reversal, "parity": Parity, "tail": Tail}[name]
        extra = 2 if name == "tail" else 1
        return cls(name, prompt_len=b + 1, max_response=(2 if name == "parity" else b + extra), bits=b, **kw)
    if name == "count":
        m, p = kw.pop("max_n", 6), kw.pop("max_pad", 4)
        return Count("count", prompt_len=2, max_response=m + p + 4, max_n=m, max_pad=p, **kw)
    if name == "symbols":
        length = kw.pop("length", 3)
        return Symbols("symbols", prompt_len=2, max_response=length + 1, length=length, **kw)
    if name == "pairsum":
        return PairSum("pairsum", prompt_len=2, max_response=3, **kw)
    if name == "filler":
        m, p = kw.pop("max_n", 4), kw.pop("max_pad", 8)
        return Filler("filler", prompt_len=2, max_response=m + p + 1, max_n=m, max_pad=p, **kw)
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")


TASKS = ("addition", "reversal", "parity", "tail", "count", "symbols", "pairsum", "filler")
