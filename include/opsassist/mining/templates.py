"""Log template mining with Drain (He et al., ICWS 2017), streaming, serialisable and mergeable.

Drain in one paragraph
----------------------
Each log *content* (the message with its header parsed off) is masked (see :mod:`.masking`) and
split into tokens. A fixed-depth tree routes it: first by token count, then by its leading tokens
(``depth - 3`` of them: ``depth`` counts the root, the length layer and the leaf, as in the paper;
a token containing a digit or a masked value, or any token arriving at a node that already has
``max_children`` children, goes down the ``<*>`` branch). The leaf holds clusters; the line joins
the most similar one (similarity = share of positions where template and line agree, see
:func:`similarity`) if that similarity reaches ``sim_threshold``, and positions that differ become
``<*>``. Otherwise the line starts a new cluster. A template's id is a short sha1 of its text, so
two processes that mine the same template give it the same id whatever order they met it in, and
two clusters that end with the same text are the same template.

Two changes to the paper. First, a ``<*>`` left by a mask in the line agrees with a ``<*>`` of
the template (see :func:`similarity`; ``masked_params_match=False`` restores the paper's rule,
and the benchmark's ``--paper`` run with it reproduces the published accuracies). Second, every
distinct masked token sequence is remembered with the cluster it joined, and a repeat is counted
there without touching the tree. Besides being the fast path
(most lines are repeats once masked), it makes the miner's state a function of the *distinct*
sequences in the order of their first occurrence, which is what makes exact merging possible.
The price is memory: one entry per distinct masked sequence (6 to 194 per 2,000-line loghub
sample; masks that miss a high-cardinality field make it grow with the input). A line is bounded
before it is masked (``max_line_chars``, ``max_tokens``), so one entry is bounded too; empty,
binary and truncated lines are counted (:attr:`TemplateMiner.bad_input`).

From clusters to templates
--------------------------
Three steps turn a Drain cluster into template texts, each a function of the cluster's
sequences (and their counts), so they change nothing about merging (see below):

* **Split** (``split_max_values``, ``split_min_lines``): Drain generalises any position where
  one word in six differs, so "VM Paused" and "VM Resumed" become "VM <*>". A position whose
  words are few (at most ``split_max_values``, none of them a masked value) and each recur (on
  at least ``split_min_lines`` lines: no word seen once, which would suggest an open set of
  values) is a kind of event, not a parameter: each word gets its own template. In the spirit of
  Brain's (Yu et al., 2023) split of low-cardinality columns; the limits are chosen by the
  benchmark's leave-one-system-out protocol.
* **Merge of lengths** (``merge_lengths``): Drain routes by token count, so a variable part of
  one, two or ten tokens makes one template per length. Texts collapse runs of ``<*>`` (and runs
  of one masked shape, ``blk_<*> blk_<*>``), so clusters of different lengths that share their
  constant tokens have one text, hence one id and one template. (The ``wildcard_run`` and
  ``repeated_value`` masks do the same for masked lists before Drain sees them.)
* **Affixes** (``keep_affixes``): a ``<*>`` whose words share ``user=`` or ``(...)`` shows it.

Order dependence, and the merge scheme
--------------------------------------
Drain is sequential: a cluster's template generalises as lines join it, and a later line is
compared with the template as it is by then, so the same lines in another order can give other
clusters. Mining Spark partitions separately and merging their *templates* therefore cannot
reproduce a single miner in general. What can be merged exactly is the input to Drain:

* Each miner records, for every distinct sequence, its count and the position of its first
  occurrence, ``(partition, offset)``, where ``partition`` is given to the miner (a Spark
  partition index, say) and ``offset`` counts that miner's lines.
* :func:`merge` sums the counts, keeps the earliest position, and replays the distinct sequences
  into a fresh miner. Sums and minimums do not care about argument order, and the replay order is
  a total order on the sequences, so ``merge(a, b)`` equals ``merge(b, a)`` (and merging is
  associative).
* With ``order="first_seen"`` (the default) the replay follows the first occurrences, which is
  exactly the sequence of state changes a single streaming miner makes when it reads the
  partitions one after another in partition order (repeats change nothing, see above). So the
  result equals the single-process miner, clusters and counts alike, for any partitioning, as
  long as each partition's miner is given its partition index.
* With ``order="frequency"`` the replay goes by descending count (ties by the sequence itself).
  That ignores positions entirely: the result depends only on the multiset of lines, so it is
  the same for any order of the input and any partitioning. :func:`mine_two_pass` does this in
  one process: pass one counts the distinct sequences, pass two mines them, most frequent first,
  and every line is then given the *final* template of its sequence. Frequent sequences make
  the first templates; on loghub that is about as accurate as file order (see the benchmark's
  ``stream`` column).

Either way a line's id should be read from the final state (``match`` after mining, or the
assignments of :func:`mine_two_pass`): the id that ``add`` returns is the template at that
moment, and it changes when the template later generalises.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .masking import DEFAULT_MASKS, WILDCARD, Mask, mask_content, tokenize

Tokens = tuple[str, ...]
Position = tuple[int, int]  # (partition, offset) of a sequence's first occurrence
SequenceStats = tuple[int, Position]  # (count, first_seen)
ReplayOrder = Literal["first_seen", "frequency"]

STATE_FORMAT = "opsassist.mining.templates/1"

# What a line that is mostly not text becomes: one template for all of them.
BINARY = "<binary>"
# Kinds of bad input a miner counts (see MinerConfig.inspect).
EMPTY, BINARY_LINE, TRUNCATED = "empty", "binary", "truncated"
BAD_INPUT_KINDS = (EMPTY, BINARY_LINE, TRUNCATED)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")

# MinerConfig fields added after the first state format; a state without them is read with
# these values, which give the miner it was saved by.
_LEGACY_DEFAULTS: dict[str, Any] = {
    "split_max_values": 0,
    "split_min_lines": 2,
    "merge_lengths": False,
    "keep_affixes": False,
    "route_masked": False,
    "max_line_chars": 0,
    "max_tokens": 0,
}


@dataclass(frozen=True)
class MinerConfig:
    """Drain's parameters and the steps around it. The defaults are the one configuration the
    benchmark selects by leave-one-system-out on the eight loghub samples (and uses for all).

    ``sim_threshold``: minimum :func:`similarity` for a line to join a cluster. ``depth``: depth
    of the leaves, counting root and length layer (``depth - 3`` leading tokens route a line).
    ``max_children``: cap on a tree node's children, beyond which tokens share the ``<*>``
    branch. ``masks``: applied in order before tokenising. ``extra_delimiters``: split tokens
    on these as well as on whitespace. ``masked_params_match``: see :func:`similarity` (False
    gives the paper's Drain exactly).

    ``route_masked``: a token that holds a masked value (``blk_<*>``) routes down the ``<*>``
    branch like a token with a digit (False: the paper's routing, where only digits count).
    ``split_max_values`` and ``split_min_lines``: a template position that Drain generalised
    (its lines have different words there, none of them masked) is split back into one
    template per word when it has at most ``split_max_values`` distinct words, each on at least
    ``split_min_lines`` lines: a few recurring words are states or kinds of event ("VM Paused",
    "VM Resumed"), not parameters. 0 turns splitting off. ``merge_lengths``: template texts
    collapse runs of ``<*>`` (and runs of one masked shape, ``blk_<*> blk_<*>``) into one, so
    clusters of different lengths that share their constant tokens are one template.
    ``keep_affixes``: where the words of a ``<*>`` share a prefix up to a separator or a suffix
    from one (``user=root``, ``user=uucp``), the template keeps it (``user=<*>``).
    ``max_line_chars`` and ``max_tokens``: bounds on one line (0: none); see :meth:`inspect`.
    """

    sim_threshold: float = 0.8
    depth: int = 5
    max_children: int = 100
    masks: tuple[Mask, ...] = DEFAULT_MASKS
    extra_delimiters: tuple[str, ...] = ()
    masked_params_match: bool = True
    route_masked: bool = True
    split_max_values: int = 4
    split_min_lines: int = 2
    merge_lengths: bool = True
    keep_affixes: bool = True
    max_line_chars: int = 16_384
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.sim_threshold <= 1.0:
            raise ValueError(f"sim_threshold must be in (0, 1], got {self.sim_threshold}")
        if self.depth < 3:
            raise ValueError(f"depth must be at least 3, got {self.depth}")
        if self.max_children < 2:
            raise ValueError(f"max_children must be at least 2, got {self.max_children}")
        if self.split_max_values < 0 or self.split_min_lines < 1:
            raise ValueError("split_max_values must be >= 0 and split_min_lines >= 1")
        if self.max_line_chars < 0 or self.max_tokens < 0 or self.max_tokens == 1:
            raise ValueError("max_line_chars must be >= 0 and max_tokens 0 or >= 2")

    @property
    def route_length(self) -> int:
        """How many leading tokens route a line through the tree."""
        return self.depth - 3

    def tokens(self, content: str) -> Tokens:
        """Mask and tokenise one log content (bounded: see :meth:`inspect`)."""
        return self.inspect(content)[0]

    def inspect(self, content: str) -> tuple[Tokens, str | None]:
        """Mask and tokenise one log content; also say what was wrong with it, if anything.

        Time and memory per line are bounded whatever the input: a line longer than
        ``max_line_chars`` is cut there before masking (its last, cut token becomes ``<*>``),
        and a line of more than ``max_tokens`` tokens keeps ``max_tokens - 1`` of them and a
        final ``<*>``: ``"truncated"``. A line that is mostly control characters (or has a NUL)
        is one token, :data:`BINARY`: ``"binary"``. A line with no tokens: ``"empty"``.
        """
        kind: str | None = None
        cut = 0 < self.max_line_chars < len(content)
        if cut:
            content = content[: self.max_line_chars]
            kind = TRUNCATED
        if not content.isprintable() and _is_binary(content):
            return (BINARY,), BINARY_LINE
        tokens = tokenize(mask_content(content, self.masks), self.extra_delimiters)
        if cut and tokens:
            tokens = (*tokens[:-1], WILDCARD)
        if 0 < self.max_tokens < len(tokens):
            tokens = (*tokens[: self.max_tokens - 1], WILDCARD)
            kind = TRUNCATED
        if not tokens:
            return (), EMPTY
        return tokens, kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "sim_threshold": self.sim_threshold,
            "depth": self.depth,
            "max_children": self.max_children,
            "masks": [mask.to_dict() for mask in self.masks],
            "extra_delimiters": list(self.extra_delimiters),
            "masked_params_match": self.masked_params_match,
            "route_masked": self.route_masked,
            "split_max_values": self.split_max_values,
            "split_min_lines": self.split_min_lines,
            "merge_lengths": self.merge_lengths,
            "keep_affixes": self.keep_affixes,
            "max_line_chars": self.max_line_chars,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinerConfig:
        extra = {key: data.get(key, legacy) for key, legacy in _LEGACY_DEFAULTS.items()}
        return cls(
            sim_threshold=float(data["sim_threshold"]),
            depth=int(data["depth"]),
            max_children=int(data["max_children"]),
            masks=tuple(Mask.from_dict(m) for m in data["masks"]),
            extra_delimiters=tuple(data["extra_delimiters"]),
            masked_params_match=bool(data["masked_params_match"]),
            route_masked=bool(extra["route_masked"]),
            split_max_values=int(extra["split_max_values"]),
            split_min_lines=int(extra["split_min_lines"]),
            merge_lengths=bool(extra["merge_lengths"]),
            keep_affixes=bool(extra["keep_affixes"]),
            max_line_chars=int(extra["max_line_chars"]),
            max_tokens=int(extra["max_tokens"]),
        )


def paper_config(patterns: Sequence[str], sim_threshold: float, depth: int) -> MinerConfig:
    """Drain exactly as published (He et al. 2017; logpai's benchmark settings): the given
    preprocessing regexes, the paper's similarity and routing, no split, merge or affixes."""
    return MinerConfig(
        sim_threshold=sim_threshold,
        depth=depth,
        masks=tuple(Mask(f"paper_{i}", pattern) for i, pattern in enumerate(patterns)),
        masked_params_match=False,
        route_masked=False,
        split_max_values=0,
        merge_lengths=False,
        keep_affixes=False,
    )


def _is_binary(content: str) -> bool:
    """A NUL, or control (and undecodable) characters in a quarter of the line or more."""
    if "\x00" in content:
        return True
    return len(_CONTROL.findall(content)) * 4 >= len(content)


@dataclass(frozen=True)
class Template:
    """A mined template: its id (sha1 of the text), its text and how many lines it covers."""

    template_id: str
    text: str
    count: int


def template_id(text: str) -> str:
    """The id of a template text: the first 16 hex digits of its sha1."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def has_digit(token: str) -> bool:
    """Drain's routing rule: a token with a digit is probably a parameter (``<*>`` branch)."""
    return any(ch.isdigit() for ch in token)


def similarity(
    template: Sequence[str], tokens: Sequence[str], masked_params_match: bool = True
) -> tuple[float, int]:
    """Drain's ``seqDist``: share of positions where line and template agree, and #wildcards.

    As in the paper, a literal token of the line meeting a ``<*>`` of the template does not
    count: a template that has absorbed many parameters needs more literal agreement to attract
    a new line. Unlike the paper, a ``<*>`` of the template meeting a ``<*>`` of the line (a value
    a mask already hid) does count: both sides say "parameter here". Without this a line with
    many masked values could never reach a high threshold even against its own template, which
    forces the threshold down to where short templates that differ in one word merge (the
    benchmark's sweep shows the cliff). ``masked_params_match=False`` is the paper's rule.
    """
    if not template:
        return 1.0, 0
    equal = 0
    wildcards = 0
    for expected, actual in zip(template, tokens, strict=True):
        if expected == WILDCARD:
            wildcards += 1
            if masked_params_match and actual == WILDCARD:
                equal += 1
        elif expected == actual:
            equal += 1
    return equal / len(template), wildcards


def covers(template: Sequence[str], tokens: Sequence[str]) -> bool:
    """True if every literal token of the template equals the line's token at that position."""
    return len(template) == len(tokens) and all(
        expected in (WILDCARD, actual) for expected, actual in zip(template, tokens, strict=True)
    )


def generalise(template: Sequence[str], tokens: Sequence[str]) -> list[str]:
    """Drain's template update: positions where the line differs become ``<*>``."""
    return [
        expected if expected == actual else WILDCARD
        for expected, actual in zip(template, tokens, strict=True)
    ]


def collapse_runs(tokens: Sequence[str]) -> list[str]:
    """Runs of ``<*>``, and runs of one word glued to a masked value, become one token.

    ``A <*> <*> B`` and ``A <*> B`` (or ``delete blk_<*> blk_<*>`` and ``delete blk_<*>``) are
    then the same text: the step that merges templates of different lengths that share their
    constant tokens (a variable part that is sometimes one token and sometimes several).
    """
    out: list[str] = []
    for token in tokens:
        if out and token == out[-1] and (token == WILDCARD or _named_value(token)):
            continue
        out.append(token)
    return out


def _named_value(token: str) -> bool:
    """A word glued to a masked value (``blk_<*>``); ``<*>:`` is not one ("<*>: <*>:" are two
    fields, not a list)."""
    return token[:1].isalpha() and WILDCARD in token


@dataclass
class Affix:
    """What every word at one ``<*>`` position starts and ends with, and the shortest word."""

    prefix: str
    suffix: str
    shortest: int

    @classmethod
    def of(cls, word: str) -> Affix:
        return cls(word, word, len(word))

    def add(self, word: str) -> None:
        self.prefix = _common_prefix(self.prefix, word)
        self.suffix = _common_suffix(self.suffix, word)
        self.shortest = min(self.shortest, len(word))

    def show(self) -> str:
        """``<*>`` with the shared prefix up to its last separator and the shared suffix from
        its first ("user=root", "user=uucp": ``user=<*>``; "()", "(<*>)": ``(<*>)``); a shared
        part of a word ("Paused", "Resumed") is not kept."""
        end = max(map(self.prefix.rfind, _PREFIX_ENDS)) + 1
        start = min((i for i in map(self.suffix.find, _SUFFIX_STARTS) if i >= 0), default=None)
        head = self.prefix[:end]
        tail = "" if start is None else self.suffix[start:]
        if len(head) + len(tail) > self.shortest or WILDCARD in head or WILDCARD in tail:
            return WILDCARD
        return head + WILDCARD + tail


_PREFIX_ENDS = tuple("=:([{/@#,;|\"'")
_SUFFIX_STARTS = tuple(")]},;:|\"'")


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _common_suffix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return a[len(a) - n :]


# A position's words as a split sees them: word -> lines, or None once the position is a
# parameter for good (a masked value met it, or it has more words than a split allows).
Values = dict[str, int] | None


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    clusters: list[int] = field(default_factory=list)


@dataclass
class _Cluster:
    tokens: list[str]
    route: Tokens
    count: int = 0
    # Per ``<*>`` position of ``tokens``: the words the cluster's lines have there (see
    # MinerConfig.split_max_values); kept only while splitting is on.
    values: dict[int, Values] = field(default_factory=dict)
    # Per ``<*>`` position: what all its words share (see Affix), for the template's text.
    affixes: dict[int, Affix] = field(default_factory=dict)
    # The template's tokens as shown (affixes kept); None when it must be computed again.
    shown: list[str] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class _Seen:
    cluster: int
    count: int
    first_seen: Position


class TemplateMiner:
    """A streaming Drain miner (not thread-safe: give each thread or partition its own).

    ``partition`` places this miner's input in a global order (e.g. the Spark partition index);
    it is only used by :func:`merge` to replay first occurrences in that order.
    """

    def __init__(self, config: MinerConfig | None = None, *, partition: int = 0) -> None:
        self._config = config or MinerConfig()
        self._partition = partition
        self._next_offset = 0
        self._roots: dict[int, _Node] = {}
        self._clusters: list[_Cluster] = []
        self._seen: dict[Tokens, _Seen] = {}
        self._bad: Counter[str] = Counter()
        self._templates: dict[str, Template] | None = None  # cache of templates()

    @property
    def config(self) -> MinerConfig:
        return self._config

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def next_offset(self) -> int:
        """Offset the next added line gets within this miner's partition."""
        return self._next_offset

    @property
    def bad_input(self) -> dict[str, int]:
        """Lines added so far that were empty, binary or truncated (see MinerConfig.inspect)."""
        return {kind: self._bad[kind] for kind in BAD_INPUT_KINDS}

    def __len__(self) -> int:
        """Number of distinct templates."""
        return len(self.templates())

    # -- learning ---------------------------------------------------------------------------

    def add(self, content: str) -> tuple[str, str]:
        """Learn from one log content; return the id and text of its template *as of now*."""
        position = (self._partition, self._next_offset)
        self._next_offset += 1
        tokens, bad = self._config.inspect(content)
        if bad is not None:
            self._bad[bad] += 1
        index = self.learn(tokens, 1, position)
        text = self._final_text(index, tokens)
        return template_id(text), text

    def learn(self, tokens: Tokens, count: int, first_seen: Position) -> int:
        """Add ``count`` occurrences of one masked token sequence; return its cluster's index."""
        self._templates = None
        seen = self._seen.get(tokens)
        if seen is not None:
            seen.count += count
            seen.first_seen = min(seen.first_seen, first_seen)
            cluster = self._clusters[seen.cluster]
            cluster.count += count
            for position, values in cluster.values.items():
                if values is not None:
                    word = tokens[position]
                    values[word] = values.get(word, 0) + count
            return seen.cluster
        leaf = self._search(tokens)
        index = self._best_match(leaf, tokens) if leaf is not None else None
        if index is None:
            index = self._new_cluster(tokens)
        else:
            self._join(self._clusters[index], tokens, count)
        self._clusters[index].count += count
        self._seen[tokens] = _Seen(index, count, first_seen)
        return index

    def _join(self, cluster: _Cluster, tokens: Tokens, count: int) -> None:
        """Generalise the cluster's template with a new sequence (and track its words)."""
        limit = self._config.split_max_values
        cluster.shown = None
        for position, (expected, actual) in enumerate(zip(cluster.tokens, tokens, strict=True)):
            if expected == actual and expected != WILDCARD:
                continue
            if expected != WILDCARD:  # every earlier line had the old word here
                cluster.tokens[position] = WILDCARD
                cluster.affixes[position] = Affix.of(expected)
                if limit:
                    cluster.values[position] = {}
                    _add_word(cluster.values, position, expected, cluster.count, limit)
            cluster.affixes[position].add(actual)
            if limit:
                _add_word(cluster.values, position, actual, count, limit)

    def _search(self, tokens: Tokens) -> _Node | None:
        node = self._roots.get(len(tokens))
        for token in tokens[: self._config.route_length]:
            if node is None:
                return None
            child = node.children.get(token)
            node = child if child is not None else node.children.get(WILDCARD)
        return node

    def _best_match(self, leaf: _Node, tokens: Tokens) -> int | None:
        """The most similar cluster of the leaf (ties: more wildcards, then older)."""
        best: int | None = None
        best_key = (-1.0, -1)
        for index in leaf.clusters:
            key = similarity(self._clusters[index].tokens, tokens, self._config.masked_params_match)
            if key > best_key:
                best, best_key = index, key
        if best is None or best_key[0] < self._config.sim_threshold:
            return None
        return best

    def _new_cluster(self, tokens: Tokens) -> int:
        index = len(self._clusters)
        route = self._route_for_insert(tokens)
        cluster = _Cluster(tokens=list(tokens), route=route)
        cluster.affixes = {p: Affix.of(t) for p, t in enumerate(tokens) if t == WILDCARD}
        if self._config.split_max_values:
            cluster.values = {p: None for p, token in enumerate(tokens) if token == WILDCARD}
        self._clusters.append(cluster)
        self._attach(index, route)
        return index

    def _route_for_insert(self, tokens: Tokens) -> Tokens:
        """The child keys a new cluster takes, creating none yet (see :meth:`_attach`)."""
        node: _Node | None = self._roots.get(len(tokens))
        route: list[str] = []
        for token in tokens[: self._config.route_length]:
            key = self._insert_key(node, token)
            route.append(key)
            node = node.children.get(key) if node is not None else None
        return tuple(route)

    def _insert_key(self, node: _Node | None, token: str) -> str:
        """Drain's branching rule, including the ``max_children`` cap."""
        if has_digit(token) or (self._config.route_masked and WILDCARD in token):
            return WILDCARD
        children = node.children if node is not None else {}
        if token in children:
            return token
        # Without a wildcard child yet, keep one slot free for it.
        room = self._config.max_children - (0 if WILDCARD in children else 1)
        return token if len(children) < room else WILDCARD

    def _attach(self, index: int, route: Tokens) -> None:
        node = self._roots.setdefault(len(self._clusters[index].tokens), _Node())
        for key in route:
            node = node.children.setdefault(key, _Node())
        node.clusters.append(index)

    # -- from clusters to templates ---------------------------------------------------------

    def _split_positions(self, cluster: _Cluster) -> list[int]:
        """The ``<*>`` positions of a cluster that are split into one template per word."""
        limit, least = self._config.split_max_values, self._config.split_min_lines
        return [
            position
            for position, values in sorted(cluster.values.items())
            if values is not None and 2 <= len(values) <= limit and min(values.values()) >= least
        ]

    def _final_text(self, index: int, tokens: Tokens, *, known_only: bool = False) -> str:
        """The template text of a sequence of cluster ``index``: the cluster's template, its
        split positions filled with the sequence's words (with ``known_only``, only words
        the cluster has seen), runs collapsed if ``merge_lengths``."""
        cluster = self._clusters[index]
        final = self._shown(cluster)
        if cluster.values:
            positions = self._split_positions(cluster)
            if positions:
                final = list(final)
                for position in positions:
                    word = tokens[position]
                    values = cluster.values[position]
                    if not known_only or (values is not None and word in values):
                        final[position] = word
        if self._config.merge_lengths:
            final = collapse_runs(final)
        return " ".join(final)

    def _shown(self, cluster: _Cluster) -> list[str]:
        """The cluster's template tokens with their affixes (``keep_affixes``)."""
        if not self._config.keep_affixes:
            return cluster.tokens
        if cluster.shown is None:
            shown = list(cluster.tokens)
            for position, affix in cluster.affixes.items():
                shown[position] = affix.show()
            cluster.shown = shown
        return cluster.shown

    # -- inference --------------------------------------------------------------------------

    def match(self, content: str) -> tuple[str, str] | None:
        """The template a line belongs to, without changing any state; None if it has none.

        A sequence seen in training gets its own template. A new one gets, in turn: the most
        specific template in its leaf that covers it, the cluster ``add`` would have put it
        in (without generalising it), or the most specific covering template of the same
        length anywhere (for lines whose leading token routes them elsewhere). Where that
        cluster is split by a word, a word it has seen picks its template; a new word gets the
        unsplit template (``<*>`` there), which no line has yet.
        """
        return self.match_tokens(self._config.tokens(content))

    def match_tokens(self, tokens: Tokens) -> tuple[str, str] | None:
        """:meth:`match` for a sequence that is already masked and tokenised."""
        tokens = tuple(tokens)
        index = self._match_index(tokens)
        if index is None:
            return None
        text = self._final_text(index, tokens, known_only=tokens not in self._seen)
        return template_id(text), text

    def _match_index(self, tokens: Tokens) -> int | None:
        seen = self._seen.get(tokens)
        if seen is not None:
            return seen.cluster
        leaf = self._search(tokens)
        if leaf is not None:
            covering = self._most_specific_cover(leaf.clusters, tokens)
            if covering is not None:
                return covering
            similar = self._best_match(leaf, tokens)
            if similar is not None:
                return similar
        same_length = (
            i for i, cluster in enumerate(self._clusters) if len(cluster.tokens) == len(tokens)
        )
        return self._most_specific_cover(same_length, tokens)

    def _most_specific_cover(self, candidates: Iterable[int], tokens: Tokens) -> int | None:
        best: int | None = None
        best_literals = -1
        for index in candidates:
            template = self._clusters[index].tokens
            if covers(template, tokens):
                literals = sum(token != WILDCARD for token in template)
                if literals > best_literals:
                    best, best_literals = index, literals
        return best

    # -- reading the state ------------------------------------------------------------------

    def templates(self) -> dict[str, Template]:
        """All templates by id, sorted by id (computed once per change of the state)."""
        if self._templates is None:
            counts: Counter[str] = Counter()
            for tokens, seen in self._seen.items():
                counts[self._final_text(seen.cluster, tokens)] += seen.count
            by_id = {
                template_id(text): Template(template_id(text), text, n)
                for text, n in counts.items()
            }
            self._templates = dict(sorted(by_id.items()))
        return dict(self._templates)

    def sequences(self) -> dict[Tokens, SequenceStats]:
        """Every distinct masked sequence learned, with its count and first position."""
        return {tokens: (seen.count, seen.first_seen) for tokens, seen in self._seen.items()}

    def template_of(self, tokens: Tokens) -> str | None:
        """Template id of a learned sequence (None if it was never learned)."""
        return self._template_id_of(tokens) if tokens in self._seen else None

    def _template_id_of(self, tokens: Tokens) -> str:
        return template_id(self._final_text(self._seen[tokens].cluster, tokens))

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The full state as JSON-able data; :meth:`from_dict` restores an equal miner."""
        ordered = sorted(self._seen.items(), key=lambda item: (item[1].first_seen, item[0]))
        return {
            "format": STATE_FORMAT,
            "config": self._config.to_dict(),
            "partition": self._partition,
            "next_offset": self._next_offset,
            "bad_input": self.bad_input,
            "clusters": [
                {"tokens": list(c.tokens), "route": list(c.route), "count": c.count}
                for c in self._clusters
            ],
            "sequences": [
                {
                    "tokens": list(tokens),
                    "cluster": seen.cluster,
                    "count": seen.count,
                    "first_seen": list(seen.first_seen),
                }
                for tokens, seen in ordered
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateMiner:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} state: format={data.get('format')!r}")
        miner = cls(MinerConfig.from_dict(data["config"]), partition=int(data["partition"]))
        miner._next_offset = int(data["next_offset"])
        miner._bad.update({k: int(v) for k, v in data.get("bad_input", {}).items() if v})
        for item in data["clusters"]:
            cluster = _Cluster(list(item["tokens"]), tuple(item["route"]), int(item["count"]))
            miner._clusters.append(cluster)
            miner._attach(len(miner._clusters) - 1, cluster.route)
        for item in data["sequences"]:
            partition, offset = item["first_seen"]
            miner._seen[tuple(item["tokens"])] = _Seen(
                int(item["cluster"]), int(item["count"]), (int(partition), int(offset))
            )
        miner._rebuild_values()
        return miner

    def _rebuild_values(self) -> None:
        """The words of every cluster's ``<*>`` positions, from its sequences (what learning
        kept: every line of a cluster is one of its sequences)."""
        limit = self._config.split_max_values
        for cluster in self._clusters:
            wildcards = [p for p, token in enumerate(cluster.tokens) if token == WILDCARD]
            cluster.values = {p: {} for p in wildcards} if limit else {}
        for tokens, seen in self._seen.items():
            cluster = self._clusters[seen.cluster]
            for position, token in enumerate(cluster.tokens):
                if token == WILDCARD:
                    word = tokens[position]
                    if position in cluster.affixes:
                        cluster.affixes[position].add(word)
                    else:
                        cluster.affixes[position] = Affix.of(word)
            for position in cluster.values:
                _add_word(cluster.values, position, tokens[position], seen.count, limit)


def _add_word(values: dict[int, Values], position: int, word: str, count: int, limit: int) -> None:
    """Count ``word`` at ``position``; a masked word or one word too many ends the tracking."""
    words = values.get(position)
    if words is None:
        return
    if WILDCARD in word:
        values[position] = None
        return
    words[word] = words.get(word, 0) + count
    if len(words) > limit:
        values[position] = None


def _by_first_seen(item: tuple[Tokens, SequenceStats]) -> tuple[Position, Tokens]:
    return item[1][1], item[0]


def _by_frequency(item: tuple[Tokens, SequenceStats]) -> tuple[int, Tokens]:
    return -item[1][0], item[0]


def _replay_order(
    sequences: Mapping[Tokens, SequenceStats], order: ReplayOrder
) -> list[tuple[Tokens, SequenceStats]]:
    """The sequences in replay order; both keys end with the tokens, so the order is total."""
    if order == "first_seen":
        return sorted(sequences.items(), key=_by_first_seen)
    if order == "frequency":
        return sorted(sequences.items(), key=_by_frequency)
    raise ValueError(f"unknown replay order {order!r}")


def mine_sequences(
    sequences: Mapping[Tokens, SequenceStats],
    config: MinerConfig,
    *,
    order: ReplayOrder = "first_seen",
    partition: int = 0,
) -> TemplateMiner:
    """A fresh miner fed with distinct sequences ``{tokens: (count, first_seen)}`` in ``order``."""
    miner = TemplateMiner(config, partition=partition)
    for tokens, (count, first_seen) in _replay_order(sequences, order):
        miner.learn(tokens, count, first_seen)
    return miner


def merge(
    first: TemplateMiner, *others: TemplateMiner, order: ReplayOrder = "first_seen"
) -> TemplateMiner:
    """Merge miners' states into a new miner; the result does not depend on argument order.

    See the module docstring for why ``order="first_seen"`` reproduces a single miner that read
    the partitions in partition order. All miners must share one configuration.
    """
    miners = (first, *others)
    for miner in others:
        if miner.config != first.config:
            raise ValueError("cannot merge miners with different configurations")
    combined: dict[Tokens, SequenceStats] = {}
    bad: Counter[str] = Counter()
    for miner in miners:
        bad.update(miner._bad)
        for tokens, (count, first_seen) in miner.sequences().items():
            if tokens in combined:
                old_count, old_first = combined[tokens]
                combined[tokens] = (old_count + count, min(old_first, first_seen))
            else:
                combined[tokens] = (count, first_seen)
    last = max(miner.partition for miner in miners)
    merged = mine_sequences(combined, first.config, order=order, partition=last)
    merged._next_offset = max(m.next_offset for m in miners if m.partition == last)
    merged._bad = bad
    return merged


@dataclass(frozen=True)
class MiningResult:
    """What :func:`mine_two_pass` returns: one final template id per input line, in order,
    and how many lines were empty, binary or truncated."""

    assignments: list[str]
    templates: dict[str, Template]
    miner: TemplateMiner
    bad_input: dict[str, int] = field(default_factory=dict)


def mine_two_pass(
    lines: Iterable[str],
    config: MinerConfig | None = None,
    *,
    order: ReplayOrder = "frequency",
) -> MiningResult:
    """Mine a batch: count distinct masked sequences, mine them in ``order``, assign every line.

    With the default ``order="frequency"`` the result depends only on the multiset of lines, not
    on their order; with ``"first_seen"`` it equals a streaming :class:`TemplateMiner` fed the
    lines in order, but every line carries its *final* template (see the module docstring).
    """
    config = config or MinerConfig()
    bad: Counter[str] = Counter()
    line_tokens: list[Tokens] = []
    for line in lines:
        tokens, kind = config.inspect(line)
        if kind is not None:
            bad[kind] += 1
        line_tokens.append(tokens)
    return mine_token_lines(line_tokens, config, order=order, bad_input=bad)


def mine_token_lines(
    line_tokens: Sequence[Tokens],
    config: MinerConfig,
    *,
    order: ReplayOrder = "frequency",
    bad_input: Mapping[str, int] | None = None,
) -> MiningResult:
    """:func:`mine_two_pass` for lines already masked and tokenised (by ``config.tokens``)."""
    sequences: dict[Tokens, SequenceStats] = {}
    for offset, tokens in enumerate(line_tokens):
        count, first_seen = sequences.get(tokens, (0, (0, offset)))
        sequences[tokens] = (count + 1, first_seen)
    miner = mine_sequences(sequences, config, order=order)
    miner._next_offset = len(line_tokens)
    miner._bad = Counter({k: v for k, v in (bad_input or {}).items() if v})
    final = {tokens: miner._template_id_of(tokens) for tokens in sequences}
    return MiningResult(
        [final[tokens] for tokens in line_tokens],
        miner.templates(),
        miner,
        miner.bad_input,
    )
