"""Bookkeeping of the unified KV cache: sequence slots and the cell budget they reserve."""

from __future__ import annotations


class KVCache:
    """Hands out llama.cpp sequence ids and tracks the KV cells each running one may use.

    A request reserves `prompt + max_tokens` cells when admitted, so a running sequence can
    never run out of KV cells mid-stream; the reservation is returned when it finishes.
    """

    def __init__(self, n_cells: int, n_slots: int) -> None:
        assert n_cells > 0 and n_slots > 0
        self.n_cells = n_cells
        self._free_slots = list(range(n_slots - 1, -1, -1))
        self._reserved: dict[int, int] = {}

    @property
    def cells_reserved(self) -> int:
        return sum(self._reserved.values())

    @property
    def cells_free(self) -> int:
        return self.n_cells - self.cells_reserved

    @property
    def slots_free(self) -> int:
        return len(self._free_slots)

    def can_admit(self, cells: int) -> bool:
        return bool(self._free_slots) and cells <= self.cells_free

    def acquire(self, cells: int) -> int:
        """Reserve `cells` and return a free sequence id."""
        assert self.can_admit(cells), "caller checks can_admit first"
        seq_id = self._free_slots.pop()
        self._reserved[seq_id] = cells
        return seq_id

    def release(self, seq_id: int) -> None:
        assert seq_id in self._reserved, f"sequence {seq_id} is not held"
        del self._reserved[seq_id]
        self._free_slots.append(seq_id)
