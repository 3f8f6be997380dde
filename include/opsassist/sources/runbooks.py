"""Runbook sources: a folder (default) or a Git repository cloned/pulled into the data dir."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from opsassist.documents import Rejected
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
    return sync_git(
        settings.runbooks_git_url,
        settings.runbooks_git_ref,
        settings.runbooks_git_subdir,
        settings.data_dir / "sources" / "runbooks-git",
        "runbooks",
    )


def sync_git(url: str, ref: str, subdir: str, checkout: Path, label: str) -> Path:
    """Clone ``url`` at ``ref`` (shallow) into ``checkout`` or update it; the folder to index."""
    import git

    if (checkout / ".git").is_dir():
        repo = git.Repo(checkout)
        repo.remotes.origin.fetch(ref, depth=1)
        repo.git.checkout("--force", "FETCH_HEAD")
        log.info(f"{label} pulled", extra={"ref": ref, "sha": repo.head.commit.hexsha})
    else:
        checkout.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.clone_from(url, checkout, depth=1, branch=ref)
        log.info(f"{label} cloned", extra={"ref": ref, "sha": repo.head.commit.hexsha})
    return checkout / subdir if subdir else checkout


def list_runbook_files(root: Path) -> list[Path]:
    """Markdown files under ``root`` in a stable order (hidden folders such as .git skipped);
    symlinks that leave ``root`` or loop are left out (see :func:`scan_runbook_files`)."""
    return scan_runbook_files(root)[0]


def scan_runbook_files(root: Path) -> tuple[list[Path], list[Rejected]]:
    """The Markdown files under ``root`` and the symlinks refused, with their reasons.

    A symlink is followed only to a file inside ``root`` (a folder or a Git checkout): one that
    points outside it (``escape.md -> /etc/passwd``), loops, or dangles is refused, so a
    committed symlink can never make the index (and ``/v1/search``) show a file the indexer can
    read elsewhere. Symlinked folders are not walked: their files are reached by their real path
    or not at all.
    """
    real_root = root.resolve()
    files: list[Path] = []
    refused: list[Rejected] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or not name.endswith(".md"):
                continue
            path = here / name
            source = path.relative_to(root).as_posix()
            if path.is_symlink():
                reason = _symlink_problem(path, real_root)
                if reason is not None:
                    refused.append(Rejected(source, reason[0], reason[1]))
                    log.warning(
                        "runbook symlink refused", extra={"file": source, "reason": reason[0]}
                    )
                    continue
            if path.is_file():
                files.append(path)
    return sorted(files), sorted(refused, key=lambda r: r.source)


def _symlink_problem(path: Path, real_root: Path) -> tuple[str, str] | None:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises this on a loop
        return "symlink loop", "the link resolves to itself"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop", "the link resolves to itself"
        return "dangling symlink", f"the link target does not exist ({os.readlink(path)})"
    if not target.is_relative_to(real_root):
        return "symlink outside the source", "the link points outside the runbook folder"
    return None
