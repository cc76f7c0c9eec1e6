"""Patching of collapse pairs (tl_glasses.analysis.patching).

Independent checks: TransformerLens' own ``transformer_lens.patching`` functions,
central finite differences in float64, hand-written hook runs, and the closed-form
facts of patching (the last layer's residual restores everything; a's own activations
restore nothing)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_glasses as tg
from tl_glasses._core import FINAL, hook_snapshot
from tl_glasses.analysis.patching import (
    SITES,
    PatchResult,
    align_pair,
    attribution_check,
    patch_cache,
    patch_hook_names,
    patch_pair,
)
from tl_glasses.errors import GlassesError
from tl_glasses.results import Result

# a and b of equal length (standard patching) and a collapse-style pair (b repeats a's
# last item inside the prompt); >= 16 tokens so that batched CPU kernels match
EQ_A = "Count: 1+1+1+1+1+1+1=7"
EQ_B = "Count: 1+1+1+1+1+1+1=8"
PAIR_A = "Count ones: 1111111111111111. Go"
FD_A, FD_B = "Count: 1+1+2+1+1+1+1=7", "Count: 1+1+3+1+1+1+1=7"  # differ mid-sequence
PAIR_B = "Count ones: 11111111111111111. Go"


def _final_last(model, tokens, fwd_hooks=()):
    """Independent: y at the last position via TransformerLens' own run_with_hooks."""
    box = {}

    def grab(t, hook):
        box["y"] = t[0, -1].detach().clone()

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + [(FINAL, grab)], return_type=None)
    return box["y"]


# --------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------
def test_align_equal_length_is_identity():
    al = align_pair(torch.tensor([1, 5, 6, 7]), torch.tensor([1, 5, 9, 7]))
    assert al.rule == "identity"
    assert al.a_positions == al.b_positions == (0, 1, 2, 3)


def test_align_item_repeated_inside_prompt():
    # BOS p 1 1 1 s  vs  BOS p 1 1 1 1 s
    a = torch.tensor([1, 9, 5, 5, 5, 8])
    b = torch.tensor([1, 9, 5, 5, 5, 5, 8])
    al = align_pair(a, b)
    assert al.inserted == (5, 1) and al.inserted_in == "b" and al.repeated
    assert al.b_of(5) == 6  # last ↔ last
    assert al.unmatched_b == [5]
    assert [al.b_of(p) for p in range(5)] == [0, 1, 2, 3, 4]  # shared prefix from the start


def test_align_token_level_repeat_and_end_rule():
    a = torch.tensor([1, 9, 4, 5])
    b = torch.tensor([1, 9, 4, 5, 5])
    al = align_pair(a, b)
    assert al.b_of(3) == 4 and al.unmatched_b == [3] and al.repeated
    end = align_pair(a, b, "end")
    assert end.b_positions == (1, 2, 3, 4) and end.unmatched_b == [0]
    with pytest.raises(GlassesError, match="known alignments"):
        align_pair(a, b, "middle")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2, 6), min_size=2, max_size=14), st.data())
def test_align_property_inserted_repeat(seq, data):
    """b = a with one item repeated anywhere: every aligned pair holds the same token,
    a's last meets b's last, exactly one position of b is unmatched."""
    k = data.draw(st.integers(1, len(seq)))
    a = [1] + seq
    b = [1] + seq[:k] + [seq[k - 1]] + seq[k:]
    al = align_pair(torch.tensor(a), torch.tensor(b))
    assert len(al.a_positions) == len(a)
    assert al.b_of(len(a) - 1) == len(b) - 1
    assert len(al.unmatched_b) == 1 and al.repeated
    assert all(a[p] == b[q] for p, q in zip(al.a_positions, al.b_positions))


