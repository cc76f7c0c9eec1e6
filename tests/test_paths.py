"""Path products (Thm 5.1/B.5) and the depth limit (Prop. B.8, Lemmas B.6/B.7):
against transformers' own ``output_attentions``, the closed form for uniform causal
attention, and property tests on random triangular row-stochastic matrices."""
from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_glasses as tg
from tl_glasses._core import hook_snapshot
from tl_glasses.analysis.paths import (
    HEADS,
    VARIANTS,
    DepthResult,
    LayerPattern,
    PathResult,
    capture_patterns,
    depth_profile,
    first_column_chain,
    full_product,
    last_row,
    path_bound,
)
from tl_glasses.errors import GlassesError, HookError, UnknownNameError
from tl_glasses.models import char_tokenizer, tiny_hf_model, wrap_model

PROMPT = "1 1 1 0 1 2 3 4 5 6 7 8 9"  # 26 tokens with BOS: > 2 × the tiny Gemma window (8)


def _reduce(a: torch.Tensor, heads: str) -> torch.Tensor:
    a = a[0].double()
    return {"mean": a.mean(0), "max": a.amax(0), "none": a.sum(0)}[heads]


def _layer_matrix(A: torch.Tensor, variant: str, beta: float) -> torch.Tensor:
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return {"bound": A / beta + eye, "rollout": (A + eye) / 2, "attention": A}[variant]


def _reference_products(attentions, variant, heads, betas):
    """Dense partial products Ā^(ℓ)···Ā^(0) from transformers' attentions."""
    n = attentions[0].shape[-1]
    P = torch.eye(n, dtype=torch.float64)
    out = []
    for layer, a in enumerate(attentions):
        P = _layer_matrix(_reduce(a, heads), variant, betas[layer]) @ P
        out.append(P)
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_path_bound_equals_transformers_output_attentions(arch):
    kw = {"n_layers": 3} if arch == "gemma3" else {}
    model = tg.tiny_model(arch, seed=0, **kw)
    hf = tiny_hf_model(arch, seed=0, **kw)
    toks = model.to_tokens(PROMPT)
    with torch.no_grad():
        att = hf(toks, output_attentions=True).attentions
    L = len(att)
    for variant in VARIANTS:
        for heads in HEADS:
            betas = [1.0 + 0.5 * layer for layer in range(L)] if variant == "bound" else [1.0] * L
            ref = _reference_products(att, variant, heads, betas)[-1][-1]
            res = path_bound(model, toks, variant=variant, heads=heads, beta=betas)
            assert res.values.shape == (toks.shape[1],)
            err = float((res.values - ref).abs().max() / ref.abs().max())
            assert err < 1e-6, (variant, heads, err)
    widths = res.meta["band_widths"]
    if arch == "gemma3":  # local layers stored as bands of the window, the global one dense
        assert widths == [8, 8, toks.shape[1]] and res.meta["banded_layers"] == 2
    else:
        assert res.meta["banded_layers"] == 0


def test_beta_auto_is_the_median_residual_to_attention_norm_ratio(tiny_llama):
    toks = tiny_llama.to_tokens(PROMPT)
    L = 2
    names = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{i}.hook_attn_out" for i in range(L)]
    _, cache = tiny_llama.run_with_cache(toks, names_filter=names)
    betas = [float((cache[f"blocks.{i}.hook_resid_pre"][0].norm(dim=-1)
                    / cache[f"blocks.{i}.hook_attn_out"][0].norm(dim=-1)).median()) for i in range(L)]
    res = path_bound(tiny_llama, toks, beta="auto")
    assert np.allclose(res.meta["beta"], betas, rtol=1e-5)
    given = path_bound(tiny_llama, toks, beta=betas)
    assert torch.allclose(res.values, given.values, rtol=1e-5)
    d = depth_profile(tiny_llama, toks, variant="bound", beta="auto")
    assert np.allclose(d.df["beta"], betas, rtol=1e-5)
    with pytest.raises(GlassesError, match="auto"):
        path_bound(tiny_llama, toks, beta="fitted")


