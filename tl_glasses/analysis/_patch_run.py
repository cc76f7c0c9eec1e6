"""Patching's engines: runs of ``a`` that stop after the final norm, exact patches
(batched, each batch checked bit for bit against the unbatched run) and attribution
patching (one forward + one backward), plus reading activations from a user's cache and
applying mitigations to either side of a pair.

Everything here is re-exported by :mod:`tl_glasses.analysis.patching`, where it always was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from .._core import FINAL
from ..errors import GlassesError, HookError
from ._patch_metrics import _hook_name


# ---------------------------------------------------------------------------------
# running: capture at chosen positions, stop after the final norm
# ---------------------------------------------------------------------------------
def _run_to_final(model, tokens, fwd_hooks, captures: Mapping[str, torch.Tensor] | None = None,
                  mitigation=None):
    """Run ``tokens`` with ``fwd_hooks`` (the mitigation's patch and hooks first) through
    the capture engine; return (y at the last position ``[batch, d]``, {hook name:
    activation at the given positions ``[batch, P, ...]``}).

    The forward stops right after the final norm (nothing after it, the unembedding,
    is needed) and runs the eager attention kernel, the definition. Captures are
    detached copies of the positions asked for only (never the whole activation); y
    keeps its graph when autograd is on (attribution patching)."""
    from ..capture import Read, run

    reads: dict[str, Read] = {name: Read(at=pos) for name, pos in (captures or {}).items()}
    reads[FINAL] = Read(at=-1, graph=True)
    out = run(model, tokens, read=reads, write=list(fwd_hooks), mitigation=mitigation, stop=True,
              attn_impl="eager", grad=torch.is_grad_enabled(), purpose="patching", check=False)
    if FINAL not in out.acts:
        raise HookError(
            f"the run did not reach {FINAL}; this model does not fire that hook. Load it with "
            f"tl_glasses.load_model or tl_glasses.wrap_model (TransformerBridge)"
        )
    missing = out.missing(list(captures or {}))
    if missing:
        raise HookError(f"these hook points did not fire during the run: {missing}")
    return out.acts[FINAL], {n: out.acts[n] for n in (captures or {})}


def _user_cache_get(cache, name: str, what: str):
    try:
        return cache[name]
    except (KeyError, TypeError):
        pass
    keys = list(cache.keys()) if hasattr(cache, "keys") else []
    raise GlassesError(
        f"{what} does not hold {name!r} (it holds {len(keys)} entries"
        f"{': ' + ', '.join(keys[:6]) + (' …' if len(keys) > 6 else '') if keys else ''}). "
        f"Build it with model.run_with_cache(tokens, names_filter=tl_glasses.analysis.patching."
        f"patch_hook_names(model, sites, layers)) or tl_glasses.analysis.patching.patch_cache(...)"
    )


def _from_cache(cache, names_pos: Mapping[str, torch.Tensor], n_tokens: int, what: str):
    """(y_last [1, d], {name: act at positions [1, P, ...]}) from a user's cache, checked."""
    out = {}
    for name, pos in list(names_pos.items()) + [(FINAL, None)]:
        t = _user_cache_get(cache, name, what)
        if not isinstance(t, torch.Tensor):
            raise GlassesError(f"{what}[{name!r}] is a {type(t).__name__}, not a tensor")
        if t.ndim >= 2 and t.shape[0] == 1 and t.shape[1] == n_tokens:
            t = t[0]
        elif t.shape[0] != n_tokens:
            raise GlassesError(
                f"{what}[{name!r}] has shape {tuple(t.shape)}, but the prompt has {n_tokens} tokens: "
                f"pass the cache of this one prompt (batch size 1)"
            )
        out[name] = t
    y = out.pop(FINAL)[-1][None]
    acts = {name: out[name][pos.to(out[name].device)][None] for name, pos in names_pos.items()}
    return y, acts


# ---------------------------------------------------------------------------------
# mitigations (values from tl_glasses.interventions): hooks and prompt transforms
# ---------------------------------------------------------------------------------
def _as_list(m) -> list:
    if m is None:
        return []
    if isinstance(m, (list, tuple)):
        return list(m)
    return [m]


def _combine(mitigations: list):
    """One Mitigation (or None) from a list of mitigations / spec strings."""
    from ..interventions import as_mitigation

    return as_mitigation(list(mitigations)) if mitigations else None


def _mitigation_name(m) -> str | None:
    return None if m is None else str(getattr(m, "label", repr(m)))


def _pair_side_tokens(model, pair, side: str, mitigation):
    """Tokens of one side of a family pair, with a mitigation's prompt transform applied
    (through the family's own PromptSpec, as ``SequenceFamily.pair`` does)."""
    if mitigation is None or not mitigation.has_transform:
        return pair.a if side == "a" else pair.b
    spec = getattr(pair, "spec", None)
    if spec is None:
        raise GlassesError(
            "prompt mitigations (separators, prompt_structure) need a pair built by a family "
            "(tl_glasses.get_family(...).pair(model, n)); plain prompts or tokens cannot be re-built"
        )
    spec = mitigation.transform(spec)
    ta = spec.tokenize(model)
    if side == "a":
        return ta.tokens
    if pair.level == "item":
        return spec.with_items(spec.items + (spec.items[-1],)).tokenize(model).tokens
    return torch.cat([ta.tokens, ta.tokens[-1:]])


# ---------------------------------------------------------------------------------
# the engines
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cell:
    site: str
    layer: int
    position: int  # in a
    head: int | None

    @property
    def hook(self) -> str:
        return _hook_name(self.site, self.layer)


def _exact(model, toks_a, groups, src, act_a, metric, m_a, y_a, mit_a, batch_size, progress):
    """Metric of ``a`` with each group of cells patched (one group = one run).

    ``src``/``act_a``: {hook: {a position: tensor[...]}} (source values and a's own).
    Returns (metric values, info dict)."""
    dev = toks_a.device
    results = torch.full((len(groups),), float("nan"), dtype=torch.float64)
    todo = []
    skipped = 0
    for i, g in enumerate(groups):
        live = [c for c in g if not _identical(src, act_a, c)]
        if not live:
            results[i] = float(m_a)  # every value patched equals a's own: the run is a's run
            skipped += 1
        else:
            todo.append((i, live))
    n_batches = 0
    fallback_batches = 0
    bs = max(1, int(batch_size))

    def run_rows(rows):  # rows: list of (result index, cells); row 0 of the batch is unpatched
        per_hook: dict[str, list] = {}
        for r, (_, cells) in enumerate(rows, start=1):
            for c in cells:
                per_hook.setdefault(c.hook, []).append((r, c))
        hooks = []
        for name, entries in per_hook.items():
            hooks.append((name, _setter(entries, src[name])))
        toks = toks_a.repeat(len(rows) + 1, 1)
        with torch.no_grad():
            y, _ = _run_to_final(model, toks, hooks, None, mit_a)
        return y

    it = range(0, len(todo), bs)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=math.ceil(len(todo) / bs), desc="exact patching", unit="batch", leave=False)
    for start in it:
        rows = todo[start:start + bs]
        n_batches += 1
        y = run_rows(rows) if bs > 1 else None
        if y is not None and torch.equal(y[0], y_a[0]):
            for r, (i, _) in enumerate(rows, start=1):
                results[i] = float(metric.fn(y[r]))
            continue
        if y is not None:
            fallback_batches += 1
        for i, cells in rows:  # one run per group, each [a, a-patched]: batch of 2 is one shape;
            y1 = _run_single(model, toks_a, cells, src, mit_a)
            results[i] = float(metric.fn(y1[0]))
    info = dict(batch_size=bs, batches=n_batches, fallback_batches=fallback_batches,
                skipped_identical=skipped, runs=len(todo))
    return results, info