# --------------------------------------------------------------------------------
# the closed-form facts
# --------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["final_distance", "final_projection", "logit_diff"])
def test_every_site_of_last_layer_restores_everything(tiny_any, metric):
    m = tiny_any
    full = patch_pair(m, PAIR_A, PAIR_B, sites=("resid_pre", "attn_out", "mlp_out"), layers=[-1],
                      joint=True, metric=metric)
    assert full.meta["denominator"] != 0
    assert full.restored == pytest.approx(1.0, abs=1e-6)
    post = patch_pair(m, PAIR_A, PAIR_B, sites="resid_post", layers=[-1], metric=metric)
    assert float(post.values[0, 0]) == pytest.approx(1.0, abs=1e-6)
    # and the residual stream right after the embedding, at every matched position
    resid0 = patch_pair(m, PAIR_A, PAIR_B, sites="resid_pre", layers=[0], positions="all",
                        joint=True, metric=metric, align="auto")
    # a's prompt with b's embeddings at the aligned positions is not b (b has an extra
    # token), so this need not be 1 — but it must be finite and the run must be valid
    assert math.isfinite(resid0.restored)


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_patching_a_into_itself_restores_nothing(tiny_any, method):
    res = patch_pair(tiny_any, PAIR_A, PAIR_B, source="a", method=method, positions=[-1, -2, 3])
    assert (res.df["effect"] == 0).all()
    assert (res.df["restored"] == 0).all()
    if method == "exact":
        assert res.meta["skipped_identical"] == len(res.df)  # identity patches need no run


def test_identical_prompts_have_nothing_to_restore(tiny_llama):
    res = patch_pair(tiny_llama, EQ_A, EQ_A, sites="resid_pre", layers=[0])
    assert res.meta["denominator"] == 0
    assert res.df["restored"].isna().all()
    assert "nothing to restore" in res.summary()


# --------------------------------------------------------------------------------
# exact patching = TransformerLens' patching functions
# --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 2**-22), (torch.float32, 1e-5)])
def test_exact_equals_transformer_lens_patching(dtype, rtol):
    from transformer_lens import patching as tlp

    m = tg.tiny_model("llama", n_layers=2, dtype=dtype)
    a, b = m.to_tokens("x=1+1+1+1;y"), m.to_tokens("x=1+1+1+2;y")
    t_plus, t_minus = 10, 12

    def metric(logits):
        return logits[0, -1, t_plus] - logits[0, -1, t_minus]

    _, cache_b = m.run_with_cache(b)
    checks = [
        ("resid_pre", tlp.get_act_patch_resid_pre),
        ("attn_out", tlp.get_act_patch_attn_out),
        ("mlp_out", tlp.get_act_patch_mlp_out),
        ("z", tlp.get_act_patch_attn_head_out_by_pos),
    ]
    for site, fn in checks:
        ref = fn(m, a, cache_b, metric).double()  # TransformerLens stores float32
        ours = patch_pair(m, a, b, sites=site, positions="all", metric="logit_diff",
                          answer_tokens=(t_plus, t_minus), max_runs=None)
        got = torch.tensor(ours.df["patched_metric"].to_numpy()).reshape(ref.shape)
        assert torch.allclose(got, ref, rtol=rtol, atol=rtol * float(ref.abs().max())), site
        # restored = (patched - M(a)) / (M(b) - M(a)) with M from the unpatched runs
        with torch.no_grad():
            ma, mb = float(metric(m(a))), float(metric(m(b)))
        exp = (ref - ma) / (mb - ma)
        assert torch.allclose(ours.values.reshape(ref.shape), exp, atol=1e-4), site


