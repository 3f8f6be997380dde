"""Postmortem sources: a folder of Markdown incident write-ups (default: the shipped examples) or
a Git repository cloned/pulled into the data dir, like the runbook source."""

from __future__ import annotations

from pathlib import Path

from opsassist.settings import Settings
from opsassist.sources.runbooks import sync_git


def sync_postmortems(settings: Settings, path_override: Path | None = None) -> Path:
    """Return the local folder holding the postmortems, cloning or updating the Git source if
    set."""
    if path_override is not None:
        root = path_override.expanduser().resolve()
    elif settings.postmortems_git_url:
        root = sync_git(
            settings.postmortems_git_url,
            settings.postmortems_git_ref,
            settings.postmortems_git_subdir,
            settings.data_dir / "sources" / "postmortems-git",
            "postmortems",
        )
    else:
        root = settings.postmortems_path
    if not root.is_dir():
        raise FileNotFoundError(f"postmortem folder not found: {root}")
    return root
