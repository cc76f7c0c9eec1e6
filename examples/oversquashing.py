# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Over-squashing: which input positions can the last token still feel?
#
# Barbero et al. (2024), Sec. 5: the sensitivity of the last token's final
# representation `y_n` to the input at position `i`, `‖∂y_n/∂h_i‖`, is bounded by the
# weighted number of causal attention paths from `i` to `n` (Thm 5.1). We measure both
# on Gemma 3 270M for the paper's copying prompt ("What is the last digit of 1…10?"),
# then look at the depth limit (Prop. 5.2: deep products of causal attention make the
# last token depend on the first token only).
#
# `TL_GLASSES_QUICK=1` shrinks the sizes (CI runs this file as a notebook).

# %%
import os

import tl_glasses as tg
from tl_glasses.analysis.oversquashing import bound_vs_sensitivity, copy_items, hint_study

QUICK = os.environ.get("TL_GLASSES_QUICK") == "1"
N_ITEMS = 8 if QUICK else 32
METHOD, PROBES = ("hutchinson", 16) if QUICK else ("jacobian", None)

model = tg.load_model("gemma-3-270m")
(task, n, item), = copy_items(model, [N_ITEMS], tasks=["copy_last"])
print(f"{n} digits, {item.n_tokens} tokens; the digit to copy is token {item.last_item_position}")

# %% [markdown]
# ## Gradient sensitivity of the last token to every position
#
# `method="jacobian"` is exact (d_model vector–Jacobian products, batched); `"hutchinson"`
# estimates the same squared norms from a few random probes, with standard errors;
# `"scalar"` differentiates one number (an answer logit) in one backward pass.

# %%
kw = {"probes": PROBES} if PROBES else {}
sens = tg.sensitivity(model, item.tokens, method=METHOD, **kw)
print(sens)
sens.plot()

# %%
# The U-shape (Sec. 5): mean sensitivity in the first, middle and last tenth of the digits
sens.u_shape(item.item_positions)

# %% [markdown]
# ## The path-product bound and its agreement with the gradient
#
# `path_bound` keeps only the last row of `Ā^(L-1)···Ā^(0)` with `Ā = A + I`
# (heads averaged as the patterns are captured; Gemma's sliding-window layers are
# stored as bands).

# %%
bound = tg.path_bound(model, item.tokens, variant="bound", heads="mean")
print(bound)
cmp = bound_vs_sensitivity(model, item.tokens, sens=sens, positions=item.item_positions)
print("β = 1:   ", cmp.summary())

# %% [markdown]
# With β = 1 an attention edge counts as much as the residual stream's identity path,
# and the first token (the attention sink) takes nearly all the paths. `beta="auto"`
# sets β per layer to the median ratio ‖resid_pre‖ / ‖attn_out‖ measured in the same
# forward — how much larger the stream is than what attention adds — and the bound
# then ranks positions much like the gradient does.

# %%
cmp_auto = bound_vs_sensitivity(model, item.tokens, sens=sens, beta="auto", positions=item.item_positions)
print("β = auto:", cmp_auto.summary())
print("β per layer:", [round(b, 2) for b in cmp_auto.meta["beta"]])
cmp_auto.plot()

# %% [markdown]
# ## Depth: how fast the last row concentrates on the first token
#
# For the row-stochastic rollout `(A + I)/2`: the last row's weight on position 0 after
# each layer, and each layer's eigenvalues (the diagonal of a triangular matrix).
# Gemma's local layers (window 512) cannot move weight to position 0 from far away,
# so the mass only moves at the global layers (5, 11, 17).

# %%
depth = tg.depth_profile(model, item.tokens)
print(depth)
depth.df[["layer", "first_token_mass", "dist_inf", "lambda2", "band"]]

# %%
depth.plot()

# %% [markdown]
# ## Hints and alternating digits (Fig. 2b, c)
#
# The same prompt with the paper's hint appended, and with alternating digits:
# how much does the last token feel the digit it has to copy?

# %%
hints = hint_study(model, N_ITEMS, method="scalar" if QUICK else "jacobian")
hints.df[["condition", "n_tokens", "distance_to_last", "answer_sens", "answer_rel", "answer_rank", "spearman"]]
