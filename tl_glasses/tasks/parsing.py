"""Reading the answer out of what a model generated.

The paper asks for "The final answer to your maths question is: xxxx" (counting) or
"The answer to your question is: <ANSWER>" (copying). Small models decorate, quote,
bold, spell numbers out, or never write the phrase. :func:`parse_answer` returns the
value *and how it was found*, so the fraction that needed a fallback, or could not be
read at all, is reported rather than hidden:

=============  ===================================================================
status         meaning
=============  ===================================================================
``format``     the paper's answer phrase, followed by a number (quotes, markdown,
               brackets, number words and trailing text tolerated); the last such
               line wins, as the paper asks for the answer "on the final line"
``phrase``     no paper phrase, but a generic one: "answer is 7", "answer: 7",
               "the result is seven", "= 7" (the last one wins)

               (after either phrase, a number that starts an expression, as in
               "sum: 1 + 1 + 1", is not taken as the answer)
``number``     neither phrase, and the text holds exactly one number
``unparsed``   nothing of the above (value ``None``)
=============  ===================================================================

``strict=True`` accepts only ``format``. The parser never raises on any text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Parsed", "parse_answer", "words_to_number", "number_to_words", "STATUSES"]

STATUSES = ("format", "phrase", "number", "unparsed")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_NUMBER_WORDS = set(_UNITS) | set(_TENS) | set(_SCALES)

_WORD = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
# a run of number words, joined by spaces, hyphens, "and", and starting "a hundred"
_WORDS_RE = (
    rf"(?:\ban?\s+(?=(?:hundred|thousand|million|billion)\b))?"
    rf"\b(?:{_WORD})\b(?:(?:\s+|\s*-\s*|\s+and\s+)\b(?:{_WORD})\b)*"
)
_DIGITS_RE = r"(?<![\w.])[-\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]*\d)|(?<![\w.])[-\u2212]?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?P<digits>{_DIGITS_RE})|(?P<words>{_WORDS_RE})", re.IGNORECASE)

# the paper's phrases; "maths"/"math", any spacing
_FORMAT_RE = re.compile(
    r"the\s+final\s+answer\s+to\s+your\s+maths?\s+question\s+is|the\s+answer\s+to\s+your\s+question\s+is",
    re.IGNORECASE,
)
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|answer|result|total|count|sum)\s*(?:is|:|=|would\s+be|will\s+be)"
    r"|\bequals?(?:\s+to)?\b|\bthere\s+(?:are|is)\b|(?<![=<>!])=(?!=)",
    re.IGNORECASE,
)
# what may sit between a phrase and its number: punctuation, quotes, markdown, brackets,
# filler like "the number", "exactly" (at most 40 pieces, so parsing stays linear);
# "<ANSWER>" placeholders are NOT skipped
_GAP_RE = re.compile(
    r"(?:[\s:=*_`'\"\u2018\u2019\u201c\u201d\u00ab\u00bb#>\[\](){}<]|\\boxed\{|\$|"
    r"\b(?:the\s+number|number|exactly|just|simply|approximately|about)\b){0,40}",
    re.IGNORECASE,
)
# a number followed by an operator and another number is a term of an expression the model
# is (re)writing ("the following sum: 1 + 1 + 1"), not an answer
_OPERATOR_AFTER_RE = re.compile(r"\s*[+*/\u00d7\u2212-]\s*\d")


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: ``value`` (an int, a float for non-integers or huge numbers,
    ``None`` if unparsed), ``status`` (see the module doc) and ``span``, where the
    number was found in the text with markdown marks (``*``, ``_``, backticks) removed."""

    value: int | float | None
    status: str
    span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