def test_exact_matches_hand_patch_with_alignment(tiny_gemma3):
    """A pair of different lengths: the patch puts b's activation at the aligned
    position; checked against a hand-written hook."""
    m = tiny_gemma3
    ta, tb = m.to_tokens(PAIR_A), m.to_tokens(PAIR_B)
    al = align_pair(ta[0], tb[0])
    res = patch_pair(m, PAIR_A, PAIR_B, sites=("attn_out", "z"), layers=[1, 2], positions=[-1, -4, 5])
    _, cb = m.run_with_cache(tb, names_filter=lambda n: n.endswith(("hook_attn_out", "attn.hook_z")))
    yb = _final_last(m, tb)
    ya = _final_last(m, ta)
    d0 = float(torch.linalg.vector_norm(ya.double() - yb.double()))
    for _, row in res.df.sample(8, random_state=0).iterrows():
        name = SITES[row.site][0].format(layer=row.layer)
        p, q = int(row.position), al.b_of(int(row.position))
        assert q == row.b_position

        def hook(act, hook, p=p, q=q, h=row["head"], name=name):
            act = act.clone()
            if not pd.isna(h):
                act[:, p, int(h)] = cb[name][:, q, int(h)]
            else:
                act[:, p] = cb[name][:, q]
            return act

        y = _final_last(m, ta, [(name, hook)])
        d = float(torch.linalg.vector_norm(y.double() - yb.double()))
        assert row.restored == pytest.approx(1 - d / d0, abs=1e-6)


# --------------------------------------------------------------------------------
# attribution = the exact first-order term
# --------------------------------------------------------------------------------
def _fd_check(m, metric, n_rows, fd, rel):
    """Attribution effects of random cells against a finite-difference derivative of
    M(a with act + h·(act_b − act_a)), computed with TransformerLens hooks only."""
    ta, tb = m.to_tokens(FD_A), m.to_tokens(FD_B)
    sites = ("resid_pre", "attn_out", "mlp_out", "z")
    res = patch_pair(m, ta, tb, sites=sites, positions="all", method="attribution", metric=metric)
    names = [SITES[s][0].format(layer=l) for s in sites for l in range(m.cfg.n_layers)]
    _, ca = m.run_with_cache(ta, names_filter=names)
    _, cb = m.run_with_cache(tb, names_filter=names)
    yb, ya = _final_last(m, tb), _final_last(m, ta)
    if metric == "final_distance":
        M = lambda y: float(torch.linalg.vector_norm(y.double() - yb.double()))  # noqa: E731
    else:
        tp, tm = res.meta["metric_info"]["tokens"]
        W, bU = m.W_U.detach().double(), m.b_U.detach().double()
        M = lambda y: float((y.double() @ W[:, tp] + bU[tp]) - (y.double() @ W[:, tm] + bU[tm]))  # noqa: E731
    assert res.meta["metric_a"] == pytest.approx(M(ya), rel=1e-12)
    live = res.df[res.df.effect != 0]
    assert len(live) >= n_rows
    rng = np.random.default_rng(0)
    rows = live.iloc[rng.choice(len(live), n_rows, replace=False)]
    rows = pd.concat([rows, res.df.loc[[res.df.effect.abs().idxmax()]]])  # the largest effect too
    for _, row in rows.iterrows():
        name = SITES[row.site][0].format(layer=row.layer)
        p = int(row.position)
        head = None if pd.isna(row["head"]) else int(row["head"])

        def run(scale):
            def hook(act, hook):
                act = act.clone()
                sl = (slice(None), p) if head is None else (slice(None), p, head)
                act[sl] = act[sl] + scale * (cb[name][sl] - ca[name][sl])
                return act

            return M(_final_last(m, ta, [(name, hook)]))

        got = fd(run)
        if isinstance(got, tuple):  # (estimate, absolute error bound measured with it)
            est, bound = got
            assert abs(row.effect - est) <= bound + 1e-12, (row.site, row.layer, p, head, row.effect, est, bound)
        else:
            assert row.effect == pytest.approx(got, rel=rel, abs=1e-9), (row.site, row.layer, p, head)
    # no gradient where nothing downstream reads the cell: z/attn_out/mlp_out of the last
    # layer at earlier positions never reach the last position
    last = res.df[(res.df.layer == m.cfg.n_layers - 1) & (res.df.site != "resid_pre")
                  & (res.df.position < ta.shape[-1] - 1)]
    assert (last.effect == 0).all()


