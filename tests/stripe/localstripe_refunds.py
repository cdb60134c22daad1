"""Section 9 of localstripe_ext.py (its docstring): refunds of an invoice's payment. The
`charge.refunded` event whenever a refund is created (localstripe has `POST /v1/refunds` and
emits no event), and `GET /v1/invoice_payments` filtered by `payment[payment_intent]` or
`invoice`, shaped like Stripe's InvoicePayment. Installed by localstripe_ext.install()."""

from __future__ import annotations

import warnings
from typing import Any

from aiohttp import web

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources as R
    from localstripe import server

_original_refund_create = R.Refund._api_create


def _refund_create(**data: Any) -> Any:
    refund = _original_refund_create(**data)
    R.schedule_webhook(R.Event("charge.refunded", R.Charge._api_retrieve(refund.charge)))
    return refund


def _invoice_payment(invoice: Any, payment_intent: Any) -> dict[str, Any]:
    paid = payment_intent.status == "succeeded"
    return {
        "id": "inpay_" + invoice.id[len("in_") :],
        "object": "invoice_payment",
        "amount_paid": invoice.total if paid else None,
        "amount_requested": invoice.total,
        "created": invoice.created,
        "currency": invoice.currency,
        "invoice": invoice.id,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent.id},
        "status": "paid" if paid else "open",
        "status_transitions": {
            "canceled_at": None,
            "paid_at": invoice.status_transitions.get("paid_at"),
        },
    }


def invoice_payment_list(request: web.Request) -> web.StreamResponse:
    wanted_pi = request.query.get("payment[payment_intent]")
    wanted_invoice = request.query.get("invoice")
    found = []
    for key, obj in list(R.store.items()):
        if not key.startswith("invoice:") or not getattr(obj, "payment_intent", None):
            continue
        payment_intent = R.PaymentIntent._api_retrieve(obj.payment_intent)
        if wanted_pi not in (None, payment_intent.id) or wanted_invoice not in (None, obj.id):
            continue
        found.append(_invoice_payment(obj, payment_intent))
    return server.json_response(
        {"object": "list", "data": found, "has_more": False, "url": "/v1/invoice_payments"}
    )


def install() -> None:
    R.Refund._api_create = staticmethod(_refund_create)  # type: ignore[assignment]
