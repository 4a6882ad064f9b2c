"""Which words read in the pixels count as identifying: all of them, unless the site allows one.

A de-identification profile cannot tell a harmless label from a name, so every word is
identifying by default; a site may allow harmless words (``allowed_tokens``: "cm", "MHz", "TGC").
The object's own identifying header values (:func:`siteprep.deid.identifiers.collect_identifiers`:
names, IDs, dates...) form a deny-list, as in Presidio's DICOM redactor, that an allowed word
never overrides.

Two questions, two strictnesses:

- what to fill (:meth:`TextPolicy.redacts`): every word with a letter or digit, at any
  confidence: filling a false word costs a few pixels, missing a true one costs a name;
- what keeps the object quarantined after filling (:meth:`TextPolicy.remains`): a word with at
  least 2 letters or digits read with at least ``min_confidence``, or any word matching the
  deny-list at any confidence. Thresholded speckle gives one-character, low-confidence words.

Words are compared by their letters and digits, upper case. A date value YYYYMMDD is also
sought as DDMMYYYY and MMDDYYYY (how screens print it: 12/03/1961, 03-12-1961); a word matches a
deny-list value when it holds it, or when it is a piece of at least 4 of it (OCR splits
"1961-03-12" into "1961-03-" and "12"). UIDs are left out: they are not burned into pixels, and
their digits would make every number a match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from siteprep.deid.burned_in_text import Word, alphanumerics
from siteprep.deid.settings import BurnedInText

MIN_PIECE = 4  # a shorter word (a day, a month, "CM") is no evidence of an identifier
_UID = re.compile(r"^\d+(\.\d+)+$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def deny_list(identifiers: Iterable[str]) -> frozenset[str]:
    """The forms in which the object's identifying values are sought among the words read."""
    forms: set[str] = set()
    for value in identifiers:
        if _UID.match(value.strip()):
            continue
        letters = alphanumerics(value)
        date = _DATE.match(letters)
        if date:
            year, month, day = date.groups()
            forms.update({day + month + year, month + day + year})
        if len(letters) >= MIN_PIECE:
            forms.add(letters)
    return frozenset(forms)


class TextPolicy:
    """The site's allowed words and one object's deny-list; see the module docstring for the rules."""

    def __init__(self, rules: BurnedInText, identifiers: Iterable[str]) -> None:
        self.allowed = frozenset(alphanumerics(token) for token in rules.allowed_tokens)
        self.denied = deny_list(identifiers)
        self.min_confidence = rules.min_confidence

    def denies(self, word: Word) -> bool:
        """Whether ``word`` holds, or is a piece of, one of the object's identifying values."""
        letters = word.letters
        return len(letters) >= MIN_PIECE and any(form in letters or letters in form for form in self.denied)

    def redacts(self, word: Word) -> bool:
        """Whether ``word`` is filled: any letter or digit, unless allowed (and not denied)."""
        return bool(word.letters) and (word.letters not in self.allowed or self.denies(word))

    def remains(self, word: Word) -> bool:
        """Whether ``word``, read after filling, keeps the object quarantined."""
        if self.denies(word):
            return True
        return len(word.letters) >= 2 and word.confidence >= self.min_confidence and word.letters not in self.allowed
