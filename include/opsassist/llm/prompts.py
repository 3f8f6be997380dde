"""Prompt templates shipped in ``opsassist/prompts`` (``string.Template``: ``$name`` fields).

Templates are data, not code, so they can be reviewed and tuned without touching the pipeline;
``$`` placeholders (not ``str.format``) keep the braces of YAML and JSON in runbooks harmless.
"""

from __future__ import annotations

import string
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=16)
def load_prompt(name: str) -> string.Template:
    """The template ``prompts/<name>.txt`` (cached per process)."""
    path = resources.files("opsassist").joinpath("prompts", f"{name}.txt")
    return string.Template(path.read_text(encoding="utf-8"))


def render_prompt(name: str, **values: str) -> str:
    """Fill a template; every placeholder must be given (a missing one raises ``KeyError``)."""
    return load_prompt(name).substitute(values).strip()
