"""Answer parsing: property tests on generated answer strings; never raises."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tl_glasses.tasks.parsing import STATUSES, Parsed, number_to_words, parse_answer, words_to_number
from tl_glasses.tasks.prompts import COPY_ANSWER_PREFIX, COUNT_ANSWER_PREFIX

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PHRASES = [
    COUNT_ANSWER_PREFIX.strip(),
    COPY_ANSWER_PREFIX.strip(),
    "the final answer to your maths question is:",
    "THE ANSWER TO YOUR QUESTION IS:",
    "The final answer to your math question is",
]
WRAPS = [("{}", ""), ("'{}'", ""), ("\u2018{}\u2019", ""), ('"{}"', ""), ("**{}**", ""), ("`{}`", ""),
         ("<{}>", ""), ("[{}]", ""), ("({})", ""), ("\\boxed{{{}}}", ""), ("__{}__", ""), ("*{}*", "")]
# text before the answer line: anything without digits or number words is harmless;
# text with numbers is fine too, since the answer line comes last
LEADS = st.sampled_from(["", "Sure! ", "Let me count.\n", "2 * 5 + 2 = 12\n", "**Answer**\n", "1 1 1 1\n",
                         "The answer is then 1 * 5 + 1 = 6\n"])
TRAILS = st.sampled_from(["", ".", "\n", "\nI hope this helps!", " (counted twice)", "\n\nPlease ask again 42",
                          "!", "\u2019", "**", " apples."])


@SETTINGS
@given(text=st.text())
@example(text="")
@example(text="9" * 10000)
@example(text="The answer to your question is: " + "1" * 5000)
@example(text="one " * 3000)
@example(text="The final answer to your maths question is: <ANSWER>")
def test_never_raises_on_arbitrary_text(text):
    p = parse_answer(text)
    assert isinstance(p, Parsed)
    assert p.status in STATUSES
    assert (p.value is None) == (p.status == "unparsed")
    strict = parse_answer(text, strict=True)
    assert strict.status in ("format", "unparsed")


@SETTINGS
@given(value=st.integers(0, 10**7), phrase=st.sampled_from(PHRASES), wrap=st.sampled_from(WRAPS),
       sep=st.sampled_from([" ", ": ", "  ", "\n", " = "]), lead=LEADS, trail=TRAILS)
def test_paper_format_with_digits(value, phrase, wrap, sep, lead, trail):
    body = wrap[0].format(value)
    text = f"{lead}{phrase}{sep}{body}{trail}"
    p = parse_answer(text)
    assert (p.value, p.status) == (value, "format"), text
    assert parse_answer(text, strict=True).value == value


@SETTINGS
@given(value=st.integers(0, 10**6), phrase=st.sampled_from(PHRASES), wrap=st.sampled_from(WRAPS[:6]),
       trail=st.sampled_from(["", ".", "\n", "\nThank you!", "!"]))
def test_paper_format_with_number_words(value, phrase, wrap, trail):
    words = number_to_words(value)
    text = f"{phrase} {wrap[0].format(words)}{trail}"
    p = parse_answer(text)
    assert (p.value, p.status) == (value, "format"), text


@SETTINGS
@given(value=st.integers(1000, 10**9))
def test_thousands_separators(value):
    assert parse_answer(f"{COUNT_ANSWER_PREFIX}{value:,}").value == value


@SETTINGS
@given(first=st.integers(0, 999), last=st.integers(0, 999), junk=st.text(alphabet="abc \n.,", max_size=30))
def test_the_last_answer_line_wins(first, last, junk):
    text = f"{COUNT_ANSWER_PREFIX}{first}\n{junk}\n{COUNT_ANSWER_PREFIX}{last}\n"
    assert parse_answer(text).value == last


@SETTINGS
@given(value=st.integers(0, 10**12 - 1))
def test_words_round_trip(value):
    assert words_to_number(number_to_words(value)) == value


@pytest.mark.parametrize("text,value", [
    ("twelve", 12), ("one hundred and three", 103), ("twenty-one", 21), ("a hundred", 100),
    ("Ninety Nine", 99), ("one thousand and one", 1001), ("zero", 0), ("twelve hundred", 1200),
])
def test_words(text, value):
    assert words_to_number(text) == value


@pytest.mark.parametrize("text", ["two three", "twenty twelve", "hundred", "one one", "zero one", "apple", ""])
def test_not_one_number_in_words(text):
    assert words_to_number(text) is None


@pytest.mark.parametrize("text,value,status", [
    ("The final answer to your maths question is: 12", 12, "format"),
    ("The final answer to your maths question is: **twelve**.", 12, "format"),
    ("The answer to your question is: '0'", 0, "format"),
    ("**The final answer to your maths question is:** `100`", 100, "format"),
    ("The answer to your question is: one hundred and three", 103, "format"),
    ("The answer to your question is: 0.", 0, "format"),
    ("The answer to your question is: 12.5", 12.5, "format"),
    ("Answer: seven", 7, "phrase"),
    ("So the total is 42 ones.", 42, "phrase"),
    ("2 * 5 + 2 = 12", 12, "phrase"),
    ("There are 9 cars.", 9, "phrase"),
    ("I think it's 7", 7, "number"),
    ("0", 0, "number"),
    ("zero", 0, "number"),
])
def test_examples(text, value, status):
    p = parse_answer(text)
    assert (p.value, p.status) == (value, status)


@pytest.mark.parametrize("text", [
    "The answer to your question is: <ANSWER>",   # the placeholder, not an answer
    "1 1 1 1",                                   # several numbers, no phrase
    "I cannot count that.",
    "",
    None,
])
def test_unparsed(text):
    p = parse_answer(text)
    assert p.value is None and p.status == "unparsed"


def test_strict_accepts_only_the_format():
    assert parse_answer("Answer: 7", strict=True).status == "unparsed"
    assert parse_answer("I think it's 7", strict=True).status == "unparsed"
    assert parse_answer(f"{COPY_ANSWER_PREFIX}7", strict=True).value == 7


def test_huge_numbers_stay_numbers():
    p = parse_answer(COPY_ANSWER_PREFIX + "1" * 400 + "0")
    assert p.status == "format" and p.value > 1e300  # a float, not a giant int
    p = parse_answer(COPY_ANSWER_PREFIX + "1111110")
    assert p.value == 1111110 and isinstance(p.value, int)


@pytest.mark.parametrize("text", [" " * 20000, "-" * 20000, "one and " * 4000, "1," * 10000,
                                  "answer is " * 3000, "= " * 10000, "the final answer to " * 2000])
def test_linear_time_on_pathological_text(text):
    t = time.perf_counter()
    parse_answer(text)
    assert time.perf_counter() - t < 2.0
