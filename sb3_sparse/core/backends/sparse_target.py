"""Target rules of the sparse backend for a target layer whose positions differ from its online layer's.

SB3's ``polyak_update`` zips the online and target parameters, so it needs a target tensor
shaped like the online values. :class:`StagedTarget` is that tensor (the target's values at the
online positions ``M``, 0 where the target has none). While neither topology changes, the
target layer is stored at the fixed union ``U`` of ``M`` and its support ``S`` (which can only
lose connections outside ``M``), with explicit zeros outside ``S`` (its ``live`` slots), so a
target update is a few element-wise operations over ``U``, a swap of connections included, and
nothing is re-indexed. A checkpoint stores ``S`` only (see ``SparseLinear.compact_``).

The magnitude rule runs on every target update while a layer is staged, so it has two paths
with the same results, bit for bit: :class:`HostRule` over NumPy views of CPU tensors (each
small torch op costs several times a NumPy one on the CPU, see
:class:`~sb3_sparse.core.topology.TargetSupport`) and :class:`DeviceRule` in torch for other
devices, which reads one packed result back per update, and a few more when connections swap.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..sparse_layer import SparseLinear
from .base import TargetWeight


def find(haystack: torch.Tensor, needles: torch.Tensor) -> torch.Tensor:
    """The slot of each of the ``needles`` in the sorted ``haystack``, which holds them all."""
    return torch.searchsorted(haystack.long(), needles.long())


def _non_finite_newcomer() -> FloatingPointError:
    return FloatingPointError("non-finite target weight at an online-only position")


def _nan_in_support() -> FloatingPointError:
    return FloatingPointError("NaN target weight in the target's support")


class HostRule:
    """The magnitude rule over NumPy views of CPU tensors, as :func:`~sb3_sparse.core.topology.prune_to_count_`.

    Keeps the online-only entries ``N`` as index arrays (their ``M`` slots for the staging
    tensor, their ``U`` slots for the values) and scratch arrays for the scans, so that an
    update allocates nothing of the layer's size.

    :param of_online: the ``U`` slot of each ``M`` slot (increasing).
    :param outside: the ``U`` slots not in ``M``.
    :param newcomers: the ``M`` slots of ``N``.
    :param count: ``|S|``, which the rule keeps.
    :param dtype: the values' dtype.
    """

    def __init__(self, of_online: np.ndarray, outside: np.ndarray, newcomers: np.ndarray, count: int, dtype: np.dtype) -> None:
        self.of_online, self.outside, self.count = of_online, outside, count
        size = of_online.size + outside.size  # |U|
        self.in_online = np.full(size, -1, dtype=np.int64)  # M slot of each U slot, -1 outside M
        self.in_online[of_online] = np.arange(of_online.size)
        self.newcomers, self.newcomer_slots = newcomers, of_online[newcomers]
        self.magnitudes = np.empty(size, dtype=dtype)
        self.above = np.empty(size, dtype=bool)
        self.decayed = np.empty(outside.size, dtype=dtype)
        self.dtype = np.dtype(dtype)
        self._views: tuple[tuple[int, ...], tuple[np.ndarray, ...]] | None = None

    def arrays(self, values: torch.Tensor, staging: torch.Tensor, live: torch.Tensor) -> tuple[np.ndarray, ...]:
        """NumPy views of the tensors (shared memory), kept while the tensors keep their storage
        (``Module.to`` or a loaded checkpoint may give them new storage)."""
        key = (values.data_ptr(), staging.data_ptr(), live.data_ptr())
        if self._views is None or self._views[0] != key:
            self._views = (key, tuple(t.detach().numpy() for t in (values, staging, live)))
        return self._views[1]

    def __call__(self, values: torch.Tensor, staging: torch.Tensor, live: torch.Tensor, tau: float) -> bool:
        """Apply the rule in place (see :meth:`StagedTarget.magnitude`); return whether ``N`` is empty.

        :param values: the target layer's values over ``U``.
        :param staging: the staging tensor (the target's values at ``M``), after the target update.
        :param live: which ``U`` slots are in ``S``.
        :param tau: the target update's coefficient.
        """
        # Each NumPy call costs microseconds here (its data and code are cold after a network
        # update), whatever the layer's size: the common paths make as few as they can.
        v, s, alive = self.arrays(values, staging, live)
        outside = self.outside
        if outside.size:
            decayed = v.take(outside, out=self.decayed)
            decayed *= self.dtype.type(1 - tau)  # the scalar in the values' dtype, as torch's mul_ by a float
            v[outside] = decayed
        v[self.of_online] = s
        newcomers = self.newcomers
        if not newcomers.size:
            return False  # S holds M: the rule only decays, and the target never comes back in sync
        v[self.newcomer_slots] = 0.0  # N is not in the target until it stays
        incoming = np.abs(s[newcomers])
        threshold = np.maximum.reduce(incoming)  # NaN if any is
        if not math.isfinite(threshold):
            raise _non_finite_newcomer()
        if threshold == 0:
            return False  # no online-only connection has reached the target yet
        magnitudes = np.abs(v, out=self.magnitudes)
        above = np.greater(magnitudes, threshold, out=self.above)
        # Off S every value is exactly 0 (N's just set, the rest decayed zeros) and the threshold
        # is above 0, so all of S is above it iff |S| values are. A NaN is not above it, so a NaN
        # in S always takes the swap path, where it is caught among L.
        if np.count_nonzero(above) >= self.count:
            s[newcomers] = 0.0  # L is empty: every newcomer stays out
            return False
        low = np.flatnonzero(np.greater(alive, above, out=above))  # L: in S and not above
        low_magnitudes = magnitudes[low]
        if np.isnan(low_magnitudes).any():
            raise _nan_in_support()
        # Of L and N the |N| smallest go, ascending by magnitude, ties by position (U slots are in
        # position order). Only the |L| largest newcomers (and those tied with the smallest of
        # them) can stay, so only they are ranked with L, as prune_to_count_ does.
        slots, contenders, out = self.newcomer_slots, incoming, None
        if newcomers.size > low.size:
            rank = newcomers.size - low.size
            contends = incoming >= np.partition(incoming, rank)[rank]
            slots, contenders, out = slots[contends], incoming[contends], slots[~contends]
        slots = np.concatenate([low, slots])
        order = np.lexsort((slots, np.concatenate([low_magnitudes, contenders])))
        n_going = slots.size - low.size
        staying, going = slots[order[n_going:]], slots[order[:n_going]]
        if out is not None:
            going = np.concatenate([going, out])
        going.sort()  # N' in position order: the next updates scan it
        alive[going], alive[staying] = False, True
        in_online = self.in_online[staying]
        joined = in_online >= 0  # newcomers that stay, and entries of S in M that already hold their value
        v[staying[joined]] = s[in_online[joined]]
        v[going] = 0.0
        # N' = M \ S': the entries that went and are online; their staged values restart at 0.
        in_online = self.in_online[going]
        left = in_online >= 0
        self.newcomers, self.newcomer_slots = in_online[left], going[left]
        s[self.newcomers] = 0.0
        return not self.newcomers.size


class DeviceRule:
    """The magnitude rule in torch, for tensors on any device (the host path is :class:`HostRule`).

    An update's decay and copy are device-side; the three decisions (a non-finite or zero
    threshold, whether ``L`` is empty, a NaN in ``S``) come back to the host in one read, which
    waits for the device (once per staged layer and target update). An update that swaps
    connections reads two sizes more (``|L|``, and ``|N|`` after the swap).

    :param of_online: the ``U`` slot of each ``M`` slot (increasing).
    :param outside: the ``U`` slots not in ``M``.
    :param newcomers: the ``M`` slots of ``N``.
    :param count: ``|S|``, which the rule keeps.
    """

    def __init__(self, of_online: torch.Tensor, outside: torch.Tensor, newcomers: torch.Tensor, count: int) -> None:
        self.of_online, self.outside, self.count = of_online, outside, count
        self.newcomers, self.newcomer_slots = newcomers, of_online[newcomers]

    @torch.no_grad()
    def __call__(self, values: torch.Tensor, staging: torch.Tensor, live: torch.Tensor, tau: float) -> bool:
        """As :meth:`HostRule.__call__`, on the tensors' device."""
        values, staging = values.detach(), staging.detach()
        # index_select/index_copy_ rather than indexing: this runs on every target update.
        if self.outside.numel():
            values.index_copy_(0, self.outside, values.index_select(0, self.outside).mul_(1 - tau))
        values.index_copy_(0, self.of_online, staging)
        newcomers = self.newcomers
        if not newcomers.numel():
            return False  # S holds M: the rule only decays, and the target never comes back in sync
        values.index_fill_(0, self.newcomer_slots, 0.0)
        incoming = staging.index_select(0, newcomers).abs_()
        threshold = incoming.amax()  # NaN if any is
        magnitudes = values.abs()
        above = magnitudes > threshold
        # As HostRule; the flags are computed whether needed or not, to read them back at once.
        all_above = torch.count_nonzero(above) >= self.count
        nan_in_support = torch.isnan(magnitudes).logical_and_(live).any()
        # In the values' dtype, which holds the threshold exactly and 0/1 (float64 is not on every device).
        flags = torch.stack([threshold, all_above.to(threshold.dtype), nan_in_support.to(threshold.dtype)]).tolist()
        if not math.isfinite(flags[0]):
            raise _non_finite_newcomer()
        if flags[0] == 0:
            return False  # no online-only connection has reached the target yet
        if flags[1]:
            staging.index_fill_(0, newcomers, 0.0)  # L is empty: every newcomer stays out
            return False
        if flags[2]:
            raise _nan_in_support()
        low = torch.nonzero(live & ~above).reshape(-1)
        slots = torch.cat([low, self.newcomer_slots])
        by_slot = torch.argsort(slots)  # U slots are in position order
        slots = slots[by_slot]
        order = torch.sort(torch.cat([magnitudes[low], incoming])[by_slot], stable=True).indices  # equal ones by position
        going, staying = slots[order[: newcomers.numel()]], slots[order[newcomers.numel() :]]
        live[going], live[staying] = False, True
        live_online = live[self.of_online]
        kept = torch.where(live_online, staging, 0.0)
        staging.copy_(kept)
        values[going] = 0.0
        values[self.of_online] = kept
        self.newcomers = torch.nonzero(~live_online).reshape(-1)
        self.newcomer_slots = self.of_online[self.newcomers]
        return not self.newcomers.numel()


