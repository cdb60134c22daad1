"""A client process of the fault soak (bench/soak.py): one host posting batches of usage, as a
host's integration would, while the soak breaks things under it.

Each batch holds fresh records, resends of records already acknowledged (the same bytes) and
corrections of acknowledged originals; every fourth batch goes to `POST /api/v1/events` as
CloudEvents (fresh events and resent ones). A batch that gets no answer (a timeout, a connection
reset by a killed worker) or a 5xx or 429 is posted again with the same event ids until it is
answered. Before its first attempt a batch's fresh records are written to `sent.jsonl`; each
answered record is written to `acked.jsonl` with what was sent. The soak compares both with the
database at the end."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

MODELS = ("soak-alpha", "soak-beta")  # one per licensor (bench/soak.py's catalog)
CATEGORIES = ("commercial", "commercial", "individual")
BATCH = 60
TIMEOUT = 15.0  # seconds per attempt; gunicorn kills a request after 30


def _record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What the database must hold for a /usage record (the defaults filled in)."""
    return {
        "event_id": record["event_id"],
        "input_tokens": int(record.get("input_tokens", 0)),
        "output_tokens": int(record.get("output_tokens", 0)),
        "revenue": str(Decimal(record.get("revenue", "0")).quantize(Decimal("0.000001"))),
        "corrects": record.get("corrects", ""),
    }


