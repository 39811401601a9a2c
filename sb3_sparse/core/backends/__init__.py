"""Layer representations behind one interface (:class:`Backend`); ``masked`` is dense storage plus masks."""

from .base import Backend, NonFiniteError, TargetWeight
from .masked import MaskedBackend

BACKENDS: dict[str, type[Backend]] = {"masked": MaskedBackend}

__all__ = ["BACKENDS", "Backend", "MaskedBackend", "NonFiniteError", "TargetWeight"]
