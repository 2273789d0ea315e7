"""The gateway's metric cells, their snapshots and merge, and the exposition through
``prometheus_client`` (SPEC §9.1, §13.4).

Ring 0: pure; no trio, sockets, TLS or clocks. The registry is an object passed explicitly
(DESIGN.md §3.6: no module-level singletons; the library's global ``REGISTRY`` is never used).

Two halves, split so that the request path never pays for the library (DESIGN.md §3.5):

- **Cells** (hot path). ``Registry`` declares families (``Counter``, ``Gauge``, ``Histogram``:
  name, help, label names) whose children are plain slotted objects, one per label set:
  ``CounterChild.value``, ``GaugeChild.value``, ``HistogramChild.counts`` (one count per bucket,
  not cumulative, ``+Inf`` last) and ``.sum``. An update is an attribute add (a histogram's is
  one ``bisect`` and two adds): no lock, no call into the library. ``family.labels(*values)``
  returns the cached child; callers create the children of configured objects ahead of
  traffic and keep them (``gateway_metrics.py``).
- **Exposition** (scrape time). ``Registry.freeze()`` copies every family's values into an
  immutable ``Snapshot`` (msgspec structs: cheap, and safe to hand to another thread).
  ``families(snapshot)`` builds the library's ``CounterMetricFamily``,
  ``GaugeMetricFamily`` and ``HistogramMetricFamily`` from it, ``SnapshotCollector`` is the
  ``prometheus_client.registry.Collector`` that yields them, and ``render(snapshot)`` registers
  one in a ``CollectorRegistry`` of its own and returns ``generate_latest``'s text (format
  0.0.4): the format, escaping and ``_total`` suffixes are the library's. ``render`` is pure
  and takes tens of milliseconds for thousands of samples, so the async callers run it with
  ``trio.to_thread.run_sync`` after freezing on the trio thread. ``Registry.collector_registry``
  is a ``CollectorRegistry`` over the live cells for code on the owning thread.

Families:

- ``Counter``: monotonic; its name ends in ``_total`` (the library strips it from the family
  name and adds it back to the sample); ``inc(n)`` refuses a negative ``n`` and
  ``advance_to(total)`` never moves it back. No ``_created`` samples are exposed. Counters have
  no ``remove``: SPEC §9.1's counters survive reloads.
- ``Gauge``: ``set``/``inc``/``dec``; ``remove`` and ``retain`` drop the label sets of objects
  that left the config. Each gauge declares its ``GaugeKind``, which says how the supervisor
  combines the workers' values.
- ``Histogram``: the default buckets are SPEC §9.1's, in seconds; ``le`` is written as Go
  writes it (``1``, ``2.5``, ``+Inf``). Values are expected to be finite.

Multi-worker (SPEC §13.4): ``Registry.snapshot()`` is the frozen snapshot msgpack-encoded for
the pipe; ``merge(snapshots, own=snapshot)`` combines them into one ``Snapshot``: counters,
histograms and ``SUM`` gauges are added up (the supervisor's own values included), ``MAX``
gauges take the largest value, ``OWN`` gauges (config and build information) are the
supervisor's own.

Must not: know any metric of the gateway (``gateway_metrics.py`` declares them), read the
time, do IO, or touch the library's private attributes.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from bisect import bisect_left
from typing import TYPE_CHECKING, ClassVar, Final, Generic, TypeAlias, TypeVar

import msgspec
import msgspec.structs
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "CounterChild",
    "FamilySnapshot",
    "Gauge",
    "GaugeChild",
    "GaugeKind",
    "Histogram",
    "HistogramChild",
    "Registry",
    "Snapshot",
    "SnapshotCollector",
    "decode",
    "families",
    "merge",
    "monotonic_part",
    "render",
]

#: The ``Content-Type`` of ``render``'s output (the library's text format 0.0.4).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

#: SPEC §9.1's histogram buckets in seconds; ``+Inf`` is implied.
DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
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
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_SNAPSHOT_VERSION: Final = 2

Labels: TypeAlias = "tuple[str, ...]"


class GaugeKind(enum.Enum):
    """How ``merge`` combines one gauge across workers (SPEC §13.4)."""

    #: Per-worker quantities (requests in flight, connections, pool counts): added up.
    SUM = "sum"
    #: Per-worker states where "in any worker" is the useful answer (a backend ejected by
    #: passive health, a breaker's state): the largest value.
    MAX = "max"
    #: Config, build and scaling gauges: the supervisor's own value.
    OWN = "own"


def _format_bound(bound: float) -> str:
    """An ``le`` value: ``1`` rather than ``1.0`` for whole numbers (as Go's client writes)."""
    if bound == math.inf:
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


# --------------------------------------------------------------------------------- children


class CounterChild:
    """One label set of a counter. ``value`` may be read (and added to by the hot path, which
    knows its amounts are ≥ 0); otherwise use ``inc`` or ``advance_to``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (≥ 0: a counter never goes down)."""
        if amount < 0:
            raise ValueError(f"a counter cannot decrease (inc by {amount!r})")
        self.value += amount

    def advance_to(self, total: float) -> None:
        """Move to ``total`` when it is larger (totals counted elsewhere, read at scrape time);
        a smaller ``total`` changes nothing, so the counter never goes back."""
        if total > self.value:
            self.value = total

    def __repr__(self) -> str:
        return f"<CounterChild {self.value!r}>"


class GaugeChild:
    """One label set of a gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def __repr__(self) -> str:
        return f"<GaugeChild {self.value!r}>"


class HistogramChild:
    """One label set of a histogram: a count per bucket (not cumulative; ``+Inf`` last) and the
    sum of the observations."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` (finite) in the first bucket whose bound is ≥ it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """The ``_bucket`` values: observations ≤ each bound, ``+Inf`` (= ``count``) last."""
        return list(itertools.accumulate(self.counts))

    def __repr__(self) -> str:
        return f"<HistogramChild count={self.count} sum={self.sum!r}>"


# --------------------------------------------------------------------------------- families

Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[Child]):
    """A metric family: name, help, label names and the children by label values."""

    __slots__ = ("_children", "help", "labelnames", "name")

    type_name: ClassVar[str]

    def __init__(self, name: str, help: str, labelnames: Iterable[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        names = tuple(labelnames)
        for label in names:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} in {name}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names in {name}: {names}")
        self.name = name
        self.help = help
        self.labelnames = names
        self._children: dict[Labels, Child] = {}
        if not names:  # an unlabelled family always shows its one sample
            self.labels()

    def labels(self, *values: str) -> Child:
        """The child of this label set, created on first use (values: one ``str`` per label
        name, any text; the library escapes them at render time)."""
        child = self._children.get(values)
        if child is None:
            child = self._add(values)
        return child

    @property
    def children(self) -> Mapping[Labels, Child]:
        """Every child by its label values, in creation order (do not modify)."""
        return self._children

    def _add(self, values: Labels) -> Child:
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} has labels {self.labelnames}, got {len(values)} values {values!r}"
            )
        for value in values:
            if not isinstance(value, str):
                raise TypeError(f"label values of {self.name} must be str, got {value!r}")
        child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.labelnames} ({len(self._children)})>"


class Counter(_Family[CounterChild]):
    """A counter family; its name ends in ``_total``."""

    __slots__ = ()
    type_name = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total: {name!r}")
        super().__init__(name, help, labelnames)

    def _new_child(self) -> CounterChild:
        return CounterChild()


class Gauge(_Family[GaugeChild]):
    """A gauge family of a ``GaugeKind``."""

    __slots__ = ("kind",)
    type_name = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        kind: GaugeKind = GaugeKind.SUM,
    ) -> None:
        super().__init__(name, help, labelnames)
        self.kind = kind

    def remove(self, *values: str) -> None:
        """Drop the child of this label set (an object that left the config); no error if it
        has none."""
        self._children.pop(values, None)

    def retain(self, keep: Collection[Labels]) -> None:
        """Drop every child whose label values are not in ``keep``."""
        if len(self._children) == len(keep) and all(key in keep for key in self._children):
            return
        for key in [key for key in self._children if key not in keep]:
            del self._children[key]

    def _new_child(self) -> GaugeChild:
        return GaugeChild()


class Histogram(_Family[HistogramChild]):
    """A histogram family with fixed bucket bounds (finite, strictly increasing)."""

    __slots__ = ("buckets",)
    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets)
        if bounds and bounds[-1] == math.inf:
            bounds = bounds[:-1]
        if not bounds:
            raise ValueError(f"{name}: a histogram needs at least one finite bucket")
        if not all(math.isfinite(bound) for bound in bounds):
            raise ValueError(f"{name}: bucket bounds must be finite (+Inf is implied)")
        if any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError(f"{name}: bucket bounds must be strictly increasing")
        if "le" in tuple(labelnames):
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        self.buckets = bounds
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)


Family: TypeAlias = "Counter | Gauge | Histogram"
_F = TypeVar("_F", Counter, Gauge, Histogram)


# -------------------------------------------------------------------------------- snapshots


class SampleSnapshot(msgspec.Struct, array_like=True, frozen=True):
    """One counter or gauge label set and its value."""

    labels: tuple[str, ...]
    value: int | float


class HistogramSnapshot(msgspec.Struct, array_like=True, frozen=True):
    """One histogram label set: its per-bucket counts (not cumulative, ``+Inf`` last) and sum."""

    labels: tuple[str, ...]
    counts: tuple[int, ...]
    total: float


class FamilySnapshot(msgspec.Struct, array_like=True, frozen=True):
    """One family's metadata and values. ``kind``: the ``GaugeKind`` value of a gauge, else
    empty; ``buckets``: a histogram's finite bounds."""

    name: str
    help: str
    type: str
    kind: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    samples: tuple[SampleSnapshot, ...]
    histograms: tuple[HistogramSnapshot, ...]


class Snapshot(msgspec.Struct, frozen=True):
    """Every family of a registry at one moment (immutable: another thread may render it)."""

    version: int
    families: tuple[FamilySnapshot, ...]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Snapshot)


