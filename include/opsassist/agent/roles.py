"""Who is asking: API keys map to a user and a role (viewer < operator < admin)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal

Role = Literal["viewer", "operator", "admin"]
RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: Role

    def at_least(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


ANONYMOUS = Principal("anonymous", "viewer")


def parse_key_entry(entry: str, default_role: Role) -> tuple[str, Principal]:
    """``key``, ``key:role`` or ``key:role:user`` -> (key, principal). Without a user name the
    user is ``key-<sha256 prefix>``: the key itself is never shown or audited."""
    key, _, rest = entry.strip().partition(":")
    role_text, _, user = rest.partition(":")
    role = (role_text.strip() or default_role).lower()
    if role not in RANK:
        raise ValueError(f"unknown role {role!r} in OPSASSIST_API_KEYS (viewer, operator, admin)")
    name = user.strip() or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return key.strip(), Principal(name, role)  # type: ignore[arg-type]
