"""localstripe 1.15.10, run in-process, with exactly what Tollgate's invoicing needs and it lacks.

localstripe is a small Stripe-compatible server (aiohttp). As it ships it cannot create an
invoice without a subscription, finalize or send one, honour idempotency keys, or emit
`invoice.paid` (docs/stripe.md, "Tests"). This module adds those, and only those,
by patching the installed package at import-free install time:

1. `POST /v1/invoices` without `subscription`: a draft invoice with `collection_method`,
   `days_until_due`, `currency`, `auto_advance` and `pending_invoice_items_behavior` (Stripe's
   default today is `exclude`: pending items of the customer stay pending).
2. `POST /v1/invoiceitems` with `invoice=in_...`: the item becomes a line of that draft invoice
   (localstripe only collects pending items when an invoice is created).
3. `POST /v1/invoices/{id}/finalize` (draft → open) and `POST /v1/invoices/{id}/send`.
4. `POST /v1/invoices/{id}/pay` with `paid_out_of_band=true` (what a test uses to play the host
   paying by bank transfer), and the `invoice.paid` event whenever an invoice gets paid (localstripe
   only emits `invoice.payment_succeeded`).
5. Idempotency keys: a POST with an `Idempotency-Key` already seen replays the stored response
   (header `Idempotent-Replayed: true`); the same key with other parameters is a 400
   `idempotency_error`, as on Stripe. Kept for the server's life, not 24 h.
6. A webhook sink at `/_config/tollgate/deliveries` (under `/_config/` because localstripe's auth
   middleware lets that prefix through, as webhook deliveries carry no API key) that keeps each
   signed delivery so a test can replay it into Django.
7. Stripe's shape: every object in a response or an event payload keeps only the fields that the
   installed `stripe` package's typed class for its `object` declares (`shaped`), and events carry
   that package's API version. localstripe speaks the 2017-08-15 API (`date`, `paid`,
   `subscription` on invoices...) and the additions above keep internal state (`days_until_due`,
   `paid_out_of_band`) that today's Invoice object does not have: neither reaches a client, so a
   test cannot come to rely on a field Stripe does not send. tests/stripe/test_localstripe_ext.py
   checks every field of a whole invoicing flow against those declarations on its own.

8. Connect, as small as payouts need (billing/payouts.py): `POST /v1/accounts` (a connected
   account), `POST /v1/transfers` (`amount`, `currency`, `destination`, `transfer_group`,
   `metadata`; an unknown destination is a 400 `resource_missing`, as on Stripe),
   `GET /v1/transfers/{id}`, and `GET /v1/transfers` filtered by `transfer_group` or
   `destination`, and `POST /v1/transfers/{id}/reversals` (a reversal, partial or whole). Transfers
   move no balance: nothing here checks the platform's funds.
9. Refunds of an invoice's payment (localstripe_refunds.py), as small as billing/refunds.py
   needs: the `charge.refunded` event whenever a refund is created (`POST /v1/refunds`, which
   localstripe has, emits none), and `GET /v1/invoice_payments` filtered by
   `payment[payment_intent]` or `invoice` (today's Charge object no longer names its invoice; its
   invoice payment does). An invoice localstripe paid with the customer's card
   (`POST /v1/invoices/{id}/pay`) has one `paid` invoice payment.

And the server runs in-process: its aiohttp app on its own event loop in a background thread,
bound to 127.0.0.1 on a free port, with the store's pickle-file write disabled (it rewrites
/tmp/localstripe.pickle on every write, which is slow and races between test workers). Nothing
here opens a connection beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import json
import re
import socket
import threading
import time
import typing
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import stripe
from aiohttp import web
from stripe._object_classes import OBJECT_CLASSES

with warnings.catch_warnings():
    # localstripe registers plain functions as aiohttp handlers, which aiohttp 3.x deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    import localstripe
    from localstripe import resources as R
    from localstripe import server, webhooks
    from localstripe.errors import UserError

from tests.stripe.localstripe_refunds import install as refunds_install
from tests.stripe.localstripe_refunds import invoice_payment_list

PINNED_VERSION = "1.15.10"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as localstripe sent it: the raw body and its Stripe-Signature."""

    body: bytes
    signature: str

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


