"""The paper's prompts, character for character (Barbero et al. 2024, App. C.1, C.5).

The texts keep the paper's own typography, quirks included (curly quotes, the
missing closing quote after ``'xxxx`` in the ones prompt, the doubled full stop
after the sum prompt, the missing space after "sequence:"), because a
model's behaviour depends on them; ``tests/test_prompts.py`` pins them.
``{seq}`` marks where the sequence goes ("seq" in the paper's text).
"""
from __future__ import annotations

__all__ = [
    "SUM", "COUNT_ONES", "COUNT_WORD", "COPY", "COPY_TYPE1", "COPY_TYPE2",
    "HINT", "COT_ZERO_SHOT", "COT_FEW_SHOT_SUM", "COUNT_ANSWER_PREFIX", "COPY_ANSWER_PREFIX",
    "TEMPLATES",
    # ours (not the paper's text; see the section at the end of this file)
    "COPY_FIRST", "COPY_FIRST_TYPE1", "COPY_FIRST_TYPE2",
    "COT_FEW_SHOT_ONES", "COT_FEW_SHOT_ONES_ZEROS", "COT_FEW_SHOT_WORD",
    "COT_SEPARATOR", "HINT_SEPARATOR", "PAPER_TEXTS", "OUR_TEXTS",
]

# --- counting (App. C.1) ---------------------------------------------------------
SUM = (
    "Please perform the following sum: {seq}. Please give the answer on the final line "
    "exactly as \u2019The final answer to your maths question is: xxxx\u2019, where "
    "\u2019xxxx\u2019 is your answer.."
)
COUNT_ONES = (
    "Please count the number of ones in the following sequence:{seq}. Please give the answer "
    "on the final line exactly as \u2019The final answer to your maths question is: xxxx\u2019, "
    "where \u2019xxxx is your answer."
)
COUNT_WORD = (
    "Please count the number of times \u2018car\u2019 appears in the following sentence: "
    "\u2019{seq}\u2019. Please give the answer on the final line exactly as \u2019The final "
    "answer to your maths question is: xxxx\u2019, where \u2019xxxx\u2019 is your answer."
)
COUNT_ANSWER_PREFIX = "The final answer to your maths question is: "

# --- chain of thought (App. C.1) -------------------------------------------------
COT_ZERO_SHOT = "Let\u2019s think step by step, showing me your reasoning."
COT_FEW_SHOT_SUM = (
    "Let\u2019s think step by step, showing me your reasoning. Here are a few examples:\n"
    "Please perform the following sum: 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1\n"
    "We divide the sum into groups of 5.\n"
    "(1 + 1 + 1 + 1 + 1) + (1 + 1 + 1 + 1 + 1) + 1 + 1\n"
    "The answer is then 2 * 5 + 2 = 12\n"
    "The final answer to your maths question is: 12\n"
    "Please perform the following sum: 1 + 1 + 1 + 1 + 1 + 1\n"
    "We divide the sum into groups of 5.\n"
    "(1 + 1 + 1 + 1 + 1) + 1\n"
    "The answer is then 1 * 5 + 1 = 6\n"
    "The final answer to your maths question is: 6"
)

# --- copying (App. C.1, Sec. 3.1, App. C.5) --------------------------------------
COPY = (
    "Consider the following sequence: {seq}. What is the last digit in this sequence? "
    "Please answer exactly as \u2018The answer to your question is: <ANSWER>\u2019"
)
HINT = "*Hint* It\u2019s not necessarily a 1, check carefully"
# The paper prints Type 1 as: “What is ... <ANSWER>’ ”. Here is the sequence: {seq}
# -- the ” closes the paper's own quotation, so it is not part of the prompt.
COPY_TYPE1 = (
    "What is the last digit of the following sequence? Please answer exactly as "
    "\u2018The answer to your question is: <ANSWER>\u2019. Here is the sequence: {seq}"
)
COPY_TYPE2 = (
    "Please answer exactly as \u2018The answer to your question is: <ANSWER>\u2019. "
    "What is the last digit of the following sequence? {seq}"
)
COPY_ANSWER_PREFIX = "The answer to your question is: "

TEMPLATES = {
    "sum": SUM,
    "count_ones": COUNT_ONES,
    "count_word": COUNT_WORD,
    "copy": COPY,
    "copy_type1": COPY_TYPE1,
    "copy_type2": COPY_TYPE2,
}