@pytest.mark.parametrize("metric", ["final_distance", "logit_diff"])
def test_attribution_equals_first_order_term_float64(metric):
    """GPT-2's transformers code runs float64 end to end (Llama and Gemma 3 compute the
    norms and the softmax in float32), so a central difference with a small step pins
    the first-order term to 1e-7."""
    m = tg.tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    _fd_check(m, metric, 16, lambda run: (run(1e-6) - run(-1e-6)) / 2e-6, rel=1e-7)


def test_attribution_first_order_term_gemma3_architecture():
    """Gemma 3's architecture in float64 still computes its RMS norms (``x.float()``),
    rotary embeddings and softmax in float32, so the metric M is float64 arithmetic on
    float32-rounded intermediates: a finite difference of M carries that rounding,
    divided by the step. A fixed relative tolerance held on one machine and not on
    another (4e-3 seen against 2e-3). So the tolerance is derived, per cell, from what
    this machine measures: the rounding noise of M (its spread under input shifts a
    million times smaller than the step, where the true change is below 1e-12) and
    Richardson's own truncation estimate. The gradient side is exact up to float32
    rounding of the same intermediates (relative ~1e-7)."""
    m = tg.tiny_model("gemma3", n_layers=3, dtype=torch.float64, sliding_window=4)

    def richardson_with_bound(run, h=2e-2):
        d1 = (run(h) - run(-h)) / (2 * h)
        d2 = (run(h / 2) - run(-h / 2)) / h
        est = (4 * d2 - d1) / 3
        m0 = run(0.0)
        noise = max(abs(run(s * h * 1e-6) - m0) for s in (-3, -2, -1, 1, 2, 3))
        noise = max(noise, np.finfo(np.float32).eps * abs(m0))  # at least one float32 rounding of M
        # rounding: |4/3| * 2*noise/h (d2) + 1/3 * 2*noise/(2h) (d1); truncation: Richardson's estimate
        bound = 2.0 * noise / h + abs(d2 - d1) / 3
        return est, 3 * bound  # a 3x margin over the estimated error

    _fd_check(m, "final_distance", 8, richardson_with_bound, rel=None)


def test_attribution_correlates_with_exact(tiny_gemma3):
    from scipy import stats

    chk = attribution_check(tiny_gemma3, PAIR_A, PAIR_B, positions=[-1, -2, -6])
    assert len(chk.df) == 3 * 3 * (3 + 4)
    assert chk.pearson == pytest.approx(stats.pearsonr(chk.df.exact, chk.df.attribution)[0], abs=1e-12)
    assert chk.spearman == pytest.approx(stats.spearmanr(chk.df.exact, chk.df.attribution)[0], abs=1e-12)
    assert chk.pearson > 0.8
    assert set(chk.meta["per_site"]) == {"resid_pre", "attn_out", "mlp_out", "z"}
    fig = chk.plot()
    assert fig.axes


def test_joint_attribution_is_sum_of_cells(tiny_llama):
    kw = dict(sites=("attn_out", "mlp_out"), positions=[-1, -2], method="attribution")
    cells = patch_pair(tiny_llama, PAIR_A, PAIR_B, **kw)
    joint = patch_pair(tiny_llama, PAIR_A, PAIR_B, joint=True, **kw)
    assert joint.df.effect.iloc[0] == pytest.approx(cells.df.effect.sum(), rel=1e-12)


# --------------------------------------------------------------------------------
# batching leaves the numbers unchanged (bit for bit)
# --------------------------------------------------------------------------------
def test_batched_equals_unbatched_bitwise(tiny_any):
    kw = dict(sites=("resid_pre", "attn_out", "mlp_out", "z"), positions=[-1, -3, 4])
    batched = patch_pair(tiny_any, PAIR_A, PAIR_B, batch_size=8, **kw)
    single = patch_pair(tiny_any, PAIR_A, PAIR_B, batch_size=1, **kw)
    assert torch.equal(torch.tensor(batched.df.patched_metric.to_numpy()),
                       torch.tensor(single.df.patched_metric.to_numpy()))
    # the batches really ran batched (every batch's unpatched row reproduced the single run)
    assert batched.meta["batches"] < batched.meta["runs"]
    assert batched.meta["fallback_batches"] == 0