_installed = False
_idempotent: dict[str, tuple[str, int, bytes]] = {}  # key -> (request fingerprint, status, body)
deliveries: list[Delivery] = []


# --- 1. invoices without a subscription --------------------------------------------------------

_original_invoice_create = R.Invoice._api_create


def _invoice_create(
    customer: str | None = None,
    subscription: str | None = None,
    collection_method: str = "charge_automatically",
    days_until_due: Any = None,
    currency: str | None = None,
    auto_advance: Any = None,
    pending_invoice_items_behavior: str | None = None,
    metadata: dict[str, str] | None = None,
    description: str | None = None,
    **rest: Any,
) -> Any:
    if subscription is not None:
        return _original_invoice_create(
            customer=customer,
            subscription=subscription,
            description=description,
            metadata=metadata,
            pending_invoice_items_behavior=pending_invoice_items_behavior,
            **rest,
        )
    if rest:
        raise UserError(400, "Unexpected " + ", ".join(rest))
    days = R.try_convert_to_int(days_until_due)
    if collection_method not in ("charge_automatically", "send_invoice"):
        raise UserError(400, "Bad collection_method")
    if collection_method == "send_invoice" and not (isinstance(days, int) and days > 0):
        raise UserError(400, "send_invoice needs days_until_due")
    if pending_invoice_items_behavior not in (None, "include", "exclude"):
        raise UserError(400, "Bad pending_invoice_items_behavior")
    # simulation=True: the constructor lists the customer's pending items without taking them.
    invoice = R.Invoice(
        customer=customer, metadata=metadata, description=description, simulation=True
    )
    if pending_invoice_items_behavior == "include":
        for line in invoice.lines._list:
            R.InvoiceItem._api_retrieve(line.invoice_item).invoice = invoice.id
    else:
        invoice.lines._list = []
    invoice.currency = (currency or invoice.currency).lower()
    invoice.collection_method = collection_method
    invoice.days_until_due = days
    invoice.due_date = invoice.created + days * 86400 if days else None
    invoice.auto_advance = R.try_convert_to_bool(auto_advance) is not False
    invoice.paid_out_of_band = False
    R.schedule_webhook(R.Event("invoice.created", invoice))
    return invoice


# --- 2. items added to a given draft invoice ----------------------------------------------------

_original_item_create = R.InvoiceItem._api_create


def _item_create(**data: Any) -> Any:
    invoice = R.Invoice._api_retrieve(data["invoice"]) if data.get("invoice") else None
    if invoice is not None:
        if invoice.status != "draft":
            raise UserError(400, "Items can only be added to a draft invoice")
        if str(data.get("currency", "")).lower() != invoice.currency:
            raise UserError(400, "The item's currency differs from the invoice's")
    item = _original_item_create(**data)
    if invoice is not None:
        invoice.lines._list.append(R.InvoiceLineItem(item))
    return item


# --- 3. finalize and send -----------------------------------------------------------------------


def _finalize(id: str, auto_advance: Any = None, **rest: Any) -> Any:
    invoice = R.Invoice._api_retrieve(id)
    if rest:
        raise UserError(400, "Unexpected " + ", ".join(rest))
    if invoice.status != "draft":
        raise UserError(400, f"Invoice {id} is {invoice.status}, not a draft")
    invoice._finalize()
    R.schedule_webhook(R.Event("invoice.finalized", invoice))
    return invoice


def _send(id: str, **rest: Any) -> Any:
    invoice = R.Invoice._api_retrieve(id)
    if rest:
        raise UserError(400, "Unexpected " + ", ".join(rest))
    if getattr(invoice, "collection_method", None) != "send_invoice":
        raise UserError(400, "Only send_invoice invoices can be sent")
    if invoice.status != "open":
        raise UserError(400, f"Invoice {id} is {invoice.status}: only open invoices are sent")
    R.schedule_webhook(R.Event("invoice.sent", invoice))
    return invoice


