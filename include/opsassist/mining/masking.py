"""Preprocessing masks: regexes that replace variable parts of a log message with ``<*>``.

Masking runs before tokenisation. It does two jobs for Drain: it makes lines that differ only in
parameters share tokens (so they meet in the same tree leaf and score as similar), and it hides
values that would otherwise pick a wrong branch of the fixed-depth tree (a leading request id,
say). Masks are applied one after another in the order given, so put specific patterns (UUIDs,
addresses, IP:port) before general ones (plain numbers): once a value is ``<*>`` the later,
looser patterns no longer see its digits.

Every default mask is about the *shape* of a token (an address, a path, a size with its unit, a
number glued to a word), never about a particular system's vocabulary: the benchmark scores them
on systems they were not chosen on (``benchmarks/template_accuracy.py``, leave one system out).

Every pattern runs in time linear in the line, also on adversarial input (``tests/unit/
test_mining_masks.py`` times each on 100,000-character lines). The rules that keep it so: a
quantified run is possessive (``*+``, ``++``) or cannot overlap what follows it; a pattern whose
first part is an unbounded run only starts where that run starts (a look-behind excludes the
run's own characters), so a long run is scanned once, not once per position; look-aheads that
scan are anchored the same way. ``requires`` lists substrings of which a line must contain one
for the mask to be tried at all (a cheap ``in`` test that skips most regex calls).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

WILDCARD = "<*>"


@dataclass(frozen=True)
class Mask:
    """One named regex; every match is replaced by :data:`WILDCARD` (or by ``replace``, a
    :meth:`re.Pattern.sub` template, for the few masks that keep part of their match).

    ``requires``: if given, the mask is only tried on text containing at least one of these
    substrings; ``prefilter``: if given, only on text where this regex is found. Both are speed
    hints that must not change the result: every match contains one of ``requires`` and a
    ``prefilter`` match.
    """

    name: str
    pattern: str
    requires: tuple[str, ...] = ()
    replace: str = WILDCARD
    prefilter: str = ""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    apply: Callable[[str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.compile(self.pattern)
        object.__setattr__(self, "regex", regex)
        object.__setattr__(
            self, "apply", _applier(regex, self.replace, self.requires, self.prefilter)
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "pattern": self.pattern}
        if self.requires:
            data["requires"] = list(self.requires)
        if self.replace != WILDCARD:
            data["replace"] = self.replace
        if self.prefilter:
            data["prefilter"] = self.prefilter
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mask:
        return cls(
            name=data["name"],
            pattern=data["pattern"],
            requires=tuple(data.get("requires", ())),
            replace=data.get("replace", WILDCARD),
            prefilter=data.get("prefilter", ""),
        )


def _applier(
    regex: re.Pattern[str], replace: str, requires: Sequence[str], prefilter: str
) -> Callable[[str], str]:
    """``mask.apply``: the substitution behind its cheap gates, as one closure (masking is most
    of a miner's time, and this runs once per mask per line)."""
    sub = regex.sub
    gates: list[Callable[[str], object]] = []
    if len(requires) == 1:
        hint = requires[0]
        gates.append(lambda text: hint in text)
    elif requires:
        gates.append(re.compile("|".join(map(re.escape, requires))).search)
    if prefilter:
        gates.append(re.compile(prefilter).search)
    if not gates:
        return lambda text: sub(replace, text)
    if len(gates) == 1:
        gate = gates[0]
        return lambda text: sub(replace, text) if gate(text) else text
    first, second = gates
    return lambda text: sub(replace, text) if first(text) and second(text) else text


_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_LABEL = r"[A-Za-z0-9][\w-]*+"
_TLD = "com|net|org|edu|gov|mil|info|biz"
_TLD_AFTER_TWO = "io|local|localdomain|lan|internal|corp|home|uk|de|fr|jp|cn|ru|nl|au|ca|us|eu"
_TIME = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d++)?"
_HEX = "0-9a-fA-F"
_DIGITS = tuple("0123456789")

# -- the masks -------------------------------------------------------------------------------

