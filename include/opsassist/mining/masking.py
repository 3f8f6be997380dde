"""Preprocessing masks: regexes that replace variable parts of a log message with ``<*>``.

Masking runs before tokenisation. It does two jobs for Drain: it makes lines that differ only in
parameters share tokens (so they meet in the same tree leaf and score as similar), and it hides
values that would otherwise pick a wrong branch of the fixed-depth tree (a leading request id,
say). Masks are applied one after another in the order given, so put specific patterns (UUIDs,
block ids, IP:port) before general ones (plain numbers): once a value is ``<*>`` the later, looser
patterns no longer see its digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

WILDCARD = "<*>"


@dataclass(frozen=True)
class Mask:
    """One named regex; every match is replaced by :data:`WILDCARD`."""

    name: str
    pattern: str
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def apply(self, text: str) -> str:
        return self.regex.sub(WILDCARD, text)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "pattern": self.pattern}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Mask:
        return cls(name=data["name"], pattern=data["pattern"])


# A number must not be glued to letters on its left (``ip6``, ``sda1``, ``x86`` stay literal: they
# are names, not values) but may follow ``_`` or ``-`` (the parts of ``attempt_1445_0020_m_0``) and
# may be followed by a unit or a separator (``512MB``, ``3s``, ``12,``).
_NUM_START = r"(?<![A-Za-z0-9.])"

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_LABEL = r"[A-Za-z0-9][\w-]*+"
_TLD = "com|net|org|edu|gov|mil|info|biz"
_TLD_AFTER_TWO = "io|local|localdomain|lan|internal|corp|home|uk|de|fr|jp|cn|ru|nl|au|ca|us|eu"
_TIME = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?"

DEFAULT_MASKS: tuple[Mask, ...] = (
    Mask(
        "uuid",
        r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
        r"-[0-9a-fA-F]{12}(?![0-9a-fA-F])",
    ),
    # A timestamp inside a message is one value, not five: "Sun Jul 10 03:55:21 2005".
    Mask("ctime", rf"\b{_DAY}\s+{_MONTH}\s+\d{{1,2}}\s+{_TIME}(?:\s+\d{{4}})?\b"),
    Mask(
        "iso_datetime",
        rf"\b\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_TIME}(?:Z|[+-]\d{{2}}:?\d{{2}})?)?\b",
    ),
    Mask("time", rf"\b{_TIME}\b"),
    Mask("block_id", r"blk_-?\d+"),
    Mask("ipv4_port", r"/?(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])"),
    # A host name is a value; a dotted Java or config name (org.apache.spark.SparkEnv,
    # mapred.job.id) is not, so only names ending in a common top-level domain are masked, and
    # the shorter or more ambiguous endings only after two labels ("java.io" stays).
    Mask(
        "hostname",
        rf"(?<![\w.-])(?=[\w-]+\.[\w-])"
        rf"(?:(?:{_LABEL}\.)+(?:{_TLD})|(?:{_LABEL}\.){{2,}}(?:{_TLD_AFTER_TWO}))\b(?![.\w-])",
    ),
    Mask("hex", r"\b0[xX][0-9a-fA-F]+\b"),
    Mask("host_port", r"(?<=[\s/@=])[A-Za-z][\w.-]*:\d{2,5}\b"),
    Mask("long_hex", r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"),
    # A minus sign belongs to the number only where it cannot be a joining hyphen (BP-1347-10).
    Mask("number", r"(?:(?<![^\s=(\[{,:])-)?" + _NUM_START + r"\d+(?:\.\d+)*"),
)


def default_masks() -> tuple[Mask, ...]:
    """The default mask set, tuned once for all eight loghub systems (see the benchmark)."""
    return DEFAULT_MASKS


def mask_content(content: str, masks: Iterable[Mask]) -> str:
    """Apply each mask in order and return the masked text."""
    for mask in masks:
        content = mask.apply(content)
    return content


def tokenize(masked: str, extra_delimiters: Sequence[str] = ()) -> tuple[str, ...]:
    """Split masked content into tokens on whitespace (and any extra delimiters)."""
    for delimiter in extra_delimiters:
        masked = masked.replace(delimiter, " ")
    return tuple(masked.split())
