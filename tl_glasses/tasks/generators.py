"""The paper's copying and counting tasks (Sec. 3, App. C.1, C.5), registered by name.

A :class:`Task` makes seeded :class:`TaskItem` s: the prompt (the paper's text, with
the mode's chain-of-thought text and options applied), the integer answer, the
sequence length ``n`` and the items the sequence is made of, kept apart from the
template so that :func:`tl_glasses.tasks.tokenization.tokenize_items` can check that
each item is one token::

    task = get_task("copy_last")
    item = task.item(64, hint=True)          # '1'*63 + '0', with the paper's hint
    item.prompt, item.answer                 # (..., 0)
    task.items([8, 16, 32], n_items=1)

``n`` is always the length of the sequence in items (digits, ones of the sum, words),
which is the x-axis of the paper's Figs. 2 and 3.

=================  ==========================================================  ========
task               sequence (n items)                                           answer
=================  ==========================================================  ========
copy_last          '1'*(n-1) + '0' (Fig. 2a); alternating: ...1010 (Fig. 2c);   0
                   period3: ...110110 (the control: periodic, 0 the minority)
copy_first         '0' + '1'*(n-1) (Fig. 2a); alternating: 0101... (Fig. 2c);   0
                   period3: 011011...
count_sum          '1 + 1 + ... + 1' (Fig. 3 i)                                 n
count_ones         n ones (Fig. 3 ii)                                           n
count_ones_zeros   n digits, each 1 with probability p=0.7 (Fig. 3 iii)         #ones
count_word         n words, each 'car' with probability p=0.5 (Fig. 3 iv)       #car
=================  ==========================================================  ========

Copying option ``odd_digit``: the digit that differs from the 1s, 0 by default (the
paper's item, always the same); another digit, or ``"random"`` (drawn per item from
{0, 2, ..., 9}: a copying cell then has as many distinct items as asked for). The
answer is that digit.

Modes: ``"answer"`` (the paper's prompt), ``"cot"`` (+ "Let's think step by step,
showing me your reasoning."), ``"cot_fewshot"`` (+ the worked examples in groups of
5: the paper's for the sum, ours in the same style for the other counting tasks).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import GlassesError, UnknownNameError
from . import prompts as P

__all__ = [
    "MODES",
    "TASK_NAMES",
    "Task",
    "TaskItem",
    "get_task",
    "list_tasks",
    "register_task",
    "parse_lengths",
]

MODES = ("answer", "cot", "cot_fewshot")

# words that are single tokens (with a leading space) for both embedded tokenizers and
# do not contain "car" (tests check both); the sentence of count_word is drawn from them
DISTRACTOR_WORDS = (
    "the", "red", "blue", "dog", "house", "tree", "road", "bus", "cat", "big",
    "green", "fast", "city", "park", "boat", "train", "sun", "old", "new", "man",
)


@dataclass(frozen=True)
class TaskItem:
    """One prompt of a task.

    ``template`` is the full prompt with the slot ``{seq}`` where the sequence goes;
    ``items`` joined by ``sep`` fill it (``prompt`` is the result). ``answer`` is the
    correct integer; ``answer_prefix`` the text the paper asks the answer to follow.
    """

    task: str
    n: int
    index: int
    answer: int
    items: tuple[str, ...]
    sep: str
    template: str
    answer_prefix: str
    mode: str = "answer"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> str:
        return self.sep.join(self.items)

    @property
    def prompt(self) -> str:
        return self.template.replace("{seq}", self.seq)

    def __repr__(self) -> str:
        seq = self.seq if len(self.seq) <= 24 else self.seq[:10] + "…" + self.seq[-10:]
        return f"TaskItem({self.task}, n={self.n}, index={self.index}, answer={self.answer}, seq={seq!r})"


Builder = Callable[[int, np.random.Generator, Mapping[str, Any]], tuple[list[str], int, dict]]


@dataclass(frozen=True)
class Task:
    """A task family: how to build the n-item sequence, the prompt, the candidates."""

    name: str
    kind: str  # "copy" or "count"
    figure: str
    description: str
    build: Builder
    defaults: Mapping[str, Any]
    stochastic: bool = False
    fewshot: str | None = None

    # -- options -------------------------------------------------------------------
    def options(self, **opts: Any) -> dict[str, Any]:
        """The task's options with ``opts`` applied (unknown names are refused)."""
        unknown = sorted(set(opts) - set(self.defaults))
        if unknown:
            raise GlassesError(
                f"task {self.name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(f'{k}={v!r}' for k, v in self.defaults.items())}"
            )
        out = {**self.defaults, **opts}
        if "prompt_type" in out and out["prompt_type"] not in (0, 1, 2):
            raise GlassesError(
                f"prompt_type must be 0 (App. C.1's prompt), 1 or 2 (App. C.5); got {out['prompt_type']!r}"
            )
        if "p" in out and not (0.0 <= float(out["p"]) <= 1.0):
            raise GlassesError(f"p is a probability in [0, 1]; got {out['p']!r}")
        if not isinstance(out.get("sep", ""), str):
            raise GlassesError(f"sep must be a string; got {out['sep']!r}")
        if "odd_digit" in out and out["odd_digit"] not in ODD_DIGITS:
            raise GlassesError(
                f"odd_digit is one of {', '.join(map(repr, ODD_DIGITS))} (the digit that differs from the 1s; "
                f"'random' draws it per item from {{0, 2, ..., 9}}); got {out['odd_digit']!r}"
            )
        if out.get("alternating") and out.get("period3"):
            raise GlassesError("alternating and period3 are two different patterns; choose one")
        return out

    @property
    def answer_prefix(self) -> str:
        return P.COPY_ANSWER_PREFIX if self.kind == "copy" else P.COUNT_ANSWER_PREFIX

    # -- prompt --------------------------------------------------------------------
    def base_template(self, **opts: Any) -> str:
        """The paper's prompt for this task (with ``{seq}``), before the mode is applied."""
        o = self.options(**opts)
        if self.kind == "copy":
            first = self.name == "copy_first"
            t = {
                0: P.COPY_FIRST if first else P.COPY,
                1: P.COPY_FIRST_TYPE1 if first else P.COPY_TYPE1,
                2: P.COPY_FIRST_TYPE2 if first else P.COPY_TYPE2,
            }[int(o["prompt_type"])]
            if o["hint"]:
                t = t + P.HINT_SEPARATOR + P.HINT
            return t
        return {
            "count_sum": P.SUM,
            "count_ones": P.COUNT_ONES,
            "count_ones_zeros": P.COUNT_ONES,
            "count_word": P.COUNT_WORD,
        }[self.name]

    def template(self, mode: str = "answer", **opts: Any) -> str:
        """The full prompt template (with ``{seq}``) for ``mode``."""
        base = self.base_template(**opts)
        if mode == "answer":
            return base
        if mode == "cot":
            return base + P.COT_SEPARATOR + P.COT_ZERO_SHOT
        if mode == "cot_fewshot":
            if self.fewshot is None:
                raise GlassesError(
                    f"task {self.name!r} has no few-shot examples (the paper gives worked examples "
                    f"only for counting); use mode='answer' or mode='cot'"
                )
            return base + P.COT_SEPARATOR + self.fewshot
        raise UnknownNameError("mode", mode, MODES)

    # -- items ---------------------------------------------------------------------
    def _rng(self, seed: int, n: int, index: int) -> np.random.Generator:
        # depends only on (task, seed, n, index): items do not change with the other
        # lengths or item counts requested, so a run can be extended and resumed
        return np.random.default_rng([zlib.crc32(self.name.encode()), int(seed), int(n), int(index)])

    def item(self, n: int, index: int = 0, *, seed: int = 0, mode: str = "answer", **opts: Any) -> TaskItem:
        """Item ``index`` of length ``n`` (deterministic in ``seed``, ``n``, ``index``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise GlassesError(f"a sequence length n is a positive integer; got {n!r}")
        o = self.options(**opts)
        items, answer, meta = self.build(int(n), self._rng(seed, n, index), o)
        return TaskItem(
            task=self.name, n=int(n), index=int(index), answer=int(answer), items=tuple(items),
            sep=o["sep"], template=self.template(mode, **opts), answer_prefix=self.answer_prefix,
            mode=mode, metadata={**meta, "options": dict(o), "seed": int(seed)},
        )

    def is_random(self, **opts: Any) -> bool:
        """Whether items of one length differ by index: the random tasks, and the copying
        tasks with ``odd_digit="random"``."""
        return self.stochastic or self.options(**opts).get("odd_digit") == "random"

    def default_n_items(self, **opts: Any) -> int:
        """Items per length when none is given: 1 for deterministic tasks, 5 for random ones."""
        return 5 if self.is_random(**opts) else 1

    def items(self, lengths: Iterable[int], *, n_items: int | None = None, seed: int = 0,
              mode: str = "answer", **opts: Any) -> list[TaskItem]:
        """``n_items`` items for each length. A deterministic task (copying, the sum, the
        run of ones) has one item per length, whatever ``n_items`` says."""
        k = self.default_n_items(**opts) if n_items is None else int(n_items)
        if k < 1:
            raise GlassesError(f"n_items must be at least 1; got {n_items!r}")
        if not self.is_random(**opts):
            k = 1
        return [self.item(n, i, seed=seed, mode=mode, **opts) for n in parse_lengths(lengths) for i in range(k)]

    # -- answers -------------------------------------------------------------------
    def candidates(self, n: int, **opts: Any) -> list[int]:
        """The answers teacher-forced scoring compares: the digits 0-9 for copying;
        0..max(2n, 120) for counting (always containing the true count, and 100, the
        paper's most common wrong answer); ``max_candidate=`` changes the upper end."""
        if self.kind == "copy":
            return list(range(10))
        o = self.options(**opts)
        top = o.get("max_candidate")
        top = max(2 * int(n), 120) if top is None else max(int(top), int(n))
        return list(range(top + 1))

    def condition(self, mode: str = "answer", **opts: Any) -> str:
        """A short label of the configuration: 'copy_last+hint', 'count_sum · cot' …"""
        o = self.options(**opts)
        bits = [self.name]
        for k, v in o.items():
            if k in ("sep", "max_candidate"):
                if v != self.defaults.get(k):
                    bits.append(f"{k}={v!r}")
            elif isinstance(v, bool):
                if v:
                    bits.append(k)
            elif v != self.defaults.get(k):
                bits.append(f"{k}={v}")
        label = "+".join(bits)
        return label if mode == "answer" else f"{label} · {mode}"

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {self.figure}: {self.description})"


