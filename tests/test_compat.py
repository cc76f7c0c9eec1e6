"""tl_glasses.compat in the main environment (TransformerLens 4).

The HookedTransformer itself is tested in tests/compat (ci/compat.sh, transformer-lens
3.9). Here: a bridge passes through the adapter untouched, and the adapter's mechanics
work on a HookedRootModule laid out like a HookedTransformer (HookedRootModule and
HookPoint are kept in TransformerLens 4), so they are covered by the main suite too.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tl_glasses as tg
from tl_glasses import compat
from tl_glasses._core import FINAL, check_hooks, final_hook_name, hook_snapshot, hooks_context
from tl_glasses.errors import GlassesError, HookError


def test_bridge_untouched(tiny_llama):
    names = list(tiny_llama.hook_dict)
    n_torch = sum(len(m._forward_hooks) for m in tiny_llama.modules())
    assert compat.missing_protocol(tiny_llama) == [] and compat.is_bridge(tiny_llama)
    assert tg.as_glasses_model(tiny_llama) is tiny_llama
    assert final_hook_name(tiny_llama) == FINAL and compat.final_hook_name(tiny_llama) == FINAL
    assert list(tiny_llama.hook_dict) == names
    assert sum(len(m._forward_hooks) for m in tiny_llama.modules()) == n_torch
    assert compat.final_norm_scaled(tiny_llama)
    assert compat.forward_accepts(tiny_llama, "position_ids")
    L = tiny_llama.cfg.n_layers
    check_hooks(tiny_llama, [v.format(l=L - 1) for v in compat.hook_map(tiny_llama).values()])


def test_not_a_model():
    with pytest.raises(GlassesError, match="lacks cfg, run_with_cache, run_with_hooks, hooks, to_tokens, hook_dict"):
        tg.as_glasses_model(nn.Linear(2, 2))


# a HookedRootModule with HookedTransformer's layout: the final norm has hook_normalized
# (before its learned scale) and no output hook


class _Norm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        from transformer_lens.hook_points import HookPoint

        self.w = nn.Parameter(torch.linspace(0.5, 2.0, d))
        self.b = nn.Parameter(torch.linspace(-0.3, 0.3, d))
        self.hook_normalized = HookPoint()

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        x = self.hook_normalized(x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        return x * self.w + self.b


class _Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        from transformer_lens.hook_points import HookPoint

        self.lin = nn.Linear(d, d)
        self.hook_resid_pre = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x):
        x = self.hook_resid_pre(x)
        return self.hook_resid_post(x + torch.tanh(self.lin(x)))


class _Unembed(nn.Module):
    def __init__(self, d: int, v: int):
        super().__init__()
        from transformer_lens.hook_points import HookPoint

        self.W_U = nn.Parameter(torch.randn(d, v, generator=torch.Generator().manual_seed(1)))
        self.hook_in = HookPoint()

    def forward(self, x):
        return self.hook_in(x) @ self.W_U


def _mini(normalization: str | None = "LN"):
    from transformer_lens.HookedRootModule import HookedRootModule

    class Mini(HookedRootModule):
        def __init__(self):
            super().__init__()
            d, v = 8, 12
            self.cfg = SimpleNamespace(n_layers=2, d_model=d, n_heads=1, d_vocab=v, n_ctx=16,
                                       normalization_type=normalization)
            g = torch.Generator().manual_seed(0)
            self.embed = nn.Embedding(v, d)
            with torch.no_grad():
                self.embed.weight.copy_(torch.randn(v, d, generator=g))
            self.blocks = nn.ModuleList([_Block(d) for _ in range(2)])
            if normalization is not None:
                self.ln_final = _Norm(d)
            self.unembed = _Unembed(d, v)
            self.setup()

        def to_tokens(self, s: str):
            return torch.tensor([[int(c) for c in s]])

        def forward(self, tokens, return_type="logits"):
            x = self.embed(tokens)
            for b in self.blocks:
                x = b(x)
            if normalization is not None:
                x = self.ln_final(x)
            if return_type is None:
                return None
            return self.unembed(x)

    return Mini().eval()


def test_adapter_on_hooked_root_module():
    m = _mini()
    toks = m.to_tokens("12345")
    with torch.no_grad():
        logits0 = m(toks)
    assert FINAL not in m.hook_dict and not compat.is_bridge(m)
    keys = list(m.state_dict())
    assert final_hook_name(m) == FINAL and FINAL in m.hook_dict
    assert list(m.state_dict()) == keys
    with torch.no_grad():
        logits1, cache = m.run_with_cache(toks, names_filter=[FINAL, "ln_final.hook_normalized", "unembed.hook_in"])
    assert torch.equal(logits0, logits1)
    assert torch.equal(cache[FINAL], cache["unembed.hook_in"])
    torch.testing.assert_close(cache[FINAL], cache["ln_final.hook_normalized"] * m.ln_final.w + m.ln_final.b)
    assert (cache[FINAL] - cache["ln_final.hook_normalized"]).abs().max() > 0.1
    # return_type=None: unembed.hook_in does not fire, the adapter's hook does
    with torch.no_grad():
        _, c2 = m.run_with_cache(toks, names_filter=FINAL, return_type=None)
    assert torch.equal(c2[FINAL], cache[FINAL])
    # idempotent; survives reset_hooks and deepcopy; clean-up exact
    n_torch = sum(len(x._forward_hooks) for x in m.modules())
    tg.as_glasses_model(m)
    assert sum(len(x._forward_hooks) for x in m.modules()) == n_torch
    m.reset_hooks(including_permanent=True)
    twin = copy.deepcopy(m)
    _, c3 = twin.run_with_cache(toks, names_filter=FINAL)
    assert torch.equal(c3[FINAL], cache[FINAL])
    before = hook_snapshot(m)
    with pytest.raises(RuntimeError):
        with hooks_context(m, [(FINAL, lambda x, hook: torch.zeros_like(x))]):
            torch.testing.assert_close(m(toks), torch.zeros_like(logits0))  # the patch applies
            raise RuntimeError("leave")
    assert hook_snapshot(m) == before


def test_check_hooks_reads_only_and_norm_free_models():
    m = _mini()
    check_hooks(m, [FINAL, "blocks.0.hook_resid_pre"])  # adaptable: accepted, not added
    assert FINAL not in m.hook_dict and not hasattr(m.ln_final, "hook_out")
    assert final_hook_name(m) == FINAL and FINAL in m.hook_dict  # the adapter, on demand
    bare = _mini(normalization=None)
    assert final_hook_name(bare) == "blocks.1.hook_resid_post"
    with pytest.raises(HookError, match="ln_final.hook_out"):
        check_hooks(bare, [FINAL])
