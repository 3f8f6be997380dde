"""A text's language, by script: Cyrillic letters make it Russian, whatever Latin words (alert
names, commands, resource kinds) it also holds. English is the default. Light on purpose: the
question encoder and the chat pipeline both use it."""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["en", "ru"]
_CYRILLIC = re.compile(r"[А-Яа-яЁё]")
_LATIN = re.compile(r"[A-Za-z]")
_CODE = re.compile(r"`[^`\n]*`")


def detect_language(text: str) -> Language:
    """``ru`` when Cyrillic letters make up at least a quarter of the letters outside inline
    code, else ``en``."""
    prose = _CODE.sub(" ", text)
    cyrillic = len(_CYRILLIC.findall(prose))
    latin = len(_LATIN.findall(prose))
    return "ru" if cyrillic and cyrillic * 4 >= cyrillic + latin else "en"
