"""Client of the KServe model server (OpenAI-compatible routes and Open Inference Protocol v2)."""

from opsassist.llm.breaker import BreakerState, CircuitBreaker
from opsassist.llm.client import Completion, Delta, KServeClient, client_from_settings
from opsassist.llm.errors import (
    BreakerOpenError,
    ModelError,
    ModelRequestError,
    ModelUnavailableError,
)

__all__ = [
    "BreakerOpenError",
    "BreakerState",
    "CircuitBreaker",
    "Completion",
    "Delta",
    "KServeClient",
    "ModelError",
    "ModelRequestError",
    "ModelUnavailableError",
    "client_from_settings",
]
