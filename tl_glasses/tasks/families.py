"""Sequence families for representational collapse (paper Sec. 4, Fig. 5, App. C.5).

A *family* builds, for a length ``n``, a prompt holding ``n`` items (``"1"`` digits by
default) and the pair ``(v, v*)`` where ``v*`` is ``v`` with its last item repeated:

* ``level="item"`` — the item is repeated *inside* the prompt, so the prompt's
  closing text still follows (``"...sequence:1111. Please give..."`` vs
  ``"...sequence:11111. Please give..."``): what a user of the model would type.
* ``level="token"`` — the last *token of the whole input* is repeated (the exact
  setting of Theorem 4.2 / B.3: ``v* = v + [v[-1]]``).

Every prompt is tokenised with the model's tokenizer and checked: the number of item
tokens must be the number of items the family claims (see :mod:`.tokenization`).

Registered families (``families()``)::

    ones            a run of "1"s in the paper's counting prompt (COUNT_ONES, Fig. 5a)
    digits_end_one  uniform random digits ending "1" vs "11", seeded (Fig. 5b)
    copy_last       a run of "1"s in the paper's copying prompt (COPY, Fig. 5c,d)

User templates with a ``{seq}`` slot: ``get_family("Count: {seq}.")`` or
``register_template("mine", "Count: {seq}.")``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import GlassesError, UnknownNameError
from . import prompts
from .tokenization import TokenizedItems, TokenizationError, tokenize_items

__all__ = [
    "PromptSpec",
    "SequencePair",
    "SequenceFamily",
    "families",
    "get_family",
    "register_family",
    "register_template",
    "template_family",
    "LEVELS",
]

LEVELS = ("item", "token")


@dataclass(frozen=True)
class PromptSpec:
    """A prompt as data: a template with a ``{seq}`` slot and the items that fill it.

    Items are joined with ``sep``; ``group = (k, text)`` additionally puts ``text``
    after every ``k``-th item (when more items follow) — that is how the
    :func:`~tl_glasses.separators` mitigation inserts commas (Fig. 5d).
    ``task`` names what the prompt asks ("count", "copy", or "" for user templates),
    so prompt transforms can refuse prompts they do not apply to.
    """

    template: str
    items: tuple[str, ...]
    sep: str = ""
    group: tuple[int, str] | None = None
    task: str = ""

    def joiners(self) -> list[str]:
        out = []
        for i in range(1, len(self.items)):
            j = self.sep
            if self.group is not None and i % self.group[0] == 0:
                j = self.group[1] + self.sep
            out.append(j)
        return out

    @property
    def seq_text(self) -> str:
        js = self.joiners()
        return self.items[0] + "".join(j + it for j, it in zip(js, self.items[1:])) if self.items else ""

    @property
    def text(self) -> str:
        return self.template.replace("{seq}", self.seq_text)

    def with_items(self, items: Iterable[str]) -> "PromptSpec":
        return replace(self, items=tuple(items))

    def tokenize(self, model, *, prepend_bos: bool | None = None) -> TokenizedItems:
        return tokenize_items(
            model, self.template, list(self.items), sep=self.sep, prepend_bos=prepend_bos,
            joiners=self.joiners(),
        )


@dataclass(frozen=True)
class SequencePair:
    """The pair ``(v, v*)`` of one family at one length: ``a`` = v, ``b`` = v* as
    ``[pos]`` token tensors, with where the items are."""

    family: str
    n: int
    level: str
    a: torch.Tensor
    b: torch.Tensor
    text_a: str
    text_b: str
    item_positions_a: list[int]
    item_positions_b: list[int]
    spec: PromptSpec | None = None

    @property
    def n_tokens_a(self) -> int:
        return int(self.a.shape[-1])

    @property
    def n_tokens_b(self) -> int:
        return int(self.b.shape[-1])

    def common_prefix(self) -> int:
        """Number of leading tokens ``a`` and ``b`` share."""
        m = min(self.n_tokens_a, self.n_tokens_b)
        diff = (self.a[:m] != self.b[:m]).nonzero()
        return int(diff[0]) if len(diff) else m

    def __repr__(self) -> str:
        return (
            f"SequencePair({self.family!r}, n={self.n}, level={self.level!r}, "
            f"tokens {self.n_tokens_a} vs {self.n_tokens_b})"
        )


ItemsFn = Callable[[int, int], Sequence[str]]


@dataclass(frozen=True)
class SequenceFamily:
    """A named way to build prompts of ``n`` items and their collapse pairs.

    ``items(n, seed)`` returns the ``n`` items of ``v`` (``v*`` repeats the last one);
    ``template`` has a ``{seq}`` slot; items are joined with ``sep``.
    """

    name: str
    template: str
    items: ItemsFn
    sep: str = ""
    task: str = ""
    description: str = ""
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.template, str) or self.template.count("{seq}") != 1:
            raise GlassesError(
                f"family {self.name!r}: the template must contain '{{seq}}' exactly once"
            )

    # -- building ----------------------------------------------------------------
    def spec(self, n: int, *, seed: int = 0) -> PromptSpec:
        n = _check_n(n)
        items = tuple(str(x) for x in self.items(n, seed))
        if len(items) != n:
            raise GlassesError(f"family {self.name!r} built {len(items)} items for n={n}")
        return PromptSpec(self.template, items, self.sep, None, self.task)

    def pair(
        self,
        model,
        n: int,
        *,
        level: str = "item",
        seed: int = 0,
        transforms: Sequence[Any] = (),
        prepend_bos: bool | None = None,
    ) -> SequencePair:
        """``(v, v*)`` at length ``n``, tokenised and checked. ``transforms`` are prompt
        transforms (mitigations with a ``transform(spec)`` method) applied to ``v``'s
        prompt before ``v*`` is derived from it."""
        if level not in LEVELS:
            raise UnknownNameError("pair level", level, LEVELS)
        spec = self.spec(n, seed=seed)
        for t in transforms:
            spec = t.transform(spec) if hasattr(t, "transform") else t(spec)
        ta = spec.tokenize(model, prepend_bos=prepend_bos)
        if level == "item":
            spec_b = spec.with_items(spec.items + (spec.items[-1],))
            tb = spec_b.tokenize(model, prepend_bos=prepend_bos)
            b, text_b, pos_b = tb.tokens, tb.text, tb.item_positions
        else:
            b = torch.cat([ta.tokens, ta.tokens[-1:]])
            text_b, pos_b = ta.text + "<repeat last token>", list(ta.item_positions)
        return SequencePair(self.name, n, level, ta.tokens, b, ta.text, text_b,
                            ta.item_positions, pos_b, spec)

    def with_template(self, template: str, *, name: str | None = None) -> "SequenceFamily":
        return replace(self, template=template, name=name or f"{self.name}@custom", task="")

    def describe(self) -> dict:
        return dict(name=self.name, template=self.template, sep=self.sep, task=self.task,
                    description=self.description, **{f"param_{k}": v for k, v in self.params.items()})

    def config(self) -> dict:
        """What determines this family's prompts (for result metadata and resume checks)."""
        return dict(name=self.name, template=self.template, sep=self.sep, task=self.task,
                    params=dict(self.params))