def words_to_number(text: str) -> int | None:
    """'twelve' -> 12, 'one hundred and three' -> 103, 'twenty-one' -> 21,
    'a thousand' -> 1000; ``None`` if ``text`` is not one well-formed number in words
    ("two three" and "twenty twelve" are not)."""
    if not isinstance(text, str):
        return None
    toks = [t for t in re.split(r"[\s\-]+", text.lower().strip()) if t and t != "and"]
    if toks and toks[0] in ("a", "an"):
        toks = ["one"] + toks[1:]
    if not toks or any(t not in _NUMBER_WORDS for t in toks):
        return None
    if "zero" in toks:
        return 0 if toks == ["zero"] else None
    total, current = 0, 0
    last = None  # kind of the previous word: unit (1-9), teen (10-19), tens, hundred, scale
    last_scale = None
    for t in toks:
        if t in _UNITS:
            v = _UNITS[t]
            teen = v >= 10
            if last in ("unit", "teen") or (last == "tens" and teen):
                return None
            current += v
            last = "teen" if teen else "unit"
        elif t in _TENS:
            if last in ("unit", "teen", "tens"):
                return None
            current += _TENS[t]
            last = "tens"
        elif t == "hundred":
            if last not in ("unit", "teen") or current >= 100:
                return None
            current *= 100
            last = "hundred"
        else:
            scale = _SCALES[t]
            if last in (None, "scale") or (last_scale is not None and scale >= last_scale):
                return None
            total += current * scale
            current, last, last_scale = 0, "scale", scale
    return total + current


def number_to_words(n: int) -> str:
    """The inverse of :func:`words_to_number` for 0 <= n < 10**12 (British 'and')."""
    if n < 0:
        raise ValueError("n must be non-negative")
    units = [k for k, v in sorted(_UNITS.items(), key=lambda kv: kv[1])]
    tens = {v: k for k, v in _TENS.items() if k != "fourty"}

    def below_1000(x: int) -> str:
        parts = []
        if x >= 100:
            parts.append(units[x // 100] + " hundred")
            x %= 100
            if x:
                parts.append("and")
        if x >= 20:
            parts.append(tens[x - x % 10] + ("-" + units[x % 10] if x % 10 else ""))
        elif x or not parts:
            parts.append(units[x])
        return " ".join(parts)

    if n == 0:
        return "zero"
    out = []
    for scale, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (1, "")):
        if n >= scale:
            chunk, n = divmod(n, scale)
            out.append(below_1000(chunk) + (" " + name if name else ""))
    return " ".join(out)


def _value(m: re.Match) -> int | float | None:
    if m.group("digits") is not None:
        s = m.group("digits").replace(",", "").replace("\u2212", "-")
        try:
            if "." in s:
                f = float(s)
                return int(f) if f.is_integer() and abs(f) < 1e15 else f
            digits = s.lstrip("-")
            if len(digits) > 18:  # keep it a number without giant ints
                return float(s)
            return int(s)
        except (ValueError, OverflowError):
            return None
    return words_to_number(m.group("words"))


def _number_after(text: str, pos: int) -> tuple[int | float | None, tuple[int, int] | None]:
    gap = _GAP_RE.match(text, pos)
    start = gap.end() if gap else pos
    m = _NUMBER_RE.match(text, start)
    if not m or not m.group(0).strip() or _OPERATOR_AFTER_RE.match(text, m.end()):
        return None, None
    v = _value(m)
    return (v, (m.start(), m.end())) if v is not None else (None, None)


def _numbers(text: str) -> list[tuple[int | float, tuple[int, int]]]:
    out = []
    for m in _NUMBER_RE.finditer(text):
        if not m.group(0).strip():
            continue
        v = _value(m)
        if v is not None:
            out.append((v, (m.start(), m.end())))
    return out


def parse_answer(text: object, *, strict: bool = False) -> Parsed:
    """The answer in ``text`` (see the module doc for the statuses). Never raises."""
    if text is None:
        return Parsed(None, "unparsed")
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # noqa: BLE001 - a parser of model output must not raise
            return Parsed(None, "unparsed")
    # ignore markdown emphasis and escaped characters that split phrases ("**answer**")
    clean = re.sub(r"[*_`]+", "", text)
    for m in reversed(list(_FORMAT_RE.finditer(clean))):
        v, span = _number_after(clean, m.end())
        if v is not None:
            return Parsed(v, "format", span)
    if strict:
        return Parsed(None, "unparsed")
    for m in reversed(list(_PHRASE_RE.finditer(clean))):
        v, span = _number_after(clean, m.end())
        if v is not None:
            return Parsed(v, "phrase", span)
    nums = _numbers(clean)
    if len(nums) == 1:
        return Parsed(nums[0][0], "number", nums[0][1])
    return Parsed(None, "unparsed")
