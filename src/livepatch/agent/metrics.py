"""Prometheus metrics of an agent, computed at scrape time from the history and the runtime statistics.

Computing at scrape time (a custom collector) instead of incrementing counters on the patch path keeps
the patch path free of metrics work and makes the numbers agree with `livepatch history` by construction,
including automatic rollbacks that the runtime performs on its own. A scrape costs O(history length).

Metrics:
    livepatch_patches_total{action, outcome}       counter: attempts by outcome (applied, reverted,
                                                    refused, aborted, failed, rolled-back)
    livepatch_sync_seconds{method}                 histogram: request -> quiescent / all migrated
    livepatch_swap_seconds{method}                 histogram: the swap itself
    livepatch_applied_patches                      gauge: patches currently applied
    livepatch_threads{generation}                  gauge: managed threads per code generation
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from livepatch.runtime import core as runtime
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

BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)


def _histogram(name: str, doc: str, samples: dict[str, list[float]]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=["method"])
    for method, values in sorted(samples.items()):
        buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in BUCKETS_S]
        buckets.append(("+Inf", float(len(values))))
        fam.add_metric([method], buckets, sum_value=sum(values))
    return fam


def _threads_by_generation(stats: RuntimeStatistics) -> dict[str, int]:
    return {str(gen): n for gen, n in stats.by_generation.items()}


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        history = self.agent.history()
        counts = Counter((r.action, r.outcome) for r in history)
        total = CounterMetricFamily(
            "livepatch_patches",
            "Patch attempts by action and outcome",
            labels=["action", "outcome"],
        )
        for (action, outcome), n in sorted(counts.items()):
            total.add_metric([action.value, outcome.value], float(n))
        yield total
        sync: dict[str, list[float]] = {}
        swap: dict[str, list[float]] = {}
        for r in history:
            if r.ok:
                if "sync" in r.timings:
                    sync.setdefault(r.method, []).append(r.timings["sync"] / 1e3)
                if "swap" in r.timings:
                    swap.setdefault(r.method, []).append(r.timings["swap"] / 1e3)
        yield _histogram("livepatch_sync_seconds", "Time from request to quiescence", sync)
        yield _histogram("livepatch_swap_seconds", "Time of the code swap", swap)
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
