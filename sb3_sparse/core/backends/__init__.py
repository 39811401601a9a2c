"""Layer representations behind one interface (:class:`Backend`): ``masked`` is dense storage
plus masks, ``sparse`` stores the active connections only."""

from .base import Backend, NonFiniteError, TargetWeight
from .masked import MaskedBackend
from .sparse import SparseBackend

BACKENDS: dict[str, type[Backend]] = {"masked": MaskedBackend, "sparse": SparseBackend}

__all__ = ["BACKENDS", "Backend", "MaskedBackend", "NonFiniteError", "SparseBackend", "TargetWeight"]
