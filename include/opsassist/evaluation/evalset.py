"""Versioned evaluation sets: YAML files of questions with the documents that answer them.

A set file carries ``schema_version`` (the file format, checked here), ``name``, ``version``
(bumped by hand when items change) and ``items``. Each item has an ``id``, a ``question``, a
``language``, a ``kind`` (paraphrase / terse / incident), optional ``notes`` and ``relevant``:
a list of rules, each either a document source (``kubernetes/KubePodCrashLooping.md``) or a
``{system, template}`` pair that matches signal documents by their system and a regular
expression on their template text, so relevance survives re-mining (ids change, words do not).

Before a run, :func:`applicable` keeps only the items with at least one relevant document in the
index being evaluated, restricted to those documents: a small test corpus is then scored on the
questions it can answer, never failed on runbooks it does not contain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

SCHEMA_VERSION = 1
KINDS: tuple[str, ...] = ("paraphrase", "terse", "incident", "symptom")
SPLITS: tuple[str, ...] = ("dev", "test")


class EvalSetError(ValueError):
    """An evaluation set file is malformed (the message names the file and the item)."""


@dataclasses.dataclass(frozen=True, slots=True)
class DocRef:
    """What relevance rules look at: a document's source and, for signals, system and template."""

    source: str
    system: str | None = None
    template: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One relevance rule: an exact source, or a (system, template regex) pair."""

    source: str | None = None
    system: str | None = None
    template: str | None = None

    def matches(self, doc: DocRef) -> bool:
        if self.source is not None:
            return doc.source == self.source
        if doc.system != self.system or doc.template is None:
            return False
        return re.search(self.template or "", doc.template, re.IGNORECASE) is not None

    def describe(self) -> str:
        return self.source or f"{self.system}~/{self.template}/"


@dataclasses.dataclass(frozen=True, slots=True)
class EvalItem:
    id: str
    question: str
    relevant: tuple[Rule, ...]
    language: str
    kind: str
    notes: str = ""
    split: str = "dev"  # dev: may be tuned on; test: frozen, reported only

    @property
    def needs_templates(self) -> bool:
        return any(rule.source is None for rule in self.relevant)


@dataclasses.dataclass(frozen=True, slots=True)
class EvalSet:
    name: str
    version: str
    items: tuple[EvalItem, ...]
    digest: str  # sha256 of the file: an edit without a version bump still shows in MLflow

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}+{self.digest[:8]}"

    @property
    def needs_templates(self) -> bool:
        return any(item.needs_templates for item in self.items)


@dataclasses.dataclass(frozen=True, slots=True)
class ApplicableItem:
    """An item with its relevant documents resolved against one index version."""

    item: EvalItem
    relevant: frozenset[str]


def _rule(raw: Any, where: str) -> Rule:
    if isinstance(raw, str) and raw.strip():
        return Rule(source=raw.strip())
    if isinstance(raw, dict) and set(raw) == {"system", "template"}:
        system, template = str(raw["system"]), str(raw["template"])
        try:
            re.compile(template)
        except re.error as exc:
            raise EvalSetError(f"{where}: bad template pattern {template!r}: {exc}") from exc
        return Rule(system=system, template=template)
    raise EvalSetError(f"{where}: a relevant entry is a source path or {{system, template}}")


def _item(raw: Any, where: str) -> EvalItem:
    if not isinstance(raw, dict):
        raise EvalSetError(f"{where}: an item is a mapping")
    missing = {"id", "question", "relevant", "language", "kind"} - set(raw)
    if missing:
        raise EvalSetError(f"{where}: missing {', '.join(sorted(missing))}")
    item_id = str(raw["id"])
    where = f"{where} ({item_id})"
    question = str(raw["question"]).strip()
    kind = str(raw["kind"])
    relevant = raw["relevant"]
    if not question:
        raise EvalSetError(f"{where}: empty question")
    if kind not in KINDS:
        raise EvalSetError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    split = str(raw.get("split", "dev"))
    if split not in SPLITS:
        raise EvalSetError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    if not isinstance(relevant, list) or not relevant:
        raise EvalSetError(f"{where}: relevant must be a non-empty list")
    return EvalItem(
        id=item_id,
        question=question,
        relevant=tuple(_rule(entry, where) for entry in relevant),
        language=str(raw["language"]),
        kind=kind,
        notes=str(raw.get("notes", "")),
        split=split,
    )


def parse_evalset(text: str, origin: str = "<string>") -> EvalSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvalSetError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EvalSetError(f"{origin}: the top level must be a mapping")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise EvalSetError(
            f"{origin}: schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    for key in ("name", "version", "items"):
        if key not in data:
            raise EvalSetError(f"{origin}: missing {key}")
    raw_items = data["items"]
    if not isinstance(raw_items, list) or not raw_items:
        raise EvalSetError(f"{origin}: items must be a non-empty list")
    items = tuple(_item(raw, f"{origin} item {n}") for n, raw in enumerate(raw_items, start=1))
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise EvalSetError(f"{origin}: duplicate ids {', '.join(duplicates)}")
    return EvalSet(
        name=str(data["name"]),
        version=str(data["version"]),
        items=items,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def evalset_file(directory: Path, name: str) -> Path:
    """``name`` is a set name (``runbooks`` -> ``<directory>/runbooks.yaml``) or a file path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise EvalSetError(f"no evaluation set {name!r} in {directory} (known: {known})")
    return path


