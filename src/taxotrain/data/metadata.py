"""Where, when and at what elevation each record was made, read from Darwin Core columns into arrays with masks.

A row is a manifest CSV row or a Darwin Core record (a dict of short term names to text). Five components come out:

- ``place``: ``lat``, ``lon`` (decimal degrees), valid only when both parse and lie in -90..90 and -180..180.
- ``date``: ``day_of_year`` (1..366) of the middle of the interval the date stands for, valid when that interval
  is at most 31 days long: a day, a month (so a month-only date gives the middle of the month: 2021-05 is day 136,
  16 May) or a short range (``2021-05-01/2021-05-07`` gives its midpoint, 4 May). A year-only date or a longer
  range leaves it missing.
- ``year``: the year of that midpoint, valid when the interval is at most 366 days long.
- ``hour``: the clock time (0..24, e.g. 14.5 for 14:30) as written, valid only when a time is given (in
  ``eventDate`` or ``eventTime``); an offset (``Z``, ``+02:00``) is ignored, as Darwin Core asks for local time.
  A lone midnight (``T00:00:00``) counts as no time: databases write it for "time unknown".
- ``elevation``: metres, from ``elevation``, else the mean of ``minimumElevationInMeters`` and
  ``maximumElevationInMeters`` (or the one given), valid in -11000..9000.

``eventDate`` (ISO 8601: ``2021``, ``2021-05``, ``2021-05-03``, ``2021-05-03T14:20:00Z``, ranges ``START/END``
with an abbreviated end such as ``2021-05-01/07``) comes first; when it is empty or unusable, ``year``, ``month``
and ``day`` are used (a bad month or day drops itself and the finer parts: month 13 keeps the year; a bad year
leaves month and day as a date without a year). Column names match exactly. A bad value never drops its
record: it is stored as missing and listed as a :class:`MetadataProblem`.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import numpy as np

from taxotrain.errors import TaxotrainError

__all__ = ["COMPONENTS", "METADATA_COLUMNS", "Metadata", "MetadataError", "MetadataLayout", "MetadataProblem",
           "layout_for", "metadata_columns", "metadata_report_rows", "parse_metadata"]

LAT, LON = "decimalLatitude", "decimalLongitude"
EVENT_DATE, EVENT_TIME, YEAR, MONTH, DAY = "eventDate", "eventTime", "year", "month", "day"
ELEVATION, MIN_ELEVATION, MAX_ELEVATION = "elevation", "minimumElevationInMeters", "maximumElevationInMeters"
METADATA_COLUMNS = (LAT, LON, EVENT_DATE, EVENT_TIME, YEAR, MONTH, DAY, ELEVATION, MIN_ELEVATION, MAX_ELEVATION)

# component -> its value fields; each component has one mask, "<component>_valid"
COMPONENTS: dict[str, tuple[str, ...]] = {"place": ("lat", "lon"), "date": ("day_of_year",), "year": ("year",),
                                          "hour": ("hour",), "elevation": ("elevation",)}
# a component is in a layout when all columns of one of its alternatives are in the header; decided by the header
# alone, so a prediction CSV with the training manifest's columns always has the same layout
_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "place": ((LAT, LON),), "date": ((EVENT_DATE,), (MONTH,)), "year": ((EVENT_DATE,), (YEAR,)),
    "hour": ((EVENT_DATE,), (EVENT_TIME,)), "elevation": ((ELEVATION,), (MIN_ELEVATION,), (MAX_ELEVATION,))}
LAYOUT_VERSION = 1
ELEVATION_RANGE = (-11000.0, 9000.0)
MIN_YEAR = 1500
REFERENCE_YEAR = 2000  # a leap year, for a month and day given without a year (29 February stays valid)
SHORT_SPAN, YEAR_SPAN, DAY_SPAN = timedelta(days=31), timedelta(days=366), timedelta(days=1)
EMPTY = "fix the value or leave it empty"

_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
_TIME = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?", re.IGNORECASE)


class MetadataError(TaxotrainError):
    """Metadata that cannot be used as given (e.g. a layout other than the model's); the message says the fix."""


class _Bad(ValueError):
    """A value that cannot be used; the message is the one-line reason with its fix."""


@dataclass(frozen=True)
class MetadataProblem:
    """A metadata value stored as missing: where it is, the raw text and why (with the fix)."""

    index: int  # position of the record in the rows given
    record: str  # the record's id for messages (file id, "manifest.csv line 5", or "row N")
    column: str
    value: str
    reason: str

    @property
    def line(self) -> str:
        """One line for the user: ``<record>: <reason>``."""
        return f"{self.record}: {self.reason}"


@dataclass(frozen=True)
class MetadataLayout:
    """Which metadata components a data set carries (each with its fields); saved with a store and a model."""

    components: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise MetadataError(f"unknown metadata component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
        object.__setattr__(self, "components", tuple(c for c in COMPONENTS if c in self.components))

    def __bool__(self) -> bool:
        return bool(self.components)

    @property
    def fields(self) -> dict[str, tuple[str, ...]]:
        """Component -> the names of its value arrays."""
        return {c: COMPONENTS[c] for c in self.components}

    def array_names(self) -> list[str]:
        """Names of all arrays of this layout: each component's fields, then its ``<component>_valid`` mask."""
        return [name for c in self.components for name in (*COMPONENTS[c], f"{c}_valid")]

    def to_json(self) -> str:
        """The layout as JSON (version and component -> fields), for an HDF5 attribute or a run folder."""
        return json.dumps({"version": LAYOUT_VERSION, "components": {c: list(f) for c, f in self.fields.items()}})

    @classmethod
    def from_json(cls, text: str) -> MetadataLayout:
        """A layout saved by :meth:`to_json`; a layout this version cannot read is a :class:`MetadataError`."""
        try:
            data = json.loads(text)
            version, components = data["version"], data["components"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MetadataError(f"not a metadata layout: {text[:80]!r}") from exc
        layout = cls(tuple(components))
        if version != LAYOUT_VERSION or {c: tuple(f) for c, f in components.items()} != layout.fields:
            raise MetadataError(f"metadata layout {text[:120]} was written by another taxotrain version; "
                                "prepare the data again with this version")
        return layout

    def require_same(self, given: MetadataLayout, source: str) -> None:
        """Raise a :class:`MetadataError` naming ``source`` when ``given`` differs from this (expected) layout."""
        if given == self:
            return
        missing = [c for c in self.components if c not in given.components]
        extra = [c for c in given.components if c not in self.components]
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"adds {', '.join(extra)}"] if extra else [])
        raise MetadataError(f"{source}: its metadata ({', '.join(given.components) or 'none'}) {' and '.join(parts)}"
                            f" compared with the model's ({', '.join(self.components) or 'none'}); give the same "
                            f"metadata columns as the training data ({', '.join(_columns_of(self)) or 'none'})")


@dataclass
class Metadata:
    """Parsed metadata of N records: float32 value arrays (NaN where missing) and bool masks, plus the problems."""

    layout: MetadataLayout
    arrays: dict[str, np.ndarray]  # name -> [N]; the HDF5 datasets to store, see MetadataLayout.array_names
    problems: list[MetadataProblem] = field(default_factory=list)
    count: int = 0  # N, also when the layout is empty (no arrays to measure)

    def __len__(self) -> int:
        return self.count

    def select(self, indices: Sequence[int]) -> Metadata:
        """The metadata of the records at ``indices`` (in that order), e.g. those that survive image checks."""
        idx = np.asarray(indices, dtype=np.int64)
        keep = set(idx.tolist())
        return Metadata(self.layout, {k: v[idx] for k, v in self.arrays.items()},
                        [p for p in self.problems if p.index in keep], len(idx))

    @classmethod
    def concat(cls, parts: Sequence[Metadata]) -> Metadata:
        """The records of ``parts`` one after the other (one layout; problems re-indexed)."""
        offsets = np.cumsum([0, *(len(p) for p in parts)])
        problems = [replace(q, index=q.index + int(off)) for p, off in zip(parts, offsets, strict=False)
                    for q in p.problems]
        arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
        return cls(parts[0].layout, arrays, problems, int(offsets[-1]))

    def valid_counts(self) -> dict[str, int]:
        """Component -> how many records have it."""
        return {c: int(self.arrays[f"{c}_valid"].sum()) for c in self.layout.components}

    def summary(self) -> str:
        """One line: records with each component, and how many values were unusable."""
        counts = ", ".join(f"{c} {n}/{len(self)}" for c, n in self.valid_counts().items())
        return f"metadata: {counts or 'none'}; {len(self.problems)} unusable value(s)"

    def report_rows(self) -> list[tuple[str, str]]:
        """The problems as ``(record, reason)`` rows, the shape of the prepare report."""
        return [(p.record, p.reason) for p in self.problems]


def metadata_columns(header: Iterable[str]) -> list[str]:
    """The metadata columns present in ``header`` (in the order of :data:`METADATA_COLUMNS`); empty: none."""
    present = {c.strip() for c in header}
    return [c for c in METADATA_COLUMNS if c in present]


def layout_for(header: Iterable[str]) -> MetadataLayout:
    """The layout the columns of ``header`` give (from the header alone, never from the values)."""
    present = set(metadata_columns(header))
    return MetadataLayout(tuple(c for c, alts in _NEEDS.items() if any(set(a) <= present for a in alts)))


def _columns_of(layout: MetadataLayout) -> list[str]:
    return [" or ".join("+".join(a) for a in _NEEDS[c]) for c in layout.components]


def parse_metadata(rows: Sequence[Mapping[str, str | None]], columns: Iterable[str] | None = None,
                   ids: Sequence[str] | None = None) -> Metadata:
    """Metadata of each row; never raises for a bad value (it is missing in the arrays and listed in ``problems``).

    ``columns`` is the header (default: the keys of the rows) and decides the layout; ``ids`` name the records in
    problems (default ``row 1``, ``row 2``, ...).
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    layout = layout_for(columns)
    n = len(rows)
    arrays: dict[str, np.ndarray] = {}
    for c in layout.components:
        arrays.update({f: np.full(n, np.nan, dtype=np.float32) for f in COMPONENTS[c]})
        arrays[f"{c}_valid"] = np.zeros(n, dtype=bool)
    problems: list[MetadataProblem] = []
    for i, row in enumerate(rows):
        record = ids[i] if ids is not None else f"row {i + 1}"

        def report(column: str, value: str, reason: str, i: int = i, record: str = record) -> None:
            problems.append(MetadataProblem(i, record, column, value, reason))

        for component, values in _parse_row(row, layout, report).items():
            if values is not None:
                for name, v in zip(COMPONENTS[component], values, strict=True):
                    arrays[name][i] = v
                arrays[f"{component}_valid"][i] = True
    return Metadata(layout, arrays, problems, n)


_Report = Callable[[str, str, str], None]


def _parse_row(row: Mapping[str, str | None], layout: MetadataLayout,
               report: _Report) -> dict[str, tuple[float, ...] | None]:
    has = set(layout.components)
    out: dict[str, tuple[float, ...] | None] = {}
    if "place" in has:
        out["place"] = _place(row, report)
    if has & {"date", "year", "hour"}:
        day_of_year, year, hour = _when(row, report)
        out.update(date=day_of_year, year=year, hour=hour)
    if "elevation" in has:
        out["elevation"] = _elevation(row, report)
    return {c: v for c, v in out.items() if c in has}


def _cell(row: Mapping[str, str | None], column: str) -> str:
    return str(row.get(column) or "").strip()


def _attempt(report: _Report, column: str, raw: str, parse: Callable[[str], float]) -> float | None:
    """``parse(raw)``, or None for an empty cell; a bad value is reported and gives None."""
    if not raw:
        return None
    try:
        return parse(raw)
    except _Bad as exc:
        report(column, raw, str(exc))
        return None


def _number(raw: str, column: str, lo: float, hi: float, unit: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _Bad(f"{column} {raw!r} is not a number; give {unit} or leave it empty") from None
    if not math.isfinite(value):
        raise _Bad(f"{column} {raw!r} is not a number; give {unit} or leave it empty")
    if not lo <= value <= hi:
        raise _Bad(f"{column} {raw} is outside {lo:g}..{hi:g}; {EMPTY}")
    return value


# --- place


def _place(row: Mapping[str, str | None], report: _Report) -> tuple[float, float] | None:
    lat_raw, lon_raw = _cell(row, LAT), _cell(row, LON)
    lat = _attempt(report, LAT, lat_raw, lambda s: _number(s, LAT, -90, 90, "decimal degrees (e.g. -33.86)"))
    lon = _attempt(report, LON, lon_raw, lambda s: _number(s, LON, -180, 180, "decimal degrees (e.g. 151.2)"))
    if bool(lat_raw) != bool(lon_raw):
        given, empty = (LAT, LON) if lat_raw else (LON, LAT)
        report(empty, "", f"{empty} is empty while {given} is {lat_raw or lon_raw}; give both or neither")
        return None
    if lat is None or lon is None:
        return None
    if lat == 0 and lon == 0:
        report(LAT, f"{lat_raw}, {lon_raw}", f"{LAT} 0 with {LON} 0 is the usual placeholder for an unknown place; "
               "fix the values or leave both empty")
        return None
    return lat, lon


# --- date, year and hour


@dataclass(frozen=True)
class _Span:
    """The interval [start, end) a date stands for; ``end == start`` for an instant with a time."""

    start: datetime
    end: datetime
    timed: bool
    year_known: bool = True


def _when(row: Mapping[str, str | None], report: _Report) -> tuple[tuple[float] | None, ...]:
    """(day_of_year, year, hour) of a row, each None when unknown."""
    span = None
    raw = _cell(row, EVENT_DATE)
    if raw:
        try:
            span = _event_date(raw)
        except _Bad as exc:
            report(EVENT_DATE, raw, str(exc))
    if span is None:
        span = _year_month_day(row, report)
    day_of_year = year = hour = None
    if span is not None:
        length = span.end - span.start
        mid = span.start + length / 2
        day_of_year = (float(mid.timetuple().tm_yday),) if length <= SHORT_SPAN else None
        year = (float(mid.year),) if span.year_known and length <= YEAR_SPAN else None
        if span.timed and length <= DAY_SPAN:
            hour = (_hours(mid),)
    if hour is None:
        hour = _event_time(row, report)
    return day_of_year, year, hour


def _hours(t: datetime) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


def _event_date(raw: str) -> _Span | None:
    """The interval of an ISO 8601 date, date-time or ``START/END`` range."""
    if raw.count("/") > 1:
        raise _Bad(f"{EVENT_DATE} {raw!r} is not an ISO date; write YYYY-MM-DD (or YYYY-MM, YYYY, START/END) or "
                   "leave it empty")
    if "/" not in raw:
        return _point(raw, raw, lone=True)
    first, last = (s.strip() for s in raw.split("/"))
    start, end = _point(first, raw, lone=False), _point(_complete_end(first, last), raw, lone=False)
    if end.end < start.start:
        raise _Bad(f"{EVENT_DATE} {raw} ends before it starts; write START/END with the earlier date first")
    return _Span(start.start, end.end, start.timed and end.timed)


def _complete_end(first: str, last: str) -> str:
    """The end of a range with what ISO 8601 lets it leave out taken from the start (``2021-05-01/07``)."""
    if _DATE.match(last):
        return last
    day = first.replace(" ", "T").partition("T")[0]
    if ":" in last:  # a time only: same day
        return f"{day}T{last.lstrip('Tt')}"
    parts, tail = day.split("-"), last.split("-")
    return "-".join(parts[: max(len(parts) - len(tail), 1)] + tail)


def _point(text: str, raw: str, lone: bool) -> _Span:
    """The interval of one ISO date or date-time; ``lone``: not a range end, so a bare midnight means no time."""
    day_part, _, time_part = text.replace(" ", "T", 1).partition("T")
    m = _DATE.fullmatch(day_part)
    if not m or (time_part and m.group(3) is None):
        raise _Bad(f"{EVENT_DATE} {raw!r} is not an ISO date; write YYYY-MM-DD (or YYYY-MM, YYYY, START/END) or "
                   "leave it empty")
    y, mo, d = (int(g) if g else None for g in m.groups())
    _check_date(EVENT_DATE, raw, y, mo, d)
    if mo is None:
        return _Span(datetime(y, 1, 1), datetime(y + 1, 1, 1), False)
    if d is None:
        nxt = datetime(y + mo // 12, mo % 12 + 1, 1)
        return _Span(datetime(y, mo, 1), nxt, False)
    start = datetime(y, mo, d)
    hours = _time_of_day(time_part, EVENT_DATE, raw) if time_part else None
    if hours is None or (lone and hours in (0.0, 24.0)):
        return _Span(start, start + DAY_SPAN, False)
    t = start + timedelta(hours=hours)
    return _Span(t, t, True)


def _check_date(column: str, raw: str, y: int, mo: int | None, d: int | None) -> None:
    last = date.today().year + 1
    if not MIN_YEAR <= y <= last:
        raise _Bad(f"{column} {raw}: year {y} is outside {MIN_YEAR}..{last}; {EMPTY}")
    if mo is not None and not 1 <= mo <= 12:
        raise _Bad(f"{column} {raw}: month {mo} is outside 1..12; {EMPTY}")
    if mo is not None and d is not None and not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise _Bad(f"{column} {raw}: day {d} does not exist in {y}-{mo:02d}; {EMPTY}")


def _time_of_day(text: str, column: str, raw: str) -> float:
    """Hours since midnight of ``HH[:MM[:SS[.fff]]][Z|±HH[:MM]]`` (the offset is ignored: local clock time)."""
    m = _TIME.fullmatch(text.strip())
    h, mi, s = (int(g) if g else 0 for g in m.groups()) if m else (-1, 0, 0)
    if not 0 <= h <= 24 or mi > 59 or s > 59 or (h == 24 and (mi or s)):
        raise _Bad(f"{column} {raw!r} has no valid time of day; write hh:mm (00:00..23:59) or leave it empty")
    return h + mi / 60 + s / 3600


def _event_time(row: Mapping[str, str | None], report: _Report) -> tuple[float] | None:
    raw = _cell(row, EVENT_TIME)
    if not raw:
        return None
    try:
        if "/" in raw:
            a, b = (_time_of_day(p, EVENT_TIME, raw) for p in raw.split("/", 1))
            if b < a:
                raise _Bad(f"{EVENT_TIME} {raw} ends before it starts; write START/END with the earlier time first")
            return ((a + b) / 2,)
        hours = _time_of_day(raw, EVENT_TIME, raw)
    except _Bad as exc:
        report(EVENT_TIME, raw, str(exc))
        return None
    return None if hours in (0.0, 24.0) else (hours,)  # a lone midnight: "time unknown"


def _integer(raw: str, column: str, lo: int, hi: int) -> float:
    value = _number(raw, column, lo, hi, f"a whole number {lo}..{hi}")
    if value != int(value):
        raise _Bad(f"{column} {raw} is not a whole number; {EMPTY}")
    return value


def _year_month_day(row: Mapping[str, str | None], report: _Report) -> _Span | None:
    """The interval of Darwin Core ``year``/``month``/``day``; a bad part drops itself and the finer parts."""
    last = date.today().year + 1
    y = _attempt(report, YEAR, _cell(row, YEAR), lambda s: _integer(s, YEAR, MIN_YEAR, last))
    mo = _attempt(report, MONTH, _cell(row, MONTH), lambda s: _integer(s, MONTH, 1, 12))
    if mo is None:
        return _Span(datetime(int(y), 1, 1), datetime(int(y) + 1, 1, 1), False) if y is not None else None
    year, month = int(y) if y is not None else REFERENCE_YEAR, int(mo)

    def day(s: str) -> float:
        value = _integer(s, DAY, 1, 31)
        if value > calendar.monthrange(year, month)[1]:
            raise _Bad(f"{DAY} {s} does not exist in {f'{year}-' if y is not None else 'month '}{month:02d}; {EMPTY}")
        return value

    d = _attempt(report, DAY, _cell(row, DAY), day)
    if d is None:
        start, end = datetime(year, month, 1), datetime(year + month // 12, month % 12 + 1, 1)
    else:
        start = datetime(year, month, int(d))
        end = start + DAY_SPAN
    return _Span(start, end, False, y is not None)


# --- elevation


def _elevation(row: Mapping[str, str | None], report: _Report) -> tuple[float] | None:
    lo, hi = ELEVATION_RANGE

    def metres(column: str) -> float | None:
        return _attempt(report, column, _cell(row, column), lambda s: _number(s, column, lo, hi, "metres"))

    if _cell(row, ELEVATION):
        value = metres(ELEVATION)
        return None if value is None else (value,)
    low, high = metres(MIN_ELEVATION), metres(MAX_ELEVATION)
    if low is not None and high is not None:
        if low > high:
            report(MIN_ELEVATION, _cell(row, MIN_ELEVATION), f"{MIN_ELEVATION} {_cell(row, MIN_ELEVATION)} is above "
                   f"{MAX_ELEVATION} {_cell(row, MAX_ELEVATION)}; swap them or fix the values")
            return None
        return ((low + high) / 2,)
    one = low if low is not None else high
    return None if one is None else (one,)


def metadata_report_rows(metadata: Metadata | None) -> list[tuple[str, str]]:
    """The unusable values of ``metadata`` as rows of the prepare report (``path, reason``): the record is stored,
    the value is missing."""
    if metadata is None:
        return []
    return [(p.record, f"metadata: {p.reason} (the record is kept, this value stored as missing)")
            for p in metadata.problems]
