"""Path products of causal attention: the over-squashing bound (paper Thm 5.1/B.5)
and the depth limit (Prop. 5.2/B.8, Lemmas B.6/B.7).

With ``A^(ℓ)`` the causal attention of layer ℓ (heads reduced as it is captured),
the per-layer matrix is

* ``variant="bound"``:     ``Ā = A/β + I``       (Thm B.5: residual + attention, β per layer;
  ``beta="auto"``: β^(ℓ) = median_i ‖resid_pre_i‖ / ‖attn_out_i‖ from the same forward)
* ``variant="rollout"``:   ``Ā = (A + I)/2``     (attention rollout; row-stochastic)
* ``variant="attention"``: ``Ā = A``             (attention alone)

and ``B = Ā^(L-1) ··· Ā^(0)``. ``B[n, i]`` is the weighted number of causal paths
from input position ``i`` to the last token: the bound on ``‖∂y_n/∂h_i‖`` up to a
constant. Only the last row is formed: ``e_nᵀ Ā^(L-1) ··· Ā^(0)`` as a row–matrix
chain from the last layer down (``O(L·n²)``), never the ``n×n`` product.

Memory: every layer's head-reduced pattern is kept until the chain runs — ``L·n²``
floats dense (SmolLM2 at 2048 tokens: 30·2048²·4 B = 0.5 GB). Layers whose attention
is banded (a sliding window: every entry further than ``w`` back is exactly zero)
are detected and stored as ``[n, w]`` bands (Gemma 3 at 4096 tokens: 15 local layers
× 8 MB + 3 global × 64 MB instead of 1.2 GB). The forward itself (eager attention)
holds one layer's ``[heads, n, n]`` scores at a time.

The depth profile needs no storage: the first column of the partial products
``P_ℓ = Ā^(ℓ)···Ā^(0)`` (for every row) is a column chain run as the patterns arrive.

Layout: the results and their plots are in :mod:`~tl_glasses.analysis._path_results`,
re-exported here, where they always were.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import pandas as pd
import torch

from .._core import as_tokens, check_hooks, n_layers, require_eval
from ..capture import run
from ..errors import GlassesError, HookError, UnknownNameError
# re-exported: importing this module registers PathResult and DepthResult, so results
# saved before the split (module tl_glasses.analysis.paths) still load
from ._path_results import DepthResult, PathResult
from ._sensitivity_result import _model_name, token_strings, u_shape  # noqa: F401

__all__ = [
    "path_bound",
    "depth_profile",
    "PathResult",
    "DepthResult",
    "VARIANTS",
    "HEADS",
    "LayerPattern",
    "capture_patterns",
    "last_row",
    "first_column_chain",
    "full_product",
    "reduce_heads",
]

VARIANTS = ("bound", "rollout", "attention")
HEADS = ("mean", "max", "none")
Beta = Union[float, Sequence[float], str]


# --------------------------------------------------------------------------- patterns


def reduce_heads(pattern: torch.Tensor, heads: str) -> torch.Tensor:
    """``[batch=1, head, q, k]`` → ``[q, k]``: mean, max, or sum ("none": every head is
    its own edge, so paths through any sequence of heads are all counted)."""
    if pattern.ndim == 4:
        pattern = pattern[0]
    if pattern.ndim != 3:
        raise HookError(f"expected an attention pattern [batch, head, q, k], got {tuple(pattern.shape)}")
    if heads == "mean":
        return pattern.mean(0)
    if heads == "max":
        return pattern.amax(0)
    if heads == "none":
        return pattern.sum(0)
    raise UnknownNameError("head reduction", heads, HEADS)


@dataclass
class LayerPattern:
    """One layer's head-reduced causal attention, dense ``[n, n]`` or banded ``[n, w]``
    (``band[i, t] = A[i, i - w + 1 + t]``; entries with a negative column are 0)."""

    data: torch.Tensor
    width: int  # band width w (n when dense)
    banded: bool
    resid_ratio: float | None = None  # median_i ‖resid_pre_i‖ / ‖attn_out_i‖ (beta="auto")

    @property
    def n(self) -> int:
        return self.data.shape[0]

    @classmethod
    def from_dense(cls, a: torch.Tensor, *, allow_band: bool = True, max_fraction: float = 0.5) -> "LayerPattern":
        n = a.shape[-1]
        if a.shape != (n, n):
            raise HookError(f"expected a square attention matrix, got {tuple(a.shape)}")
        if n > 1 and torch.triu(a, diagonal=1).abs().amax() > 0:
            raise GlassesError(
                "the attention pattern has weight above the diagonal: the model is not causal; "
                "path products here assume causal (lower-triangular) attention"
            )
        if not allow_band or n < 4:
            return cls(a.contiguous(), n, False)
        nz = a != 0
        first = nz.to(torch.uint8).argmax(dim=1)  # first non-zero column of each row
        w = int((torch.arange(n, device=a.device) - first).amax()) + 1
        if w > max_fraction * n:
            return cls(a.contiguous(), n, False)
        cols = torch.arange(n, device=a.device)[:, None] - (w - 1) + torch.arange(w, device=a.device)[None]
        band = a.gather(1, cols.clamp_min(0))
        band = band.masked_fill(cols < 0, 0)
        return cls(band.contiguous(), w, True)

    def dense(self) -> torch.Tensor:
        if not self.banded:
            return self.data
        n, w = self.n, self.width
        out = torch.zeros(n, n, dtype=self.data.dtype, device=self.data.device)
        cols = torch.arange(n, device=out.device)[:, None] - (w - 1) + torch.arange(w, device=out.device)[None]
        valid = cols >= 0
        rows = torch.arange(n, device=out.device)[:, None].expand(n, w)
        out[rows[valid], cols[valid]] = self.data[valid]
        return out

    def diagonal(self) -> torch.Tensor:
        return self.data[:, -1] if self.banded else self.data.diagonal()

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor:
        """``r A`` (row vector times this matrix), in ``r``'s dtype."""
        a = self.data.to(r.dtype)
        if not self.banded:
            return r @ a
        n, w = self.n, self.width
        contrib = r[:, None] * a  # contrib[i, t] goes to column i - w + 1 + t
        idx = torch.arange(n, device=r.device)[:, None] + torch.arange(w, device=r.device)[None]
        out = torch.zeros(n + w - 1, dtype=r.dtype, device=r.device)
        out.index_add_(0, idx.reshape(-1), contrib.reshape(-1))
        return out[w - 1:]

    def matvec(self, c: torch.Tensor) -> torch.Tensor:
        """``A c`` (this matrix times a column vector), in ``c``'s dtype."""
        a = self.data.to(c.dtype)
        if not self.banded:
            return a @ c
        w = self.width
        padded = torch.nn.functional.pad(c, (w - 1, 0))
        return (a * padded.unfold(0, w, 1)).sum(1)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def _betas(beta: Beta, L: int, patterns: Sequence["LayerPattern"] | None = None) -> list[float]:
    if isinstance(beta, str):
        if beta != "auto":
            raise GlassesError(f"beta is a positive number, one per layer, or 'auto'; got {beta!r}")
        if patterns is None or any(p.resid_ratio is None for p in patterns):
            raise GlassesError("beta='auto' needs patterns captured with the residual/attention norms "
                               "(capture_patterns(..., norms=True))")
        betas = [float(p.resid_ratio) for p in patterns]
    elif isinstance(beta, (int, float)) and not isinstance(beta, bool):
        betas = [float(beta)] * L
    else:
        betas = [float(b) for b in beta]
        if len(betas) != L:
            raise GlassesError(f"beta has {len(betas)} values but the model has {L} layers")
    if any(not (b > 0 and math.isfinite(b)) for b in betas):
        raise GlassesError(f"beta must be positive and finite, got {beta!r}")
    return betas


