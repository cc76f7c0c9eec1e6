"""The shared vocabulary of tl_glasses: one definition each of the small things every
analyser names the same way (issue 14, items 3 and 5).

* :data:`FINAL` - the final hook name;
* :func:`model_name` - the model's display name;
* :func:`parse_dtype` / :func:`dtype_name` - dtypes from and to their names;
* :func:`parse_layer_spec` / :func:`parse_layers` - one layer-list grammar;
* :func:`parse_lengths` - one length grammar;
* :func:`single_token` - an answer token as one id;
* :func:`token_strings` - the text shown for a token in a table or a figure;
* :func:`renamed_kwarg` - an old keyword name accepted for one release, with a warning.

Imports nothing else of tl_glasses but :mod:`tl_glasses.errors`.
"""
from __future__ import annotations

import numbers
import re
import warnings
from typing import Any, Iterable

import torch

from .errors import GlassesError, UnknownNameError

__all__ = [
    "FINAL", "model_name", "DTYPES", "parse_dtype", "dtype_name", "parse_layer_spec", "parse_layers",
    "parse_lengths", "single_token", "token_strings", "renamed_kwarg",
]

FINAL = "ln_final.hook_out"  # the final norm's output, learned scale included


# -- the model's name -------------------------------------------------------------------
def model_name(model) -> str:
    """The name tl_glasses loaded the model under, else ``cfg.model_name``, else its class."""
    info = getattr(model, "tl_glasses_info", None) or {}
    cfg = getattr(model, "cfg", None)
    return str(info.get("name") or getattr(cfg, "model_name", None) or type(model).__name__)


# -- dtypes -----------------------------------------------------------------------------
#: every name a dtype is accepted under (lower case, without "torch.")
DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
_CANONICAL = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
              torch.float64: "float64"}


