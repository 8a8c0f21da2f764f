"""Tasks with exact verifiers for the training harness: they generate their own data, no hub needed.

Every task shares one character vocabulary (:data:`VOCAB`) and gives

* ``prompts(n, rng)`` → ``(tokens [n, P] int64, info)``: fixed-length prompts and what the verifier needs;
* ``demonstration(info)`` → one response (a list of token ids ending in EOS) for the supervised warm-up;
* ``reward(info, responses)`` → ``[n]`` float rewards for responses ``[n, L]`` (token ids; everything after the
  first EOS is ignored; a response without EOS gets 0);
* ``max_response`` (tokens, EOS included).

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
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

PAD, BOS, EOS = 0, 1, 2
_SYMBOLS = list("0123456789+=!x.?")
VOCAB: list[str] = ["<pad>", "<bos>", "<eos>"] + _SYMBOLS
TOK = {s: i for i, s in enumerate(VOCAB)}


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

    def reward(self, info: list[Any], responses: torch.Tensor) -> torch.Tensor:
        answers = _answers(responses)
        return torch.tensor([0.0 if a is None else float(self.correct(i, a)) for i, a in zip(info, answers)],
                            dtype=torch.float32)


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
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")


TASKS = ("addition", "reversal", "parity", "tail", "count")
