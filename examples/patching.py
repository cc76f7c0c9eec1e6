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
# # Where is the extra "1" carried? Patching the `ones` pair on Gemma 3 270M
#
# The collapse pair of the paper (Sec. 4): `v` is the counting prompt with a run of
# `n` ones, `v*` the same prompt with one more "1". The last token's final
# representations of the two are close (and, for long runs in low precision,
# identical). Patching asks *where* the difference lives: run `v` (here `a`) with one
# activation replaced by `v*`'s (`b`) at the aligned position, and measure the
# fraction of the final-representation difference ‖y_a − y_b‖ it restores.
#
# * attribution patching estimates every layer × position at once (one backward);
# * exact patching checks the cells that matter;
# * the same, with a comma after every third "1" (the paper's separators, Fig. 5d).

# %%
import os

import numpy as np
import pandas as pd

import tl_glasses as tg

QUICK = os.environ.get("TL_GLASSES_QUICK") == "1"
LENGTHS = [8, 32] if QUICK else [16, 64, 256]
SETTINGS = {"plain": None, "separators:3": tg.separators(3)}

model = tg.load_model("gemma-3-270m")
family = tg.get_family("ones")
pair = family.pair(model, LENGTHS[0])
print(pair)
print(pair.text_a)

# %% [markdown]
# ## Attribution over every layer and position
#
# Positions of `a` and `b` are aligned explicitly: the shared prefix from the start,
# the rest from the end, so `a`'s last token meets `b`'s last token and the extra "1"
# of `b` is the one unmatched position.

# %%
results = {}
for n in LENGTHS:
    pair = family.pair(model, n)
    for label, mitigation in SETTINGS.items():
        results[n, label] = tg.patch_pair(
            model, pair, method="attribution", positions="all",
            sites=("resid_pre", "attn_out", "mlp_out"), mitigation=mitigation,
        )
res = results[LENGTHS[0], "plain"]
print(res.meta["alignment_text"])
res.alignment[res.alignment.region == "unmatched b"]

# %% [markdown]
# Reading one heatmap: a cell (layer ℓ, position p) is the fraction of the final
# difference restored by giving `a` the residual stream of `b` entering layer ℓ at p.
# Early layers: nothing at the last position yet — the difference sits on the tokens
# right after the run; late layers: it has moved to the last position.

# %%
fig = results[LENGTHS[-1], "plain"].plot("heatmap", site="resid_pre")


# %%
def summarise(res):
    v = res.values["resid_pre"].numpy()  # [layer, position]
    pos = res.meta["positions"]
    n_tok = res.meta["alignment"]["a_len"]
    last = v[:, -1]
    reach = int(np.argmax(last >= 0.5)) if (last >= 0.5).any() else None
    mid = len(v) // 2
    top = int(np.argmax(np.abs(v[mid, :-1])))
    return dict(
        tokens=n_tok,
        rel_distance=res.meta["final_rel_distance"],
        last_pos_layer_50pct=reach,
        **{f"top_position_L{mid}": f"{pos[top] - n_tok} {res.meta['tokens_a'][pos[top]]!r}"},
        **{f"restored_there_L{mid}": round(float(v[mid, top]), 2)},
    )


table = pd.DataFrame({(n, label): summarise(r) for (n, label), r in results.items()}).T
table

# %% [markdown]
# ## Exact patching where it matters
#
# The residual stream at the last position, layer by layer (real patches), against the
# attribution estimate of the same cells.

# %%
n0 = LENGTHS[0]
exact = {label: tg.patch_pair(model, family.pair(model, n0), sites="resid_pre", positions=[-1, -31],
                              mitigation=m)
         for label, m in SETTINGS.items()}
by_layer = pd.concat({label: r.by_layer(r.meta["positions"][-1])["resid_pre"] for label, r in exact.items()},
                     axis=1)
by_layer["attribution (plain)"] = results[n0, "plain"].values["resid_pre"][:, -1].numpy()
by_layer.round(3)

# %%
fig = exact["plain"].plot("layers")

# %% [markdown]
# How good is the first-order estimate? Exact and attribution on the same cells
# (last position, every layer and site; per head for `z`).

# %%
check = tg.attribution_check(model, family.pair(model, n0),
                             sites=("resid_pre", "attn_out") if QUICK else ("resid_pre", "attn_out", "mlp_out", "z"))
print(check.summary())
fig = check.plot()

# %% [markdown]
# Per head: which heads of which layers bring the extra "1" to the last position.

# %%
heads = tg.patch_pair(model, family.pair(model, n0), sites="z", method="attribution")
fig = heads.plot("heads")

# %% [markdown]
# The same on the tokens (circuitsvis; largest |restored| over layers per position):

# %%
results[n0, "plain"].show_tokens(site="resid_pre")