def test_short_prompt_batching_falls_back_or_matches(tiny_llama):
    """Below ~16 tokens CPU matmuls round differently by batch size: the check in every
    batch must catch that and rerun unbatched; results equal the unbatched ones."""
    a, b = "1+1=2", "1+1=3"
    batched = patch_pair(tiny_llama, a, b, positions="all", sites=("resid_pre", "mlp_out"), batch_size=4)
    single = patch_pair(tiny_llama, a, b, positions="all", sites=("resid_pre", "mlp_out"), batch_size=1)
    assert torch.equal(torch.tensor(batched.df.patched_metric.to_numpy()),
                       torch.tensor(single.df.patched_metric.to_numpy()))


# --------------------------------------------------------------------------------
# caches the user already holds
# --------------------------------------------------------------------------------
def test_patch_cache_holds_only_requested_sites(tiny_llama):
    cache = patch_cache(tiny_llama, PAIR_B, sites=("attn_out", "z"), layers=[1])
    assert set(cache.keys()) == {"blocks.1.hook_attn_out", "blocks.1.attn.hook_z", FINAL}
    assert patch_hook_names(tiny_llama, "mlp_out", layers=[-1]) == ["blocks.1.hook_mlp_out", FINAL]


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_from_caches_equals_from_prompts(tiny_gemma3, method):
    m = tiny_gemma3
    kw = dict(sites=("resid_pre", "z"), positions=[-1, -2], method=method)
    ref = patch_pair(m, PAIR_A, PAIR_B, **kw)
    ca = patch_cache(m, PAIR_A, sites=("resid_pre", "z"))
    _, cb = m.run_with_cache(m.to_tokens(PAIR_B), names_filter=patch_hook_names(m, ("resid_pre", "z")))
    got = patch_pair(m, PAIR_A, PAIR_B, cache_a=ca, cache_b=cb, **kw)
    assert torch.equal(torch.tensor(got.df.restored.to_numpy()), torch.tensor(ref.df.restored.to_numpy()))


def test_cache_errors_say_what_is_missing(tiny_llama):
    m = tiny_llama
    cb = patch_cache(m, PAIR_B, sites="resid_pre")
    with pytest.raises(GlassesError, match="hook_attn_out"):
        patch_pair(m, PAIR_A, PAIR_B, sites=("resid_pre", "attn_out"), cache_b=cb)
    other = patch_cache(m, "Count ones: 111. Go", sites="resid_pre")
    with pytest.raises(GlassesError, match="tokens"):
        patch_pair(m, PAIR_A, PAIR_B, sites="resid_pre", cache_b=other)
    wrong_a = patch_cache(m, "Count ones: 1111111111111112. Go", sites="resid_pre")
    with pytest.raises(GlassesError, match="cache_a does not match"):
        patch_pair(m, PAIR_A, PAIR_B, sites="resid_pre", cache_a=wrong_a)


# --------------------------------------------------------------------------------
# hook hygiene
# --------------------------------------------------------------------------------
def test_hooks_removed_after_every_call_including_failures(tiny_gemma3):
    m = tiny_gemma3
    mine = []
    m.blocks[0].hook_resid_pre.add_hook(lambda t, hook: mine.append(1))  # the user's own hook
    before = hook_snapshot(m)
    assert before  # the user's hook is there

    def boom(y):
        raise RuntimeError("metric failed")

    patch_pair(m, PAIR_A, PAIR_B, positions=[-1])
    patch_pair(m, PAIR_A, PAIR_B, positions="all", sites="z", method="attribution")
    for kw in (dict(metric=boom), dict(metric=boom, method="attribution"),
               dict(sites="nope"), dict(positions=[999]), dict(metric="nope")):
        with pytest.raises((RuntimeError, GlassesError)):
            patch_pair(m, PAIR_A, PAIR_B, **kw)
        assert hook_snapshot(m) == before, kw

    def bad_hook(act, hook):
        raise RuntimeError("a hook failed mid-run")

    class Broken(tg.interventions.Mitigation):
        name = "broken"

        def hooks(self, model):
            return [("blocks.1.hook_mlp_out", bad_hook)]

    for side in ("mitigation_a", "mitigation_b"):
        with pytest.raises(RuntimeError, match="mid-run"):
            patch_pair(m, PAIR_A, PAIR_B, **{side: Broken()})
        assert hook_snapshot(m) == before
    assert mine  # the user's hook kept running
    m.blocks[0].hook_resid_pre.remove_hooks()
    assert all(p.grad is None for p in m.parameters())  # attribution never touched .grad


