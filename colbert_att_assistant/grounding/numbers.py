"""Numbers, prices, percentages, temperatures and durations in a text, normalised so that a claim's figures can be
looked up exactly in a passage: "thirty days" = "30 days", "€480" = "480 euros", "2 weeks" = "14 days"."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000}
NUMBER_WORDS = frozenset([*_UNITS, *_TENS, *_SCALES])
_NUMBER_WORDS = "|".join(sorted([*_UNITS, *_TENS, *_SCALES, "a", "an", "and"], key=len, reverse=True))
_WORD_NUMBER = re.compile(rf"\b(?:{'|'.join([*_UNITS, *_TENS])})(?:[\s-]+(?:{_NUMBER_WORDS})\b)*", re.IGNORECASE)

# Durations compare in hours, so that "2 weeks" finds "14 days"; other units compare as written.
_DURATION_HOURS = {
    "second": 1 / 3600, "sec": 1 / 3600, "secs": 1 / 3600, "minute": 1 / 60, "min": 1 / 60, "mins": 1 / 60,
    "hour": 1, "hr": 1, "hrs": 1, "h": 1, "day": 24,
    "business day": 24, "working day": 24, "week": 168, "month": 720, "year": 8760, "yr": 8760,
}  # fmt: skip
_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₣": "CHF"}
_CURRENCY_WORDS = {
    "eur": "EUR", "euro": "EUR", "euros": "EUR", "usd": "USD", "dollar": "USD", "dollars": "USD", "gbp": "GBP",
    "pound": "GBP", "pounds": "GBP", "chf": "CHF", "francs": "CHF", "jpy": "JPY", "yen": "JPY",
}  # fmt: skip
_UNIT_AFTER = re.compile(
    r"""\s*(?:
        (?P<percent>%|\s?per\s?cent\b|\s?percent\b)
      | (?P<temp>°\s?[CF]\b|degrees?\s+(?:celsius|fahrenheit|c|f)\b|degrees?\b)
      | (?P<duration>(?:business|working)\s+days?|seconds?|secs?\b|minutes?|mins?|hours?|hrs?|h\b
                    |days?|weeks?|months?|years?|yrs?)
      | (?P<currency>eur\b|euros?\b|usd\b|dollars?\b|gbp\b|pounds?\b|chf\b|francs?\b|jpy\b|yen\b|€|£|\$)
      | (?P<length>mm\b|cm\b|m\b|km\b|metres?\b|meters?\b|ml\b|g\b|kg\b)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_CURRENCY_BEFORE = re.compile(r"(€|\$|£|¥|\b(?:EUR|USD|GBP|CHF|JPY)\s?)$", re.IGNORECASE)
# A number: a sign only after a space or bracket (so "CV-28" is 28, "-18 °C" is -18), thousands separators,
# decimals, or a clock time.
_NUMBER = re.compile(
    r"(?:(?:^|(?<=[\s(\[]))(?P<sign>[-−+])|(?<![\w.,]))"
    r"(?P<num>\d{1,2}:\d{2}|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
)
# "and"/"or" are left out: "€300 and 10 days" is no range.
_RANGE_JOIN = re.compile(r"^\s*(?:to|-|–|—)\s*[-−+]?$", re.IGNORECASE)


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str | None  # "EUR", "%", "°C", "duration", "length:cm", "time" or None for a bare number
    hours: float | None  # durations only
    text: str


def _words_to_int(phrase: str) -> int | None:
    total, current = 0, 0
    for word in re.split(r"[\s-]+", phrase.lower()):
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            current = max(current, 1) * _SCALES[word]
            if _SCALES[word] >= 1000:
                total, current = total + current, 0
        elif word in ("a", "an", "and"):
            continue
        else:
            return None
    return total + current


def _spell_out_numbers(text: str, lone_one: bool) -> str:
    """'thirty days' -> '30 days'; spans are rewritten in place so that units after them are still found.

    A lone "one" is mostly a pronoun ("one of our boutiques"): it counts only before a unit unless `lone_one`."""

    def replace(match: re.Match[str]) -> str:
        phrase = match.group(0)
        # A trailing "and"/"a" belongs to the next words ("two and a half" is out of scope).
        trimmed = re.sub(r"(?:[\s-]+(?:and|a|an))+$", "", phrase, flags=re.IGNORECASE)
        value = _words_to_int(trimmed)
        if value is None:
            return phrase
        if trimmed.lower() == "one" and not lone_one and not _UNIT_AFTER.match(text, match.start() + len(trimmed)):
            return phrase
        return str(value) + phrase[len(trimmed) :]

    return _WORD_NUMBER.sub(replace, text)


def _unit(match: re.Match[str] | None, before: str) -> tuple[str | None, str | None]:
    currency_before = _CURRENCY_BEFORE.search(before)
    if currency_before:
        symbol = currency_before.group(1).strip()
        return _CURRENCY_SYMBOLS.get(symbol, symbol.upper()), None
    if match is None or match.lastgroup is None:
        return None, None
    word = match.group(match.lastgroup).strip().lower()
    if match.lastgroup == "percent":
        return "%", None
    if match.lastgroup == "temp":
        return ("°F" if word.endswith("f") or "fahrenheit" in word else "°C"), None
    if match.lastgroup == "duration":
        key = re.sub(r"\s+", " ", word)
        key = key if key in _DURATION_HOURS else key.removesuffix("s")
        return "duration", key
    if match.lastgroup == "currency":
        return _CURRENCY_SYMBOLS.get(word) or _CURRENCY_WORDS.get(word, word.upper()), None
    return "length:" + word.rstrip("s").replace("meter", "metre"), None


def extract_quantities(text: str, lone_one: bool = False) -> list[Quantity]:
    """Every number in `text`, digits or words, with its unit; a range "5 to 7 years" gives both ends the unit of
    the second. Passages are read with `lone_one` (finding more numbers there only makes look-ups more lenient)."""
    source = _spell_out_numbers(text, lone_one)
    found: list[tuple[int, int, Quantity]] = []
    for match in _NUMBER.finditer(source):
        raw = match.group("num")
        if ":" in raw:
            hours, minutes = raw.split(":")
            value, unit, duration = int(hours) + int(minutes) / 60, "time", None
        else:
            value = float(raw.replace(",", ""))
            after = _UNIT_AFTER.match(source, match.end())
            unit, duration = _unit(after, source[max(0, match.start() - 5) : match.start()])
        if match.group("sign") in ("-", "−"):
            value = -value
        hours_value = value * _DURATION_HOURS[duration] if duration in _DURATION_HOURS else None
        found.append((match.start(), match.end(), Quantity(value, unit, hours_value, match.group(0).strip())))
    # Ranges: "5 to 7 years", "-4 to +6 seconds", "€300–500" share one unit.
    for i in range(len(found) - 1, 0, -1):
        start, end, previous = found[i - 1]
        next_start, _, current = found[i]
        if previous.unit is None and current.unit is not None and _RANGE_JOIN.match(source[end:next_start]):
            hours = None
            if current.hours is not None and current.value:
                hours = previous.value * current.hours / current.value
            found[i - 1] = (start, end, Quantity(previous.value, current.unit, hours, previous.text))
        elif (
            previous.unit in _CURRENCY_SYMBOLS.values()
            and current.unit is None
            and _RANGE_JOIN.match(source[end:next_start])
        ):
            found[i] = (next_start, found[i][1], Quantity(current.value, previous.unit, None, current.text))
    return [quantity for _, _, quantity in found]


def same_quantity(claim: Quantity, passage: Quantity) -> bool:
    """Whether two quantities state the same figure (durations in any unit, a unit on one side only accepted)."""
    if claim.hours is not None and passage.hours is not None:
        return abs(claim.hours - passage.hours) < 1e-6
    if abs(claim.value - passage.value) > 1e-9:
        return False
    # A unit on one side only is accepted ("€480" in the claim, "480" in a price table); two units must agree.
    return claim.unit is None or passage.unit is None or claim.unit == passage.unit


def missing_quantities(claim: list[Quantity], passage: list[Quantity]) -> list[Quantity]:
    """The claim's quantities that the passage does not state."""
    return [q for q in claim if not any(same_quantity(q, p) for p in passage)]
