"""Prometheus metrics of an agent, computed at scrape time from the runtime's history totals and statistics.

Computing at scrape time (a custom collector) instead of incrementing counters on the patch path keeps
the patch path free of metrics work and makes the numbers agree with the runtime's history by
construction, including automatic rollbacks that the runtime performs on its own. The counts come from
the running totals the runtime keeps over every attempt ever made (runtime/history.py), not from the kept
entries: the counters stay monotonic when old entries are dropped, and a scrape costs O(1) in the
history's length.

Metrics:
    livepatch_patches_total{action, outcome}       counter: attempts by outcome (applied, reverted,
                                                    refused, aborted, failed, rolled-back)
    livepatch_history_dropped_total                counter: attempts no longer kept in memory
    livepatch_sync_seconds{method}                 histogram: request -> quiescent / all migrated
    livepatch_swap_seconds{method}                 histogram: the swap itself
    livepatch_applied_patches                      gauge: patches currently applied
    livepatch_threads{generation}                  gauge: managed threads per code generation
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from livepatch.runtime import core as runtime
from livepatch.runtime.history import TIMING_BUCKETS_S, TimingTotals
from livepatch.runtime.registry import RuntimeStatistics

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # an optional dependency: say how to install it
    raise ModuleNotFoundError(
        "livepatch's metrics endpoint needs prometheus-client: pip install 'livepatch[metrics]'",
        name=exc.name,
    ) from exc

if TYPE_CHECKING:
    from livepatch.agent.agent import Agent

log = logging.getLogger("livepatch.agent")

BUCKETS_S = TIMING_BUCKETS_S  # the histograms' upper bounds (one home: runtime/history.py)


def _histogram(name: str, doc: str, totals: dict[str, TimingTotals]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=["method"])
    for method, t in sorted(totals.items()):
        buckets = [(str(b), float(n)) for b, n in zip(BUCKETS_S, t.cumulative(), strict=True)]
        buckets.append(("+Inf", float(t.count)))
        fam.add_metric([method], buckets, sum_value=t.sum_s)
    return fam


def _threads_by_generation(stats: RuntimeStatistics) -> dict[str, int]:
    return {str(gen): n for gen, n in stats.by_generation.items()}


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        totals = runtime.history_totals()
        total = CounterMetricFamily(
            "livepatch_patches",
            "Patch attempts by action and outcome",
            labels=["action", "outcome"],
        )
        for (action, outcome), n in sorted(
            totals.attempts.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)
        ):
            total.add_metric([action.value, outcome.value], float(n))
        yield total
        yield CounterMetricFamily(
            "livepatch_history_dropped",
            "Patch attempts no longer kept in the runtime's history (counted in the other metrics)",
            value=float(totals.dropped),
        )
        yield _histogram("livepatch_sync_seconds", "Time from request to quiescence", totals.sync)
        yield _histogram("livepatch_swap_seconds", "Time of the code swap", totals.swap)
        yield GaugeMetricFamily(
            "livepatch_applied_patches",
            "Patches currently applied",
            value=len(runtime.applied_patches()),
        )
        threads = GaugeMetricFamily(
            "livepatch_threads", "Managed threads per code generation", labels=["generation"]
        )
        for gen, n in sorted(_threads_by_generation(runtime.statistics()).items()):
            threads.add_metric([gen], float(n))
        yield threads


class MetricsServer:
    """An HTTP endpoint on 127.0.0.1 serving the agent's metrics. start()/stop() from one thread."""

    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(agent))
        self._server: Any = None

    def start(self, port: int) -> tuple[str, int]:
        self._server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        host, bound = self._server.server_address[:2]
        return str(host), int(bound)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
