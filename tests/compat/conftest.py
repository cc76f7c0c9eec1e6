"""The TransformerLens 3.x compatibility suite (run by ``ci/compat.sh`` in its own
environment with transformer-lens 3.9, the last release with ``HookedTransformer``).

Under TransformerLens 4 there is no ``HookedTransformer`` to test: the files here are
not collected, so the main suite (``pytest`` from the repository root) passes over
this folder. ``ci/compat.sh`` sets ``TL_GLASSES_COMPAT=1``, which turns a missing
``HookedTransformer`` into an error instead.
"""
from __future__ import annotations

import copy
import os
from importlib.metadata import PackageNotFoundError, version

import pytest


def _tl_major() -> int | None:
    try:
        return int(version("transformer-lens").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None


if _tl_major() != 3:
    if os.environ.get("TL_GLASSES_COMPAT") == "1":
        raise RuntimeError(
            f"the compatibility suite needs transformer-lens 3.x, found "
            f"{_tl_major()}: create its environment with ci/compat.sh"
        )
    collect_ignore_glob = ["test_*.py"]
else:
    import torch

    D_MODEL, N_HEADS, D_HEAD, N_LAYERS = 32, 4, 8, 2

    def _randomise_norms(named_params, gen: torch.Generator) -> None:
        """Norm weights away from 1 and biases away from 0, so that a hook taken
        before the learned scale differs from one taken after it."""
        with torch.no_grad():
            for name, p in named_params:
                leaf = name.rsplit(".", 1)[-1]
                is_norm = any(k in name for k in ("ln", "norm"))
                if not is_norm:
                    continue
                if leaf in ("w", "weight"):
                    p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
                elif leaf in ("b", "bias"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))

    def build_hooked_transformer(
        *, norm: str = "LN", pe: str = "standard", act: str = "gelu",
        n_kv_heads: int | None = None, seed: int = 0, n_ctx: int = 128,
    ):
        """A small random HookedTransformer from a HookedTransformerConfig, with
        tl_glasses' character tokenizer, norm scales randomised, eval mode."""
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        from tl_glasses.models import char_tokenizer

        tok = char_tokenizer(prepend_bos=True)
        cfg = HookedTransformerConfig(
            n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS, d_head=D_HEAD, d_mlp=2 * D_MODEL,
            d_vocab=len(tok.get_vocab()), n_ctx=n_ctx, act_fn=act, normalization_type=norm,
            positional_embedding_type=pe, n_key_value_heads=n_kv_heads, seed=seed,
            device="cpu", default_prepend_bos=True,
        )
        model = HookedTransformer(cfg, tokenizer=tok)
        _randomise_norms(model.named_parameters(), torch.Generator().manual_seed(seed + 1))
        return model.eval()

    def _hooked_cfg_like(hf):
        """The HookedTransformerConfig TransformerLens 3.9 derives for this HF model
        (loading_from_pretrained.convert_hf_model_config, without the Hub)."""
        from transformer_lens import HookedTransformerConfig

        c = hf.config
        arch = c.architectures[0]
        if arch == "LlamaForCausalLM":
            rope = getattr(c, "rope_parameters", None) or {}
            d = dict(
                d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads,
                n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
                n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps,
                d_vocab=c.vocab_size, act_fn=c.hidden_act,
                n_key_value_heads=(c.num_key_value_heads
                                   if c.num_key_value_heads != c.num_attention_heads else None),
                normalization_type="RMS", positional_embedding_type="rotary",
                rotary_adjacent_pairs=False, rotary_dim=c.hidden_size // c.num_attention_heads,
                rotary_base=rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)),
                final_rms=True, gated_mlp=True,
            )
        elif arch == "GPT2LMHeadModel":
            d = dict(
                d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
                d_mlp=c.n_inner or 4 * c.n_embd, n_layers=c.n_layer, n_ctx=c.n_positions,
                eps=c.layer_norm_epsilon, d_vocab=c.vocab_size, act_fn=c.activation_function,
                normalization_type="LN", positional_embedding_type="standard",
            )
        else:  # pragma: no cover
            raise ValueError(arch)
        return HookedTransformerConfig(
            **d, original_architecture=arch, device="cpu", default_prepend_bos=True,
            tokenizer_prepends_bos=True,
        )

    def hooked_from_tiny(arch: str, seed: int = 0):
        """(plain transformers model, HookedTransformer, TransformerBridge), all three
        holding the same weights: tl_glasses' tiny model with its norms randomised.

        The HookedTransformer is converted with TransformerLens 3.9's own weight
        conversion, without weight processing; the bridge wraps a separate copy, so
        the transformers model stays an independent reference."""
        from transformer_lens import HookedTransformer
        from transformer_lens.pretrained.weight_conversions import (
            convert_gpt2_weights,
            convert_llama_weights,
        )

        from tl_glasses.models import char_tokenizer, tiny_hf_model, wrap_model

        hf = tiny_hf_model(arch, seed=seed)
        _randomise_norms(hf.named_parameters(), torch.Generator().manual_seed(seed + 1))
        cfg = _hooked_cfg_like(hf)
        convert = {"llama": convert_llama_weights, "gpt2": convert_gpt2_weights}[arch]
        ht = HookedTransformer(cfg, tokenizer=char_tokenizer(prepend_bos=True))
        sd = {k: v.detach().clone() for k, v in convert(hf, cfg).items()}
        missing, unexpected = ht.load_state_dict(sd, strict=False)
        params = {n for n, _ in ht.named_parameters()}
        assert not unexpected, unexpected
        # GPT-2 has no unembedding bias: b_U keeps its zero initialisation
        assert not (set(missing) & params - {"unembed.b_U"}), sorted(set(missing) & params)
        assert not ht.unembed.b_U.any()
        bridge = wrap_model(copy.deepcopy(hf), char_tokenizer(prepend_bos=True), name=f"tiny-{arch}")
        return hf, ht.eval(), bridge

    HT_CONFIGS = {
        "ln-standard-gelu": dict(norm="LN", pe="standard", act="gelu"),
        "rms-rotary-gelu": dict(norm="RMS", pe="rotary", act="gelu"),
        "rms-rotary-gqa": dict(norm="RMS", pe="rotary", act="gelu", n_kv_heads=2),
    }

    @pytest.fixture(params=sorted(HT_CONFIGS))
    def ht(request):
        """A HookedTransformer built from a HookedTransformerConfig (one per variant)."""
        return build_hooked_transformer(**HT_CONFIGS[request.param])

    @pytest.fixture(scope="module", params=["llama", "gpt2"])
    def triple(request):
        """(transformers model, HookedTransformer, TransformerBridge) with equal weights.
        Module-scoped: tests must not mutate them (hooks are checked to be removed)."""
        return hooked_from_tiny(request.param)

    @pytest.fixture
    def make_ht():
        """The builder itself, for tests that need a variant of their own."""
        return build_hooked_transformer