# --- 4. paid out of band, and invoice.paid ------------------------------------------------------

_original_status = R.Invoice.status
_original_on_payment_success = R.Invoice._on_payment_success


def _status(self: Any) -> str:
    if getattr(self, "paid_out_of_band", False) and not self._voided:
        return "paid"
    return _original_status.fget(self)  # type: ignore[no-any-return]


def _on_payment_success(self: Any) -> None:
    _original_on_payment_success(self)
    R.schedule_webhook(R.Event("invoice.paid", self))


async def _pay_out_of_band(request: web.Request, data: dict[str, Any]) -> web.StreamResponse:
    invoice = R.Invoice._api_retrieve(request.match_info["id"])
    if invoice.status != "open":
        raise UserError(400, f"Invoice {invoice.id} is {invoice.status}, not open")
    invoice.paid_out_of_band = True
    invoice._on_payment_success()
    return server.json_response(invoice._export())


# --- 8. Connect accounts and transfers ---------------------------------------------------------

_accounts: dict[str, dict[str, Any]] = {}
_transfers: dict[str, dict[str, Any]] = {}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:16]}"


def _account_create(request: web.Request, data: dict[str, Any]) -> web.StreamResponse:
    account = {
        "id": _new_id("acct"),
        "object": "account",
        "type": data.get("type", "express"),
        "country": data.get("country", "US"),
        "email": data.get("email"),
        "created": int(time.time()),
        "metadata": data.get("metadata") or {},
        "charges_enabled": True,
        "payouts_enabled": True,
    }
    _accounts[account["id"]] = account
    return server.json_response(account)


def _transfer_create(request: web.Request, data: dict[str, Any]) -> web.StreamResponse:
    unknown = set(data) - {
        "amount",
        "currency",
        "destination",
        "transfer_group",
        "metadata",
        "description",
    }
    if unknown:
        raise UserError(400, "Unexpected " + ", ".join(sorted(unknown)))
    amount = R.try_convert_to_int(data.get("amount"))
    if not isinstance(amount, int) or amount <= 0:
        raise UserError(400, "amount must be a positive integer")
    destination = data.get("destination")
    if destination not in _accounts:
        return server.json_response(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "destination",
                    "message": f"No such destination: '{destination}'",
                }
            },
            status=400,
        )
    transfer_id = _new_id("tr")
    transfer = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": None,
        "created": int(time.time()),
        "currency": str(data.get("currency", "")).lower(),
        "description": data.get("description"),
        "destination": destination,
        "livemode": False,
        "metadata": data.get("metadata") or {},
        "reversals": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/transfers/{transfer_id}/reversals",
        },
        "reversed": False,
        "source_transaction": None,
        "transfer_group": data.get("transfer_group"),
    }
    _transfers[transfer_id] = transfer
    return server.json_response(transfer)


def _transfer_list(request: web.Request) -> web.StreamResponse:
    wanted = {k: request.query[k] for k in ("transfer_group", "destination") if k in request.query}
    found = [
        t for t in reversed(_transfers.values()) if all(t.get(k) == v for k, v in wanted.items())
    ]
    return server.json_response(
        {"object": "list", "data": found, "has_more": False, "url": "/v1/transfers"}
    )


def _transfer_reverse(transfer_id: str, data: dict[str, Any]) -> web.StreamResponse:
    transfer = _transfers[transfer_id]
    left = transfer["amount"] - transfer["amount_reversed"]
    amount = R.try_convert_to_int(data.get("amount", left))
    if not isinstance(amount, int) or not 0 < amount <= left:
        raise UserError(400, "amount must be positive and at most what is left of the transfer")
    reversal = {
        "id": _new_id("trr"),
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": None,
        "created": int(time.time()),
        "currency": transfer["currency"],
        "metadata": data.get("metadata") or {},
        "transfer": transfer_id,
    }
    transfer["amount_reversed"] += amount
    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
    transfer["reversals"]["data"].append(reversal)
    return server.json_response(reversal)


