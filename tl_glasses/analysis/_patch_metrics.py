"""Patching's sites and metrics: where a patch goes, and what it is measured by.

* :data:`SITES`: the hook points a patch can replace (site -> hook name template, has a
  head axis);
* the metric registry (:func:`register_metric`, :func:`list_metrics`): functions of the
  last position's final normalised representation ``y``, built per pair by
  :func:`_build_metric`, with the unembedding helpers ``logit_diff`` needs.

Everything here is re-exported by :mod:`tl_glasses.analysis.patching`, where it always was.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import GlassesError, UnknownNameError

# site -> (hook name template, has a head axis)
SITES: dict[str, tuple[str, bool]] = {
    "resid_pre": ("blocks.{layer}.hook_resid_pre", False),
    "resid_mid": ("blocks.{layer}.hook_resid_mid", False),
    "resid_post": ("blocks.{layer}.hook_resid_post", False),
    "attn_out": ("blocks.{layer}.hook_attn_out", False),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", False),
    "z": ("blocks.{layer}.attn.hook_z", True),
}
DEFAULT_SITES = ("resid_pre", "attn_out", "mlp_out", "z")
METRICS = ("final_distance", "final_projection", "logit_diff")


def _hook_name(site: str, layer: int) -> str:
    return SITES[site][0].format(layer=layer)


# ---------------------------------------------------------------------------------
# metrics (functions of the last position's final normalised representation y)
# ---------------------------------------------------------------------------------
@dataclass
class _Metric:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    info: dict


def _unembed_rows(model, token_ids: Sequence[int]):
    """(W [d_model, k], b [k] or None, softcap) for computing chosen logits from y."""
    W = model.W_U
    ids = torch.as_tensor(list(token_ids), device=W.device)
    b = getattr(model, "b_U", None)
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    return W[:, ids].detach(), (None if b is None else b[ids].detach()), cap


def _logits_of(y: torch.Tensor, W, b, cap) -> torch.Tensor:
    """Chosen logits of one representation, row by row (batch-shape independent), float64."""
    out = (y.double()[:, None] * W.double()).sum(0)
    if b is not None:
        out = out + b.double()
    if cap > 0:
        out = cap * torch.tanh(out / cap)
    return out


def _full_logits(model, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.unembed(y.reshape(1, 1, -1))[0, 0].double()
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    return cap * torch.tanh(out / cap) if cap > 0 else out


from .._vocab import single_token as _single_token  # noqa: E402
from .._vocab import token_strings  # noqa: E402


# the metric registry: name -> (builder(model, y_a, y_b, answer_tokens) -> _Metric, description)
_METRIC_BUILDERS: dict[str, tuple[Callable[..., _Metric], str]] = {}


def register_metric(name: str, description: str, *, overwrite: bool = False):
    """Register a patching metric builder under ``name`` (a decorator). The builder takes
    ``(model, y_a, y_b, answer_tokens)`` and returns the metric; refuses a name already
    registered unless ``overwrite=True``."""

    def deco(fn):
        if name in _METRIC_BUILDERS and not overwrite:
            raise GlassesError(f"a patching metric named {name!r} is already registered; pass overwrite=True")
        _METRIC_BUILDERS[name] = (fn, description)
        return fn

    return deco


def list_metrics():
    """A table of the registered patching metrics: name and definition."""
    import pandas as pd

    return pd.DataFrame([dict(name=k, description=d) for k, (_, d) in sorted(_METRIC_BUILDERS.items())],
                        columns=["name", "description"])


@register_metric("final_distance", "||y - y_b||_2, y the final norm output at the last position")
def _final_distance(model, y_a, y_b, answer_tokens) -> _Metric:
    yb = y_b.detach().double()

    def dist(y):
        return torch.linalg.vector_norm(y.double() - yb)

    return _Metric("final_distance", dist,
                   {"norm": "L2", "definition": "||y - y_b||_2 (y: final norm output, last position)"})


@register_metric("final_projection", "(y - y_a)·(y_b - y_a) / ||y_b - y_a||^2: 0 at a's value, 1 at b's")
def _final_projection(model, y_a, y_b, answer_tokens) -> _Metric:
    ya, yb = y_a.detach().double(), y_b.detach().double()
    u = yb - ya
    den = float((u * u).sum())

    def proj(y):
        if den == 0.0:
            return (y.double() - ya).sum() * 0.0
        return ((y.double() - ya) * u).sum() / den

    return _Metric("final_projection", proj, {"definition": "(y - y_a)·(y_b - y_a) / ||y_b - y_a||^2"})


@register_metric("logit_diff", "logit[t_b] - logit[t_a] at the last position (answer_tokens, or the tokens "
                               "the two runs move most)")
def _logit_diff(model, y_a, y_b, answer_tokens) -> _Metric:
    if answer_tokens is None:
        la, lb = _full_logits(model, y_a), _full_logits(model, y_b)
        d = lb - la
        t_plus, t_minus = int(d.argmax()), int(d.argmin())
        chosen = "argmax / argmin of logits(b) - logits(a)"
    else:
        if len(answer_tokens) != 2:
            raise GlassesError("answer_tokens is a pair (token favoured by b, token favoured by a)")
        t_plus, t_minus = (_single_token(model, t) for t in answer_tokens)
        chosen = "given"
    W, bias, cap = _unembed_rows(model, [t_plus, t_minus])

    def logit_diff(y):
        lg = _logits_of(y, W, bias, cap)
        return lg[0] - lg[1]

    strs = token_strings(model, [t_plus, t_minus])
    return _Metric("logit_diff", logit_diff, {"tokens": [t_plus, t_minus], "token_strings": strs,
                                              "chosen": chosen, "softcap": cap,
                                              "definition": "logit[t_b] - logit[t_a] at the last position"})


def _build_metric(model, metric, y_a, y_b, answer_tokens) -> _Metric:
    if callable(metric):
        name = getattr(metric, "__name__", "custom")
        return _Metric(name if name != "<lambda>" else "custom", metric, {})
    if metric in _METRIC_BUILDERS:
        return _METRIC_BUILDERS[metric][0](model, y_a, y_b, answer_tokens)
    raise UnknownNameError("patching metric", metric, sorted(_METRIC_BUILDERS) + ["<callable>"])
