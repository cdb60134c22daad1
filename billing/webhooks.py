"""POST /webhooks/stripe (docs/stripe.md): signature verified, each event processed once.

A plain Django view: Stripe authenticates with its signature, not an API key, and posts no CSRF
token. Answers: 200 once the event is processed or recognised as a duplicate (Stripe stops
delivering it), 400 for a bad or missing signature or a body that is not an event, 503 while no
webhook secret is configured; an error while processing is a 500 and Stripe delivers again.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing import stripe_gateway
from billing.invoicing import stripe_event_process
from config.errors import error_body

logger = logging.getLogger(__name__)


@csrf_exempt
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse(
            error_body("method_not_allowed", f'Method "{request.method}" not allowed.'),
            status=405,
        )
    try:
        event = stripe_gateway.webhook_event(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except stripe_gateway.StripeNotConfigured:
        logger.error("stripe webhook received but STRIPE_WEBHOOK_SECRET is not set")
        return JsonResponse(
            error_body("not_configured", "Stripe webhooks are not configured."), status=503
        )
    except stripe_gateway.SignatureVerificationError:
        return JsonResponse(
            error_body("bad_signature", "The Stripe-Signature header does not verify."),
            status=400,
        )
    except ValueError:
        return JsonResponse(error_body("malformed", "The body is not a Stripe event."), status=400)
    obj = (event.get("data") or {}).get("object") or {}
    charge_invoice = None
    refund = event.get("type") == "charge.refunded" and obj.get("object") == "charge"
    if refund and stripe_gateway.is_configured():
        # Which invoice the charge paid is a question to Stripe: asked here, outside the event's
        # transaction. Stripe unreachable is a 500, and Stripe delivers the event again.
        charge_invoice = stripe_gateway.invoice_of_charge(charge=obj)
    outcome = stripe_event_process(event=event, charge_invoice=charge_invoice)
    return JsonResponse({"received": True, "duplicate": outcome is None})