def decode(data: bytes) -> Snapshot:
    """A snapshot from ``Registry.snapshot()``'s bytes; raises ``msgspec.DecodeError`` (a
    ``ValueError``) for anything else."""
    return _DECODER.decode(data)


def _family_snapshot(family: Family) -> FamilySnapshot:
    match family:
        case Histogram():
            return FamilySnapshot(
                family.name,
                family.help,
                family.type_name,
                "",
                family.labelnames,
                family.buckets,
                (),
                tuple(
                    HistogramSnapshot(labels, tuple(child.counts), child.sum)
                    for labels, child in family.children.items()
                ),
            )
        case Gauge():
            kind = family.kind.value
        case _:
            kind = ""
    samples = tuple(
        SampleSnapshot(labels, child.value) for labels, child in family.children.items()
    )
    return FamilySnapshot(
        family.name, family.help, family.type_name, kind, family.labelnames, (), samples, ()
    )


# --------------------------------------------------------------------------------- registry


class Registry:
    """The families of one process, in declaration order; names are unique."""

    __slots__ = ("_collector_registry", "_families", "_taken")

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        #: Every sample and family name in use (a histogram takes four, a counter two, since
        #: the library strips ``_total`` from a counter's family name).
        self._taken: set[str] = set()
        self._collector_registry: CollectorRegistry | None = None

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        """Declare a counter family."""
        return self._register(Counter(name, help, labelnames))

    def gauge(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        kind: GaugeKind = GaugeKind.SUM,
    ) -> Gauge:
        """Declare a gauge family of ``kind``."""
        return self._register(Gauge(name, help, labelnames, kind=kind))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Declare a histogram family (default buckets: SPEC §9.1)."""
        return self._register(Histogram(name, help, labelnames, buckets=buckets))

    @property
    def families(self) -> Mapping[str, Family]:
        """The families by name, in declaration order (do not modify)."""
        return self._families

    @property
    def collector_registry(self) -> CollectorRegistry:
        """A ``CollectorRegistry`` of this registry's families (a ``SnapshotCollector`` of a
        fresh ``freeze()`` per collection): for the thread that updates the cells."""
        registry = self._collector_registry
        if registry is None:
            registry = self._collector_registry = CollectorRegistry(auto_describe=False)
            registry.register(_LiveCollector(self))
        return registry

    def freeze(self) -> Snapshot:
        """Every family's metadata and values now, immutable."""
        return Snapshot(
            version=_SNAPSHOT_VERSION,
            families=tuple(_family_snapshot(family) for family in self._families.values()),
        )

    def snapshot(self) -> bytes:
        """``freeze()`` msgpack-encoded, for a supervisor's ``merge``."""
        return _ENCODER.encode(self.freeze())

    def render(self) -> bytes:
        """``render(self.freeze())``: the text exposition, on the calling thread."""
        return render(self.freeze())

    def _register(self, family: _F) -> _F:
        names = {family.name}
        if isinstance(family, Histogram):
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif isinstance(family, Counter):
            names.add(family.name.removesuffix("_total"))
        clash = names & self._taken
        if clash:
            raise ValueError(f"metric name already in use: {min(clash)}")
        self._taken |= names
        self._families[family.name] = family
        return family

    def __repr__(self) -> str:
        return f"<Registry of {len(self._families)} families>"


