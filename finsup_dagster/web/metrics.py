"""``GET /metrics`` (Prometheus text format) and the registry other modules add to.

Each app has its own ``CollectorRegistry`` (not prometheus-client's global
one), so tests and benchmarks can build several apps in one process. Two
kinds of metric live here:

- counters the app increments as it works (``WebhookMetrics``);
- gauges read from the ledger at scrape time (``LedgerCollector``): the
  books are the truth, so nothing is cached that could drift from them.
  Another module adds its own with ``registry.register(collector)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from finsup_dagster.ledger import balance, db
from finsup_dagster.ledger.schema import payout_items

log = logging.getLogger("finsup.web")

# One gauge family computed from the books: (conn) -> the metric.
LedgerGauge = Callable[[Connection], Metric]


class WebhookMetrics:
    """Webhooks answered, by gateway and what came of them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "finsup_webhooks_accepted",
            "Webhooks answered 2xx, by gateway and outcome (applied, duplicate, "
            "unknown_item, unknown_event_type, batch_event, ...).",
            ["gateway", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "finsup_webhooks_refused",
            "Webhooks refused with nothing applied, by gateway and reason "
            "(missing_signature, bad_signature, replay, malformed, oversized, ...).",
            ["gateway", "reason"],
            registry=registry,
        )


def items_by_status(conn: Connection) -> Metric:
    gauge = GaugeMetricFamily(
        "finsup_payout_items", "Payout items in the books, by status.", labels=["status"]
    )
    rows = conn.execute(
        sa.select(payout_items.c.status, sa.func.count()).group_by(payout_items.c.status)
    )
    for row in rows:
        gauge.add_metric([str(row[0])], float(row[1]))
    return gauge


def available_balance(conn: Connection) -> Metric:
    gauge = GaugeMetricFamily(
        "finsup_available_balance_minor",
        "Available balance per currency, in minor units (integer: no float money).",
        labels=["currency"],
    )
    for bal in balance.available_balances(conn):
        gauge.add_metric([bal.currency], bal.available_minor)
    return gauge


DEFAULT_LEDGER_GAUGES: tuple[LedgerGauge, ...] = (items_by_status, available_balance)


class LedgerCollector(Collector):
    """Gauges computed from the ledger in one read transaction per scrape."""

    def __init__(self, engine: Engine, gauges: Iterable[LedgerGauge] = DEFAULT_LEDGER_GAUGES):
        self.engine = engine
        self.gauges = list(gauges)

    def add(self, gauge: LedgerGauge) -> None:
        """Another module's gauge (e.g. stuck items), read in the same transaction."""
        self.gauges.append(gauge)

    def collect(self) -> Iterator[Metric]:
        try:
            with db.read(self.engine) as conn:
                metrics = [gauge(conn) for gauge in self.gauges]
        except Exception as exc:
            # A scrape must not fail the whole page: the counters are still worth reading.
            log.warning("metrics: ledger gauges unavailable (%s)", type(exc).__name__)
            return
        yield from metrics


def new_registry(engine: Engine | None = None) -> tuple[CollectorRegistry, LedgerCollector | None]:
    """A registry with the ledger gauges registered (when there are books to read)."""
    registry = CollectorRegistry()
    collector = None
    if engine is not None:
        collector = LedgerCollector(engine)
        registry.register(collector)
    return registry, collector


def metrics_routes(registry: CollectorRegistry) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        # The ledger gauges read the database: off the event loop.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