def _uniform_attention_model(n_layers=3):
    hf = tiny_hf_model("llama", seed=1, n_layers=n_layers)
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.q_proj.weight.zero_()  # all scores 0: uniform causal attention
    return wrap_model(hf, char_tokenizer(), name="tiny-uniform")


def _closed_form_last_row(n: int, f) -> list[Fraction]:
    """Last row of f(A) for uniform causal attention A[i, j] = 1/(i+1), j ≤ i.

    A is the Cesàro matrix, the Hausdorff mean of the moments μ_k = 1/(k+1):
    A = Δ diag(μ) Δ with Δ[i, k] = (-1)^k C(i, k) and Δ² = I, so for any polynomial f,
    f(A)[i, j] = Σ_{k=j}^{i} (-1)^(k+j) C(i, k) C(k, j) f(μ_k). Exact in rationals.
    """
    i = n - 1
    return [
        sum((-1) ** (k + j) * comb(i, k) * comb(k, j) * f(Fraction(1, k + 1)) for k in range(j, i + 1))
        for j in range(n)
    ]


def test_uniform_causal_attention_closed_form():
    L = 3
    model = _uniform_attention_model(L)
    toks = model.to_tokens("0123456789ab")  # 13 tokens
    n = toks.shape[1]
    pats = capture_patterns(model, toks)
    A = pats[0].dense()
    ref_A = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    assert torch.allclose(A, ref_A, atol=1e-7)  # the model really attends uniformly
    beta = Fraction(3, 2)
    cases = {
        "bound": lambda m: (m / beta + 1) ** L,
        "rollout": lambda m: ((m + 1) / 2) ** L,
        "attention": lambda m: m ** L,
    }
    for variant, f in cases.items():
        exact = torch.tensor([float(x) for x in _closed_form_last_row(n, f)], dtype=torch.float64)
        got = path_bound(model, toks, variant=variant, beta=float(beta)).values
        assert float((got - exact).abs().max() / exact.abs().max()) < 1e-6, variant
    # 1 layer of attention: every position gets 1/n; 2 layers: (H_n - H_j)/n
    row2 = last_row(pats[:2], variant="attention")
    H = np.cumsum([0.0] + [1.0 / k for k in range(1, n + 1)])
    assert np.allclose(row2.numpy(), [(H[n] - H[j]) / n for j in range(n)], rtol=1e-6)


def test_banded_equals_dense_and_hygiene(tiny_gemma3):
    toks = tiny_gemma3.to_tokens(PROMPT)
    before = hook_snapshot(tiny_gemma3)
    a = path_bound(tiny_gemma3, toks, band=True)
    b = path_bound(tiny_gemma3, toks, band=False)
    assert hook_snapshot(tiny_gemma3) == before
    assert torch.allclose(a.values, b.values, rtol=1e-12)
    assert a.meta["pattern_bytes"] < b.meta["pattern_bytes"]
    # a failing forward (a user's hook raising) leaves no tl_glasses hook behind
    def boom(t, hook):
        raise RuntimeError("user hook failed")

    tiny_gemma3.add_hook("blocks.1.attn.hook_pattern", boom)
    mine = hook_snapshot(tiny_gemma3)
    with pytest.raises(RuntimeError, match="user hook failed"):
        path_bound(tiny_gemma3, toks)
    with pytest.raises(RuntimeError, match="user hook failed"):
        depth_profile(tiny_gemma3, toks)
    assert hook_snapshot(tiny_gemma3) == mine
    tiny_gemma3.reset_hooks()
    assert hook_snapshot(tiny_gemma3) == before
    assert all(p.grad is None for p in tiny_gemma3.parameters())