# --------------------------------------------------------------------------------
# mitigations on one side or both
# --------------------------------------------------------------------------------
def test_sliding_window_on_one_side(tiny_llama):
    """Same prompt, b run with a window: the window alone makes the difference, and the
    last layer's residual carries all of it."""
    m = tiny_llama
    win = tg.sliding_window(window=4)
    res = patch_pair(m, PAIR_A, PAIR_A, mitigation_b=win, sites=("resid_pre", "resid_post"))
    assert res.meta["mitigation_b"] == "sliding_window:4" and res.meta["mitigation_a"] is None
    assert res.meta["denominator"] != 0
    post = res.values["resid_post"]
    assert float(post[-1, 0]) == pytest.approx(1.0, abs=1e-6)
    both = patch_pair(m, PAIR_A, PAIR_B, mitigation=win, sites="resid_pre")
    assert both.meta["mitigation_a"] == both.meta["mitigation_b"] == "sliding_window:4"
    plain = patch_pair(m, PAIR_A, PAIR_B, sites="resid_pre")
    assert both.meta["metric_a"] != plain.meta["metric_a"]


def test_separators_on_a_family_pair(tiny_llama):
    m = tiny_llama
    pair = tg.get_family("ones").pair(m, 9)
    base = patch_pair(m, pair, sites="resid_pre", layers=[0, 1])
    sep = patch_pair(m, pair, mitigation=tg.separators(3), sites="resid_pre", layers=[0, 1])
    assert "," not in "".join(base.meta["tokens_a"][-140:-100])
    assert sep.meta["tokens_a"].count(",") >= base.meta["tokens_a"].count(",") + 2
    assert sep.meta["mitigation_a"] == "separators:3"
    assert sep.meta["pair"]["family"] == "ones"
    al = sep.alignment
    # 9 items with a comma after every 3rd: v* = v + ",1", two extra tokens, unmatched
    assert list(al[al.region == "unmatched b"].b_token) == [",", "1"]
    assert al.dropna().iloc[-1].b_position == sep.meta["alignment"]["b_len"] - 1  # last ↔ last
    one_side = patch_pair(m, pair, mitigation_b=tg.separators(3), sites="resid_pre", layers=[1])
    assert one_side.meta["alignment"]["b_len"] > one_side.meta["alignment"]["a_len"] + 1
    with pytest.raises(GlassesError, match="family"):
        patch_pair(m, PAIR_A, PAIR_B, mitigation=tg.separators(3))


# --------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------
def test_result_values_df_save_load_and_views(tiny_gemma3, tmp_path):
    m = tiny_gemma3
    res = patch_pair(m, PAIR_A, PAIR_B, positions=[-1, -2, -3], method="attribution")
    assert set(res.df.columns) >= {"site", "layer", "position", "head", "restored", "b_position", "from_end"}
    assert res.df[res.df.site != "z"]["head"].isna().all()
    v = res.values
    assert v["resid_pre"].shape == (3, 3) and v["z"].shape == (3, 3, 4)
    # values and df agree cell by cell
    row = res.df[(res.df.site == "z") & (res.df.layer == 2) & (res.df.position == res.meta["positions"][1])
                 & (res.df["head"] == 3)].iloc[0]
    assert float(v["z"][2, 1, 3]) == row.restored
    path = res.save(tmp_path / "r")
    back = Result.load(path)
    assert isinstance(back, PatchResult)
    assert back.df.equals(res.df)
    assert torch.equal(back.values["z"], v["z"])
    assert back.alignment.equals(res.alignment)
    for kind in (None, "layers", "heatmap", "heads"):
        fig = back.plot(kind)
        assert fig.axes
    html = res._repr_html_()
    assert "<img" in html
    view = res.show_tokens(site="attn_out")
    assert "Count" in view._repr_html_() or "C" in view._repr_html_()
    single = patch_pair(m, PAIR_A, PAIR_B, sites="mlp_out", layers=[2])
    assert single.values.shape == (1, 1)
    assert "largest" in single.summary()