def parse_dtype(d: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` or a name: fp32/float32/torch.float32, fp16/half, bf16, fp64/double."""
    if isinstance(d, torch.dtype):
        return d
    try:
        return DTYPES[str(d).strip().lower().removeprefix("torch.")]
    except KeyError:
        raise UnknownNameError("dtype", d, sorted(set(DTYPES))) from None


def dtype_name(d: torch.dtype | str) -> str:
    """The canonical name of a dtype: ``"float32"``, ``"bfloat16"`` …"""
    if not isinstance(d, torch.dtype):
        d = parse_dtype(d)
    return _CANONICAL.get(d, str(d).removeprefix("torch."))


# -- layers -----------------------------------------------------------------------------
_RANGE = re.compile(r"(-?\d+)-(-?\d+)")


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def parse_layer_spec(spec, *, what: str = "layers") -> list[int] | None:
    """Layers without a model: ``None``/``"all"`` -> None (every layer); an int; a string
    ``"0-4,7,-1"`` (ranges include both ends; negatives count from the end); or an
    iterable of ints or such strings. Order and repeats are kept."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return None
    if _is_int(spec):
        return [int(spec)]
    if isinstance(spec, str):
        out: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            rng = _RANGE.fullmatch(part)
            try:
                out.extend(range(int(rng[1]), int(rng[2]) + 1) if rng else [int(part)])
            except ValueError:
                raise GlassesError(f"cannot read {what} {spec!r}; write them like 0-4,7") from None
        return out
    if isinstance(spec, torch.Tensor):
        spec = spec.flatten().tolist()
    try:
        items = list(spec)
    except TypeError:
        raise GlassesError(f"{what}: layers are integers, got {spec!r}") from None
    out = []
    for x in items:
        if _is_int(x):
            out.append(int(x))
        elif isinstance(x, float) and x.is_integer():
            out.append(int(x))
        elif isinstance(x, str):
            out.extend(parse_layer_spec(x, what=what) or [])
        else:
            raise GlassesError(f"{what}: layers are integers, got {x!r}")
    return out


def parse_layers(model, layers, *, what: str = "layers", allow_empty: bool = False) -> list[int]:
    """Layers of ``model``, sorted and distinct: everything :func:`parse_layer_spec`
    reads (``None``/"all" = every layer), negatives from the end, checked against the
    model's layers."""
    L = int(model.cfg.n_layers)
    chosen = parse_layer_spec(layers, what=what)
    if chosen is None:
        return list(range(L))
    out = []
    for l in chosen:
        if not -L <= l < L:
            raise GlassesError(f"{what}: layer {l} is out of range; the model has layers 0..{L - 1} "
                               f"(or negative from the end)")
        out.append(l % L)
    if not out and not allow_empty:
        raise GlassesError(f"{what}: no layers chosen")
    return sorted(set(out))


# -- lengths ----------------------------------------------------------------------------
_LENGTHS_HELP = "write start:stop:step (e.g. 8:1024:32), a comma list (e.g. 8,16,32), a mix, or positive integers"


def parse_lengths(spec: Iterable[int] | int | str) -> list[int]:
    """Lengths as a sorted list of distinct positive ints. Accepts an int, an iterable
    of ints, or a string: ``"8,16,32"``, ``"8:1024:32"`` (start:stop:step, stop included
    when hit; ``"8:32"`` steps by 1), or a comma list mixing both (``"2:10:4,3"``)."""
    if _is_int(spec):
        out = [int(spec)]
    elif isinstance(spec, str):
        out = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            if ":" in part:
                try:
                    bits = [int(b) for b in part.split(":")]
                except ValueError:
                    raise GlassesError(f"cannot read the lengths {spec!r}: {_LENGTHS_HELP}") from None
                if len(bits) == 2:
                    bits.append(1)
                if len(bits) != 3 or bits[2] <= 0:
                    raise GlassesError(f"lengths {spec!r}: write start:stop:step, e.g. 8:1024:32")
                out += list(range(bits[0], bits[1] + 1, bits[2]))
            else:
                try:
                    out.append(int(part))
                except ValueError:
                    raise GlassesError(f"cannot read the lengths {spec!r}: {_LENGTHS_HELP}") from None
    else:
        try:
            out = [int(x) for x in spec]
        except (TypeError, ValueError, OverflowError):
            raise GlassesError(f"cannot read the lengths {spec!r}: {_LENGTHS_HELP}") from None
    if not out:
        raise GlassesError(f"no lengths in {spec!r}; pass e.g. lengths=[8, 16, 32]")
    if min(out) < 1:
        raise GlassesError(f"lengths are numbers of items, at least 1; got {sorted(x for x in out if x < 1)}")
    return sorted(set(out))


# -- tokens -----------------------------------------------------------------------------
def single_token(model, tok, *, what: str = "answer token") -> int:
    """An int id as is; a string that the tokenizer makes exactly one token of, as its id."""
    if _is_int(tok):
        return int(tok)
    if isinstance(tok, torch.Tensor) and tok.numel() == 1:
        return int(tok.item())
    if isinstance(tok, str):
        ids = model.tokenizer.encode(tok, add_special_tokens=False)
        if len(ids) != 1:
            raise GlassesError(
                f"{what} {tok!r} is {len(ids)} tokens ({ids}); pass a string that is one "
                f"token, or the token id"
            )
        return int(ids[0])
    raise GlassesError(f"an {what} is a string or an int id, not {type(tok).__name__}")


def token_strings(model_or_tokenizer, ids) -> list[str]:
    """The text of each token id, as shown in every table and figure: the tokenizer's
    ``decode([id])`` (``" 1"``, not the vocabulary piece ``"Ġ1"``); the id itself as text
    when there is no tokenizer. Accepts a model or a tokenizer; ids as an int, a list or
    a tensor (flattened)."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    elif _is_int(ids):
        ids = [ids]
    ids = [int(i) for i in ids]
    if tok is None or not hasattr(tok, "decode"):
        return [str(i) for i in ids]
    out = []
    for i in ids:
        try:
            out.append(str(tok.decode([i])))
        except Exception:  # pragma: no cover - a tokenizer that cannot decode this id
            out.append(str(i))
    return out


# -- renamed keywords -------------------------------------------------------------------
def _empty(x) -> bool:
    return isinstance(x, (tuple, list)) and not x


def renamed_kwarg(kwargs: dict[str, Any], old: str, new: str, value, *, default=None, where: str = ""):
    """Take ``old`` out of ``kwargs`` (a function's ``**kwargs``) and return the value for
    ``new``: ``value`` when given, else the old keyword's value with a DeprecationWarning.
    Both at once is an error."""
    if old not in kwargs:
        return value
    got = kwargs.pop(old)
    if value is not default and not (_empty(value) and _empty(default)):
        raise GlassesError(f"{where}: pass {new}= only ({old}= is its old name)")
    warnings.warn(f"{where}: {old}= is renamed {new}=; {old}= goes in the next release",
                  DeprecationWarning, stacklevel=3)
    return got