# ------------------------------------------------------------------------------- exposition


def _library_family(snap: FamilySnapshot) -> Metric:
    """The library's family of ``snap`` (a counter's ``_created`` is never added)."""
    labelnames = snap.labelnames
    match snap.type:
        case "counter":
            counter = CounterMetricFamily(snap.name, snap.help, labels=labelnames)
            for sample in snap.samples:
                counter.add_metric(sample.labels, sample.value)
            return counter
        case "histogram":
            histogram = HistogramMetricFamily(snap.name, snap.help, labels=labelnames)
            bounds = [*(_format_bound(bound) for bound in snap.buckets), "+Inf"]
            for child in snap.histograms:
                if len(child.counts) == len(bounds):
                    cumulative = itertools.accumulate(child.counts)
                    buckets = list(zip(bounds, cumulative, strict=True))
                    histogram.add_metric(child.labels, buckets, child.total)
            return histogram
        case _:
            gauge = GaugeMetricFamily(snap.name, snap.help, labels=labelnames)
            for sample in snap.samples:
                gauge.add_metric(sample.labels, sample.value)
            return gauge


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The library's metric families of ``snapshot``, in its order."""
    for snap in snapshot.families:
        yield _library_family(snap)


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector of one frozen ``Snapshot``."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return families(self.snapshot)


