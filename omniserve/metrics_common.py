"""What the gateway's and the workers' Prometheus metrics share (docs/metrics.md): the bucket sets,
who may scrape, and the exposition of stored metrics plus figures read at scrape time.

Neither tier imports the other's metrics; both import this. Metric names start with
``omniserve_gateway_`` or ``omniserve_worker_``; label values come from our own code (the mode
table's request types, fixed reason and kind words), never from a client.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .tokens import bearer_ok

disable_created_metrics()   # no ``*_created`` series (Prometheus does not use them; they double the output)

CONTENT_TYPE = CONTENT_TYPE_LATEST     # the text exposition format, version 0.0.4
METRICS_PATH = "/metrics"

# first token, first audio, end of speech → first audio (seconds)
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# one duplex unit (units are 250 ms to 1 s of audio: compute near a unit's length cannot keep pace)
UNIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
# a queued client's wait for its worker (seconds)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
# actual wait − the estimate the client was told (seconds; negative: served sooner than told)
ETA_ERROR_BUCKETS = (-600.0, -300.0, -120.0, -60.0, -30.0, -10.0, -5.0, -2.0, -1.0, -0.5, 0.0,
                     0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def scrape_allowed(authorization: Optional[str], tokens: Iterable[Optional[str]]) -> bool:
    """``Authorization: Bearer <one of tokens>`` (unset tokens never match)."""
    return any(bearer_ok(authorization, t) for t in tokens if t)


class Snapshot:
    """Metric families computed beforehand (on the event loop), served as they are."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class Chain:
    """Several collectors exposed as one (stored metrics, then figures read at scrape time)."""

    def __init__(self, *sources: Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for s in self.sources:
            yield from s.collect()


def exposition(*sources: Collector) -> bytes:
    """The text format of everything ``sources`` hold."""
    return generate_latest(Chain(*sources))


def count_family(name: str, doc: str, label: str, values: Iterable[str],
                 always: Iterable[str] = ()) -> GaugeMetricFamily:
    """A gauge family counting ``values`` per label value; the ``always`` values are listed even at 0
    (a dashboard's series do not vanish)."""
    counts = dict.fromkeys(always, 0)
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    fam = GaugeMetricFamily(name, doc, labels=[label])
    for k, n in counts.items():
        fam.add_metric([k], n)
    return fam
