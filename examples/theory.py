# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The paper's theory, checked numerically
#
# *Transformers need glasses!* (Barbero et al., 2024) proves its claims in App. B and
# illustrates them on a small untrained Transformer (App. C.3, C.4). This notebook
# builds that Transformer — `tl_glasses.synthetic.SyntheticDecoder`, a TransformerLens
# `HookedRootModule` with a choice of positional encoding — regenerates Figs. 8–10 and
# runs every check of `tl_glasses.synthetic.theory`. See `docs/theory.md` for the
# statements and the measured findings. `TL_GLASSES_QUICK=1` shrinks everything.

# %%
import os
from pathlib import Path

import torch

import tl_glasses as tg
from tl_glasses.synthetic import SyntheticDecoder
from tl_glasses.synthetic import theory as th

QUICK = os.environ.get("TL_GLASSES_QUICK") == "1"
OUT = Path(os.environ.get("TL_GLASSES_EXAMPLE_OUT", "theory-example"))
OUT.mkdir(parents=True, exist_ok=True)
N_MAX_EXP = 11 if QUICK else 14  # sequence lengths 16 .. 2^N_MAX_EXP

# %% [markdown]
# ## The synthetic decoder
# A Pre-LN decoder as in the paper's Sec. 2; any TransformerLens analyser runs on it.

# %%
model = SyntheticDecoder("rope", causal=True, n_layers=2, d_model=64, n_heads=4, seed=0)
print(model)
logits, cache = model.run_with_cache(model.to_tokens("1111111111"), names_filter=lambda n: "pattern" in n)
print(list(cache.keys()), cache["blocks.1.attn.hook_pattern"].shape)
tg.last_token_distance(model, "count: 1111111", "count: 11111111")

# %% [markdown]
# ## Fig. 8 and Fig. 10 (Thm B.3): a sequence and its last-token-repeated twin
# Fig. 8: sinusoidal encoding, q, k, v ~ N(0, 1/d). Fig. 10: every encoding, q, k, v ~ N(0, 1).

# %%
lengths = [2**k for k in range(4, N_MAX_EXP + 1)]
fig8 = th.collapse_by_pe(("sinusoidal",), lengths, trials=4 if QUICK else 8, init_std=None, figure="Fig. 8")
fig8.plot().savefig(OUT / "fig8.png", dpi=110)
fig8

# %%
fig10 = th.collapse_by_pe(lengths=lengths, trials=4 if QUICK else 16, init_std=1.0, figure="Fig. 10")
fig10.plot().savefig(OUT / "fig10.png", dpi=110)
print(fig10.slopes())
fig10

# %% [markdown]
# ALiBi's distance stops falling: the twin's repeated token keeps the weight
# `1 - exp(-m)` (m the head's slope), whatever n is.

# %%
fig10.df[fig10.df.pe == "alibi"].groupby("n").new_weight.mean()

# %% [markdown]
# ## Fig. 9 (Lemma B.2) and Prop. B.4: total variation between two softmaxes

# %%
tv = th.softmax_tv_decay([2**k for k in range(4, (12 if QUICK else 16) + 1)], trials=8 if QUICK else 16)
tv.plot().savefig(OUT / "fig9.png", dpi=110)
tv

# %% [markdown]
# ## Lemma B.1: the weight of one entry as entries are appended

# %%
th.softmax_weight_decay([2**k for k in range(1, (12 if QUICK else 16) + 1)], trials=8)

# %% [markdown]
# ## Prop. B.9: no positional encoding, no causal mask: "10" = "1100"

# %%
ratio = th.counting_ratio(dtypes=(torch.float64, torch.bfloat16) if QUICK else
                          (torch.float64, torch.float32, torch.bfloat16))
ratio.df[(ratio.df.pe == "none") & ~ratio.df.causal]

# %% [markdown]
# ## Cor. B.10: from which n are 1ⁿ and 1ⁿ⁺¹ bitwise equal?

# %%
prec = th.counting_precision(
    dtypes=(torch.float32, torch.bfloat16) if QUICK else (torch.float32, torch.bfloat16, torch.float16),
    lengths=th._geometric_lengths(1, 2048 if QUICK else 16384, 2 if QUICK else 4),
)
prec.plot().savefig(OUT / "counting_precision.png", dpi=110)
prec.collapse_lengths()

# %% [markdown]
# ## Props. 5.2/B.8, Lemmas B.6/B.7: attention products approach the first column

# %%
depth = th.depth_limit(n=32, depth=64 if QUICK else 128, model_layers=32 if QUICK else 64)
depth.plot().savefig(OUT / "depth_limit.png", dpi=110)
depth
