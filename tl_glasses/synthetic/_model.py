"""``SyntheticDecoder``: the paper's small untrained Transformer (Sec. 2, App. C.3, C.4)
as a TransformerLens ``HookedRootModule``.

Every layer is the Pre-LN block of the paper's Sec. 2::

    z_i     = v_i + sum_j a_ij W_O v'_j        a_i = softmax_j(k(q_i, k_j, p_ij))
    v_i^+   = z_i + psi(norm2(z_i))
    y_i     = norm3(v_i^(L))

with ``q, k, v`` either computed from ``norm1(v)`` by Gaussian projections or
sampled directly, per token id, from N(0, init_std^2) (App. C.3/C.4). The hook names
are TransformerLens' own, so every tl_glasses analyser runs on it unchanged.

Layout: this module is the model and its character vocabulary; the configuration and
the layers are in :mod:`~tl_glasses.synthetic._blocks`, re-exported here.
"""
from __future__ import annotations

import math
import string
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from ..errors import ContextLengthError, GlassesError, HookError, TokenizationError, UnknownNameError
from ..typing import BatchTokens, Tokens
from ._pe import PE_NAMES, sinusoidal_cached
# re-exported: every name importable from here before the split still is
from ._blocks import _TL_PE_NAME, SyntheticConfig, _Attention, _Block, _MLP, _Norm, _rows  # noqa: F401

__all__ = ["SyntheticDecoder", "SyntheticConfig", "CHAR_VOCAB"]

_SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
# the same ids as tl_glasses.models.char_tokenizer (specials, then string.printable)
CHAR_VOCAB: tuple[str, ...] = tuple(_SPECIAL + list(dict.fromkeys(string.printable)))
_CHAR_ID = {c: i for i, c in enumerate(CHAR_VOCAB)}
PAD_ID, BOS_ID, UNK_ID = 0, 1, 3