def test_depth_profile_matches_dense_partial_products(tiny_gemma3):
    hf = tiny_hf_model("gemma3", seed=0, n_layers=3)
    toks = tiny_gemma3.to_tokens(PROMPT)
    with torch.no_grad():
        att = hf(toks, output_attentions=True).attentions
    for variant, heads in [("rollout", "mean"), ("bound", "max"), ("attention", "mean")]:
        res = depth_profile(tiny_gemma3, toks, variant=variant, heads=heads)
        refs = _reference_products(att, variant, heads, [1.0] * 3)
        for layer, P in enumerate(refs):
            Pn = P / P.sum(1, keepdim=True)
            assert torch.allclose(res.tensors["first_column"][layer], Pn[:, 0], rtol=1e-6, atol=1e-9)
            assert abs(res.df["first_token_mass"][layer] - float(Pn[-1, 0])) < 1e-8
            limit = torch.zeros_like(Pn)
            limit[:, 0] = 1
            dist_inf = float((Pn - limit).abs().sum(1).max())
            assert abs(res.df["dist_inf"][layer] - dist_inf) < 1e-8
            M = _layer_matrix(_reduce(att[layer], heads), variant, 1.0)
            eig = res.tensors["eigenvalues"][layer]
            assert torch.allclose(eig, M.diagonal(), atol=1e-7)  # triangular: eigenvalues = diagonal
            assert torch.allclose(torch.linalg.eigvals(M).real.sort().values, eig.sort().values, atol=1e-6)
        assert torch.equal(res.values, res.tensors["first_column"][:, -1])
    assert res.df["band"].tolist() == [8, 8, toks.shape[1]]


def test_results_roundtrip_and_plots(tiny_llama, tmp_path):
    r = path_bound(tiny_llama, PROMPT, variant="rollout")
    back = tg.Result.load(r.save(tmp_path / "p"))
    assert isinstance(back, PathResult) and torch.equal(back.values, r.values)
    assert back.df.equals(r.df) and back.plot().axes[0].get_yscale() == "log"
    assert abs(float(back.df["share"].sum()) - 1) < 1e-9
    d = depth_profile(tiny_llama, PROMPT)
    back_d = tg.Result.load(d.save(tmp_path / "d"))
    assert isinstance(back_d, DepthResult) and torch.equal(back_d.values, d.values)
    assert back_d.plot().axes and "first-token mass" in repr(back_d)
    assert {"first_token_mass", "dist_inf", "lambda2", "unit_eigs"} <= set(back_d.df.columns)


def test_errors(tiny_llama):
    with pytest.raises(UnknownNameError, match="rollout"):
        path_bound(tiny_llama, PROMPT, variant="paths")
    with pytest.raises(UnknownNameError, match="mean"):
        path_bound(tiny_llama, PROMPT, heads="min")
    with pytest.raises(GlassesError, match="2 layers"):
        path_bound(tiny_llama, PROMPT, beta=[1.0, 1.0, 1.0])
    with pytest.raises(GlassesError, match="positive"):
        path_bound(tiny_llama, PROMPT, beta=0.0)
    with pytest.raises(GlassesError, match="not causal"):
        LayerPattern.from_dense(torch.ones(4, 4) / 4)
    with pytest.raises(HookError):
        from tl_glasses.analysis.paths import reduce_heads

        reduce_heads(torch.ones(3, 3), "mean")


# --------------------------------------------------------------------------- properties


def _random_stochastic(rng: np.random.Generator, n: int, low: float, band: int | None = None) -> torch.Tensor:
    A = np.tril(rng.uniform(low, 1.0, size=(n, n)))
    if band is not None:
        A = A * (np.subtract.outer(np.arange(n), np.arange(n)) < band)
    A = A / A.sum(1, keepdims=True)
    return torch.tensor(A, dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 10), L=st.integers(1, 80), low=st.floats(0.02, 1.0), seed=st.integers(0, 2**31))
