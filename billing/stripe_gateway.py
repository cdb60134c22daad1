"""The only module that talks to Stripe (docs/stripe.md).

It knows Stripe's shapes and nothing of settlements' states: billing/invoicing.py decides what to
invoice and records the outcome; this module turns a request into Stripe calls that are safe to
repeat:

- every create carries an idempotency key derived from our ids
  (`tollgate-settlement-<uuid>-invoice`, `...-item-<position>`, `tollgate-host-<id>-customer`),
  so a retry within Stripe's ~24 h key window gets the same objects back;
- every invoice carries `metadata.tollgate_settlement=<uuid>` and every item
  `metadata.tollgate_line=<position>`, and `invoice_send` first lists the customer's invoices for
  that metadata, so a retry days later (keys forgotten, our own commit lost) continues what it
  finds instead of creating a second invoice.

Never call these functions inside a database transaction: a network call there holds row locks
for as long as Stripe takes to answer.

Amounts are integers in minor units of the currency (cents for USD, yen for JPY), as Stripe takes
them; currency codes go to Stripe in lower case.

The SDK itself is imported at the first call that needs it, not with this module: importing it
costs ~100 ms, which every process that imports billing (every `manage.py` command) would pay
otherwise (docs/performance.md, "Start-up").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from licensing.models import Host

if TYPE_CHECKING:
    import stripe

    # The SDK's exceptions under the names callers catch (`except stripe_gateway.StripeError`),
    # set by `__getattr__` below on first use. TRANSIENT_ERRORS: errors after which the same call
    # may simply be made again later (the Celery task retries them). StripeError: any refusal by
    # Stripe; the transient ones are retried, the others fail the payout.
    TRANSIENT_ERRORS: tuple[type[Exception], ...]
    SignatureVerificationError = stripe.SignatureVerificationError
    StripeError = stripe.StripeError

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """`TRANSIENT_ERRORS`, `SignatureVerificationError`, `StripeError`: the SDK's exceptions,
    imported with the SDK on first use (PEP 562), then kept as this module's attributes."""
    if name not in ("TRANSIENT_ERRORS", "SignatureVerificationError", "StripeError"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import stripe

    globals().update(
        TRANSIENT_ERRORS=(stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError),
        SignatureVerificationError=stripe.SignatureVerificationError,
        StripeError=stripe.StripeError,
    )
    return globals()[name]


# Stripe refuses an invoice with more line items than this.
MAX_INVOICE_ITEMS = 250


class StripeNotConfigured(RuntimeError):
    """STRIPE_API_KEY is not set: nothing is sent to Stripe."""


class StripeInvoiceMismatch(RuntimeError):
    """What Stripe holds for a settlement is not what we meant to send (an invoice voided in the
    dashboard, or a draft whose total differs): an operator decides, nothing is sent."""


@dataclass(frozen=True)
class InvoiceLine:
    """One invoice item: `position` is the settlement line's (its idempotency key and metadata)."""

    position: int
    description: str
    amount_minor: int  # minor units of the invoice's currency; negative for a credit line


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    status: str  # draft | open | paid | void | uncollectible
    total_minor: int
    currency: str  # upper case, as Tollgate writes currencies
    hosted_invoice_url: str | None


def is_configured() -> bool:
    return bool(settings.STRIPE_API_KEY)


def client() -> stripe.StripeClient:
    """A client from settings. STRIPE_API_BASE (a local Stripe-compatible server) replaces every
    base address; against it there are no network retries unless STRIPE_MAX_NETWORK_RETRIES says
    so: a retry could hide a server error, and the Celery task retries whole invoicing runs
    anyway."""
    if not settings.STRIPE_API_KEY:
        raise StripeNotConfigured("STRIPE_API_KEY is not set")
    import stripe

    base = settings.STRIPE_API_BASE
    retries = settings.STRIPE_MAX_NETWORK_RETRIES
    if base:
        return stripe.StripeClient(
            settings.STRIPE_API_KEY,
            base_addresses={"api": base, "connect": base, "files": base},
            max_network_retries=retries or 0,
        )
    # Real Stripe: the client's own retries send the same idempotency key again.
    return stripe.StripeClient(
        settings.STRIPE_API_KEY, max_network_retries=2 if retries is None else retries
    )


def _settlement_key(settlement_id: str, what: str) -> str:
    return f"tollgate-settlement-{settlement_id}-{what}"


# --- customers -------------------------------------------------------------------------------


def customer_ensure(*, host: Host) -> str:
    """The host's Stripe customer id, created (and stored on the host) the first time.

    The store is a conditional update (only while the host has none): of two invoicing runs for
    the same host that both created, the first stored id wins and both use it; the idempotency
    key makes the second create return the first's customer anyway within 24 h."""
    if host.stripe_customer_id:
        return host.stripe_customer_id
    params: dict[str, Any] = {
        "name": host.name,
        "metadata": {"tollgate_host": host.slug},
    }
    if host.email:
        params["email"] = host.email
    customer = client().v1.customers.create(
        params,  # type: ignore[arg-type]
        {"idempotency_key": f"tollgate-host-{host.pk}-customer"},
    )
    Host.objects.filter(pk=host.pk, stripe_customer_id="").update(stripe_customer_id=customer.id)
    host.refresh_from_db(fields=["stripe_customer_id"])
    return host.stripe_customer_id


# --- invoices --------------------------------------------------------------------------------


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain JSON data: past this module nothing sees the client's types."""
    data: dict[str, Any] = obj.to_dict()
    return data


def _as_invoice(obj: dict[str, Any]) -> StripeInvoice:
    return StripeInvoice(
        id=obj["id"],
        status=obj["status"],
        total_minor=int(obj["total"]),
        currency=str(obj["currency"]).upper(),
        hosted_invoice_url=obj.get("hosted_invoice_url"),
    )


def invoice_find(*, customer_id: str, settlement_id: str) -> dict[str, Any] | None:
    """The customer's invoice whose metadata names the settlement, or None.

    A list, not Stripe's search: search is eventually consistent (an invoice created a second ago
    may be missing), which is exactly the crash-and-retry case this exists for."""
    invoices = client().v1.invoices.list({"customer": customer_id, "limit": 100})
    found = None
    for item in invoices.auto_paging_iter():
        invoice = _plain(item)
        if (invoice.get("metadata") or {}).get("tollgate_settlement") == settlement_id:
            if found is None or invoice["status"] != "void":
                found = invoice  # a live invoice wins over a voided one
    return found


def _lines_of(invoice_id: str) -> Iterator[dict[str, Any]]:
    lines = client().v1.invoices.line_items.list(invoice_id, {"limit": 100})
    for line in lines.auto_paging_iter():
        yield _plain(line)


def invoice_send(
    *,
    settlement_id: str,
    host: Host,
    currency: str,
    description: str,
    lines: Sequence[InvoiceLine],
    days_until_due: int,
) -> StripeInvoice:
    """Invoice the host for one settlement: draft invoice, its items, finalize, send (email).

    Each step is skipped when Stripe already shows it done, so a call that died halfway is
    finished by the next one: a draft found by metadata gets only its missing items (by
    `tollgate_line`), an open invoice is only sent again, a paid one is returned as is.

    The invoice is created first and each item names it, rather than pending items swept up by
    the next invoice: two settlements of the same host (two licensors) invoiced at the same time
    must not take each other's items."""
    expected = sum(line.amount_minor for line in lines)
    if expected <= 0:
        raise ValueError(f"settlement {settlement_id}: nothing to invoice ({expected})")
    if len(lines) > MAX_INVOICE_ITEMS:
        raise ValueError(f"settlement {settlement_id}: {len(lines)} items, over Stripe's limit")
    customer_id = customer_ensure(host=host)
    api = client()

    invoice = invoice_find(customer_id=customer_id, settlement_id=settlement_id)
    if invoice is None:
        created = api.v1.invoices.create(
            {
                "customer": customer_id,
                "currency": currency.lower(),
                "collection_method": "send_invoice",
                "days_until_due": days_until_due,
                "description": description[:500],
                # Finalized by us once every item is on it, not by Stripe an hour after creation.
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "metadata": {"tollgate_settlement": settlement_id},
            },
            {"idempotency_key": _settlement_key(settlement_id, "invoice")},
        )
        invoice = _plain(created)
        logger.info("stripe: created invoice %s for settlement %s", invoice["id"], settlement_id)
    if invoice["status"] in ("void", "uncollectible"):
        raise StripeInvoiceMismatch(
            f"settlement {settlement_id}: Stripe invoice {invoice['id']} is {invoice['status']}"
        )

    if invoice["status"] == "draft":
        present = {
            (line.get("metadata") or {}).get("tollgate_line") for line in _lines_of(invoice["id"])
        }
        for line in lines:
            if str(line.position) in present:
                continue
            api.v1.invoice_items.create(
                {
                    "customer": customer_id,
                    "invoice": invoice["id"],
                    "currency": currency.lower(),
                    "amount": line.amount_minor,
                    "description": line.description[:500],
                    "metadata": {
                        "tollgate_settlement": settlement_id,
                        "tollgate_line": str(line.position),
                    },
                },
                {"idempotency_key": _settlement_key(settlement_id, f"item-{line.position}")},
            )
        invoice = _plain(api.v1.invoices.retrieve(invoice["id"]))
        if int(invoice["total"]) != expected:
            raise StripeInvoiceMismatch(
                f"settlement {settlement_id}: draft {invoice['id']} totals {invoice['total']} "
                f"{currency} minor units, the settlement {expected}; left as a draft"
            )
        invoice = _plain(
            api.v1.invoices.finalize_invoice(
                invoice["id"],
                {"auto_advance": False},
                {"idempotency_key": _settlement_key(settlement_id, "finalize")},
            )
        )

    if invoice["status"] == "open":
        invoice = _plain(
            api.v1.invoices.send_invoice(
                invoice["id"], None, {"idempotency_key": _settlement_key(settlement_id, "send")}
            )
        )
    return _as_invoice(invoice)


# --- transfers (payouts to connected accounts, billing/payouts.py) ------------------------------


def transfer_find(*, payout_id: str) -> dict[str, Any] | None:
    """The transfer a payout already made, or None: transfers of the payout's transfer_group
    whose metadata names it. A list, not search (eventually consistent), as for invoices."""
    transfers = client().v1.transfers.list({"transfer_group": payout_id, "limit": 100})
    for item in transfers.auto_paging_iter():
        transfer = _plain(item)
        if (transfer.get("metadata") or {}).get("tollgate_payout") == payout_id:
            return transfer
    return None


def transfer_ensure(*, payout_id: str, account: str, amount_minor: int, currency: str) -> str:
    """The id of the payout's transfer of `amount_minor` to the connected `account`: the one a
    crashed attempt made (found by transfer_group and metadata, so a retry days later, past the
    idempotency key's ~24 h, sends nothing twice), else a new one under the key
    `tollgate-payout-<id>-transfer`."""
    found = transfer_find(payout_id=payout_id)
    if found is not None:
        if int(found["amount"]) != amount_minor or found.get("destination") != account:
            raise StripeInvoiceMismatch(
                f"transfer {found['id']} of payout {payout_id} is {found['amount']} to "
                f"{found.get('destination')}, not {amount_minor} to {account}"
            )
        return str(found["id"])
    transfer = client().v1.transfers.create(
        {
            "amount": amount_minor,
            "currency": currency.lower(),
            "destination": account,
            "transfer_group": payout_id,
            "metadata": {"tollgate_payout": payout_id},
        },
        {"idempotency_key": f"tollgate-payout-{payout_id}-transfer"},
    )
    return str(transfer.id)


# --- refunds of a host's payment (billing/refunds.py) -------------------------------------------


def invoice_of_charge(*, charge: dict[str, Any]) -> str | None:
    """The invoice a charge paid, or None. Today's Charge object does not name its invoice: the
    invoice's payments do (`GET /v1/invoice_payments?payment[payment_intent]=pi_...`). A charge
    without a payment intent was not an invoice's payment."""
    payment_intent = charge.get("payment_intent")
    if isinstance(payment_intent, dict):  # an expanded payment intent
        payment_intent = payment_intent.get("id")
    if not payment_intent:
        return None
    payments = client().v1.invoice_payments.list(
        {"payment": {"type": "payment_intent", "payment_intent": str(payment_intent)}}
    )
    for item in payments.auto_paging_iter():
        payment = _plain(item)
        if payment.get("status") == "paid":
            invoice = payment.get("invoice")
            return str(invoice["id"] if isinstance(invoice, dict) else invoice)
    return None


# --- webhooks --------------------------------------------------------------------------------


def webhook_event(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The verified event of a webhook delivery, as plain JSON. Raises
    SignatureVerificationError (bad, missing or older than 5 minutes) or ValueError (a body that
    is not an event)."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise StripeNotConfigured("STRIPE_WEBHOOK_SECRET is not set")
    import stripe

    if not signature:
        raise stripe.SignatureVerificationError("No Stripe-Signature header", signature, payload)
    stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET)
    event: dict[str, Any] = json.loads(payload)
    if not isinstance(event, dict) or "id" not in event:
        raise ValueError("not a Stripe event")
    return event