def _check_n(n) -> int:
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise GlassesError(f"a length is a positive integer, not {n!r}") from None
    if n < 1:
        raise GlassesError(f"a length must be at least 1 item; got {n}")
    return n


# -- item generators -------------------------------------------------------------
def _repeat(item: str, last: str | None = None) -> ItemsFn:
    def make(n: int, seed: int) -> list[str]:
        out = [item] * n
        if last is not None:
            out[-1] = last
        return out

    return make


def _digits_end(last: str = "1", digits: str = "0123456789") -> ItemsFn:
    def make(n: int, seed: int) -> list[str]:
        # drawn one at a time from one seeded stream: the prefix for length n is the
        # prefix for every longer length, so curves over n compare like with like
        rng = random.Random(seed)
        return [rng.choice(digits) for _ in range(n - 1)] + [last]

    return make


# -- registry ------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., SequenceFamily]] = {}


def _builtin(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


@_builtin("ones")
def _ones(*, sep: str = "", template: str = prompts.COUNT_ONES) -> SequenceFamily:
    return SequenceFamily(
        "ones", template, _repeat("1"), sep=sep, task="count",
        description="a run of n '1's in the paper's counting prompt; v* has one more '1' (Fig. 5a)",
        params=dict(sep=sep),
    )


@_builtin("digits_end_one")
def _digits(*, sep: str = "", template: str = prompts.COUNT_ONES) -> SequenceFamily:
    return SequenceFamily(
        "digits_end_one", template, _digits_end("1"), sep=sep, task="count",
        description="n-1 uniform random digits then '1'; v* ends '11' (seeded, Fig. 5b)",
        params=dict(sep=sep),
    )


@_builtin("copy_last")
def _copy(*, sep: str = "", template: str = prompts.COPY, last: str = "1") -> SequenceFamily:
    return SequenceFamily(
        "copy_last", template, _repeat("1", None if last == "1" else last), sep=sep, task="copy",
        description="a run of '1's (last item `last`) in the paper's copying prompt (Fig. 5c,d)",
        params=dict(sep=sep, last=last),
    )


def families() -> list[str]:
    """Names of the registered sequence families (a table: :func:`list_families`)."""
    return sorted(_REGISTRY)


def list_families():
    """A table of the registered sequence families: name, task, description, parameters
    (with the factory's defaults)."""
    import pandas as pd

    rows = []
    for name in families():
        f = get_family(name)
        rows.append(dict(name=name, task=f.task, description=f.description,
                         params=", ".join(f"{k}={v!r}" for k, v in (f.params or {}).items())))
    return pd.DataFrame(rows, columns=["name", "task", "description", "params"])


def register_family(family: SequenceFamily | Callable[..., SequenceFamily], name: str | None = None,
                    *, overwrite: bool = False) -> None:
    """Register a family (a :class:`SequenceFamily` or a factory returning one) by name.
    Refuses to replace an existing name unless ``overwrite=True``."""
    if isinstance(family, SequenceFamily):
        fam = family
        factory = lambda **kw: replace(fam, **kw) if kw else fam  # noqa: E731
        name = name or fam.name
    elif callable(family):
        factory, name = family, name or getattr(family, "__name__", None)
    else:
        raise GlassesError("register_family takes a SequenceFamily or a function returning one")
    if not name:
        raise GlassesError("register_family needs a name")
    if name in _REGISTRY and not overwrite:
        raise GlassesError(
            f"a family named {name!r} is already registered; pick another name or pass overwrite=True"
        )
    _REGISTRY[name] = factory


def template_family(template: str, *, item: str = "1", sep: str = "", name: str | None = None,
                    last: str | None = None) -> SequenceFamily:
    """A family from your own prompt: ``template`` with a ``{seq}`` slot filled by
    ``n`` copies of ``item`` (the last one ``last`` if given)."""
    return SequenceFamily(
        name or "template", template, _repeat(item, last), sep=sep, task="",
        description=f"user template with {item!r} items", params=dict(item=item, sep=sep, last=last),
    )


def register_template(name: str, template: str, *, item: str = "1", sep: str = "",
                      overwrite: bool = False) -> SequenceFamily:
    """Register a user template (``{seq}`` slot) as a named family and return it."""
    fam = template_family(template, item=item, sep=sep, name=name)
    register_family(fam, name, overwrite=overwrite)
    return fam


def get_family(family: str | SequenceFamily, **params) -> SequenceFamily:
    """A family by name (``families()``), a template string with a ``{seq}`` slot, or a
    :class:`SequenceFamily` (returned as is). ``params`` go to the family's factory
    (``sep=``, ``template=``, ``last=`` for ``copy_last``)."""
    if isinstance(family, SequenceFamily):
        return replace(family, **params) if params else family
    if not isinstance(family, str):
        raise GlassesError(
            f"a family is a name, a template string with '{{seq}}', or a SequenceFamily; "
            f"got {type(family).__name__}"
        )
    if "{seq}" in family:
        return template_family(family, **params)
    if family not in _REGISTRY:
        raise UnknownNameError("family", family, families())
    try:
        return _REGISTRY[family](**params)
    except TypeError as exc:
        raise GlassesError(f"family {family!r} does not take these parameters: {exc}") from None


# re-exported for users who catch it from here
TokenizationError = TokenizationError