class SyntheticDecoder(HookedRootModule):
    """A small untrained Pre-LN Transformer for the paper's synthetic experiments.

    Args:
        pe: positional encoding: ``"rope"`` (rotary, Llama layout), ``"alibi"`` (linear
            biases with the standard head slopes), ``"sinusoidal"`` (absolute, Vaswani et
            al.) or ``"none"`` (NoPE).
        causal: causal mask (decoder) or bidirectional attention.
        qkv: ``"computed"``: ``q, k, v = norm1(x) W`` with Gaussian ``W`` scaled so the
            entries have std ``init_std``; ``"sampled"``: q, k, v drawn directly from
            N(0, init_std^2), one fixed row per token id and layer (App. C.3/C.4), so a
            sequence and its repeated-last-token twin share the q, k, v of shared
            tokens. In ``"sampled"`` mode attention reads no residual input (there is no
            ``ln1``): gradients reach earlier positions only through the residual path,
            and a sinusoidal PE is added to q and k (scaled by ``pe_scale``) instead of
            to the residual stream, so that, as in the paper's Sec. 2, position enters
            only through the attention scores ``k(q_i, k_j, p_ij)``.
        init_std: std of the q, k, v entries; default ``1/sqrt(d_head)`` (N(0, 1/d), App.
            C.3). App. C.4 uses standard Gaussians (``init_std=1``).
        d_mlp: MLP width (``0``: attention only; then there are no ``mlp``/``ln2`` hooks).
        pe_scale: multiplier of the sinusoidal table: default 1 when added to the
            embeddings (``"computed"``), ``init_std * sqrt(2)`` when added to sampled
            q and k (the same RMS as the sampled rows).
        upcast_softmax: in float16/bfloat16, the softmax is taken in float32 and cast
            back (what transformers' eager attention does); ``False`` keeps it in the
            model dtype. float32 and float64 models take it in their own dtype.
        dtype, device, seed: weights are drawn in float32 from a generator seeded with
            ``seed`` and then cast, so one seed gives the same model in every dtype.

    Hooks (TransformerLens names): ``hook_embed``, ``hook_pos_embed`` (sinusoidal,
    computed mode), ``blocks.{l}.hook_resid_pre/hook_attn_out/hook_resid_mid/
    hook_mlp_out/hook_resid_post``, ``blocks.{l}.ln1|ln2.hook_scale/hook_normalized/
    hook_out``, ``blocks.{l}.attn.hook_q/hook_k/hook_v/hook_rot_q/hook_rot_k/
    hook_attn_scores/hook_pattern/hook_z``, ``blocks.{l}.mlp.hook_pre/hook_post``,
    ``ln_final.hook_scale/hook_normalized/hook_out``. ``hook_attn_scores`` is after the
    ALiBi bias and the causal mask (``finfo.min``), and its edits are what the softmax
    reads. The final LayerNorm's learned scale starts at 1, so ``hook_normalized`` and
    ``hook_out`` agree until that weight is changed.

    Memory: a full forward forms ``[batch, heads, n, n]`` attention scores in every
    layer (n = 8192, 4 heads, float32: 1 GiB per layer, twice that with the pattern);
    measurements that read only the last token should pass ``last_query_only=True``.
    """

    def __init__(
        self,
        pe: Literal["rope", "alibi", "sinusoidal", "none"] = "rope",
        causal: bool = True,
        *,
        n_layers: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        d_head: int | None = None,
        d_mlp: int | None = None,
        n_ctx: int = 16384,
        d_vocab: int = 128,
        qkv: Literal["computed", "sampled"] = "computed",
        init_std: float | None = None,
        pe_scale: float | None = None,
        rope_base: float = 10000.0,
        upcast_softmax: bool = True,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        if pe not in PE_NAMES:
            raise UnknownNameError("positional encoding", pe, PE_NAMES)
        if qkv not in ("computed", "sampled"):
            raise UnknownNameError("qkv mode", qkv, ["computed", "sampled"])
        d_head = d_head or d_model // n_heads
        if d_head < 2 or (pe in ("rope",) and d_head % 2) or (pe == "sinusoidal" and d_head % 2):
            raise GlassesError(f"d_head={d_head}: RoPE and sinusoidal encodings need an even head size >= 2")
        if d_model % 2 and pe == "sinusoidal":
            raise GlassesError("the sinusoidal encoding needs an even d_model")
        init_std = float(init_std) if init_std is not None else 1.0 / math.sqrt(d_head)
        if pe_scale is None:
            pe_scale = 1.0 if qkv == "computed" else init_std * math.sqrt(2.0)
        self.cfg = SyntheticConfig(
            n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head,
            d_mlp=4 * d_model if d_mlp is None else int(d_mlp), n_ctx=n_ctx, d_vocab=d_vocab, pe=pe,
            causal=bool(causal), qkv=qkv, init_std=init_std, pe_scale=float(pe_scale),
            rope_base=float(rope_base), upcast_softmax=bool(upcast_softmax), seed=int(seed),
            dtype=dtype, device=str(torch.device(device)),
        )
        gen = torch.Generator().manual_seed(int(seed))
        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.randn(d_vocab, d_model, generator=gen))
        self.hook_embed = HookPoint()
        if pe == "sinusoidal" and qkv == "computed":
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([_Block(self.cfg, gen) for _ in range(n_layers)])
        self.ln_final = _Norm(d_model, self.cfg.eps)
        self.unembed = nn.Module()
        self.unembed.W_U = nn.Parameter(torch.randn(d_model, d_vocab, generator=gen) / math.sqrt(d_model))
        self.unembed.b_U = nn.Parameter(torch.zeros(d_vocab))
        self.to(device=device, dtype=dtype)
        self.setup()
        self.eval()
        self._tokenizer = None

    # -- bookkeeping ---------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):  # keep cfg.dtype/device in step with .to()/.half()
        out = super()._apply(fn, *args, **kwargs)
        cfg = getattr(self, "cfg", None)
        if cfg is not None and hasattr(self, "embed"):
            cfg.dtype = self.embed.W_E.dtype
            cfg.device = str(self.embed.W_E.device)
        return out

    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.W_E

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"SyntheticDecoder(pe={c.pe!r}, causal={c.causal}, qkv={c.qkv!r}, n_layers={c.n_layers}, "
            f"d_model={c.d_model}, n_heads={c.n_heads}, d_mlp={c.d_mlp}, init_std={c.init_std:.4g}, "
            f"seed={c.seed}, dtype={c.dtype})"
        )

    # -- tokens ----------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The character tokenizer of ``tl_glasses.models`` (same ids as ``to_tokens``),
        built on first use."""
        if self._tokenizer is None:
            from ..models._tiny import char_tokenizer

            self._tokenizer = char_tokenizer(prepend_bos=False)
        return self._tokenizer

    def _encode(self, text: str) -> list[int]:
        ids = [_CHAR_ID.get(c, UNK_ID) for c in text]  # like the char tokenizer: unknown -> <unk>
        bad = [i for i in ids if i >= self.cfg.d_vocab]
        if bad:
            raise TokenizationError(
                f"the text uses token ids up to {max(bad)} but d_vocab={self.cfg.d_vocab}; "
                f"build the model with d_vocab >= {len(CHAR_VOCAB)} or pass token ids"
            )
        return ids

    def to_tokens(
        self,
        input: str | Sequence[str] | Sequence[int] | torch.Tensor,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> torch.Tensor:
        """Token ids ``[batch, pos]``. Strings (or lists of strings, right-padded) go
        through the character vocabulary (one token per character, characters outside
        printable ASCII become ``<unk>`` as with ``tl_glasses.models.char_tokenizer``; no
        BOS unless ``prepend_bos=True``); token lists and tensors are taken as they are."""
        bos = self.cfg.default_prepend_bos if prepend_bos is None else bool(prepend_bos)
        if isinstance(input, str):
            rows = [self._encode(input)]
        elif isinstance(input, torch.Tensor):
            if input.is_floating_point():
                raise GlassesError("expected token ids (an integer tensor), got a floating-point tensor")
            toks = input.long()
            toks = toks[None] if toks.ndim == 1 else toks
            if bos:
                toks = torch.cat([torch.full_like(toks[:, :1], BOS_ID), toks], dim=1)
            return toks.to(self.cfg.device) if move_to_device else toks
        elif isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
            rows = [self._encode(t) for t in input]
        elif isinstance(input, (list, tuple)) and all(isinstance(t, int) for t in input):
            rows = [list(input)]
        else:
            raise GlassesError(f"cannot make tokens from {type(input).__name__}; pass a string, token ids or a tensor")
        if bos:
            rows = [[BOS_ID] + r for r in rows]
        width = max(len(r) for r in rows)
        left = (padding_side or "right") == "left"
        toks = torch.tensor(
            [([PAD_ID] * (width - len(r)) + r) if left else (r + [PAD_ID] * (width - len(r))) for r in rows],
            dtype=torch.long,
        )
        if truncate:
            toks = toks[:, : self.cfg.n_ctx]
        return toks.to(self.cfg.device) if move_to_device else toks

    def to_str_tokens(self, input: str | torch.Tensor, prepend_bos: bool | None = None) -> list[str]:
        toks = self.to_tokens(input, prepend_bos=prepend_bos)
        if toks.shape[0] != 1:
            raise GlassesError("to_str_tokens takes one sequence")
        return [CHAR_VOCAB[i] if i < len(CHAR_VOCAB) else f"<{i}>" for i in toks[0].tolist()]

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str:
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        if ids and isinstance(ids[0], list):
            raise GlassesError("to_string takes one sequence")
        return "".join(CHAR_VOCAB[i] if 4 <= i < len(CHAR_VOCAB) else "" for i in ids)

    # -- forward -----------------------------------------------------------------------
    def forward(
        self,
        input: str | Sequence[int] | BatchTokens | Tokens,
        return_type: Literal["logits", "loss", "both"] | None = "logits",
        *,
        stop_at_layer: int | None = None,
        last_query_only: bool = False,
        prepend_bos: bool | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """Run the model on ``[batch, pos]`` token ids (or a string).

        ``return_type``: ``"logits"`` ``[batch, pos, d_vocab]``, ``"loss"`` (next-token
        cross-entropy), ``"both"`` or ``None``. ``stop_at_layer=l`` returns the residual
        stream entering block ``l``. ``last_query_only=True`` computes the final block
        (its attention, MLP, the final norm and the unembedding) for the last position
        only: the fast path of measurements that read only the last token (its hooks
        then see one query position). It equals the full forward up to the rounding of
        the smaller matrix products (bitwise in bf16/fp16 on CPU, within a few float32
        ulps; ``tests/test_synthetic.py``). ``position_ids`` (``[pos]`` or ``[batch, pos]``
        with equal rows; default ``0..n-1``) are the absolute positions the encodings
        see; the causal mask follows the sequence order.
        """
        tokens = self.to_tokens(input, prepend_bos=prepend_bos) if not isinstance(input, torch.Tensor) else input
        if tokens.is_floating_point():
            raise GlassesError("expected token ids (an integer tensor), got a floating-point tensor")
        tokens = tokens.long()
        if tokens.ndim == 1:
            tokens = tokens[None]
        tokens = tokens.to(self.W_E.device)
        n = tokens.shape[1]
        if n == 0:
            raise GlassesError("the input has no tokens")
        if n > self.cfg.n_ctx:
            raise ContextLengthError(
                f"{n} tokens exceed the model's context n_ctx={self.cfg.n_ctx}; build it with a larger n_ctx"
            )
        if int(tokens.max()) >= self.cfg.d_vocab or int(tokens.min()) < 0:
            raise GlassesError(f"token ids must lie in [0, {self.cfg.d_vocab})")
        pos = self._positions(position_ids, n, tokens.device)
        dtype = self.W_E.dtype
        resid = self.hook_embed(_rows(self.W_E, tokens))
        if self.cfg.pe == "sinusoidal" and self.cfg.qkv == "computed":
            pe = sinusoidal_cached(int(pos.max()) + 1, self.cfg.d_model)[pos.cpu()] * self.cfg.pe_scale
            pe = pe.to(dtype=dtype, device=resid.device)[None].expand(tokens.shape[0], n, -1)
            resid = resid + self.hook_pos_embed(pe)
        L = self.cfg.n_layers
        stop = L if stop_at_layer is None else (L + stop_at_layer if stop_at_layer < 0 else stop_at_layer)
        for layer, block in enumerate(self.blocks[:stop]):
            resid = block(resid, tokens, last_query_only and layer == L - 1, pos)
        if stop_at_layer is not None:
            return resid
        y = self.ln_final(resid)
        if return_type is None:
            return None
        logits = y @ self.unembed.W_U + self.unembed.b_U
        if return_type == "logits":
            return logits
        if return_type in ("loss", "both"):
            if last_query_only:
                raise GlassesError("a loss needs every position; drop last_query_only")
            lp = logits[:, :-1].float().log_softmax(-1)
            loss = -lp.gather(-1, tokens[:, 1:, None]).mean()
            return loss if return_type == "loss" else (logits, loss)
        raise UnknownNameError("return_type", return_type, ["logits", "loss", "both", None])

    @staticmethod
    def _positions(position_ids: torch.Tensor | None, n: int, device) -> torch.Tensor:
        if position_ids is None:
            return torch.arange(n, device=device)
        pos = torch.as_tensor(position_ids, device=device).long()
        if pos.ndim == 2:
            if not (pos == pos[:1]).all():
                raise GlassesError("position_ids must be the same for every sequence of the batch")
            pos = pos[0]
        if pos.shape != (n,):
            raise GlassesError(f"position_ids has shape {tuple(pos.shape)}; expected ({n},) or (batch, {n})")
        if int(pos.min()) < 0:
            raise GlassesError("position_ids must be non-negative")
        return pos

    # -- caching -----------------------------------------------------------------------
    def _check_names(self, names) -> None:
        if names is None or callable(names):
            return
        missing = [n for n in ([names] if isinstance(names, str) else list(names)) if n not in self.hook_dict]
        if missing:
            import difflib

            hints = {m: difflib.get_close_matches(m, list(self.hook_dict), n=3) for m in missing}
            raise HookError(
                "SyntheticDecoder has no hook point "
                + "; ".join(f"{m!r} (closest: {', '.join(h) or 'none'})" for m, h in hints.items())
                + f" — {self!r}"
            )

    def _enable_hook_with_name(self, name: str, hook, dir):  # a clear error for a wrong name
        self._check_names(name)
        super()._enable_hook_with_name(name, hook, dir)

    def run_with_cache(self, *model_args: Any, return_cache_object: bool = True, names_filter=None, **kwargs: Any):
        """``(output, cache)`` like TransformerLens: the cache is an ``ActivationCache``
        (or a plain dict with ``return_cache_object=False``). Unknown hook names in
        ``names_filter`` raise a ``HookError`` instead of returning an empty cache."""
        self._check_names(names_filter)
        out, cache = super().run_with_cache(*model_args, names_filter=names_filter, **kwargs)
        if not return_cache_object:
            return out, cache
        from transformer_lens.ActivationCache import ActivationCache

        return out, ActivationCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))
