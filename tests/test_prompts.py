"""The prompt texts are the paper's, character for character (App. C.1, C.5, Sec. 3.1).

Two independent checks: each text is found verbatim in the paper's own text
(``/work/shared/paper`` or ``$TL_GLASSES_PAPER``; skipped where the paper file is not
available), and each is pinned here as a literal, so an edit of either side fails.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import tl_glasses as tg
from tl_glasses.tasks import prompts as P

_PAPER_CANDIDATES = [
    os.environ.get("TL_GLASSES_PAPER", ""),
    "/work/shared/paper/transformers-need-glasses.txt",
    str(Path(__file__).resolve().parents[2] / "shared/paper/transformers-need-glasses.txt"),
]


@pytest.fixture(scope="module")
def paper() -> str:
    for p in _PAPER_CANDIDATES:
        if p and Path(p).is_file():
            return Path(p).read_text()
    pytest.skip("the paper's text is not available here (set TL_GLASSES_PAPER)")


# --- literals: what the paper prints, typed out ----------------------------------------
PINNED = {
    "SUM": "Please perform the following sum: {seq}. Please give the answer on the final line exactly as "
           "\u2019The final answer to your maths question is: xxxx\u2019, where \u2019xxxx\u2019 is your answer..",
    "COUNT_ONES": "Please count the number of ones in the following sequence:{seq}. Please give the answer on the "
                  "final line exactly as \u2019The final answer to your maths question is: xxxx\u2019, where "
                  "\u2019xxxx is your answer.",
    "COUNT_WORD": "Please count the number of times \u2018car\u2019 appears in the following sentence: "
                  "\u2019{seq}\u2019. Please give the answer on the final line exactly as \u2019The final answer "
                  "to your maths question is: xxxx\u2019, where \u2019xxxx\u2019 is your answer.",
    "COPY": "Consider the following sequence: {seq}. What is the last digit in this sequence? Please answer "
            "exactly as \u2018The answer to your question is: <ANSWER>\u2019",
    "HINT": "*Hint* It\u2019s not necessarily a 1, check carefully",
    "COT_ZERO_SHOT": "Let\u2019s think step by step, showing me your reasoning.",
    "COPY_TYPE1": "What is the last digit of the following sequence? Please answer exactly as \u2018The answer to "
                  "your question is: <ANSWER>\u2019. Here is the sequence: {seq}",
    "COPY_TYPE2": "Please answer exactly as \u2018The answer to your question is: <ANSWER>\u2019. What is the last "
                  "digit of the following sequence? {seq}",
    "COUNT_ANSWER_PREFIX": "The final answer to your maths question is: ",
    "COPY_ANSWER_PREFIX": "The answer to your question is: ",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_literals(name):
    assert getattr(P, name) == PINNED[name]


def test_few_shot_sum_is_the_papers_block_line_by_line():
    lines = P.COT_FEW_SHOT_SUM.split("\n")
    assert lines == [
        "Let\u2019s think step by step, showing me your reasoning. Here are a few examples:",
        "Please perform the following sum: 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1",
        "We divide the sum into groups of 5.",
        "(1 + 1 + 1 + 1 + 1) + (1 + 1 + 1 + 1 + 1) + 1 + 1",
        "The answer is then 2 * 5 + 2 = 12",
        "The final answer to your maths question is: 12",
        "Please perform the following sum: 1 + 1 + 1 + 1 + 1 + 1",
        "We divide the sum into groups of 5.",
        "(1 + 1 + 1 + 1 + 1) + 1",
        "The answer is then 1 * 5 + 1 = 6",
        "The final answer to your maths question is: 6",
    ]


# --- against the paper's own text ---------------------------------------------------------
@pytest.mark.parametrize("name", ["SUM", "COUNT_ONES", "COUNT_WORD", "COPY"])
def test_app_c1_prompts_are_in_the_paper(paper, name):
    # the paper writes the slot as "seq"
    assert getattr(P, name).replace("{seq}", "seq") in paper


def test_hint_cot_and_fewshot_are_in_the_paper(paper):
    assert "\u201c " + P.HINT + "\u201d" in paper  # quoted in Sec. 3.1 with a leading space
    assert P.COT_ZERO_SHOT in paper
    assert P.COT_FEW_SHOT_SUM in paper  # the whole block, new lines included
    assert P.COUNT_ANSWER_PREFIX.strip() in paper and P.COPY_ANSWER_PREFIX.strip() in paper


def test_app_c5_prompt_types_match_the_paper(paper):
    t1 = re.search(r"\(Type 1\) \u201c(.*?) and \(Type 2\)", paper, re.S).group(1)
    t2 = re.search(r"\(Type 2\) \u201c(.*?)\u201d\. The results", paper, re.S).group(1)
    assert t2 == P.COPY_TYPE2
    # Type 1 is printed as “... <ANSWER>’ ”. Here is the sequence: {seq} -- the ” closes
    # the paper's own quotation (prompts.py documents this reading)
    assert t1.replace("\u2019 \u201d.", "\u2019.") == P.COPY_TYPE1


def test_our_texts_are_marked_and_not_the_papers(paper):
    assert set(P.PAPER_TEXTS).isdisjoint(P.OUR_TEXTS)
    for name in P.OUR_TEXTS:
        text = getattr(P, name)
        if len(text) > 5:
            assert text.replace("{seq}", "seq") not in paper, name
    # the copy-first texts differ from the paper's only by "first" for "last"
    assert P.COPY_FIRST.replace("first digit", "last digit") == P.COPY
    assert P.COPY_FIRST_TYPE1.replace("first digit", "last digit") == P.COPY_TYPE1
    assert P.COPY_FIRST_TYPE2.replace("first digit", "last digit") == P.COPY_TYPE2


@pytest.mark.parametrize("name", ["COT_FEW_SHOT_ONES", "COT_FEW_SHOT_ONES_ZEROS", "COT_FEW_SHOT_WORD"])
def test_our_worked_examples_count_right(name):
    """Each example's stated answer is the true count, and its groups of 5 add up."""
    block = getattr(P, name)
    assert block.startswith(P.COT_ZERO_SHOT + " Here are a few examples:\n")
    lines = block.split("\n")[1:]
    assert len(lines) == 10
    for ex in (lines[:5], lines[5:]):
        question, _, groups, arithmetic, final = ex
        seq = question.split(": ", 1)[1].strip("\u2019")
        true = seq.split().count("car") if "car" in name.lower() or "WORD" in name else seq.split().count("1")
        answer = int(final.rsplit(": ", 1)[1])
        assert answer == true
        assert final == P.COUNT_ANSWER_PREFIX + str(answer)
        m = re.fullmatch(r"The answer is then (\d+) \* 5 \+ (\d+) = (\d+)", arithmetic)
        assert m and int(m[1]) * 5 + int(m[2]) == int(m[3]) == answer
        assert groups.count("(") == int(m[1])
        item = "car" if "WORD" in name else "1"
        assert groups.replace("(", " ").replace(")", " ").split().count(item) == answer