def _coefficients(variant: str, beta: float) -> tuple[float, float]:
    """Ā = a·A + b·I."""
    if variant == "bound":
        return 1.0 / beta, 1.0
    if variant == "rollout":
        return 0.5, 0.5
    if variant == "attention":
        return 1.0, 0.0
    raise UnknownNameError("path variant", variant, VARIANTS)


def _pattern_names(model, layers: Sequence[int]) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in layers]


def _run_patterns(model, tokens: torch.Tensor, on_layer: Callable[[int, "LayerPattern"], None], *,
                  heads: str, band: bool = True, norms: bool = False) -> None:
    """One no-grad forward through the capture engine: each layer's pattern is
    head-reduced (and banded) as it is read and handed to ``on_layer(layer,
    LayerPattern)``; with ``norms`` the layer is handed over once its attention output
    has fired, with ``resid_ratio`` set. The forward stops right after the last read."""
    L = n_layers(model)
    names = _pattern_names(model, range(L))
    extra = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{i}.hook_attn_out" for i in range(L)]
    check_hooks(model, names + (extra if norms else []), purpose="path products")
    seen: set[int] = set()
    pending: dict[int, LayerPattern] = {}
    resid: dict[int, torch.Tensor] = {}

    def finish(layer, pat):
        seen.add(layer)
        on_layer(layer, pat)

    def pattern_hook(layer):
        def hook(t):
            if layer in seen or layer in pending:
                raise HookError(f"{names[layer]} fired twice in one forward")
            pat = LayerPattern.from_dense(reduce_heads(t.detach().float(), heads), allow_band=band)
            if norms:
                pending[layer] = pat
            else:
                finish(layer, pat)
        return hook

    def resid_hook(layer):
        def hook(t):
            resid[layer] = t.detach()[0].float().norm(dim=-1)
        return hook

    def attn_out_hook(layer):
        def hook(t):
            if layer not in pending or layer not in resid:
                raise HookError(f"blocks.{layer}.hook_attn_out fired before its pattern or resid_pre")
            a = t.detach()[0].float().norm(dim=-1)
            ratio = resid.pop(layer) / a.clamp_min(torch.finfo(torch.float32).tiny)
            pat = pending.pop(layer)
            pat.resid_ratio = float(ratio.median())
            finish(layer, pat)
        return hook

    reads = {nm: pattern_hook(i) for i, nm in enumerate(names)}
    if norms:
        reads.update({f"blocks.{i}.hook_resid_pre": resid_hook(i) for i in range(L)})
        reads.update({f"blocks.{i}.hook_attn_out": attn_out_hook(i) for i in range(L)})
    # the engine stops the forward once every read has fired (the last pattern, or the
    # last attention output with norms): the rest of the forward is not needed
    run(model, tokens, read=reads, stop=True, attn_impl="eager", purpose="path products", check=False)
    if len(seen) != L:
        missing = [names[i] for i in range(L) if i not in seen]
        raise HookError(
            f"attention patterns were not produced at {missing[:3]}{'…' if len(missing) > 3 else ''}; "
            f"load the model with eager attention (tl_glasses.load_model does) so hook_pattern fires"
        )


