"""A small Prometheus registry of our own (SPEC §9.1): counters, gauges and histograms with
fixed label names, rendered in the text exposition format 0.0.4, plus the snapshots and the
merge the multi-worker supervisor needs (SPEC §13.4).

Ring 0: pure; no trio, sockets, TLS or clocks. The registry is an object passed explicitly
(DESIGN.md §3.6: no module-level singletons).

The hot path stays lean (DESIGN.md §3.5): ``family.labels(*values)`` returns a cached child, and
the child's update is one attribute add (``child.value += n`` is what ``inc`` does after its
sign check; a histogram's ``observe`` is one ``bisect`` and two adds). Everything that costs is
paid once per label set, when its child is created: the label values are validated, escaped
(backslash, double quote, newline) and the sample line's prefix is formatted and kept, so
``render`` only joins cached prefixes with the current numbers.

Families:

- ``Counter``: monotonic; its name ends in ``_total``; ``inc(n)`` refuses a negative ``n`` and
  ``advance_to(total)`` (for totals kept elsewhere and read at scrape time) never moves it back.
  Counters have no ``remove``: SPEC §9.1's counters survive reloads.
- ``Gauge``: ``set``/``inc``/``dec``; ``remove`` and ``retain`` drop the label sets of objects
  that left the config. Each gauge declares its ``GaugeKind``, which says how the supervisor
  combines the workers' values.
- ``Histogram``: cumulative ``_bucket{le=...}`` lines (``+Inf`` last), ``_sum`` and ``_count``;
  the default buckets are SPEC §9.1's, in seconds. Values are expected to be finite.

Multi-worker (SPEC §13.4): ``Registry.snapshot()`` encodes every family (metadata and values)
with msgspec; ``merge(snapshots, own=registry)`` renders their combination: counters,
histograms and ``SUM`` gauges are added up (the supervisor's own values included), ``MAX``
gauges take the largest value, ``OWN`` gauges (config and build information) are the
supervisor's own.

Must not: know any metric of the gateway (``gateway_metrics.py`` declares them), read the
time, or do IO.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from bisect import bisect_left
from typing import TYPE_CHECKING, ClassVar, Final, Generic, TypeAlias, TypeVar

import msgspec

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "GaugeKind",
    "Histogram",
    "HistogramChild",
    "Registry",
    "escape_help",
    "escape_label_value",
    "format_value",
    "merge",
    "monotonic_part",
]

#: The ``Content-Type`` of ``render``'s output.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

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
_SNAPSHOT_VERSION: Final = 1

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


# ------------------------------------------------------------------------------- formatting


def escape_label_value(value: str) -> str:
    """A label value as it goes between double quotes: ``\\``, ``"`` and newline escaped."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if '"' in value:
        value = value.replace('"', '\\"')
    if "\n" in value:
        value = value.replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """``# HELP`` text: ``\\`` and newline escaped (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers as integers, ``+Inf``/``-Inf``/``NaN``, other floats by
    ``repr`` (shortest round-trip form, which Prometheus parses)."""
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    return repr(float(value))


def _format_bound(bound: float) -> str:
    """An ``le`` value: ``1`` rather than ``1.0`` for whole numbers (as Go's client writes)."""
    if bound == math.inf:
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _label_body(names: tuple[str, ...], values: Labels) -> str:
    return ",".join(
        f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True)
    )


# --------------------------------------------------------------------------------- children


class CounterChild:
    """One label set of a counter. ``value`` may be read; use ``inc`` or ``advance_to``."""

    __slots__ = ("line", "value")

    def __init__(self, line: str) -> None:
        #: The sample line up to the value (``name{labels} ``), formatted once.
        self.line = line
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
        return f"<CounterChild {self.line}{format_value(self.value)}>"


class GaugeChild:
    """One label set of a gauge."""

    __slots__ = ("line", "value")

    def __init__(self, line: str) -> None:
        self.line = line
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def __repr__(self) -> str:
        return f"<GaugeChild {self.line}{format_value(self.value)}>"