def test_task_prompts_use_the_texts():
    s = tg.get_task("count_sum").item(3)
    assert s.prompt == P.SUM.replace("{seq}", "1 + 1 + 1")
    assert tg.get_task("count_ones").item(3).prompt == P.COUNT_ONES.replace("{seq}", "1 1 1")
    c = tg.get_task("copy_last").item(4, hint=True)
    assert c.prompt == P.COPY.replace("{seq}", "1110") + " " + P.HINT
    assert tg.get_task("copy_first").item(4).prompt == P.COPY_FIRST.replace("{seq}", "0111")
    assert tg.get_task("copy_last").item(3, prompt_type=1).prompt == P.COPY_TYPE1.replace("{seq}", "110")
    assert tg.get_task("copy_last").item(3, prompt_type=2).prompt == P.COPY_TYPE2.replace("{seq}", "110")
    assert tg.get_task("count_sum").item(2, mode="cot").prompt == P.SUM.replace("{seq}", "1 + 1") + "\n" + P.COT_ZERO_SHOT
    few = tg.get_task("count_sum").item(2, mode="cot_fewshot").prompt
    assert few == P.SUM.replace("{seq}", "1 + 1") + "\n" + P.COT_FEW_SHOT_SUM
    w = tg.get_task("count_word").item(6, seed=1)
    assert w.prompt == P.COUNT_WORD.replace("{seq}", " ".join(w.items))