class _LiveCollector(Collector):
    """``Registry.collector_registry``'s collector: the registry frozen at each collection."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return families(self._registry.freeze())


def render(snapshot: Snapshot) -> bytes:
    """The text exposition (format 0.0.4) of ``snapshot``: a ``SnapshotCollector`` in a
    ``CollectorRegistry`` of its own through ``generate_latest``. Pure, and safe to call from
    any thread (the snapshot is immutable). A lone surrogate in a label value or help text,
    which UTF-8 cannot carry, becomes ``?``."""
    try:
        return generate_latest(_collector_registry(snapshot))
    except UnicodeEncodeError:
        return generate_latest(_collector_registry(_encodable(snapshot)))


def _collector_registry(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def _encodable(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with every help text and label value made encodable as UTF-8."""
    return msgspec.structs.replace(
        snapshot,
        families=tuple(
            msgspec.structs.replace(
                family,
                help=_utf8(family.help),
                samples=tuple(
                    msgspec.structs.replace(sample, labels=tuple(map(_utf8, sample.labels)))
                    for sample in family.samples
                ),
                histograms=tuple(
                    msgspec.structs.replace(child, labels=tuple(map(_utf8, child.labels)))
                    for child in family.histograms
                ),
            )
            for family in snapshot.families
        ),
    )


# ------------------------------------------------------------------------------------ merge


