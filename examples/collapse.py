# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Representational collapse on Gemma 3 270M (paper Fig. 5 a–d)
#
# Barbero et al. (2024), Sec. 4: two sequences that differ only by a repeated last
# token, `v` and `v*`, get ever closer last-token representations as they grow.
# We measure the distance of the final normalised representations and, as in the
# paper's Fig. 5, the per-head distance of the last layer (mean over heads, with the
# min–max band), for the four settings of the figure:
#
# * (a) counting prompt, a run of ones, `v*` has one more "1";
# * (b) counting prompt, random digits ending "1" vs "11";
# * (c) copying prompt, a run of ones;
# * (d) the same with a comma after every third digit — the paper's simple fix.
#
# Dashed lines are 2× the measured noise floor (the same sequence one position
# further along, and the shared prefix computed in both runs); ▽ marks a row within
# the noise floor, which is never reported as a distance. Dotted: float32 resolution
# at the compared entries.

# %%
import os

import matplotlib.pyplot as plt

import tl_glasses as tg

QUICK = os.environ.get("TL_GLASSES_QUICK") == "1"
LENGTHS = [8, 32, 96] if QUICK else [8, 16, 32, 64, 128, 256, 512, 1024]

model = tg.load_model("gemma-3-270m")

# %% [markdown]
# One pair, to see what is compared: 40 ones against 41 ones in the counting prompt.

# %%
pair = tg.get_family("ones").pair(model, 40)
print(pair.text_b[:120], "…")
d = tg.last_token_distance(model, pair.a, pair.b)
d

# %% [markdown]
# ## The four panels of Fig. 5

# %%
ones = tg.collapse_sweep(model, "ones", LENGTHS, progress=False)
digits = tg.collapse_sweep(model, "digits_end_one", LENGTHS, progress=False)
copy = tg.collapse_sweep(model, "copy_last", LENGTHS, mitigations=[tg.separators(every=3)], progress=False)

panels = [
    ("(a) ones, counting prompt", ones, "none"),
    ("(b) random digits ending 1 vs 11", digits, "none"),
    ("(c) ones, copying prompt", copy, "none"),
    ("(d) ones, copying prompt, commas every 3", copy, "separators:3"),
]
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey=True)
for ax, (title, res, arm) in zip(axes.flat, panels):
    res.plot(ax=ax, mitigation=arm)
    ax.set_title(title, fontsize=10)
fig.tight_layout()
fig

# %% [markdown]
# The table behind a panel, and the collapse length (the smallest n from which the
# pair stays bitwise identical; `None`: it did not collapse in this range).

# %%
print(ones.collapse_table()[["dtype", "mode", "mitigation", "collapse_bitwise", "min_l2", "n_at_min"]])
ones.df[["n", "n_tokens_a", "l2", "rel", "head_mean", "below_floor", "bitwise_equal", "next_token_tv"]]

# %% [markdown]
# Separators side by side with the baseline on the same prompt (panels c and d, relative
# distance of the final representation):

# %%
copy.plot(metric="rel")