# =================================================================================
# Texts below are OURS, not the paper's. The paper prints only the "last digit"
# copying prompt ("... and change appropriately the sequence as described") and
# only the sum's worked examples ("With similar strategies for the experiments").
# These fill the gaps in the paper's own style; documentation and results name
# them as ours.
# =================================================================================

# Copy-first: the paper's copying prompts with "last" -> "first" (Fig. 2a's '01...1').
COPY_FIRST = COPY.replace("last digit", "first digit")
COPY_FIRST_TYPE1 = COPY_TYPE1.replace("last digit", "first digit")
COPY_FIRST_TYPE2 = COPY_TYPE2.replace("last digit", "first digit")

# How the pieces are joined (our reading of the paper): the hint follows the prompt
# after a space (the paper quotes it as " *Hint* ...", leading space included); the
# chain-of-thought text follows the question on a new line.
HINT_SEPARATOR = " "
COT_SEPARATOR = "\n"

# Worked examples for the other counting tasks, in the paper's "groups of 5" style,
# with the same two answers (12 and 6) as the paper's sum examples.
COT_FEW_SHOT_ONES = (
    "Let\u2019s think step by step, showing me your reasoning. Here are a few examples:\n"
    "Please count the number of ones in the following sequence: 1 1 1 1 1 1 1 1 1 1 1 1\n"
    "We divide the sequence into groups of 5.\n"
    "(1 1 1 1 1) (1 1 1 1 1) 1 1\n"
    "The answer is then 2 * 5 + 2 = 12\n"
    "The final answer to your maths question is: 12\n"
    "Please count the number of ones in the following sequence: 1 1 1 1 1 1\n"
    "We divide the sequence into groups of 5.\n"
    "(1 1 1 1 1) 1\n"
    "The answer is then 1 * 5 + 1 = 6\n"
    "The final answer to your maths question is: 6"
)
COT_FEW_SHOT_ONES_ZEROS = (
    "Let\u2019s think step by step, showing me your reasoning. Here are a few examples:\n"
    "Please count the number of ones in the following sequence: 1 0 1 1 0 1 1 1 0 1 1 1 1 0 1 1\n"
    "We keep only the ones and divide them into groups of 5.\n"
    "(1 1 1 1 1) (1 1 1 1 1) 1 1\n"
    "The answer is then 2 * 5 + 2 = 12\n"
    "The final answer to your maths question is: 12\n"
    "Please count the number of ones in the following sequence: 1 1 0 1 0 0 1 1 1\n"
    "We keep only the ones and divide them into groups of 5.\n"
    "(1 1 1 1 1) 1\n"
    "The answer is then 1 * 5 + 1 = 6\n"
    "The final answer to your maths question is: 6"
)
COT_FEW_SHOT_WORD = (
    "Let\u2019s think step by step, showing me your reasoning. Here are a few examples:\n"
    "Please count the number of times \u2018car\u2019 appears in the following sentence: "
    "\u2019car red car car dog car car tree car car car car road car car car\u2019\n"
    "We keep only the word car and divide them into groups of 5.\n"
    "(car car car car car) (car car car car car) car car\n"
    "The answer is then 2 * 5 + 2 = 12\n"
    "The final answer to your maths question is: 12\n"
    "Please count the number of times \u2018car\u2019 appears in the following sentence: "
    "\u2019bus car car park car car car car\u2019\n"
    "We keep only the word car and divide them into groups of 5.\n"
    "(car car car car car) car\n"
    "The answer is then 1 * 5 + 1 = 6\n"
    "The final answer to your maths question is: 6"
)

# Which texts are the paper's and which are ours (docs and tests use this).
PAPER_TEXTS = (
    "SUM", "COUNT_ONES", "COUNT_WORD", "COUNT_ANSWER_PREFIX", "COT_ZERO_SHOT", "COT_FEW_SHOT_SUM",
    "COPY", "HINT", "COPY_TYPE1", "COPY_TYPE2", "COPY_ANSWER_PREFIX",
)
OUR_TEXTS = (
    "COPY_FIRST", "COPY_FIRST_TYPE1", "COPY_FIRST_TYPE2", "HINT_SEPARATOR", "COT_SEPARATOR",
    "COT_FEW_SHOT_ONES", "COT_FEW_SHOT_ONES_ZEROS", "COT_FEW_SHOT_WORD",
)
