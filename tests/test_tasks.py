"""Task generators, tokenisation control, evaluate(), results, CLI and resume (tiny models)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tl_glasses as tg
from tl_glasses._core import hook_snapshot
from tl_glasses.errors import GlassesError, ResultsMismatchError, TokenizationError, UnknownNameError
from tl_glasses.tasks.evaluate import TaskResult, tokenization_report
from tl_glasses.tasks.generators import DISTRACTOR_WORDS, TASK_NAMES, get_task, parse_lengths

from _task_helpers import ScriptedModel, merging_model

NAMES = ["copy_last", "copy_first", "count_sum", "count_ones", "count_ones_zeros", "count_word"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return tg.tiny_model("llama", seed=0)


# --- generators -------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert list(TASK_NAMES) == NAMES
    assert list(tg.list_tasks()["name"]) == NAMES
    with pytest.raises(UnknownNameError, match="copy_last"):
        tg.get_task("copy_middle")
    from tl_glasses.tasks.generators import register_task

    with pytest.raises(GlassesError, match="already registered"):
        register_task(get_task("copy_last"))


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_copy_sequences(n):
    last, first = get_task("copy_last"), get_task("copy_first")
    assert last.item(n).seq == "1" * (n - 1) + "0" and last.item(n).answer == 0
    assert first.item(n).seq == "0" + "1" * (n - 1) and first.item(n).answer == 0
    alt_l, alt_f = last.item(n, alternating=True).seq, first.item(n, alternating=True).seq
    assert alt_l.endswith("0") and alt_f.startswith("0") and len(alt_l) == len(alt_f) == n
    assert all(a != b for a, b in zip(alt_l, alt_l[1:])) and all(a != b for a, b in zip(alt_f, alt_f[1:]))
    assert last.item(n, sep=",").seq == ",".join("1" * (n - 1) + "0")


def test_counting_answers_are_true_counts():
    assert get_task("count_sum").item(7).seq == " + ".join(["1"] * 7)
    assert get_task("count_sum").item(7).answer == 7
    assert get_task("count_ones").item(9).seq == " ".join(["1"] * 9)
    for i in range(20):
        it = get_task("count_ones_zeros").item(40, i, seed=3)
        assert it.answer == it.items.count("1") and set(it.items) <= {"0", "1"} and len(it.items) == 40
        w = get_task("count_word").item(30, i, seed=3)
        assert w.answer == w.items.count("car") and len(w.items) == 30
        assert all(x == "car" or x in DISTRACTOR_WORDS for x in w.items)
    assert not any("car" in d for d in DISTRACTOR_WORDS)


def test_bernoulli_rates():
    big = get_task("count_ones_zeros").item(20000, seed=1)
    assert abs(big.answer / 20000 - 0.7) < 0.02
    w = get_task("count_word").item(20000, seed=1, p=0.25)
    assert abs(w.answer / 20000 - 0.25) < 0.02


def test_items_are_seeded_and_independent_of_the_request():
    t = get_task("count_ones_zeros")
    a = t.items([5, 10, 20], n_items=3, seed=7)
    b = t.items([20], n_items=3, seed=7)
    assert [x.items for x in a if x.n == 20] == [x.items for x in b]
    c = t.items([20], n_items=3, seed=8)
    assert [x.items for x in b] != [x.items for x in c]
    assert len(get_task("count_sum").items([3, 4], n_items=5)) == 2  # deterministic: one per length


def test_option_and_mode_errors():
    t = get_task("copy_last")
    with pytest.raises(GlassesError, match="has no option"):
        t.item(5, colour="red")
    with pytest.raises(GlassesError, match="prompt_type"):
        t.item(5, prompt_type=3)
    with pytest.raises(GlassesError, match="few-shot"):
        t.item(5, mode="cot_fewshot")
    with pytest.raises(UnknownNameError, match="cot_fewshot"):
        t.item(5, mode="fewshot")
    with pytest.raises(GlassesError, match="probability"):
        get_task("count_ones_zeros").item(5, p=1.5)
    with pytest.raises(GlassesError, match="positive"):
        t.item(0)


def test_parse_lengths():
    assert parse_lengths("2,5,10") == [2, 5, 10]
    assert parse_lengths("2:10:4,3") == [2, 3, 6, 10]
    assert parse_lengths(range(3, 6)) == [3, 4, 5]
    assert parse_lengths(8) == [8]
    for bad in ["a,b", "2:x", "", "0,1", [-1]]:
        with pytest.raises(GlassesError):
            parse_lengths(bad)


def test_candidates():
    assert get_task("copy_first").candidates(300) == list(range(10))
    c = get_task("count_sum").candidates(10)
    assert c[0] == 0 and 100 in c and c[-1] == 120
    assert get_task("count_sum").candidates(100)[-1] == 200
    assert get_task("count_sum").candidates(30, max_candidate=20)[-1] == 30  # always holds the answer


def test_conditions():
    assert get_task("copy_last").condition() == "copy_last"
    assert get_task("copy_last").condition(hint=True, alternating=True) == "copy_last+hint+alternating"
    assert get_task("count_sum").condition("cot") == "count_sum · cot"
    assert get_task("copy_last").condition(prompt_type=2) == "copy_last+prompt_type=2"


# --- tokenisation control -----------------------------------------------------------------
def test_merging_tokenizer_is_refused_and_a_separator_fixes_it():
    m = merging_model()
    with pytest.raises(TokenizationError) as exc:
        tg.evaluate(m, "copy_last", [6], progress=False)
    msg = str(exc.value)
    assert "copy_last" in msg and "merged" in msg and "sep=" in msg
    res = tg.evaluate(m, "copy_last", [6], sep=" ", progress=False)
    assert res.df["n"].tolist() == [6] and res.df["item_tokens"].iloc[0] == "0 1"
    rep = tokenization_report(m, "count_ones", [4, 8], sep="")
    assert not rep["ok"].any() and rep["message"].str.contains("merged").all()
    assert tokenization_report(m, "count_ones", [4, 8])["ok"].all()  # the default sep=' '
    assert tokenization_report(m, "count_ones", [4, 8], sep=",")["ok"].all()


def test_tokenization_report_on_the_char_model(tiny):
    rep = tokenization_report(tiny, "count_sum", [3, 12])
    assert rep["ok"].all() and (rep["n_items"] == rep["n"]).all()
    assert (rep["item_tokens"] == "1").all()
    assert (rep["last_item_position"] > rep["first_item_position"]).all()
    words = tokenization_report(tiny, "count_word", [5])  # characters: words are split
    assert not words["ok"].any() and words["message"].str.contains("split").all()


# --- evaluate: scoring ------------------------------------------------------------------
def test_evaluate_score_columns_and_summaries(tiny):
    before = hook_snapshot(tiny)
    res = tg.evaluate(tiny, "count_ones_zeros", [3, 6], n_items=3, progress=False)
    assert hook_snapshot(tiny) == before and not tiny.training
    df = res.df
    for col in ["n", "prompt", "answer", "prediction", "correct", "abs_error", "parse_status",
                "rank", "logit_diff", "p_answer", "n_tokens", "item_tokens"]:
        assert col in df, col
    assert len(df) == 6 and (df["parse_status"] == "scored").all()
    assert ((df["prediction"] == df["answer"]) == df["correct"]).all()
    assert np.allclose(df["abs_error"], (df["prediction"] - df["answer"]).abs())
    assert ((df["rank"] == 1) == df["correct"]).all()
    assert ((df["logit_diff"] > 0) == df["correct"]).all()
    s = res.summary_by_n()
    assert list(s["n"]) == [3, 6] and set(s.columns) >= {"accuracy", "mae", "unparsed", "p_answer", "logit_diff"}
    assert (s["unparsed"] == 0).all()
    h = res.answer_histogram()
    assert h["count"].sum() == 6 and h["count"].is_monotonic_decreasing
    assert abs(h["fraction"].sum() - 1) < 1e-9


def test_result_plots_and_round_trip(tiny, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    a = tg.evaluate(tiny, "copy_last", [2, 4], progress=False)
    b = tg.evaluate(tiny, "copy_first", [2, 4], progress=False)
    both = TaskResult.concat([a, b])
    assert both.conditions == ["copy_last", "copy_first"]
    for r in (a, both):
        fig = r.plot()
        assert len(fig.axes) == 2
    c = tg.evaluate(tiny, "count_sum", [2, 4], progress=False)
    assert len(c.plot().axes) == 2 and c.plot(kind="histogram")
    with pytest.raises(UnknownNameError):
        c.plot(kind="pie")
    c.save(tmp_path / "r")
    back = tg.Result.load(tmp_path / "r")
    assert type(back) is TaskResult
    pd.testing.assert_frame_equal(back.df[["n", "prediction", "correct"]], c.df[["n", "prediction", "correct"]])
    assert "<img" in c._repr_html_() and "count_sum" in repr(c)


# --- evaluate: generation + parsing (scripted model) -------------------------------------
def test_generation_is_parsed_and_the_histogram_shows_it():
    m = ScriptedModel("Let me see. The final answer to your maths question is: **100**\nBye")
    res = tg.evaluate(m, "count_sum", [5, 100], scoring="generate", max_new_tokens=200, progress=False)
    df = res.df
    assert df["prediction"].tolist() == [100, 100] and df["correct"].tolist() == [False, True]
    assert (df["parse_status"] == "format").all() and (df["stop_reason"] == "answer").all()
    gen = df["generation"].iloc[0]
    assert "**100*" in gen and "Bye" not in gen  # stopped once the number was complete
    assert res.answer_histogram().iloc[0]["prediction"] == 100
    assert res.summary_by_n()["mae"].tolist() == [95.0, 0.0]


def test_unparsed_fraction_is_reported():
    m = ScriptedModel("I do not know, sorry.")
    res = tg.evaluate(m, "copy_last", [3, 4], scoring="generate", progress=False)
    assert res.df["prediction"].isna().all() and (res.df["parse_status"] == "unparsed").all()
    assert (res.df["stop_reason"] == "eos").all()
    s = res.summary_by_n()
    assert (s["unparsed"] == 1.0).all() and (s["accuracy"] == 0).all()
    assert "100% unparsed" in res.summary()


def test_generation_bound():
    m = ScriptedModel("The answer to your question is: " + "1" * 100)
    res = tg.evaluate(m, "copy_last", [3], scoring="generate", max_new_tokens=40, progress=False)
    assert res.df["stop_reason"].iloc[0] == "max_new_tokens" and res.df["n_new_tokens"].iloc[0] == 40


# --- resume ----------------------------------------------------------------------------------
def test_resume_extends_without_recomputing(tmp_path):
    m = ScriptedModel("The final answer to your maths question is: 7\n")
    out = tmp_path / "run"
    r1 = tg.evaluate(m, "count_ones_zeros", [4, 7], n_items=2, scoring="generate", out=out, progress=False)
    calls = m.calls
    r2 = tg.evaluate(m, "count_ones_zeros", [4, 7, 9], n_items=2, scoring="generate", out=out, progress=False)
    assert m.calls > calls  # only the new length ran
    calls = m.calls
    r3 = tg.evaluate(m, "count_ones_zeros", [4, 7, 9], n_items=2, scoring="generate", out=out, progress=False)
    assert m.calls == calls  # nothing left to do
    lines = (out / "rows.jsonl").read_text().splitlines()
    keys = [(json.loads(x)["n"], json.loads(x)["item"]) for x in lines]
    assert len(keys) == len(set(keys)) == 6
    pd.testing.assert_frame_equal(r2.df, r3.df)
    pd.testing.assert_frame_equal(r1.df, r3.df[r3.df["n"] < 9].reset_index(drop=True))
    with pytest.raises(ResultsMismatchError):
        tg.evaluate(m, "count_ones_zeros", [4], p=0.5, scoring="generate", out=out, progress=False)


def _cli(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return [sys.executable, "-m", "tl_glasses.cli", "tasks", *args], env


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_without_loss_or_duplicates(tmp_path):
    """Kill a CLI run mid-way with SIGKILL, rerun the command, compare with an
    uninterrupted run of the same configuration."""
    args = ["--model", "tiny:llama", "--task", "count_ones_zeros", "--lengths", "1:16:1", "--n-items", "3",
            "--batch-size", "1", "--threads", "1", "--no-progress", "--out", str(tmp_path / "killed")]
    cmd, env = _cli(args)
    rows = tmp_path / "killed" / "rows.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if rows.exists() and len(rows.read_bytes().splitlines()) >= 5:
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(rows.read_bytes().splitlines())
    assert 5 <= n_before < 48, "killed too late to test a resume"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    clean = tg.evaluate(tg.tiny_model("llama"), "count_ones_zeros", "1:16:1", n_items=3, batch_size=1,
                        out=tmp_path / "clean", progress=False)

    def load(d):
        lines = (tmp_path / d / "rows.jsonl").read_text().splitlines()
        df = pd.DataFrame([json.loads(x) for x in lines])
        assert not df.duplicated(["n", "item"]).any()
        return df.sort_values(["n", "item"]).reset_index(drop=True)

    killed, clean_rows = load("killed"), load("clean")
    assert len(killed) == len(clean_rows) == len(clean.df) == 48
    cols = ["n", "item", "answer", "prediction", "rank", "prompt"]
    pd.testing.assert_frame_equal(killed[cols], clean_rows[cols])
    assert np.allclose(killed["logp_answer"], clean_rows["logp_answer"], atol=1e-6)
    assert json.loads((tmp_path / "killed" / "config.json").read_text()) == \
        json.loads((tmp_path / "clean" / "config.json").read_text())
    assert (tmp_path / "killed" / "result" / "data.parquet").exists()


def test_cli_list_and_run(tmp_path, capsys):
    from tl_glasses.cli import main

    assert main(["tasks", "--list"]) == 0
    assert "count_ones_zeros" in capsys.readouterr().out
    assert main(["tasks", "--model", "tiny:gpt2", "--task", "copy_first", "--lengths", "2,3", "--hint",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "copy_first+hint" in out and (tmp_path / "o" / "plot.png").exists()
    assert main(["tasks", "--model", "tiny:llama", "--task", "copy_first", "--lengths", "2",
                 "--option", "colour=1"]) == 2


# --- reading a results directory back ------------------------------------------------------
def test_from_dir_reads_a_partial_run_and_reparses(tmp_path):
    m = ScriptedModel("The final answer to your maths question is: 7\n")
    out = tmp_path / "run"
    res = tg.evaluate(m, "count_ones_zeros", [4, 7], n_items=2, scoring="generate", out=out, progress=False)
    back = TaskResult.from_dir(out)
    cols = ["n", "item", "answer", "prediction", "correct", "abs_error", "parse_status"]
    pd.testing.assert_frame_equal(back.df[cols], res.df[cols])
    assert back.meta["task"] == "count_ones_zeros" and back.meta["scoring"] == "generate"
    assert len(TaskResult.from_dir(out, n_items=1).df) == 2
    # a row cut short by a kill, and a generation the parser of its day misread
    rows = (out / "rows.jsonl").read_text().splitlines()
    bad = json.loads(rows[0])
    bad["generation"], bad["prediction"], bad["parse_status"] = "the following sum: 1 + 1 + 1", 1, "phrase"
    (out / "rows.jsonl").write_text("\n".join([json.dumps(bad)] + rows[1:]) + '\n{"n": 9, "it')
    back = TaskResult.from_dir(out)
    assert len(back.df) == 4
    assert back.df["parse_status"].iloc[0] == "unparsed" and pd.isna(back.df["prediction"].iloc[0])
    assert TaskResult.from_dir(out, reparse=False).df["prediction"].iloc[0] == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(GlassesError):
        TaskResult.from_dir(tmp_path / "empty")


@pytest.mark.parametrize("text,value", [
    ("Please perform the following sum: 1 + 1 + 1 + 1", None),          # an echo, not an answer
    ("The final answer to your maths question is: 1 + 1 + 1", None),
    ("1 + 1 + 1 + 1 + 1 = 11\n\nThe final answer is 11.", 11),
    ("2 * 5 + 2 = 12", 12),
    ("The answer to your question is: 0.", 0),
])
def test_a_number_that_starts_an_expression_is_not_the_answer(text, value):
    from tl_glasses.tasks.parsing import parse_answer

    assert parse_answer(text).value == value


def test_plots_keep_echoed_sequences_readable():
    """A model that writes the sequence back ("1111…") is read as a huge number: the error
    axis becomes symmetric-log and the histogram one bar per answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = ScriptedModel("The answer is " + "1" * 20 + ".")
    res = tg.evaluate(m, "count_ones", [3, 4], scoring="generate", max_new_tokens=60, progress=False)
    assert (res.df["prediction"] > 1e18).all()
    fig = res.plot()
    err, hist = fig.axes
    assert err.get_yscale() == "symlog"
    assert [t.get_text() for t in hist.get_xticklabels()] == ["1.1e+19"]
    plt.close(fig)