class FrozenSplitChanged(EvalSetError):
    """A set's test split differs from the one frozen beside it."""


def test_split_digest(raw_items: Sequence[Any]) -> str:
    """The SHA-256 of a set's test items (their raw YAML mappings, key order ignored)."""
    test = [item for item in raw_items if isinstance(item, dict) and item.get("split") == "test"]
    return hashlib.sha256(json.dumps(test, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def check_frozen(path: Path, raw_items: Sequence[Any]) -> None:
    """Refuse a set whose test split is not the one frozen in ``<set>.test.sha256``: test
    questions are never edited (a change is a new set version with a new frozen split)."""
    frozen = path.with_suffix(".test.sha256")
    if frozen.exists() and test_split_digest(raw_items) != frozen.read_text().split()[0]:
        raise FrozenSplitChanged(
            f"the test split of {path.name} is not the frozen one ({frozen.name}): test "
            "questions are never edited; write a new set version instead"
        )


def freeze_test_split(path: Path) -> str:
    """Write the test split's digest beside the set (once, when the split is written)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    digest = test_split_digest(raw.get("items") or raw.get("questions") or [])
    path.with_suffix(".test.sha256").write_text(f"{digest}  test split of {path.name}\n")
    return digest


def load_evalset(directory: Path, name: str) -> EvalSet:
    path = evalset_file(directory, name)
    text = path.read_text(encoding="utf-8")
    check_frozen(path, (yaml.safe_load(text) or {}).get("items") or [])
    return parse_evalset(text, str(path))


def applicable(items: Iterable[EvalItem], docs: Sequence[DocRef]) -> list[ApplicableItem]:
    """Items with at least one relevant document among ``docs``, relevance restricted to them."""
    by_source = {doc.source: doc for doc in docs}
    result: list[ApplicableItem] = []
    for item in items:
        if item.needs_templates:
            relevant = {d.source for d in docs if any(r.matches(d) for r in item.relevant)}
        else:
            relevant = {r.source for r in item.relevant if r.source and r.source in by_source}
        if relevant:
            result.append(ApplicableItem(item, frozenset(relevant)))
    return result


def unmatched_rules(evalset: EvalSet, docs: Sequence[DocRef]) -> list[str]:
    """Rules that match no document (a stale set, or a corpus that lost a document)."""
    return [
        f"{item.id}: {rule.describe()}"
        for item in evalset.items
        for rule in item.relevant
        if not any(rule.matches(doc) for doc in docs)
    ]
