"""The exceptions of billing's workflows, in a module of their own so that every module of the
flow (runs, review, invoicing, tasks) can raise or catch them without importing another.
"""

from __future__ import annotations

from billing.models import Settlement


class SettlementStateError(Exception):
    """The settlement is not in a state that allows the action (e.g. approving a disputed one)."""

    def __init__(self, settlement: Settlement, action: str) -> None:
        super().__init__(f"settlement {settlement.pk} is {settlement.status}: cannot {action} it")
        self.settlement = settlement
        self.action = action


class InvoicingInProgress(SettlementStateError):
    """Another worker holds the settlement's invoicing claim (within INVOICING_LEASE)."""


__all__ = ["InvoicingInProgress", "SettlementStateError"]