def test_products_converge_to_the_first_column_limit(n, L, low, seed):
    """Lemma B.7 and Prop. B.8: products of lower-triangular row-stochastic matrices
    with ≥ 2 non-zeros per row stay triangular row-stochastic and approach 1·e_1ᵀ;
    the distance max_i (1 - P[i,0]) never grows and shrinks at least by the factor
    (1 - min_i A[i,0]) per layer (because P[0,0] = 1)."""
    rng = np.random.default_rng(seed)
    mats = [_random_stochastic(rng, n, low) for _ in range(L)]
    pats = [LayerPattern(m, n, False) for m in mats]
    for variant, shrink in (("attention", 1.0), ("rollout", 0.5)):
        cols, sums = first_column_chain(pats, variant=variant)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)  # row-stochastic (B.7)
        dist = (1 - cols).amax(1)
        assert bool((dist[1:] <= dist[:-1] + 1e-12).all())  # monotone
        bound = torch.cumprod(torch.tensor([1 - shrink * float(m[1:, 0].min()) for m in mats], dtype=torch.float64), 0)
        assert bool((dist <= bound + 1e-12).all())
        if n <= 6 and L <= 30:  # the chains agree with the whole product
            P = full_product(pats, variant=variant)
            assert torch.allclose(P[:, 0], cols[-1], atol=1e-12)
            assert float(torch.triu(P, 1).abs().max()) == 0  # triangular (B.7)
            assert torch.allclose(last_row(pats, variant=variant), P[-1], atol=1e-12)
    # a long product of the same matrix (Prop. B.8's setting) reaches the limit
    same = [pats[0]] * 400
    cols, _ = first_column_chain(same, variant="attention")
    lam2 = float(mats[0].diagonal()[1:].max())  # Lemma B.6: 1 is a simple eigenvalue, the rest < 1
    assert lam2 < 1
    if lam2 ** 400 * n < 1e-9:
        assert float((1 - cols[-1]).max()) < 1e-6


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 40), w=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_band_storage_is_exact(n, w, seed):
    rng = np.random.default_rng(seed)
    A = _random_stochastic(rng, n, 0.01, band=w).float()
    pat = LayerPattern.from_dense(A)
    width = min(w, n)
    if width <= n // 2:
        assert pat.banded and pat.width == width and pat.data.shape == (n, width)
    assert torch.equal(pat.dense(), A)
    assert torch.equal(pat.diagonal(), A.diagonal())
    r = torch.tensor(rng.normal(size=n))
    assert torch.allclose(pat.rmatvec(r), r @ A.double(), atol=1e-10)
    assert torch.allclose(pat.matvec(r), A.double() @ r, atol=1e-10)


def test_single_nonzero_rows_break_lemma_b6(tiny_llama):
    """A row with one non-zero (a_ii = 1) is a second unit eigenvalue: counted in unit_eigs."""
    n = 6
    A = torch.tril(torch.ones(n, n))
    A[3] = 0
    A[3, 3] = 1
    A = A / A.sum(1, keepdim=True)
    pat = LayerPattern.from_dense(A)
    assert float(pat.diagonal()[3]) == 1.0
    cols, _ = first_column_chain([pat] * 200, variant="attention")
    assert float(cols[-1][3]) == 0.0  # position 3 never reaches the first token: no rank-one limit


# --------------------------------------------------------------------------- real models


@pytest.mark.real
def test_path_bound_equals_output_attentions_smollm2(smollm2):
    hf, _ = tg.models.load_hf("smollm2-135m", attn_implementation="eager")
    toks = smollm2.to_tokens("Consider the following sequence: 11110. What is the last digit?")
    with torch.no_grad():
        att = hf(toks, output_attentions=True).attentions
    ref = _reference_products(att, "bound", "mean", [1.0] * len(att))[-1][-1]
    res = path_bound(smollm2, toks)
    assert float((res.values - ref).abs().max() / ref.abs().max()) < 1e-5


# --------------------------------------------------------------------------- validation utilities


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:An input array is constant")
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-3, 3, allow_nan=False)), min_size=3, max_size=30))
def test_spearman_matches_scipy(pairs):
    scipy_stats = pytest.importorskip("scipy.stats")
    from tl_glasses.analysis.oversquashing import spearman

    a = [float(p[0]) for p in pairs]
    b = [p[1] for p in pairs]
    ours = spearman(a, b)
    ref = scipy_stats.spearmanr(a, b).statistic
    if np.isnan(ref):
        assert np.isnan(ours)
    else:
        assert abs(ours - ref) < 1e-9