class HistogramChild:
    """One label set of a histogram: a count per bucket (not cumulative; ``+Inf`` last) and the
    sum of the observations."""

    __slots__ = ("bounds", "counts", "lines", "sum")

    def __init__(self, bounds: tuple[float, ...], lines: tuple[str, ...]) -> None:
        self.bounds = bounds
        #: Prefixes of the bucket lines (one per bound, then ``+Inf``), ``_sum`` and ``_count``.
        self.lines = lines
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

    __slots__ = ("_children", "_head", "help", "labelnames", "name")

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
        self._head = f"# HELP {name} {escape_help(help)}\n# TYPE {name} {self.type_name}\n"
        self._children: dict[Labels, Child] = {}
        if not names:  # an unlabelled family always shows its one sample
            self.labels()

    def labels(self, *values: str) -> Child:
        """The child of this label set, created on first use (values: one ``str`` per label
        name, any text; escaping is done here, once)."""
        child = self._children.get(values)
        if child is None:
            child = self._add(values)
        return child

    @property
    def children(self) -> Mapping[Labels, Child]:
        """Every child by its label values, in creation order (do not modify)."""
        return self._children

    def render_into(self, out: list[str]) -> None:
        """Append this family's lines (``# HELP``, ``# TYPE``, samples) to ``out``."""
        out.append(self._head)
        self._render_samples(out)

    def _add(self, values: Labels) -> Child:
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} has labels {self.labelnames}, got {len(values)} values {values!r}"
            )
        for value in values:
            if not isinstance(value, str):
                raise TypeError(f"label values of {self.name} must be str, got {value!r}")
        child = self._children[values] = self._new_child(values)
        return child

    def _new_child(self, values: Labels) -> Child:
        raise NotImplementedError

    def _render_samples(self, out: list[str]) -> None:
        raise NotImplementedError

    def _prefix(self, values: Labels) -> str:
        if not values:
            return f"{self.name} "
        return f"{self.name}{{{_label_body(self.labelnames, values)}}} "

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

    def _new_child(self, values: Labels) -> CounterChild:
        return CounterChild(self._prefix(values))

    def _render_samples(self, out: list[str]) -> None:
        out.extend(
            f"{child.line}{format_value(child.value)}\n" for child in self._children.values()
        )


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

    def _new_child(self, values: Labels) -> GaugeChild:
        return GaugeChild(self._prefix(values))

    def _render_samples(self, out: list[str]) -> None:
        out.extend(
            f"{child.line}{format_value(child.value)}\n" for child in self._children.values()
        )


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

    def _new_child(self, values: Labels) -> HistogramChild:
        body = _label_body(self.labelnames, values)
        sep = "," if body else ""
        bucket = f"{self.name}_bucket{{{body}{sep}le="
        labels = f"{{{body}}}" if body else ""
        lines = (
            *(f'{bucket}"{_format_bound(bound)}"}} ' for bound in self.buckets),
            f'{bucket}"+Inf"}} ',
            f"{self.name}_sum{labels} ",
            f"{self.name}_count{labels} ",
        )
        return HistogramChild(self.buckets, lines)

    def _render_samples(self, out: list[str]) -> None:
        for child in self._children.values():
            lines = child.lines
            running = 0
            index = 0
            for index, count in enumerate(child.counts):
                running += count
                out.append(f"{lines[index]}{running}\n")
            out.append(f"{lines[index + 1]}{format_value(child.sum)}\n")
            out.append(f"{lines[index + 2]}{running}\n")


Family: TypeAlias = "Counter | Gauge | Histogram"
_F = TypeVar("_F", Counter, Gauge, Histogram)


# --------------------------------------------------------------------------------- registry