async def _connect(request: web.Request) -> web.StreamResponse | None:
    path = request.path
    reverse = re.match(r"^/v1/transfers/(?P<id>\w+)/reversals$", path)
    if request.method == "POST" and reverse and reverse["id"] in _transfers:
        return _transfer_reverse(reverse["id"], await server.get_post_data(request) or {})
    if request.method == "POST" and path in ("/v1/accounts", "/v1/transfers"):
        data = await server.get_post_data(request) or {}
        create = _account_create if path == "/v1/accounts" else _transfer_create
        return create(request, data)
    if request.method == "GET" and path == "/v1/transfers":
        return _transfer_list(request)
    one = re.match(r"^/v1/(?P<kind>transfers|accounts)/(?P<id>\w+)$", path)
    if request.method == "GET" and one:
        store = _transfers if one["kind"] == "transfers" else _accounts
        if one["id"] not in store:
            return server.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": f"No such {one['kind'][:-1]}: '{one['id']}'",
                    }
                },
                status=404,
            )
        return server.json_response(store[one["id"]])
    return None


# --- 7. Stripe's shape ----------------------------------------------------------------------


@functools.cache
def _declared(cls: type) -> dict[str, Any]:
    """The fields a stripe-python class declares (its annotations, with its bases')."""
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        fields.update(vars(klass).get("__annotations__", {}))
    fields.pop("OBJECT_NAME", None)
    return fields


def _object_class(name: str) -> type | None:
    found = OBJECT_CLASSES.get(name)
    return getattr(importlib.import_module(found[0]), found[1]) if found else None


def _typed(annotation: Any) -> type | None:
    """The typed stripe-python class inside a field's annotation (e.g. Invoice.StatusTransitions
    in `Optional[StatusTransitions]`), None for scalars and free-form objects like metadata."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = getattr(stripe, annotation.__forward_arg__, None)
    candidates = [annotation, typing.get_origin(annotation)]
    for candidate in candidates:
        if (
            isinstance(candidate, type)
            and issubclass(candidate, stripe.StripeObject)
            and not candidate.__name__.startswith("Untyped")
        ):
            return candidate
    for arg in typing.get_args(annotation):
        found = _typed(arg)
        if found is not None:
            return found
    return None


def shaped(value: Any, cls: type | None = None) -> Any:
    """`value` with every field its stripe-python class does not declare left out. An object
    names its class by `object`; a nested structure without one (status_transitions) takes the
    class its parent's field declares."""
    if isinstance(value, list):
        return [shaped(item, cls) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("object")
    if isinstance(kind, str):
        cls = _object_class(kind)
    if cls is None:
        return {key: shaped(item) for key, item in value.items()}
    fields = _declared(cls)
    return {
        key: shaped(item, _typed(fields[key]) if key in fields else None)
        for key, item in value.items()
        if key in fields or (key == "object" and isinstance(item, str))
    }


_original_event_export = R.Event._export


def _event_export(self: Any, expand: Any = None) -> Any:
    exported = _original_event_export(self, expand)
    exported["api_version"] = stripe.api_version
    return shaped(exported)


async def _shaped_response(response: web.StreamResponse) -> web.StreamResponse:
    if not (isinstance(response, web.Response) and response.content_type == "application/json"):
        return response
    body = json.loads(bytes(response.body))  # type: ignore[arg-type]
    return server.json_response(shaped(body), status=response.status)


# --- 5. idempotency keys, 6. the webhook sink, and the dispatch of the added routes -----------

_ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
    ("POST", re.compile(r"^/v1/invoices/(?P<id>[\w]+)/finalize$"), _finalize),
    ("POST", re.compile(r"^/v1/invoices/(?P<id>[\w]+)/send$"), _send),
]


