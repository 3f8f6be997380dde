"""Runbook sources: a folder (default) or a Git repository cloned/pulled into the data dir."""

from __future__ import annotations

from pathlib import Path

from opsassist.logs import get_logger
from opsassist.settings import Settings

log = get_logger(__name__)


def sync_runbooks(settings: Settings, path_override: Path | None = None) -> Path:
    """Return the local folder holding the runbooks, cloning or updating the Git source if set."""
    if path_override is not None:
        root = path_override.expanduser().resolve()
    elif settings.runbooks_git_url:
        root = _sync_git(settings)
    else:
        root = settings.runbooks_path
    if not root.is_dir():
        raise FileNotFoundError(f"runbook folder not found: {root}")
    return root


def _sync_git(settings: Settings) -> Path:
    import git

    checkout = settings.data_dir / "sources" / "runbooks-git"
    if (checkout / ".git").is_dir():
        repo = git.Repo(checkout)
        repo.remotes.origin.fetch(settings.runbooks_git_ref, depth=1)
        repo.git.checkout("--force", "FETCH_HEAD")
        log.info(
            "runbooks pulled",
            extra={"ref": settings.runbooks_git_ref, "sha": repo.head.commit.hexsha},
        )
    else:
        checkout.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.clone_from(
            settings.runbooks_git_url, checkout, depth=1, branch=settings.runbooks_git_ref
        )
        log.info(
            "runbooks cloned",
            extra={"ref": settings.runbooks_git_ref, "sha": repo.head.commit.hexsha},
        )
    return checkout / settings.runbooks_git_subdir if settings.runbooks_git_subdir else checkout


def list_runbook_files(root: Path) -> list[Path]:
    """Markdown files under ``root`` in a stable order (hidden folders such as .git skipped)."""
    return sorted(
        p
        for p in root.rglob("*.md")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
