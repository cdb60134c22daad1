"""The clients hosts already run, unmodified, pointed at a live Tollgate by configuration alone:
LiteLLM's built-in `openmeter` callback and the OpenMeter Python SDK. Nothing leaves 127.0.0.1
(a guard refuses any other connection and the test fails if one was tried)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections

from licensing.models import Host
from licensing.services import api_key_create
from usage.models import UsageRecord

# LiteLLM fetches its model price map from the internet at import unless told to use the copy it
# ships; set before the (lazy) import below. docs/integrations.md says the same to hosts.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LOCAL = {"127.0.0.1", "::1", "localhost"}

pytestmark = pytest.mark.slow  # a live server and LiteLLM's import: a few seconds each


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuses connections and name lookups beyond this machine; yields what was tried."""
    tried: list[Any] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in LOCAL:
            tried.append(address)
            raise OSError(f"test refuses network access to {address}")
        return connect(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOCAL and host is not None:
            tried.append(host)
            raise socket.gaierror(f"test refuses to resolve {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield tried
    assert tried == [], f"a client reached beyond 127.0.0.1: {tried}"


@pytest.fixture(autouse=True)
def _no_kept_db_connections() -> Iterator[None]:
    """LiteLLM keeps its HTTP connection to the live server open, and with it the server
    thread and that thread's database session (DB_CONN_MAX_AGE), which would then block the
    test database's drop. Sessions opened meanwhile close at the end of each request."""
    conn_settings = connections.settings["default"]
    kept = conn_settings["CONN_MAX_AGE"]
    conn_settings["CONN_MAX_AGE"] = 0
    yield
    conn_settings["CONN_MAX_AGE"] = kept


@pytest.fixture
def host_key(host: Host, catalog: Any) -> str:
    host.default_customer_category = "commercial"
    host.save()
    return api_key_create(host=host).key


def wait_for(count: int, timeout: float = 15.0) -> list[UsageRecord]:
    """LiteLLM logs success from a background thread: poll until `count` records are stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = list(UsageRecord.objects.order_by("id"))
        if len(records) >= count:
            return records
        time.sleep(0.1)
    raise AssertionError(f"expected {count} records, found {UsageRecord.objects.count()}")


@pytest.fixture
def litellm(
    live_server: Any, host_key: str, no_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """LiteLLM with its `openmeter` callback pointed at the live server, as a host configures
    it: OPENMETER_API_ENDPOINT (the base URL; the callback appends /api/v1/events) and
    OPENMETER_API_KEY."""
    import litellm

    monkeypatch.setenv("OPENMETER_API_ENDPOINT", live_server.url)
    monkeypatch.setenv("OPENMETER_API_KEY", host_key)
    monkeypatch.setattr(litellm, "callbacks", ["openmeter"])
    yield litellm


def test_litellm_completions_become_usage_records(litellm: Any) -> None:
    # given LiteLLM serving MiniMax through an OpenAI-compatible backend, with prices that make
    # its cost exact in 6 places (10 prompt tokens x 0.001 + 20 completion tokens x 0.002)
    def complete(user: str) -> Any:
        return litellm.completion(
            model="openai/MiniMaxAI/MiniMax-M2.7",
            messages=[{"role": "user", "content": "hello"}],
            mock_response="hi there",  # no model is called
            user=user,
            input_cost_per_token=0.001,
            output_cost_per_token=0.002,
        )

    # when two completions are made
    first = complete("customer-1")
    second = complete("customer-2")

    # then the callback's events are stored as usage of the licensed model
    records = sorted(wait_for(2), key=lambda r: r.customer_ref)
    assert [r.event_id for r in records] == [first.id, second.id]
    stored = records[0]
    assert stored.model.slug == "minimax-m2.7"
    assert (stored.input_tokens, stored.output_tokens, stored.cached_input_tokens) == (10, 20, 0)
    assert stored.revenue == Decimal("0.050000")
    assert (stored.customer_category, stored.customer_ref) == ("commercial", "customer-1")
    assert records[1].customer_ref == "customer-2"


def test_litellms_float_noise_in_cost_is_refused_not_rounded(litellm: Any) -> None:
    # given a price whose float product has more than 6 places (10 x 0.00000015 + 20 x 0.0000006
    # is 1.35e-05 as LiteLLM writes it: 0.0000135)
    litellm.completion(
        model="openai/MiniMaxAI/MiniMax-M2.7",
        messages=[{"role": "user", "content": "hello"}],
        mock_response="hi there",
        user="customer-1",
        input_cost_per_token=0.00000015,
        output_cost_per_token=0.0000006,
    )

    # then nothing is stored: a revenue of more than 6 places is refused, never rounded
    # (docs/integrations.md: map revenue to a field of your own, or leave it at 0)
    time.sleep(3)
    assert not UsageRecord.objects.exists()


@pytest.fixture
def openmeter(live_server: Any, host_key: str, no_network: list[Any]) -> Iterator[Any]:
    """The OpenMeter SDK's client as a host configures it: Tollgate's URL, a host key, and
    `Prefer: return=minimal` so that Tollgate answers 204, the status the SDK expects."""
    from openmeter import Client

    with Client(
        endpoint=live_server.url, token=host_key, headers={"Prefer": "return=minimal"}
    ) as client:
        yield client


def om_event(event_id: str, **data: Any) -> Any:
    from openmeter.models import Event

    return Event(
        id=event_id,
        source="my-gateway",
        specversion="1.0",
        type="tokens",
        subject="customer-7",
        time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        data={"model": "minimax-m2.7", "prompt_tokens": 100, "completion_tokens": 5, **data},
    )


def test_the_openmeter_sdk_ingests_single_and_batch_events(openmeter: Any) -> None:
    # when the SDK sends one event, then a batch of two
    openmeter.events.ingest_event(om_event("om-1", cost=0.25))
    openmeter.events.ingest_events([om_event("om-2"), om_event("om-3", cached_tokens=40)])

    # then all three are stored, mapped
    records = {r.event_id: r for r in UsageRecord.objects.all()}
    assert sorted(records) == ["om-1", "om-2", "om-3"]
    assert records["om-1"].revenue == Decimal("0.25")
    assert (records["om-3"].input_tokens, records["om-3"].cached_input_tokens) == (100, 40)
    assert records["om-2"].customer_ref == "customer-7"


def test_an_openmeter_resend_is_deduplicated(openmeter: Any) -> None:
    # given an event sent once
    event = om_event("om-resend")
    openmeter.events.ingest_event(event)

    # when the SDK sends it again (a retry)
    openmeter.events.ingest_event(event)

    # then it is stored once
    assert UsageRecord.objects.filter(event_id="om-resend").count() == 1


def test_without_prefer_the_sdk_raises_on_the_contracts_202(
    live_server: Any, host_key: str, no_network: list[Any]
) -> None:
    # OpenMeter's SDK takes only 204 from its ingest calls: without Prefer: return=minimal the
    # event is stored but the SDK raises on 202 (why docs/integrations.md says to set it)
    from corehttp.exceptions import HttpResponseError
    from openmeter import Client

    with Client(endpoint=live_server.url, token=host_key) as client:
        with pytest.raises(HttpResponseError):
            client.events.ingest_event(om_event("om-202"))
    assert UsageRecord.objects.filter(event_id="om-202").exists()