@web.middleware
async def _extension_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST" and request.path == "/_config/tollgate/deliveries":
        deliveries.append(
            Delivery(body=await request.read(), signature=request.headers["Stripe-Signature"])
        )
        return web.Response(text="ok")
    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    fingerprint = ""
    if key is not None:
        fingerprint = hashlib.sha256(
            request.path.encode() + b"\0" + await request.read()
        ).hexdigest()
        stored = _idempotent.get(key)
        if stored is not None:
            if stored[0] != fingerprint:
                message = (
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with."
                )
                return server.json_response(
                    {"error": {"type": "idempotency_error", "message": message}}, status=400
                )
            return web.Response(
                body=stored[2],
                status=stored[1],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
    response = await _shaped_response(await _dispatch(request, handler))
    if key is not None and 200 <= response.status < 300 and isinstance(response, web.Response):
        _idempotent[key] = (fingerprint, response.status, bytes(response.body))  # type: ignore[arg-type]
    return response


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    connect = await _connect(request)
    if connect is not None:
        return connect
    if request.method == "GET" and request.path == "/v1/invoice_payments":
        return invoice_payment_list(request)
    for method, pattern, func in _ROUTES:
        match = pattern.match(request.path)
        if request.method == method and match:
            data = await server.get_post_data(request) or {}
            return server.json_response(func(**match.groupdict(), **data)._export())
    pay = re.match(r"^/v1/invoices/(?P<id>\w+)/pay$", request.path)
    if request.method == "POST" and pay:
        data = await server.get_post_data(request) or {}
        if R.try_convert_to_bool(data.get("paid_out_of_band")) is True:
            return await _pay_out_of_band(request, data)
    return await handler(request)


def install() -> None:
    """Patch localstripe once per process; must run before its app starts (aiohttp freezes the
    middleware list then)."""
    global _installed
    if _installed:
        return
    if localstripe.__version__ != PINNED_VERSION:
        raise RuntimeError(
            f"localstripe {localstripe.__version__} is installed; this extension patches "
            f"{PINNED_VERSION}'s internals and must be checked against any other version"
        )
    # The store would rewrite /tmp/localstripe.pickle on every write; keep it in memory only.
    R.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
    R.Invoice._api_create = staticmethod(_invoice_create)  # type: ignore[assignment]
    R.InvoiceItem._api_create = staticmethod(_item_create)  # type: ignore[assignment]
    R.Invoice.status = property(_status)  # type: ignore[assignment,method-assign]
    R.Invoice._on_payment_success = _on_payment_success  # type: ignore[method-assign]
    R.Event._export = _event_export  # type: ignore[method-assign]
    refunds_install()
    server.app.middlewares.append(_extension_middleware)
    _installed = True


def reset() -> None:
    """Forget every object, key, webhook and delivery: each test starts from an empty Stripe."""
    R.store.clear()
    _idempotent.clear()
    _accounts.clear()
    _transfers.clear()
    webhooks._webhooks.clear()
    deliveries.clear()


class LocalStripe:
    """The patched localstripe app served on 127.0.0.1:<free port> from a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="localstripe", daemon=True
        )
        self.runner: web.AppRunner | None = None
        self.base = ""

    def start(self) -> LocalStripe:
        install()
        self.thread.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def serve() -> None:
            self.runner = web.AppRunner(server.app, access_log=None)
            await self.runner.setup()
            await web.SockSite(self.runner, sock).start()

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(timeout=10)
        self.base = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def capture_webhooks(self, *, secret: str) -> None:
        """Sign every event with `secret` and keep the deliveries in `deliveries`."""
        webhooks.register_webhook(
            "tollgate", f"{self.base}/_config/tollgate/deliveries", secret, None
        )

    def wait_for_delivery(
        self, event_type: str, *, object_id: str, timeout: float = 5.0
    ) -> Delivery:
        """The first delivery of `event_type` about `object_id` (localstripe waits 1 s first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery in list(deliveries):
                event = delivery.event
                if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
                    return delivery
            time.sleep(0.05)
        raise AssertionError(f"no {event_type} delivery for {object_id} within {timeout} s")