def test_symlog_error_axis_puts_no_tick_between_zero_and_the_linear_threshold():
    """SmolLM2's committed count_ones answers: near counts next to echoed "1111…" (~1e23).
    A tick inside the linear part ("10^0") would print on top of the "0"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tl_glasses.tasks import TaskResult

    d = Path(__file__).parent.parent / "findings" / "smollm2-135m"
    res = TaskResult.concat([TaskResult.from_dir(d / f"count_ones-{mode}-gen", n_items=3)
                             for mode in ("answer", "cot_fewshot")])
    assert res.df["prediction"].max() > 1e18 and res.df["abs_error"].min() < 10
    fig = res.plot()
    err = fig.axes[0]
    assert err.get_yscale() == "symlog"
    lt = err.yaxis.get_transform().linthresh
    ticks = [t for t in err.get_yticks() if err.get_ylim()[0] <= t <= err.get_ylim()[1]]
    assert 0 in ticks and all(t == 0 or t >= lt for t in ticks)
    plt.close(fig)


# --- issue 13: ten distinct copying items per cell, and the alternating control -----------
def test_copy_odd_digit_random_gives_distinct_items_with_their_answers():
    t = tg.get_task("copy_last")
    items = t.items([30], n_items=10, odd_digit="random")
    assert len(items) == 10
    for it in items:
        assert it.items[-1] == str(it.answer) and set(it.items[:-1]) == {"1"}
        assert it.answer in (0, 2, 3, 4, 5, 6, 7, 8, 9)
    assert len({it.answer for it in items}) >= 4, "the odd digit varies across items"
    again = t.items([30], n_items=10, odd_digit="random")
    assert [i.answer for i in items] == [i.answer for i in again], "seeded per (n, index)"
    first = tg.get_task("copy_first").item(12, 3, odd_digit=7)
    assert first.items[0] == "7" and first.answer == 7 and set(first.items[1:]) == {"1"}
    # the paper's item is unchanged, and deterministic tasks still give one item per cell
    assert tg.get_task("copy_last").item(5).items == ("1", "1", "1", "1", "0")
    assert len(t.items([30], n_items=10)) == 1


def test_copy_period3_is_the_alternating_control():
    last = tg.get_task("copy_last").item(8, period3=True)
    assert "".join(last.items) == "10110110" and last.answer == 0
    assert last.items.count("0") < last.items.count("1"), "the answer is the minority digit"
    first = tg.get_task("copy_first").item(7, period3=True)
    assert "".join(first.items) == "0110110"
    alt = tg.get_task("copy_last").item(6, alternating=True)
    assert "".join(alt.items) == "101010"
    assert tg.get_task("copy_last").condition(period3=True) == "copy_last+period3"
    with pytest.raises(GlassesError, match="choose one"):
        tg.get_task("copy_last").item(6, alternating=True, period3=True)
    with pytest.raises(GlassesError, match="odd_digit"):
        tg.get_task("copy_last").item(6, odd_digit=1)