class Registry:
    """The families of one process, in declaration order; names are unique."""

    __slots__ = ("_families", "_taken")

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        #: Every sample and family name in use (a histogram takes four, a counter two, since
        #: parsers strip ``_total`` from a counter's family name).
        self._taken: set[str] = set()

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

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every family, UTF-8 (a lone surrogate in a
        label value, which UTF-8 cannot carry, becomes ``?``)."""
        out: list[str] = []
        for family in self._families.values():
            family.render_into(out)
        return "".join(out).encode("utf-8", "replace")

    def snapshot(self) -> bytes:
        """Every family's metadata and values, msgspec-encoded, for ``merge``."""
        return _ENCODER.encode(self._snapshot())

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

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            version=_SNAPSHOT_VERSION,
            families=tuple(_family_snapshot(family) for family in self._families.values()),
        )

    def __repr__(self) -> str:
        return f"<Registry of {len(self._families)} families>"


# ------------------------------------------------------------------------ snapshots, merge


class _SampleSnap(msgspec.Struct, array_like=True, frozen=True):
    labels: tuple[str, ...]
    value: int | float


class _HistogramSnap(msgspec.Struct, array_like=True, frozen=True):
    labels: tuple[str, ...]
    counts: tuple[int, ...]
    total: float


class _FamilySnap(msgspec.Struct, array_like=True, frozen=True):
    name: str
    help: str
    type: str
    kind: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    samples: tuple[_SampleSnap, ...]
    histograms: tuple[_HistogramSnap, ...]


class _Snapshot(msgspec.Struct, frozen=True):
    version: int
    families: tuple[_FamilySnap, ...]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Snapshot)


def _family_snapshot(family: Family) -> _FamilySnap:
    match family:
        case Histogram():
            return _FamilySnap(
                family.name,
                family.help,
                family.type_name,
                "",
                family.labelnames,
                family.buckets,
                (),
                tuple(
                    _HistogramSnap(labels, tuple(child.counts), child.sum)
                    for labels, child in family.children.items()
                ),
            )
        case Gauge():
            kind = family.kind.value
        case _:
            kind = ""
    samples = tuple(_SampleSnap(labels, child.value) for labels, child in family.children.items())
    return _FamilySnap(
        family.name, family.help, family.type_name, kind, family.labelnames, (), samples, ()
    )


def _declare(registry: Registry, snap: _FamilySnap) -> Family | None:
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


def _compatible(family: Family, snap: _FamilySnap) -> bool:
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
    describe a live process and go with it). Raises ``msgspec.DecodeError`` like ``merge``."""
    decoded = _DECODER.decode(snapshot)
    kept = tuple(family for family in decoded.families if family.type in ("counter", "histogram"))
    return _ENCODER.encode(_Snapshot(version=decoded.version, families=kept))


def merge(snapshots: Iterable[bytes], *, own: Registry) -> bytes:
    """The exposition of ``own`` combined with the workers' ``snapshots`` (SPEC §13.4).

    Counters, histograms and ``SUM`` gauges are summed over ``own`` and every snapshot;
    ``MAX`` gauges take the largest value seen; ``OWN`` gauges come from ``own`` (from the
    first snapshot that has the family when ``own`` does not declare it). Families appear in
    ``own``'s order, then in the order the snapshots introduce them. A snapshot's family whose
    type, labels, kind or buckets differ from the family already seen under its name is
    ignored. Raises ``msgspec.DecodeError`` (a ``ValueError``) for bytes that are not a
    snapshot.
    """
    sources = [own._snapshot()]
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
    return combined.render()


def _add_histograms(family: Histogram, histograms: Iterable[_HistogramSnap]) -> None:
    size = len(family.buckets) + 1
    for snap in histograms:
        if len(snap.counts) != size:
            continue
        child = family.labels(*snap.labels)
        for index, count in enumerate(snap.counts):
            child.counts[index] += count
        child.sum += snap.total


def _add_gauges(
    family: Gauge, snap: _FamilySnap, *, owns: bool, seen: set[tuple[str, Labels]]
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
