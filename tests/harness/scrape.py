"""Scraping ``/metrics`` of a real server (or a multiprocess directory) and reading it back.

:class:`Scrape` is one parsed exposition (text or OpenMetrics); :meth:`Scrape.outcomes` sums the
delivered and failed counters by (route, status, outcome). Every network call has a timeout;
:func:`wait_scrape` scrapes until a condition holds, with a deadline.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.harness.names import DELIVERED, DELIVERED_TOTAL, FAILURES_TOTAL
from tests.harness.waiting import wait_for

HOST = "127.0.0.1"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SCRAPE_TIMEOUT = 15.0

LabelKey = tuple[tuple[str, str], ...]
#: Outcome counters as (route, status, outcome) -> count; outcome is "delivered" or a reason.
Outcomes = collections.Counter[tuple[str, str, str]]


def label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


@dataclass
class Scrape:
    """One parsed exposition: every sample by (sample name, sorted labels)."""

    text: str
    content_type: str
    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, content_type: str = "") -> Scrape:
        if content_type.startswith("application/openmetrics-text"):
            families = openmetrics_families(text)  # type: ignore[no-untyped-call]
        else:
            families = text_string_to_metric_families(text)
        samples = [sample for family in families for sample in family.samples]
        return cls(text, content_type, samples)

    def families(self) -> dict[str, str]:
        """Every family shown, samples or not, by name (counters with ``_total``, as the
        metric table spells them) -> type."""
        if self.content_type.startswith("application/openmetrics-text"):
            parsed = openmetrics_families(self.text)  # type: ignore[no-untyped-call]
        else:
            parsed = text_string_to_metric_families(self.text)
        return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in parsed}

    def value(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when the series does not exist)."""
        wanted = label_key(labels)
        for sample in self.samples:
            if sample.name == name and label_key(sample.labels) == wanted:
                return float(sample.value)
        return 0.0

    def series(self, name: str) -> dict[LabelKey, float]:
        """Every series of one sample name, by its sorted labels."""
        return {label_key(s.labels): float(s.value) for s in self.samples if s.name == name}

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Every series of one sample name, keyed by the given labels' values (summed)."""
        out: dict[tuple[str, ...], float] = {}
        for sample in self.samples:
            if sample.name == name:
                key = tuple(sample.labels.get(label, "") for label in labels)
                out[key] = out.get(key, 0.0) + float(sample.value)
        return out

    def total(self, name: str, **labels: str) -> float:
        """Sum of the series of ``name`` whose labels include ``labels``."""
        return sum(
            float(s.value)
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}

    def outcomes(self) -> Outcomes:
        """Delivered and failed responses by (route, status, outcome)."""
        counts: Outcomes = collections.Counter()
        for sample in self.samples:
            if sample.name == DELIVERED_TOTAL:
                outcome = DELIVERED
            elif sample.name == FAILURES_TOTAL:
                outcome = sample.labels["reason"]
            else:
                continue
            counts[(sample.labels["route"], sample.labels["status"], outcome)] += round(
                sample.value
            )
        return +counts

    def lines(self, prefix: str) -> str:
        """The exposition lines starting with ``prefix`` (for failure messages)."""
        return "\n".join(line for line in self.text.splitlines() if line.startswith(prefix))


def get(
    port: int,
    path: str = "/metrics",
    *,
    headers: Mapping[str, str] | None = None,
    source: str | None = None,
    timeout: float = SCRAPE_TIMEOUT,
) -> httpx.Response:
    """One GET over a fresh connection, optionally from another loopback source address."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
        return client.get(f"http://{HOST}:{port}{path}", headers=dict(headers or {}))


def scrape(
    port: int, *, headers: Mapping[str, str] | None = None, timeout: float = SCRAPE_TIMEOUT
) -> Scrape:
    response = get(port, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise AssertionError(f"/metrics answered {response.status_code}: {response.text[:500]}")
    return Scrape.parse(response.text, response.headers.get("content-type", ""))


def wait_scrape(
    port: int,
    condition: Callable[[Scrape], bool],
    *,
    what: str,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    show: str = "django_http_",
    log: Callable[[], str] | None = None,
) -> Scrape:
    """Scrape until ``condition`` holds; on timeout fail with the last scrape's lines."""
    last: list[Scrape] = []

    def satisfied() -> Scrape | None:
        last[:] = [scrape(port, headers=headers)]
        return last[0] if condition(last[0]) else None

    def details() -> str:
        tail = f"\n--- server log ---\n{log()}" if log else ""
        return f"last scrape:\n{last[0].lines(show) if last else '(none)'}{tail}"

    return wait_for(satisfied, timeout, what=what, details=details)


def multiprocess_scrape(path: str | os.PathLike[str]) -> Scrape:
    """What a prometheus_client multiprocess directory adds up to (read after the server
    stopped, when no worker can add to it any more)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.fspath(path))  # type: ignore[no-untyped-call]
    return Scrape.parse(generate_latest(registry).decode())


def total(counts: Outcomes, outcome: str | None = None) -> int:
    """All responses of an :data:`Outcomes`, or those of one outcome."""
    return sum(n for (_, _, o), n in counts.items() if outcome is None or o == outcome)


def difference(after: Outcomes, before: Outcomes) -> Outcomes:
    diff = collections.Counter(after)
    diff.subtract(before)
    return +diff
