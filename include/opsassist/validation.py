"""Run the Great Expectations suites in ``expectations/`` against a batch of chunks.

Suites are plain JSON files (one per dataset kind) so they are reviewed like code. Vector checks
(dimension, NaN, unit norm) run on derived columns, because expectations work on scalars.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opsassist.documents import Chunk
from opsassist.logs import get_logger
from opsassist.settings import PROJECT_ROOT

log = get_logger(__name__)


def expectations_dir() -> Path:
    return Path(os.environ.get("OPSASSIST_EXPECTATIONS_DIR", PROJECT_ROOT / "expectations"))


@dataclasses.dataclass(slots=True)
class ValidationReport:
    suite: str
    success: bool
    rows: int
    failures: list[dict[str, Any]]

    def summary(self) -> str:
        if self.success:
            return f"suite {self.suite}: {self.rows} rows passed"
        parts = [
            f"{f['expectation']}({f.get('column', '')}): {f['unexpected']}" for f in self.failures
        ]
        return f"suite {self.suite}: FAILED on {self.rows} rows: " + "; ".join(parts)


def chunk_frame_rows(chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
    rows = []
    for chunk in chunks:
        vector = chunk.vector or []
        nan_count = sum(1 for x in vector if math.isnan(x))
        norm = math.sqrt(sum(x * x for x in vector if not math.isnan(x))) if vector else 0.0
        rows.append(
            {
                "id": chunk.id,
                "source": chunk.source,
                "source_type": chunk.source_type,
                "title": chunk.title,
                "section": chunk.section,
                "text": chunk.text,
                "vector_dim": len(vector),
                "vector_nan_count": nan_count,
                "vector_norm": norm,
            }
        )
    return rows


def validate_chunks(
    chunks: Sequence[Chunk], suite_name: str, parameters: dict[str, Any]
) -> ValidationReport:
    """Validate chunks with the named suite; ``parameters`` fill its ``$PARAMETER`` slots."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    suite_json = json.loads((expectations_dir() / f"{suite_name}.json").read_text())
    context = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):  # cosmetic only: no progress bars in task logs
        context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    suite = context.suites.add(ExpectationSuite(**suite_json))
    asset = context.data_sources.add_pandas("chunks").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}-check", data=batch, suite=suite)
    )
    frame = pd.DataFrame(chunk_frame_rows(chunks))
    if frame.empty:
        frame = pd.DataFrame(columns=list(chunk_frame_rows([Chunk("", "", "", "", "", "", "")])[0]))
    result = definition.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=parameters
    )
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        failures.append(
            {
                "expectation": config.type if config else "?",
                "column": (config.kwargs.get("column", "") if config else ""),
                "unexpected": item.result.get(
                    "unexpected_count", item.result.get("observed_value")
                ),
                "examples": [
                    str(x)[:80] for x in item.result.get("partial_unexpected_list", [])[:3]
                ],
            }
        )
    report = ValidationReport(
        suite=suite_name, success=bool(result.success), rows=len(frame), failures=failures
    )
    (log.info if report.success else log.error)(report.summary())
    return report
