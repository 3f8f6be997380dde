"""Fitting the learned re-ranker (:mod:`opsassist.index.rerank`) on an evaluation set's dev split.

Each dev question gives its candidate documents (the lists hybrid search fuses, computed the
same way) with their features; a relevant document should score above every other candidate of
its question. The weights minimise L2-regularised logistic loss over those pairs (Newton's
method: a dozen features, a few thousand pairs, no intercept since only differences count).

The frozen test split is never used here. :func:`leave_one_folder_out` refits without each
folder's dev questions and ranks that folder's questions with the result, so a weight that only
fits one folder of runbooks shows up as a folder that loses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from opsassist.evaluation.evalset import ApplicableItem
from opsassist.evaluation.metrics import question_scores
from opsassist.evaluation.runner import CHUNK_DEPTH, QueryVector
from opsassist.index.base import FusionConfig, IndexStore, Query, candidate_lists
from opsassist.index.rerank import FEATURES, document_features
from opsassist.settings import Settings

DEFAULT_C = 0.3  # inverse regularisation strength, chosen by leave-one-folder-out on dev


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """One question's candidate documents, their features and which are relevant."""

    item: ApplicableItem
    documents: list[str]
    features: np.ndarray
    relevant: np.ndarray  # bool per document

    @property
    def folder(self) -> str:
        first = sorted(self.item.relevant)[0]
        return first.split("/", 1)[0] if "/" in first else "."


def candidate_groups(
    store: IndexStore,
    version: str,
    items: Sequence[ApplicableItem],
    vectors: dict[str, QueryVector],
    fusion: FusionConfig,
) -> list[Group]:
    groups: list[Group] = []
    for applicable in items:
        item = applicable.item
        query = Query(item.question, vectors[item.id].vector, CHUNK_DEPTH, "hybrid")
        found = candidate_lists(store, version, query, fusion)
        documents, _, matrix = document_features(item.question, found)
        relevant = np.array([d in applicable.relevant for d in documents], dtype=bool)
        groups.append(Group(applicable, documents, matrix, relevant))
    return groups


def _pair_differences(groups: Sequence[Group]) -> np.ndarray:
    blocks = []
    for group in groups:
        good, bad = group.features[group.relevant], group.features[~group.relevant]
        if len(good) and len(bad):
            blocks.append((good[:, None, :] - bad[None, :, :]).reshape(-1, good.shape[1]))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(FEATURES)))


def fit_pairwise(groups: Sequence[Group], c: float = DEFAULT_C, steps: int = 50) -> np.ndarray:
    """Weights minimising 0.5 |w|^2 + c * sum log(1 + exp(-w . (x_relevant - x_other)))."""
    pairs = _pair_differences(groups)
    weights = np.zeros(pairs.shape[1])
    for _ in range(steps):
        margin = pairs @ weights
        wrong = 1.0 / (1.0 + np.exp(margin))  # sigmoid(-margin)
        gradient = weights - c * pairs.T @ wrong
        hessian = np.eye(len(weights)) + c * (pairs.T * (wrong * (1 - wrong))) @ pairs
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return weights


def rankings(groups: Sequence[Group], weights: np.ndarray | None) -> dict[str, list[str]]:
    """Each question's documents, best first (``None``: the fused order)."""
    ranked: dict[str, list[str]] = {}
    for group in groups:
        if weights is None:
            ranked[group.item.item.id] = list(group.documents)
        else:
            order = np.argsort(-(group.features @ weights), kind="stable")
            ranked[group.item.item.id] = [group.documents[i] for i in order]
    return ranked


def leave_one_folder_out(groups: Sequence[Group], c: float = DEFAULT_C) -> dict[str, list[str]]:
    """Every question ranked by weights fitted on the *other* folders' dev questions."""
    dev = [g for g in groups if g.item.item.split == "dev"]
    ranked: dict[str, list[str]] = {}
    for folder in sorted({g.folder for g in groups}):
        weights = fit_pairwise([g for g in dev if g.folder != folder], c)
        ranked |= rankings([g for g in groups if g.folder == folder], weights)
    return ranked


def mean_scores(groups: Sequence[Group], ranked: dict[str, list[str]]) -> dict[str, float]:
    """recall@5 and MRR@10 over ``groups``."""
    if not groups:
        return {"recall_at_5": float("nan"), "mrr_at_10": float("nan")}
    scores = [question_scores(ranked[g.item.item.id], g.item.relevant) for g in groups]
    return {key: float(np.mean([s[key] for s in scores])) for key in ("recall_at_5", "mrr_at_10")}


def weights_payload(
    groups: Sequence[Group], source_type: str, evalset: str, version: str, c: float = DEFAULT_C
) -> dict[str, Any]:
    """A weights file's content: the model fitted on every dev question, with what it was
    trained on and its leave-one-folder-out dev figures beside the fused order's."""
    dev = [g for g in groups if g.item.item.split == "dev"]
    if not dev:
        raise ValueError("no dev question to fit the re-ranker on")
    weights = fit_pairwise(dev, c)
    lofo = leave_one_folder_out(dev, c)
    trained = {
        "evalset": evalset,
        "index_version": version,
        "dev_questions": len(dev),
        "c": c,
        "date": dt.date.today().isoformat(),
        "dev_leave_one_folder_out": mean_scores(dev, lofo),
        "dev_fused_order": mean_scores(dev, rankings(dev, None)),
    }
    return {
        "format": 1,
        "models": {
            source_type: {
                "features": list(FEATURES),
                "weights": [round(float(w), 6) for w in weights],
                "trained": trained,
            }
        },
    }


def train_on_index(
    settings: Settings,
    store: IndexStore,
    version: str,
    set_name: str = "runbooks",
    source_type: str = "runbook",
    c: float = DEFAULT_C,
) -> dict[str, Any]:
    """Fit on ``set_name``'s dev questions against ``version`` (fused as ``settings`` say)."""
    from opsassist.evaluation.evalset import applicable, load_evalset
    from opsassist.evaluation.runner import document_refs, embed_questions
    from opsassist.stores import fusion_config

    evalset = load_evalset(settings.evalsets_dir, set_name)
    items = applicable(evalset.items, document_refs(store, version, evalset.needs_templates))
    items = [a for a in items if a.item.split == "dev"]
    vectors = embed_questions(
        [a.item for a in items], settings.embedding_model, settings.embedding_device
    )
    groups = candidate_groups(store, version, items, vectors, fusion_config(settings))
    return weights_payload(groups, source_type, evalset.label, version, c)