# --- builders ------------------------------------------------------------------------
#: the odd digit of the copying tasks: 0 (the paper's), another digit, or "random"
ODD_DIGITS = (0, 2, 3, 4, 5, 6, 7, 8, 9, "random")


def _odd(rng, o) -> str:
    d = o.get("odd_digit", 0)
    if d == "random":
        return str(int(rng.choice([0, 2, 3, 4, 5, 6, 7, 8, 9])))
    return str(int(d))


def _copy_pattern(n, rng, o, *, last: bool):
    """The copying sequence, written from the end that holds the answer: the odd digit
    there and 1s elsewhere (Fig. 2a); alternating odd/1 (Fig. 2c); or period 3, two 1s
    per odd digit (the control for alternating: periodic, but the answer is the minority
    digit)."""
    d = _odd(rng, o)
    if o["alternating"]:
        seq = [d if i % 2 == 0 else "1" for i in range(n)]
    elif o.get("period3"):
        seq = [d if i % 3 == 0 else "1" for i in range(n)]
    else:
        seq = [d] + ["1"] * (n - 1)
    items = seq[::-1] if last else seq
    return items, int(d), {"n_ones": items.count("1"), "odd_digit": int(d)}


def _copy_last(n, rng, o):
    return _copy_pattern(n, rng, o, last=True)