def test_errors_name_the_known_choices(tiny_llama):
    m = tiny_llama
    with pytest.raises(GlassesError, match="resid_pre"):
        patch_pair(m, PAIR_A, PAIR_B, sites="resid")
    with pytest.raises(GlassesError, match="final_distance"):
        patch_pair(m, PAIR_A, PAIR_B, metric="kl")
    with pytest.raises(GlassesError, match="attribution"):
        patch_pair(m, PAIR_A, PAIR_B, method="fast")
    with pytest.raises(GlassesError, match="no counterpart"):  # a is b plus one "1": a[19] has no match
        patch_pair(m, "1" * 20, "1" * 19, positions=[19], sites="resid_pre")
    with pytest.raises(GlassesError, match="max_runs"):
        patch_pair(m, PAIR_A, PAIR_B, positions="all", max_runs=10)
    with pytest.raises(GlassesError, match="training mode"):
        m.train()
        try:
            patch_pair(m, PAIR_A, PAIR_B)
        finally:
            m.eval()


def test_cli_patch_writes_table_and_figure(tmp_path, capsys):
    from tl_glasses.cli import main

    out = tmp_path / "out"
    rc = main(["patch", "--model", "tiny-llama", "--family", "ones", "--n", "6", "--sites", "resid_pre,z",
               "--positions", "last", "--method", "attribution", "--out", str(out)])
    assert rc == 0
    assert (out / "n6.csv").exists() and (out / "n6.png").exists() and (out / "by_layer.csv").exists()
    back = Result.load(out / "n6")
    assert isinstance(back, PatchResult) and back.meta["pair"]["n"] == 6
    txt = capsys.readouterr().out
    assert "restored" in txt
    rc = main(["patch", "--model", "tiny-llama", "--a", PAIR_A, "--b", PAIR_B, "--sites", "mlp_out",
               "--layers", "0-1", "--out", str(out / "ab")])
    assert rc == 0 and (out / "ab" / "patch.csv").exists()
    assert main(["patch", "--model", "tiny-llama", "--a", PAIR_A, "--out", str(out / "x")]) == 2


# --------------------------------------------------------------------------------
# real model (gemma-3-270m)
# --------------------------------------------------------------------------------
@pytest.mark.real
def test_gemma_ones_pair_closed_form_facts_and_batching(gemma):
    pair = tg.get_family("ones").pair(gemma, 24)
    full = patch_pair(gemma, pair, sites=("resid_pre", "attn_out", "mlp_out"), layers=[-1], joint=True)
    assert full.restored == pytest.approx(1.0, abs=1e-5)
    none = patch_pair(gemma, pair, source="a", sites=("resid_pre", "z"), layers=[0, 9, 17])
    assert (none.df.effect == 0).all()
    kw = dict(sites=("attn_out", "z"), layers=[5, 11, 17])
    batched = patch_pair(gemma, pair, batch_size=8, **kw)
    single = patch_pair(gemma, pair, batch_size=1, **kw)
    assert batched.meta["fallback_batches"] == 0 and batched.meta["batches"] < batched.meta["runs"]
    assert torch.equal(torch.tensor(batched.df.patched_metric.to_numpy()),
                       torch.tensor(single.df.patched_metric.to_numpy()))