UUID = Mask(
    "uuid",
    rf"[{_HEX}](?<![{_HEX}][{_HEX}])[{_HEX}]{{7}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}"
    rf"-[{_HEX}]{{12}}(?![{_HEX}])",
    requires=("-",),
)
# scheme://anything-up-to-whitespace-or-quote; the scheme starts a run of scheme characters.
URL = Mask(
    "url",
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,15}+://[^\s\"'<>]*+",
    requires=("://",),
)
# A timestamp inside a message is one value, not five: "Sun Jul 10 03:55:21 2005".
CTIME = Mask(
    "ctime",
    rf"{_DAY}(?<!\w.{{3}})\s++{_MONTH}\s++\d{{1,2}}\s++{_TIME}(?:\s++\d{{4}})?\b",
    requires=("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
)
ISO_DATETIME = Mask(
    "iso_datetime",
    rf"\d(?<!\w\d)\d{{3}}-\d{{2}}-\d{{2}}(?:[T ]{_TIME}(?:Z|[+-]\d{{2}}:?\d{{2}})?)?\b",
    requires=("-",),
)
TIME = Mask("time", r"\d(?<!\w\d)\d?:\d{2}:\d{2}(?:[.,]\d++)?\b", requires=(":",))
# IPv6 (and MAC addresses, the same shape): two to seven groups of up to four hex digits each
# ending in ":", then a last group or a dotted IPv4 address, with a digit somewhere; optionally
# a zone ("%eth0"), or in brackets with a port ("[::1]:8080").
# (The bare form consumes its first character before the look-behind: a pattern that starts
# with a character class lets the regex engine skip ahead fast; many masks below do the same.)
_IPV6_TAIL = (
    rf"(?:[{_HEX}]{{0,4}}+:){{1,6}}+(?:\d{{1,3}}(?:\.\d{{1,3}}){{3}}|[{_HEX}]{{1,4}}+)?(?:%\w++)?"
)
_IPV6_BODY = rf"[{_HEX}]{{0,4}}+:{_IPV6_TAIL}"
IPV6 = Mask(
    "ipv6",
    rf"\[(?=[{_HEX}:.]*?\d){_IPV6_BODY}\](?::\d{{1,5}})?"
    rf"|[{_HEX}:](?<![\w:.][{_HEX}:])(?:(?<=\d)|(?=[{_HEX}:.]*?\d))(?:(?<=:)|[{_HEX}]{{0,3}}+:)"
    rf"{_IPV6_TAIL}(?![\w:.])",
    requires=(":",),
    prefilter=rf":[{_HEX}]{{0,4}}:",
)
# A JVM socket address, "host/10.0.0.1:80": the host name is part of the value.
HOST_ADDRESS = Mask(
    "host_address",
    r"[A-Za-z0-9](?<![\w./-][A-Za-z0-9])[\w.-]*+/(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?!\d|\.\w)",
    requires=("/",),
    prefilter=r"/\d{1,3}\.\d{1,3}\.",
)
# IPv4, with a port or a CIDR suffix ("10.0.0.1:80", "10.0.0.0/8").
IPV4 = Mask(
    "ipv4_port",
    r"\d(?<![\d.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?::\d{1,5}|/\d{1,2})?(?!\d|\.\w)",
    requires=(".",),
)
# host:port after a separator ("connect to db-1.lan:5432", "servers=zk1:2181,zk2:2181"). Host
# names are lower case here: "AssignedMaps:12" is a counter, not an address.
HOST_PORT = Mask(
    "host_port",
    r"[a-z](?<![^\s/@=,(\[][a-z])[a-z0-9.-]*+:\d{2,5}(?![\w:]|\.\w)",
    requires=(":",),
)
# Absolute Unix paths (and ~/ or ./ relative ones) and Windows drive paths; a slash glued to a
# word on its left is not a path ("and/or", "I/O", "HTTP/1.1"). A list of paths
# ("/etc/conf:/usr/lib/a.jar") becomes a list of values, which ``wildcard_run`` joins.
PATH = Mask(
    "path",
    r"(?:/(?<![\w/.~\\-]/)|[~.](?<![\w/.~\\-][~.])\.?/)[\w.+~@%-]++(?:/[\w.+~@%-]++)*+/?"
    r"|[A-Za-z](?<!\w[A-Za-z]):\\[^\s\"'<>|:*?]*+",
    requires=("/", "\\"),
)
# A host name is a value; a dotted Java or config name (org.apache.spark.SparkEnv,
# mapred.job.id) is not, so only names ending in a common top-level domain are masked, and
# the shorter or more ambiguous endings only after two labels ("java.io" stays).
HOSTNAME = Mask(
    "hostname",
    rf"[A-Za-z0-9](?<![\w.-][A-Za-z0-9])[\w-]*+\."
    rf"(?:(?:{_LABEL}\.)*(?:{_TLD})|(?:{_LABEL}\.)+(?:{_TLD_AFTER_TWO}))\b(?![.\w-])",
    requires=(".",),
    prefilter=rf"\.(?:{_TLD}|{_TLD_AFTER_TWO})\b",
)
HEX = Mask("hex", rf"0(?<!\w0)[xX][{_HEX}]++\b", requires=("0x", "0X"))
# Sizes and durations: a number with a unit glued on ("512MB", "3s", "150ms", "2.5GiB") or an
# abbreviated size unit after a space ("16.0 B", "1024.0 KB"). Unit *words* ("seconds",
# "bytes") stay: they are the constant part of a message.
SIZE_DURATION = Mask(
    "size_duration",
    r"\d(?<![\w.-]\d)\d*+(?:\.\d++)?"
    r"(?:(?:[kKMGTPE]i?[bB]|[bB]|[kKMG]bps|ms|us|ns|[smhd]|secs?|mins?|hrs?)"
    r"|\s(?:[kKMGTPE]i?B|B)(?![\w]))(?![\w.])",
    requires=_DIGITS,
)
# key=value: a value with a digit in it (an id, a count, a version, an address) or a quoted
# value is a parameter; a plain word value (state=ACTIVE, user=root) is left to the miner.
KEY_VALUE = Mask(
    "key_value",
    r"=(?:\"[^\"\n]*+\"|'[^'\n]*+'|(?=[^\s,;&=)\]}<>\"']*?\d)[^\s,;&=)\]}<>\"']++)",
    requires=("=",),
    replace="=" + WILDCARD,
)
# Memory addresses and digests: 8 or more hex digits with both a digit and a letter.
LONG_HEX = Mask(
    "long_hex",
    rf"[{_HEX}](?<!\w[{_HEX}])(?:(?<=\d)(?=[{_HEX}]*?[a-fA-F])|(?<=[a-fA-F])(?=[{_HEX}]*?\d))"
    rf"[{_HEX}]{{7,}}+(?!\w)",
    requires=_DIGITS,
    prefilter=rf"[{_HEX}]{{8}}",
)
# Numbers, also glued to a word by "_", "-" or "." ("blk_-123", "core.12345", "attempt_1_2"),
# never glued to letters on their left ("ip6", "sda1", "x86" are names) nor the tail of a
# dotted number ("v1.2" stays whole).
NUMBER = Mask(
    "number",
    r"\d(?<![A-Za-z0-9]\d)(?<!\d\.\d)\d*+(?:\.\d++)*+",
    requires=_DIGITS,
)
# A minus sign or a slash before a masked value belongs to it where it cannot be a joining
# hyphen or a path ("offset -12", "blk_-123", "src: /10.0.0.1:80"; not "BP-12", "HTTP/1.1").
SIGN = Mask(
    "sign",
    r"[-/](?<![^\s=(\[{,:_@][-/])<\*>",
    requires=("-<*>", "/<*>"),
)
# Runs of masked values: a list ("<*>,<*>", "<*>, <*>", "<*>:<*>") or values side by side
# ("<*> <*>") is one value, so a list of any length gives the same tokens.
WILDCARD_RUN = Mask(
    "wildcard_run",
    r"<\*>(?:(?:[,;|]\s*+|[:/._-]|\s++)?<\*>)++",
    requires=(WILDCARD,),
)
# A list of values of one named shape ("blk_<*> blk_<*> blk_<*>") is one of them. (Only a word
# glued to a value: "<*>: <*>:" are two fields, not a list.)
REPEATED_VALUE = Mask(
    "repeated_value",
    r"(?<!\S)([A-Za-z][^\s<]*+<\*>[^\s<]*+)(?:\s++\1(?!\S))++",
    requires=(WILDCARD,),
    replace=r"\1",
)

DEFAULT_MASKS: tuple[Mask, ...] = (
    UUID,
    URL,
    CTIME,
    ISO_DATETIME,
    TIME,
    IPV6,
    HOST_ADDRESS,
    IPV4,
    HOST_PORT,
    PATH,
    HOSTNAME,
    HEX,
    SIZE_DURATION,
    KEY_VALUE,
    LONG_HEX,
    NUMBER,
    SIGN,
    WILDCARD_RUN,
    REPEATED_VALUE,
)

# The masks before issue 19 (tuned by looking at the eight loghub samples, one of them naming
# HDFS's block ids): kept for the benchmark's same-run baseline.
_NUM_START_V1 = r"(?<![A-Za-z0-9.])"
MASKS_V1: tuple[Mask, ...] = (
    Mask(
        "uuid",
        r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
        r"-[0-9a-fA-F]{12}(?![0-9a-fA-F])",
    ),
    Mask("ctime", rf"\b{_DAY}\s+{_MONTH}\s+\d{{1,2}}\s+{_TIME}(?:\s+\d{{4}})?\b"),
    Mask(
        "iso_datetime",
        rf"\b\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_TIME}(?:Z|[+-]\d{{2}}:?\d{{2}})?)?\b",
    ),
    Mask("time", rf"\b{_TIME}\b"),
    Mask("block_id", r"blk_-?\d+"),
    Mask("ipv4_port", r"/?(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])"),
    Mask(
        "hostname",
        rf"(?<![\w.-])(?=[\w-]+\.[\w-])"
        rf"(?:(?:{_LABEL}\.)+(?:{_TLD})|(?:{_LABEL}\.){{2,}}(?:{_TLD_AFTER_TWO}))\b(?![.\w-])",
    ),
    Mask("hex", r"\b0[xX][0-9a-fA-F]+\b"),
    Mask("host_port", r"(?<=[\s/@=])[A-Za-z][\w.-]*:\d{2,5}\b"),
    Mask("long_hex", r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"),
    Mask("number", r"(?:(?<![^\s=(\[{,:])-)?" + _NUM_START_V1 + r"\d+(?:\.\d+)*"),
)


def default_masks() -> tuple[Mask, ...]:
    """The default mask set (token shapes; see the module docstring)."""
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