def _run_single(model, toks_a, cells, src, mit_a):
    per_hook: dict[str, list] = {}
    for c in cells:
        per_hook.setdefault(c.hook, []).append((0, c))
    hooks = [(name, _setter(entries, src[name])) for name, entries in per_hook.items()]
    with torch.no_grad():
        y, _ = _run_to_final(model, toks_a, hooks, None, mit_a)
    return y


def _identical(src, act_a, c: _Cell) -> bool:
    s = src[c.hook][c.position]
    a = act_a[c.hook][c.position]
    if c.head is not None:
        s, a = s[c.head], a[c.head]
    return torch.equal(s, a)


def _setter(entries, values_by_pos):
    rows = torch.tensor([r for r, _ in entries])
    pos = torch.tensor([c.position for _, c in entries])
    heads = [c.head for _, c in entries]
    has_head = heads[0] is not None
    if has_head:
        hd = torch.tensor(heads)
        vals = torch.stack([values_by_pos[c.position][c.head] for _, c in entries])
    else:
        vals = torch.stack([values_by_pos[c.position] for _, c in entries])

    def hook(act, hook):
        act = act.clone()
        v = vals.to(device=act.device, dtype=act.dtype)
        if has_head:
            act[rows.to(act.device), pos.to(act.device), hd.to(act.device)] = v
        else:
            act[rows.to(act.device), pos.to(act.device)] = v
        return act

    return hook


def _attribution(model, toks_a, needs, build_metric, mit_a):
    """One forward + one backward on ``a``: the metric's gradient at every (hook, position).

    Zero-valued leaves are added at each site (``act + 0``: the forward is unchanged) and
    the gradient is taken with respect to them, so nothing depends on how a bridge
    reshapes the tensor handed to a hook, and no parameter ``.grad`` is touched.
    ``build_metric(y_a)`` makes the metric from this very run's ``y``.
    Returns (y_a, {hook: a's activation at the positions}, {hook: gradient or None}, metric)."""
    eps: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def make(name, pos):
        def hook(act, hook):
            e = torch.zeros((act.shape[0], len(pos), *act.shape[2:]), dtype=act.dtype,
                            device=act.device, requires_grad=True)
            eps[name] = e
            acts[name] = act[:, pos.to(act.device)].detach().clone()
            return act.index_add(1, pos.to(act.device), e)

        return hook

    hooks = [(name, make(name, pos)) for name, pos in needs.items()]
    with torch.enable_grad():
        y, _ = _run_to_final(model, toks_a, hooks, None, mit_a)
        met = build_metric(y.detach()[0])
        m = met.fn(y[0])
        if not m.requires_grad:
            raise GlassesError(
                "the metric does not depend on the model's output through autograd; attribution "
                "needs a differentiable metric of y"
            )
        names = list(needs)
        grads = torch.autograd.grad(m, [eps[n] for n in names], allow_unused=True)
    return y.detach(), acts, {n: (None if g is None else g[0]) for n, g in zip(names, grads)}, met


def _first_order(grad, delta) -> torch.Tensor:
    """grad · delta over the feature axis: ``[P]`` (or ``[P, head]`` for z)."""
    if grad is None:
        return torch.zeros(delta.shape[:-1], dtype=torch.float64)
    return (grad.double() * delta.double()).sum(-1).cpu()