class StagedTarget:
    """One target layer out of sync with its online layer, between changes of the online topology.

    :param target: the target layer (its support ``S``); it is laid out over ``U`` here.
    :param online_positions: the online layer's positions ``M``.
    :param host: whether the magnitude rule runs in NumPy (:class:`HostRule`) or torch
        (:class:`DeviceRule`); default: NumPy for float32 and float64 CPU tensors.
    """

    def __init__(self, target: SparseLinear, online_positions: torch.Tensor, host: bool | None = None) -> None:
        target.compact_()
        self.positions = online_positions.clone()
        own_positions, own_values = target.weight_positions, target.values.detach()
        union = torch.unique(torch.cat([own_positions.long(), self.positions.long()]))  # sorted
        values = own_values.new_zeros(union.numel())
        live = torch.zeros(union.numel(), dtype=torch.bool, device=values.device)
        own_slots = find(union, own_positions)
        values[own_slots] = own_values
        live[own_slots] = True
        target.set_topology_(union.to(torch.int32), values)
        target.live = live
        of_online = find(union, self.positions)  # U slot of each M slot
        outside = torch.ones(union.numel(), dtype=torch.bool, device=values.device)
        outside[of_online] = False
        outside = torch.nonzero(outside).reshape(-1)  # U slots not in M: only ever decay
        live_online = live[of_online]  # which M slots are in S
        newcomers = torch.nonzero(~live_online).reshape(-1)  # M slots of N
        self.staging = TargetWeight(values[of_online].clone(), requires_grad=False)
        self.updated = [False]  # raised when a target update reads the staging tensor's .data
        self.staging.__dict__["network_flag"] = self.updated
        count = own_positions.numel()  # |S|
        self.rule: HostRule | DeviceRule
        if host is None:  # NumPy converts neither other devices' tensors nor bfloat16; half is left to torch
            host = values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)
        if host:
            dtype = torch.empty(0, dtype=values.dtype).numpy().dtype
            self.rule = HostRule(of_online.cpu().numpy(), outside.cpu().numpy(), newcomers.cpu().numpy(), count, dtype)
        else:
            self.rule = DeviceRule(of_online, outside, newcomers, count)

    @torch.no_grad()
    def online_mask(self, target: SparseLinear) -> None:
        """``"online_mask"``: the target takes the online positions with the updated values."""
        target.set_topology_(self.positions.clone(), self.staging.detach().clone())

    def magnitude(self, target: SparseLinear, tau: float) -> bool:
        """``"magnitude"``: the masked backend's rule (see :func:`sb3_sparse.core.topology.prune_to_count_`).

        After the update the target's entries outside ``M`` are decayed by ``1 - tau`` (SB3 scales
        every target entry by ``1 - tau`` and adds ``tau`` times an online weight of 0 there); of
        ``S`` and the online-only entries ``N`` the ``|S|`` largest magnitudes stay, equal ones by
        position (the larger position stays); nothing changes while every ``N`` entry is still 0.

        :param target: the staged target layer.
        :param tau: the target update's coefficient.
        :return: whether the target is now in sync with the online layer (this staging is spent).
        :raises FloatingPointError: where the masked rule would meet a non-finite value.
        """
        live = target.live
        assert live is not None
        # The tensors as they are (no detach, no no_grad here, each costs microseconds): the host
        # path works on NumPy views of their memory, the device path detaches them itself.
        if self.rule(target._parameters["values"], self.staging, live, tau):  # type: ignore[arg-type]
            target.compact_()  # S is M again
            return True
        return False