def test_bound_vs_sensitivity_and_copy_study_resume(tiny_gemma3, tmp_path):
    from tl_glasses.analysis.oversquashing import (
        BoundComparison,
        StudyResult,
        bound_vs_sensitivity,
        copy_items,
        copy_study,
        hint_study,
    )

    (task, n, ti), = copy_items(tiny_gemma3, [6], tasks=["copy_last"])
    assert [ti.tokens.flatten()[p].item() for p in ti.item_positions] == tiny_gemma3.to_tokens("111110", prepend_bos=False)[0].tolist()
    cmp = bound_vs_sensitivity(tiny_gemma3, ti.tokens, method="scalar", positions=ti.item_positions)
    assert isinstance(cmp, BoundComparison) and -1 <= cmp.meta["spearman"] <= 1
    assert cmp.df["in_sequence"].sum() == 6 and cmp.meta["spearman_sequence"] is not None
    assert cmp.plot().axes[0].get_xscale() == "log" and cmp.plot(kind="position") is not None
    from tl_glasses.analysis.sensitivity import sensitivity

    pre = sensitivity(tiny_gemma3, ti.tokens, method="scalar")
    again = bound_vs_sensitivity(tiny_gemma3, ti.tokens, sens=pre, positions=ti.item_positions)
    assert again.meta["spearman"] == cmp.meta["spearman"]
    with pytest.raises(GlassesError, match="other tokens"):
        bound_vs_sensitivity(tiny_gemma3, ti.tokens[:-1], sens=pre)

    out = tmp_path / "study"
    first = copy_study(tiny_gemma3, [4, 8], method="scalar", out=out)
    assert len(first.df) == 4 and set(first.df["task"]) == {"copy_last", "copy_first"}
    rows_file = out / "rows.jsonl"
    n_lines = len(rows_file.read_text().splitlines())
    again = copy_study(tiny_gemma3, [4, 8], method="scalar", out=out)  # resumes: nothing recomputed
    assert len(rows_file.read_text().splitlines()) == n_lines == 4
    assert again.df.sort_values(["task", "n_items"])["spearman"].tolist() == \
        first.df.sort_values(["task", "n_items"])["spearman"].tolist()
    with pytest.raises(GlassesError):  # another configuration is refused in the same directory
        copy_study(tiny_gemma3, [4], method="jacobian", out=out)
    back = tg.Result.load(again.save(tmp_path / "r"))
    assert isinstance(back, StudyResult) and back.plot() is not None
    h = hint_study(tiny_gemma3, 8, method="scalar")
    assert list(h.df["condition"]) == ["baseline", "hint", "alternating", "hint+alternating"]
    assert (h.df.loc[h.df.condition == "hint", "distance_to_last"].item()
            > h.df.loc[h.df.condition == "baseline", "distance_to_last"].item())
    # a hint study has Spearman columns too: it must still plot and summarise as one
    assert h.plot() is not None and h.summary() == "4 conditions"
    assert torch.equal(h.values, torch.tensor(h.df["answer_share"].to_numpy(dtype=float)))


def test_cli_paths_and_sensitivity(tmp_path, capsys):
    from tl_glasses.cli import main

    assert main(["paths", "--model", "tiny:gemma3", "--copy", "6", "--compare", "scalar", "--out", str(tmp_path / "p")]) == 0
    for f in ["path_bound.csv", "path_bound.png", "depth_profile.csv", "depth_profile.png",
              "bound_vs_sensitivity.png"]:
        assert (tmp_path / "p" / f).exists(), f
    assert isinstance(tg.Result.load(tmp_path / "p" / "path_bound"), PathResult)
    assert main(["sensitivity", "--model", "tiny:llama", "--prompt", "12345", "--method", "hutchinson",
                 "--probes", "4", "--wrt", "0,1", "--out", str(tmp_path / "s")]) == 0
    res = tg.Result.load(tmp_path / "s" / "result")
    assert res.values.shape == (2, 6) and (tmp_path / "s" / "sensitivity.png").exists()
    assert "U-shape" in capsys.readouterr().out
    assert main(["sensitivity", "--model", "tiny:gemma3", "--copy", "6", "--study", "hints", "--method", "scalar",
                 "--out", str(tmp_path / "h")]) == 0
    assert (tmp_path / "h" / "hint_study.csv").exists() and (tmp_path / "h" / "hint_study.png").exists()
    assert main(["sensitivity", "--model", "tiny:llama", "--prompt", "12", "--wrt", "blocks.9.hook_resid_pre",
                 "--out", str(tmp_path / "x")]) == 2  # a GlassesError: message, exit code 2