def capture_patterns(model, prompt, *, heads: str = "mean", band: bool = True, norms: bool = False,
                     prepend_bos: bool | None = None) -> list[LayerPattern]:
    """Every layer's causal attention, heads reduced inside the hook as it is captured,
    banded layers stored as bands. ``norms=True`` also records each layer's
    ``resid_ratio`` (for ``beta="auto"``). Memory: see the module docstring."""
    if heads not in HEADS:
        raise UnknownNameError("head reduction", heads, HEADS)
    require_eval(model)
    tokens = as_tokens(model, prompt, prepend_bos=prepend_bos)
    out: list[LayerPattern | None] = [None] * n_layers(model)

    def keep(layer, pat):
        out[layer] = pat

    _run_patterns(model, tokens, keep, heads=heads, band=band, norms=norms)
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- chains


def last_row(patterns: Sequence[LayerPattern], *, variant: str = "bound", beta: Beta = 1.0,
             dtype: torch.dtype = torch.float64, row: int = -1) -> torch.Tensor:
    """``e_rowᵀ Ā^(L-1) ··· Ā^(0)`` by a row–matrix chain from the last layer down."""
    L = len(patterns)
    betas = _betas(beta, L, patterns)
    n = patterns[0].n
    r = torch.zeros(n, dtype=dtype, device=patterns[0].data.device)
    r[row] = 1
    for layer in reversed(range(L)):
        a, b = _coefficients(variant, betas[layer])
        r = a * patterns[layer].rmatvec(r) + (b * r if b else 0)
    return r


