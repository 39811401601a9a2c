"""Target rules of the sparse backend for a target layer whose positions differ from its online layer's.

SB3's ``polyak_update`` zips the online and target parameters, so it needs a target tensor
shaped like the online values. :class:`StagedTarget` is that tensor (the target's values at the
online positions ``M``, 0 where the target has none). While neither topology changes, the
target layer is stored at the fixed union ``U`` of ``M`` and its support ``S`` (which can only
lose connections outside ``M``), with explicit zeros outside ``S`` (its ``live`` slots), so a
target update is a few element-wise operations over ``U``, a swap of connections included, and
nothing is re-indexed. A checkpoint stores ``S`` only (see ``SparseLinear.compact_``).
"""

from __future__ import annotations

import torch

from ..sparse_layer import SparseLinear
from .base import TargetWeight


def find(haystack: torch.Tensor, needles: torch.Tensor) -> torch.Tensor:
    """The slot of each of the ``needles`` in the sorted ``haystack``, which holds them all."""
    return torch.searchsorted(haystack.long(), needles.long())


class StagedTarget:
    """One target layer out of sync with its online layer, between changes of the online topology.

    :param target: the target layer (its support ``S``); it is laid out over ``U`` here.
    :param online_positions: the online layer's positions ``M``.
    """

    def __init__(self, target: SparseLinear, online_positions: torch.Tensor) -> None:
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
        self.of_online = find(union, self.positions)  # U slot of each M slot
        outside = torch.ones(union.numel(), dtype=torch.bool, device=values.device)
        outside[self.of_online] = False
        self.outside = torch.nonzero(outside).reshape(-1)  # U slots not in M: only ever decay
        self.live_online = live[self.of_online]  # which M slots are in S
        self.newcomers_online = ~self.live_online  # N
        self.staging = TargetWeight(values[self.of_online].clone(), requires_grad=False)
        self.updated = [False]  # raised when a target update reads the staging tensor's .data
        self.staging.__dict__["network_flag"] = self.updated

    @torch.no_grad()
    def online_mask(self, target: SparseLinear) -> None:
        """``"online_mask"``: the target takes the online positions with the updated values."""
        target.set_topology_(self.positions.clone(), self.staging.detach().clone())

    @torch.no_grad()
    def magnitude(self, target: SparseLinear, tau: float) -> bool:
        """``"magnitude"``: the masked backend's rule (see :func:`sb3_sparse.core.topology.prune_to_count_`).

        After the update the target's entries outside ``M`` are decayed by ``1 - tau`` (SB3 scales
        every target entry by ``1 - tau`` and adds ``tau`` times an online weight of 0 there); of
        ``S`` and the online-only entries ``N`` the ``|S|`` largest magnitudes stay, equal ones by
        position (the larger position stays); nothing changes while every ``N`` entry is still 0.

        :return: whether the target is now in sync with the online layer (this staging is spent).
        :raises FloatingPointError: where the masked rule would meet a non-finite value.
        """
        values, staging, live = target.values.detach(), self.staging.detach(), target.live
        assert live is not None
        # index_select/index_copy_ rather than indexing: this runs on every target update.
        if self.outside.numel():
            values.index_copy_(0, self.outside, values.index_select(0, self.outside).mul_(1 - tau))
        live_online = self.live_online
        values.index_copy_(0, self.of_online, torch.where(live_online, staging, 0.0))
        incoming = torch.where(live_online, 0.0, staging.abs())
        threshold = float(incoming.max()) if incoming.numel() else 0.0
        if threshold != threshold or threshold == float("inf"):
            raise FloatingPointError("non-finite target weight at an online-only position")
        if threshold == 0:
            return False  # no online-only connection has reached the target yet
        # Only the entries of S at or below the threshold (L) compete with N; a NaN fails the test.
        if float(torch.where(live, values.abs(), float("inf")).amin()) > threshold:
            staging.masked_fill_(self.newcomers_online, 0.0)  # L is empty: every newcomer stays out
            return False
        low = torch.nonzero(live & ~(values.abs() > threshold)).reshape(-1)
        if bool(torch.isnan(values[low]).any()):
            raise FloatingPointError("NaN target weight in the target's support")
        newcomers = torch.nonzero(self.newcomers_online).reshape(-1)
        slots = torch.cat([low, self.of_online[newcomers]])
        magnitudes = torch.cat([values[low].abs(), incoming[newcomers]])
        by_slot = torch.argsort(slots)  # U slots are in position order
        slots, magnitudes = slots[by_slot], magnitudes[by_slot]
        order = torch.sort(magnitudes, stable=True).indices  # ascending; equal ones by position
        going, staying = slots[order[: newcomers.numel()]], slots[order[newcomers.numel() :]]
        live[going], live[staying] = False, True
        self.live_online = live_online = live[self.of_online]
        self.newcomers_online = ~live_online
        kept = torch.where(live_online, staging, 0.0)
        staging.copy_(kept)
        values[going] = 0.0
        values[self.of_online] = kept
        if bool(live_online.all()):  # S is M again
            target.compact_()
            return True
        return False