def _declare(registry: Registry, snap: FamilySnapshot) -> Family | None:
    """Declare ``snap``'s family in ``registry``; None if its metadata is unusable."""
    try:
        match snap.type:
            case "counter":
                return registry.counter(snap.name, snap.help, snap.labelnames)
            case "gauge":
                return registry.gauge(
                    snap.name, snap.help, snap.labelnames, kind=GaugeKind(snap.kind)
                )
            case "histogram":
                return registry.histogram(
                    snap.name, snap.help, snap.labelnames, buckets=snap.buckets
                )
    except ValueError:
        return None
    return None


def _compatible(family: Family, snap: FamilySnapshot) -> bool:
    if family.type_name != snap.type or family.labelnames != snap.labelnames:
        return False
    if isinstance(family, Gauge):
        return family.kind.value == snap.kind
    if isinstance(family, Histogram):
        return family.buckets == snap.buckets
    return True


def monotonic_part(snapshot: bytes) -> bytes:
    """``snapshot`` with only its counters and histograms: what a worker that has gone had
    counted, to be kept in a supervisor's merge so that the totals never go down (gauges
    describe a live process and go with it). Raises ``msgspec.DecodeError`` like ``decode``."""
    decoded = _DECODER.decode(snapshot)
    kept = tuple(family for family in decoded.families if family.type in ("counter", "histogram"))
    return _ENCODER.encode(Snapshot(version=decoded.version, families=kept))


def merge(snapshots: Iterable[bytes], *, own: Snapshot) -> Snapshot:
    """``own`` combined with the workers' encoded ``snapshots`` (SPEC §13.4).

    Counters, histograms and ``SUM`` gauges are summed over ``own`` and every snapshot;
    ``MAX`` gauges take the largest value seen; ``OWN`` gauges come from ``own`` (from the
    first snapshot that has the family when ``own`` does not declare it). Families appear in
    ``own``'s order, then in the order the snapshots introduce them. A snapshot's family whose
    type, labels, kind or buckets differ from the family already seen under its name is
    ignored. Raises ``msgspec.DecodeError`` (a ``ValueError``) for bytes that are not a
    snapshot.
    """
    sources = [own]
    sources.extend(_DECODER.decode(data) for data in snapshots)
    combined = Registry()
    owner: dict[str, int] = {}  # OWN gauges: the index of the source whose values count
    seen: set[tuple[str, Labels]] = set()  # MAX gauges: label sets that have a value
    for index, snapshot in enumerate(sources):
        for snap in snapshot.families:
            family = combined.families.get(snap.name)
            if family is None:
                family = _declare(combined, snap)
                if family is None:
                    continue
                owner[snap.name] = index
            elif not _compatible(family, snap):
                continue
            match family:
                case Counter():
                    for sample in snap.samples:
                        family.labels(*sample.labels).value += sample.value
                case Histogram():
                    _add_histograms(family, snap.histograms)
                case Gauge():
                    _add_gauges(family, snap, owns=owner[snap.name] == index, seen=seen)
    return combined.freeze()


def _add_histograms(family: Histogram, histograms: Iterable[HistogramSnapshot]) -> None:
    size = len(family.buckets) + 1
    for snap in histograms:
        if len(snap.counts) != size:
            continue
        child = family.labels(*snap.labels)
        for index, count in enumerate(snap.counts):
            child.counts[index] += count
        child.sum += snap.total


def _add_gauges(
    family: Gauge, snap: FamilySnapshot, *, owns: bool, seen: set[tuple[str, Labels]]
) -> None:
    match family.kind:
        case GaugeKind.SUM:
            for sample in snap.samples:
                family.labels(*sample.labels).value += sample.value
        case GaugeKind.OWN:
            if owns:
                for sample in snap.samples:
                    family.labels(*sample.labels).value = sample.value
        case GaugeKind.MAX:
            for sample in snap.samples:
                child = family.labels(*sample.labels)
                key = (family.name, sample.labels)
                if key not in seen or sample.value > child.value:
                    child.value = sample.value
                    seen.add(key)