def _copy_first(n, rng, o):
    return _copy_pattern(n, rng, o, last=False)


def _ones(n, rng, o):
    return ["1"] * n, n, {}


def _ones_zeros(n, rng, o):
    bits = rng.random(n) < float(o["p"])
    items = ["1" if b else "0" for b in bits]
    return items, int(bits.sum()), {"n_ones": int(bits.sum())}


def _word(n, rng, o):
    is_car = rng.random(n) < float(o["p"])
    others = rng.integers(0, len(DISTRACTOR_WORDS), size=n)
    items = ["car" if c else DISTRACTOR_WORDS[j] for c, j in zip(is_car, others)]
    return items, int(is_car.sum()), {"n_car": int(is_car.sum())}


_COPY_DEFAULTS = {"hint": False, "alternating": False, "period3": False, "odd_digit": 0, "prompt_type": 0,
                  "sep": ""}

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task to the registry (a name can be registered once)."""
    if task.name in _REGISTRY:
        raise GlassesError(f"a task named {task.name!r} is already registered")
    if task.kind not in ("copy", "count"):
        raise GlassesError(f"a task's kind is 'copy' or 'count'; got {task.kind!r}")
    if "sep" not in task.defaults:
        raise GlassesError("a task's defaults must include 'sep' (the separator between items)")
    _REGISTRY[task.name] = task
    return task


register_task(Task("copy_last", "copy", "Fig. 2", "last digit of '1...10'", _copy_last, dict(_COPY_DEFAULTS)))
register_task(Task("copy_first", "copy", "Fig. 2", "first digit of '01...1'", _copy_first, dict(_COPY_DEFAULTS)))
register_task(Task("count_sum", "count", "Fig. 3 (i)", "sum '1 + 1 + ... + 1'", _ones,
                   {"sep": " + ", "max_candidate": None}, fewshot=P.COT_FEW_SHOT_SUM))
register_task(Task("count_ones", "count", "Fig. 3 (ii)", "number of ones in a run of ones", _ones,
                   {"sep": " ", "max_candidate": None}, fewshot=P.COT_FEW_SHOT_ONES))
register_task(Task("count_ones_zeros", "count", "Fig. 3 (iii)", "number of ones in random 0/1 digits, P(1)=p",
                   _ones_zeros, {"sep": " ", "p": 0.7, "max_candidate": None}, stochastic=True,
                   fewshot=P.COT_FEW_SHOT_ONES_ZEROS))
register_task(Task("count_word", "count", "Fig. 3 (iv)", "times 'car' appears in a sentence of n words",
                   _word, {"sep": " ", "p": 0.5, "max_candidate": None}, stochastic=True,
                   fewshot=P.COT_FEW_SHOT_WORD))

TASK_NAMES = tuple(_REGISTRY)


def get_task(name: str | Task) -> Task:
    """The registered task ``name`` (a :class:`Task` is returned as it is)."""
    if isinstance(name, Task):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError("task", name, list(_REGISTRY)) from None


def list_tasks():
    """A table of the registered tasks: name, kind, the paper's figure, description,
    options (with defaults) and whether items are random."""
    import pandas as pd

    return pd.DataFrame(
        [
            dict(name=t.name, kind=t.kind, figure=t.figure, description=t.description,
                 options=", ".join(f"{k}={v!r}" for k, v in t.defaults.items()),
                 random=t.stochastic, modes=", ".join(m for m in MODES if m != "cot_fewshot" or t.fewshot))
            for t in _REGISTRY.values()
        ]
    )


from .._vocab import parse_lengths  # noqa: E402,F401  (the one length grammar)