def _event_fields(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    return {
        "event_id": event["id"],
        "input_tokens": int(data["prompt_tokens"]),
        "output_tokens": int(data["completion_tokens"]),
        "revenue": str(Decimal(data["cost"]).quantize(Decimal("0.000001"))),
        "corrects": "",
    }


class Client:
    def __init__(self, *, index: int, url: str, key: str, period: str, out: Path, seed: int):
        self.index = index
        self.url = url.rstrip("/")
        self.key = key
        self.out = out
        self.rng = random.Random(seed)
        year, month = (int(x) for x in period.split("-"))
        self.month_start = datetime(year, month, 1, tzinfo=UTC)
        self.seq = 0
        self.batches = 0
        # Acknowledged originals of /usage: event_id -> (record, net revenue after corrections).
        self.originals: dict[str, tuple[dict[str, Any], Decimal]] = {}
        self.acked_records: list[dict[str, Any]] = []  # /usage records, for resends
        self.acked_events: list[dict[str, Any]] = []  # CloudEvents, for resends
        self.stats: Counter[str] = Counter()

    # --- building batches ------------------------------------------------------------------

    def _next_id(self, kind: str) -> str:
        self.seq += 1
        return f"c{self.index}-{kind}{self.seq}"

    def _when(self) -> str:
        at = self.month_start + timedelta(seconds=self.rng.randrange(27 * 86400))
        return at.isoformat().replace("+00:00", "Z")

    def _fresh_record(self) -> dict[str, Any]:
        return {
            "event_id": self._next_id("r"),
            "model": self.rng.choice(MODELS),
            "occurred_at": self._when(),
            "customer_category": self.rng.choice(CATEGORIES),
            "input_tokens": self.rng.randrange(100, 5000),
            "output_tokens": self.rng.randrange(10, 2000),
            "revenue": f"{self.rng.randrange(100, 100000) / 100:.2f}",
        }

    def _correction(self) -> dict[str, Any] | None:
        if not self.originals:
            return None
        event_id = self.rng.choice(list(self.originals))
        original, net = self.originals[event_id]
        # Positive deltas, or a negative one the net can take (`negative_net` otherwise).
        delta = Decimal("0.25") if net < 1 or self.rng.random() < 0.5 else Decimal("-0.50")
        self.originals[event_id] = (original, net + delta)
        return {
            "event_id": self._next_id("x"),
            "corrects": event_id,
            "model": original["model"],
            "occurred_at": original["occurred_at"],
            "customer_category": original["customer_category"],
            "input_tokens": 7,
            "revenue": str(delta),
        }

    def _usage_batch(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the batch, its fresh records: originals and corrections)."""
        fresh = [self._fresh_record() for _ in range(BATCH - 12)]
        corrections = [c for c in (self._correction() for _ in range(4)) if c is not None]
        resends = self.rng.sample(self.acked_records, min(8, len(self.acked_records)))
        self.stats["resends_sent"] += len(resends)
        self.stats["corrections_sent"] += len(corrections)
        return fresh + corrections + resends, fresh + corrections

    def _event_batch(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        fresh = []
        for _ in range(BATCH - 10):
            fresh.append(
                {
                    "specversion": "1.0",
                    "type": "soak.usage",
                    "source": "soak",
                    "id": self._next_id("e"),
                    "time": self._when(),
                    "subject": f"customer-{self.rng.randrange(20)}",
                    "data": {
                        "model": self.rng.choice(MODELS),
                        "prompt_tokens": self.rng.randrange(100, 5000),
                        "completion_tokens": self.rng.randrange(10, 2000),
                        "cost": f"{self.rng.randrange(100, 100000) / 100:.2f}",
                    },
                }
            )
        resends = self.rng.sample(self.acked_events, min(10, len(self.acked_events)))
        self.stats["resends_sent"] += len(resends)
        return fresh + resends, fresh

    # --- posting -----------------------------------------------------------------------------

    def _post(
        self, http: httpx.Client, path: str, body: bytes, content_type: str, give_up_at: float
    ) -> dict[str, Any] | None:
        """Post until answered (2xx), the same body each time; None if `give_up_at` passes."""
        delay = 0.2
        while True:
            self.stats["attempts"] += 1
            try:
                response = http.post(
                    f"{self.url}{path}",
                    content=body,
                    headers={"Authorization": f"Bearer {self.key}", "Content-Type": content_type},
                )
            except httpx.TimeoutException:
                self.stats["retry_timeout"] += 1
            except httpx.TransportError:  # reset by a killed worker, refused, ...
                self.stats["retry_connection"] += 1
            else:
                if response.status_code in (200, 202):
                    return dict(response.json())
                if response.status_code >= 500 or response.status_code == 429:
                    self.stats[f"retry_http_{response.status_code}"] += 1
                else:
                    # Our batches are valid: anything else is a failure of the soak.
                    self.stats[f"refused_http_{response.status_code}"] += 1
                    self._write(
                        "errors.jsonl",
                        {"status": response.status_code, "body": response.text[:2000]},
                    )
                    return None
            if time.monotonic() > give_up_at:
                self.stats["batches_given_up"] += 1
                return None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _write(self, name: str, row: dict[str, Any]) -> None:
        with (self.out / name).open("a") as f:
            f.write(json.dumps(row) + "\n")

    def run(self, *, stop_file: Path, hard_deadline: float) -> None:
        with httpx.Client(timeout=TIMEOUT) as http:
            while not stop_file.exists() and time.monotonic() < hard_deadline:
                self.batches += 1
                events = self.batches % 4 == 0
                if events:
                    items, fresh = self._event_batch()
                    rows = [_event_fields(e) for e in fresh]
                    path, ctype = "/api/v1/events", "application/cloudevents-batch+json"
                else:
                    items, fresh = self._usage_batch()
                    rows = [_record_fields(r) for r in fresh]
                    path, ctype = "/api/v1/usage", "application/json"
                body = json.dumps(items if events else {"records": items}).encode()
                self._write(
                    "sent.jsonl", {"batch": self.batches, "host": self.index, "records": rows}
                )
                answer = self._post(http, path, body, ctype, hard_deadline)
                if answer is None:
                    continue
                self._acknowledge(answer, items, events)
                time.sleep(self.rng.uniform(0.05, 0.3))  # a polite client on a shared machine
        self._write("stats.jsonl", {"host": self.index, **self.stats, "batches": self.batches})

    def _acknowledge(
        self, answer: dict[str, Any], items: list[dict[str, Any]], events: bool
    ) -> None:
        """The answer lists only the records that were not accepted (`duplicate`, `rejected`),
        by their position in the request: every other record of a 2xx was accepted."""
        statuses = {int(r["index"]): r for r in answer.get("results", ())}
        acked = []
        for index, item in enumerate(items):
            result = statuses.get(index, {"status": "accepted"})
            status = result["status"]
            if status not in ("accepted", "duplicate"):
                self.stats[f"rejected_{status}"] += 1
                self._write("errors.jsonl", {"result": result})
                continue
            self.stats[f"acked_{status}"] += 1
            fields = _event_fields(item) if events else _record_fields(item)
            acked.append({"host": self.index, "status": status, **fields})
            if status == "accepted":
                if events:
                    self.acked_events.append(item)
                else:
                    self.acked_records.append(item)
                    if not item.get("corrects"):
                        self.originals[item["event_id"]] = (item, Decimal(item["revenue"]))
        with (self.out / "acked.jsonl").open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in acked)


def client_main(
    index: int,
    url: str,
    key: str,
    period: str,
    out: str,
    seed: int,
    stop_file: str,
    hard_deadline: float,
) -> None:
    """A client process's entry (multiprocessing, spawn)."""
    Client(index=index, url=url, key=key, period=period, out=Path(out), seed=seed).run(
        stop_file=Path(stop_file), hard_deadline=hard_deadline
    )