def first_column_chain(patterns: Sequence[LayerPattern], *, variant: str = "rollout", beta: Beta = 1.0,
                       dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """First column and row sums of every partial product ``P_ℓ = Ā^(ℓ)···Ā^(0)``:
    two column chains from layer 0 up. Returns ``([L, n], [L, n])``."""
    L = len(patterns)
    betas = _betas(beta, L, patterns)
    n = patterns[0].n
    c = torch.zeros(n, dtype=dtype)
    c[0] = 1
    s = torch.ones(n, dtype=dtype)
    cols, sums = [], []
    for layer in range(L):
        a, b = _coefficients(variant, betas[layer])
        c = a * patterns[layer].matvec(c) + b * c
        s = a * patterns[layer].matvec(s) + b * s
        cols.append(c)
        sums.append(s)
    return torch.stack(cols), torch.stack(sums)


def full_product(patterns: Sequence[LayerPattern], *, variant: str = "bound", beta: Beta = 1.0,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The whole ``n×n`` product ``Ā^(L-1)···Ā^(0)`` (``O(L·n³)``): for checks and
    benchmarks only; :func:`last_row` is what the analysers use."""
    L = len(patterns)
    betas = _betas(beta, L, patterns)
    n = patterns[0].n
    P = torch.eye(n, dtype=dtype)
    for layer in range(L):
        a, b = _coefficients(variant, betas[layer])
        P = a * (patterns[layer].dense().to(dtype) @ P) + b * P
    return P


# --------------------------------------------------------------------------- analysers


def _check_args(variant: str, heads: str) -> None:
    if variant not in VARIANTS:
        raise UnknownNameError("path variant", variant, VARIANTS)
    if heads not in HEADS:
        raise UnknownNameError("head reduction", heads, HEADS)


def path_bound(
    model,
    prompt,
    *,
    variant: str = "bound",
    heads: str = "mean",
    beta: Beta = 1.0,
    band: bool = True,
    prepend_bos: bool | None = None,
) -> PathResult:
    """The last row of ``Ā^(L-1)···Ā^(0)``: for every position i, the weighted count of
    causal paths i → n (Thm 5.1/B.5 without its constant).

    Args:
        variant: ``"bound"`` (``A/β + I``), ``"rollout"`` (``(A+I)/2``), ``"attention"`` (``A``).
        heads: ``"mean"`` or ``"max"`` over heads (max: an upper bound), or ``"none"``
            (heads summed: each head is a separate edge).
        beta: the constant β of the bound: a float, one per layer, or ``"auto"``: per
            layer, the median over positions of ``‖resid_pre_i‖ / ‖attn_out_i‖`` from the
            same forward (how far the attention branch moves the stream relative to the
            identity path; see docs/oversquashing.md).
        band: store sliding-window layers as bands (exact; saves memory).
    """
    _check_args(variant, heads)
    require_eval(model)
    tokens = as_tokens(model, prompt, prepend_bos=prepend_bos)
    from .._memory import guard as _memory_guard  # refuse before running what cannot fit

    _memory_guard(model, tokens.shape[-1], what="path_bound", logits="none",
                  captured_patterns=n_layers(model))
    t0 = time.perf_counter()
    pats = capture_patterns(model, tokens, heads=heads, band=band, norms=beta == "auto")
    t1 = time.perf_counter()
    betas = _betas(beta, len(pats), pats)
    row = last_row(pats, variant=variant, beta=betas)
    t2 = time.perf_counter()
    n = tokens.shape[-1]
    tensors = {"values": row, "tokens": tokens[0].cpu()}
    meta = dict(
        model=_model_name(model), variant=variant, heads=heads, beta_mode=beta if isinstance(beta, str) else "given",
        beta=betas, n_tokens=n,
        band_widths=[p.width for p in pats], banded_layers=sum(p.banded for p in pats),
        pattern_bytes=sum(p.nbytes for p in pats),
        seconds_forward=round(t1 - t0, 4), seconds_chain=round(t2 - t1, 5),
    )
    total = float(row.sum())
    df = pd.DataFrame({
        "position": range(n),
        "token_id": tokens[0].tolist(),
        "token": token_strings(model, tokens),
        "value": row.numpy(),
        "share": (row / total).numpy() if total > 0 else float("nan"),
    })
    return PathResult(df=df, meta=meta, tensors=tensors)


def depth_profile(
    model,
    prompt,
    *,
    variant: str = "rollout",
    heads: str = "mean",
    beta: Beta = 1.0,
    prepend_bos: bool | None = None,
) -> DepthResult:
    """First-token mass of the partial products after each layer, each layer's
    eigenvalues (the diagonal of the triangular Ā), and the distance of the product
    from the rank-one first-column limit (Prop. B.8). Runs as the patterns arrive:
    memory is one layer's pattern, never all of them.

    The default ``variant="rollout"`` (``(A+I)/2``, row-stochastic) is the matrix of
    Prop. B.8 up to the factor 2^L; every variant's rows are normalised by their sums.
    """
    _check_args(variant, heads)
    require_eval(model)
    tokens = as_tokens(model, prompt, prepend_bos=prepend_bos)
    n = tokens.shape[-1]
    L = n_layers(model)
    auto = beta == "auto"
    betas = [float("nan")] * L if auto else _betas(beta, L)
    state = {
        "c": torch.zeros(n, dtype=torch.float64),
        "s": torch.ones(n, dtype=torch.float64),
    }
    state["c"][0] = 1
    cols = [None] * L
    sums = [None] * L
    eigs = [None] * L
    raw = [None] * L
    widths = [0] * L

    def step(layer, pat):
        if auto:
            betas[layer] = _betas([pat.resid_ratio], 1)[0]
        a, b = _coefficients(variant, betas[layer])
        c, s = state["c"].to(pat.data.device), state["s"].to(pat.data.device)
        c = a * pat.matvec(c) + b * c
        s = a * pat.matvec(s) + b * s
        state["c"], state["s"] = c, s
        cols[layer], sums[layer] = c.cpu(), s.cpu()
        raw[layer] = pat.diagonal().double().cpu()
        eigs[layer] = a * raw[layer] + b
        widths[layer] = pat.width

    _run_patterns(model, tokens, step, heads=heads, norms=auto)
    first_col = torch.stack(cols) / torch.stack(sums)  # [L, n] normalised rows
    eig = torch.stack(eigs)
    rows = []
    for layer in range(L):
        fc = first_col[layer]
        rest = eig[layer][1:]
        rows.append(dict(
            layer=layer,
            first_token_mass=float(fc[-1]),
            dist_last=float(1 - fc[-1]),
            dist_inf=float(2 * (1 - fc).max()),
            min_first_column=float(fc.min()),
            lambda2=float(rest.max()) if rest.numel() else float("nan"),
            diag_mean=float(eig[layer].mean()),
            unit_eigs=int((raw[layer][1:] >= 1 - 1e-6).sum()) if n > 1 else 0,
            beta=betas[layer],
            band=widths[layer],
        ))
    df = pd.DataFrame(rows)
    tensors = {
        "values": first_col[:, -1].clone(),
        "first_column": first_col,
        "eigenvalues": eig,
        "tokens": tokens[0].cpu(),
    }
    meta = dict(model=_model_name(model), variant=variant, heads=heads, beta=betas,
                beta_mode=beta if isinstance(beta, str) else "given", n_tokens=n)
    return DepthResult(df=df, meta=meta, tensors=tensors)
