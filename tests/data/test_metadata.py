"""Place, date, hour and elevation metadata: valid, partial and bad values; bad ones are missing and listed, and no
record is ever dropped."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pytest

from taxotrain.data.metadata import (
    METADATA_COLUMNS,
    MetadataError,
    MetadataLayout,
    layout_for,
    metadata_columns,
    parse_metadata,
)

ALL = list(METADATA_COLUMNS)


def _doy(y: int, m: int, d: int) -> float:
    return float(date(y, m, d).timetuple().tm_yday)


def _one(row: dict[str, str], columns: list[str] | None = None) -> tuple[dict[str, float | None], list]:
    """Each field of one row (None where its component is missing) and the problems."""
    meta = parse_metadata([row], columns or ALL)
    out: dict[str, float | None] = {}
    for component, fields in meta.layout.fields.items():
        for name in fields:
            out[name] = float(meta.arrays[name][0]) if meta.arrays[f"{component}_valid"][0] else None
    return out, meta.problems


def test_valid_place_date_and_hour() -> None:
    got, problems = _one({"decimalLatitude": "-33.86", "decimalLongitude": "151.2",
                          "eventDate": "2021-05-03T14:20:00Z"})
    assert problems == []
    assert got["lat"] == pytest.approx(-33.86) and got["lon"] == pytest.approx(151.2)
    assert got["day_of_year"] == _doy(2021, 5, 3) and got["year"] == 2021
    assert got["hour"] == pytest.approx(14 + 20 / 60)


@pytest.mark.parametrize(("lon", "ok"), [("180", True), ("-180", True), ("180.5", False)])
def test_longitude_bounds(lon: str, ok: bool) -> None:
    got, problems = _one({"decimalLatitude": "10", "decimalLongitude": lon})
    assert (got["lon"] == float(lon)) if ok else got["lon"] is None
    assert len(problems) == (0 if ok else 1)


@pytest.mark.parametrize(("text", "doy", "year", "hour"), [
    ("2021", None, 2021, None),  # known to the year only: no season
    ("2021-05", _doy(2021, 5, 16), 2021, None),  # known to the month: its middle
    ("2020-05", _doy(2020, 5, 16), 2020, None),  # leap year
    ("2021-5-3", _doy(2021, 5, 3), 2021, None),
    ("2021-05-03 14:30", _doy(2021, 5, 3), 2021, 14.5),
    ("2021-05-03T06:15:30.5+02:00", _doy(2021, 5, 3), 2021, 6.25 + 30 / 3600),  # clock time as written
    ("2021-05-03T00:00:00", _doy(2021, 5, 3), 2021, None),  # a lone midnight is "time unknown"
    ("2021-05-01/2021-05-07", _doy(2021, 5, 4), 2021, None),  # a range: its midpoint
    ("2021-05-01/07", _doy(2021, 5, 4), 2021, None),  # ISO's abbreviated end
    ("2021-05-30/06-01", _doy(2021, 5, 31), 2021, None),
    ("2020-12-28/2021-01-03", _doy(2020, 12, 31), 2020, None),  # across New Year
    ("2021-05-03T10:00/2021-05-03T12:00", _doy(2021, 5, 3), 2021, 11.0),
    ("2021-05-03T10:00/12:00", _doy(2021, 5, 3), 2021, 11.0),
    ("2021-03/2021-08", None, 2021, None),  # longer than a month: no season, still one year
    ("1990/1999", None, None, None),  # a decade: neither
])
def test_event_dates(text: str, doy: float | None, year: float | None, hour: float | None) -> None:
    got, problems = _one({"eventDate": text}, ["eventDate"])
    assert problems == []
    assert got["day_of_year"] == doy and got["year"] == year
    assert got["hour"] == (pytest.approx(hour) if hour is not None else None)


@pytest.mark.parametrize(("row", "column", "value", "says"), [
    ({"decimalLatitude": "95", "decimalLongitude": "10"}, "decimalLatitude", "95",
     "decimalLatitude 95 is outside -90..90; fix the value or leave it empty"),
    ({"decimalLatitude": "10", "decimalLongitude": "200"}, "decimalLongitude", "200", "outside -180..180"),
    ({"decimalLatitude": "abc", "decimalLongitude": "10"}, "decimalLatitude", "abc", "'abc' is not a number"),
    ({"decimalLatitude": "45,5", "decimalLongitude": "10"}, "decimalLatitude", "45,5", "decimal degrees"),
    ({"decimalLatitude": "nan", "decimalLongitude": "10"}, "decimalLatitude", "nan", "not a number"),
    ({"decimalLatitude": "12.5", "decimalLongitude": ""}, "decimalLongitude", "", "give both or neither"),
    ({"decimalLatitude": "0", "decimalLongitude": "0"}, "decimalLatitude", "0, 0", "placeholder"),
    ({"eventDate": "2021-13-40"}, "eventDate", "2021-13-40", "month 13 is outside 1..12"),
    ({"eventDate": "2021-02-30"}, "eventDate", "2021-02-30", "day 30 does not exist in 2021-02"),
    ({"eventDate": "abc"}, "eventDate", "abc", "is not an ISO date"),
    ({"eventDate": "03/05/2021"}, "eventDate", "03/05/2021", "is not an ISO date"),
    ({"eventDate": "2999-01-01"}, "eventDate", "2999-01-01", "year 2999 is outside"),
    ({"eventDate": "2021-05-07/2021-05-01"}, "eventDate", "2021-05-07/2021-05-01", "ends before it starts"),
    ({"eventDate": "2021-05-03T25:00"}, "eventDate", "2021-05-03T25:00", "no valid time of day"),
    ({"month": "13"}, "month", "13", "month 13 is outside 1..12"),
    ({"year": "2021", "month": "2", "day": "30"}, "day", "30", "day 30 does not exist in 2021-02"),
    ({"year": "MMXXI"}, "year", "MMXXI", "not a number"),
    ({"eventTime": "7pm"}, "eventTime", "7pm", "no valid time of day"),
    ({"elevation": "1200 m"}, "elevation", "1200 m", "give metres"),
    ({"elevation": "9500"}, "elevation", "9500", "outside -11000..9000"),
    ({"minimumElevationInMeters": "500", "maximumElevationInMeters": "100"}, "minimumElevationInMeters", "500",
     "swap them"),
])
def test_bad_values_are_missing_and_reported(row: dict[str, str], column: str, value: str, says: str) -> None:
    meta = parse_metadata([{"decimalLatitude": "1", "decimalLongitude": "2"}, row], ALL, ids=["a.jpg", "b.jpg"])
    assert len(meta) == 2 and meta.arrays["place_valid"][0]  # the other record is untouched
    [problem] = meta.problems
    assert (problem.index, problem.record, problem.column, problem.value) == (1, "b.jpg", column, value)
    assert says in problem.reason and problem.line == f"b.jpg: {problem.reason}" and "\n" not in problem.line
    assert meta.report_rows() == [("b.jpg", problem.reason)]
    touched = {"decimalLatitude": "place", "decimalLongitude": "place", "eventDate": "date", "month": "date",
               "year": "year", "eventTime": "hour", "elevation": "elevation",
               "minimumElevationInMeters": "elevation"}.get(column)  # a bad day keeps its month (tested below)
    if touched is not None:
        assert not meta.arrays[f"{touched}_valid"][1]
        assert all(np.isnan(meta.arrays[f][1]) for f in meta.layout.fields[touched])


def test_no_record_is_dropped_and_every_bad_value_is_listed() -> None:
    rows = [{"decimalLatitude": "95", "decimalLongitude": "200", "eventDate": "2021-13-40", "elevation": "x"},
            {"decimalLatitude": "", "decimalLongitude": "", "eventDate": ""},
            {"decimalLatitude": "-12.5", "decimalLongitude": "130.8", "eventDate": "2019-11-02"}]
    meta = parse_metadata(rows, ALL)
    assert len(meta) == 3 and all(len(a) == 3 for a in meta.arrays.values())
    assert [(p.index, p.column, p.value) for p in meta.problems] == [
        (0, "decimalLatitude", "95"), (0, "decimalLongitude", "200"), (0, "eventDate", "2021-13-40"),
        (0, "elevation", "x")]
    assert meta.arrays["place_valid"].tolist() == [False, False, True]
    assert meta.arrays["date_valid"].tolist() == [False, False, True]
    assert meta.summary() == "metadata: place 1/3, date 1/3, year 1/3, hour 0/3, elevation 0/3; 4 unusable value(s)"


@pytest.mark.parametrize(("row", "doy", "year"), [
    ({"year": "2021", "month": "05", "day": "03"}, _doy(2021, 5, 3), 2021),
    ({"year": "2021", "month": "5"}, _doy(2021, 5, 16), 2021),  # month only: its middle
    ({"year": "2021"}, None, 2021),
    ({"year": "2021.0", "month": "5.0", "day": "3"}, _doy(2021, 5, 3), 2021),  # spreadsheets write floats
    ({"month": "3", "day": "1"}, _doy(2000, 3, 1), None),  # no year: a season without a year
    ({"day": "3"}, None, None),  # a day without a month says nothing
    ({"eventDate": "2019-07-01", "year": "2021", "month": "5", "day": "3"}, _doy(2019, 7, 1), 2019),  # eventDate first
])
def test_year_month_day_columns(row: dict[str, str], doy: float | None, year: float | None) -> None:
    got, problems = _one(row)
    assert problems == [] and got["day_of_year"] == doy and got["year"] == year


def test_bad_event_date_falls_back_to_year_month_day_and_bad_month_keeps_the_year() -> None:
    got, problems = _one({"eventDate": "2021-13-40", "year": "2021", "month": "6", "day": "10"})
    assert got["day_of_year"] == _doy(2021, 6, 10) and [p.column for p in problems] == ["eventDate"]
    got, problems = _one({"year": "2021", "month": "13", "day": "5"})
    assert got["year"] == 2021 and got["day_of_year"] is None and [p.column for p in problems] == ["month"]
    got, problems = _one({"year": "2021", "month": "2", "day": "30"})
    assert got["day_of_year"] == _doy(2021, 2, 15) and [p.value for p in problems] == ["30"]  # keeps the month


@pytest.mark.parametrize(("row", "hour"), [
    ({"eventDate": "2021-05-03", "eventTime": "14:30"}, 14.5),
    ({"eventTime": "06:45:00-07:00"}, 6.75),
    ({"eventTime": "10:00/12:30"}, 11.25),
    ({"eventTime": "00:00:00"}, None),
    ({"eventDate": "2021-05-03T09:00", "eventTime": "18:00"}, 9.0),  # the date's own time wins
    ({"eventDate": "2021-05-03"}, None),
])
def test_hour(row: dict[str, str], hour: float | None) -> None:
    got, problems = _one(row)
    assert problems == [] and got["hour"] == hour


@pytest.mark.parametrize(("row", "metres"), [
    ({"elevation": "1200"}, 1200.0),
    ({"minimumElevationInMeters": "100", "maximumElevationInMeters": "300"}, 200.0),
    ({"minimumElevationInMeters": "-20"}, -20.0),
    ({"maximumElevationInMeters": "4500.5"}, 4500.5),
    ({"elevation": "50", "minimumElevationInMeters": "100", "maximumElevationInMeters": "300"}, 50.0),
    ({}, None),
])
def test_elevation(row: dict[str, str], metres: float | None) -> None:
    got, problems = _one(row)
    assert problems == [] and got["elevation"] == metres


def test_arrays_are_float32_values_with_bool_masks_named_by_the_layout() -> None:
    meta = parse_metadata([{"decimalLatitude": "1", "decimalLongitude": "2", "eventDate": "2021"}],
                          ["filepath", "decimalLatitude", "decimalLongitude", "eventDate"])
    assert meta.layout.components == ("place", "date", "year", "hour")
    assert list(meta.arrays) == meta.layout.array_names() == [
        "lat", "lon", "place_valid", "day_of_year", "date_valid", "year", "year_valid", "hour", "hour_valid"]
    for name, array in meta.arrays.items():
        assert array.dtype == (np.bool_ if name.endswith("_valid") else np.float32) and array.shape == (1,)
    assert math.isnan(meta.arrays["day_of_year"][0]) and meta.arrays["year"][0] == 2021


def test_columns_and_layout_come_from_the_header() -> None:
    assert metadata_columns(["filepath", "genus", "species"]) == []
    assert not layout_for(["filepath", "genus"])
    assert metadata_columns([" eventDate", "decimalLongitude", "x", "decimalLatitude"]) == [
        "decimalLatitude", "decimalLongitude", "eventDate"]
    assert layout_for(["decimalLatitude"]).components == ()  # half a place is no place
    assert layout_for(["year", "month", "day"]).components == ("date", "year")
    assert layout_for(["eventTime", "maximumElevationInMeters"]).components == ("hour", "elevation")
    # the layout does not depend on the values: a manifest with empty cells still has its components
    meta = parse_metadata([{"filepath": "a.jpg", "eventDate": ""}], ["filepath", "eventDate"])
    assert meta.layout.components == ("date", "year", "hour") and not meta.arrays["date_valid"].any()


def test_no_metadata_columns_give_no_arrays_but_keep_the_count() -> None:
    meta = parse_metadata([{"filepath": "a.jpg"}, {"filepath": "b.jpg"}])
    assert not meta.layout and meta.arrays == {} and len(meta) == 2 and meta.problems == []


def test_layout_json_round_trip_and_comparison() -> None:
    layout = layout_for(["decimalLatitude", "decimalLongitude", "eventDate"])
    text = layout.to_json()
    assert json.loads(text)["components"]["place"] == ["lat", "lon"]
    assert MetadataLayout.from_json(text) == layout
    assert MetadataLayout(("year", "place")) == MetadataLayout(("place", "year"))  # order-free
    layout.require_same(MetadataLayout.from_json(text), "query.csv")
    with pytest.raises(MetadataError, match=r"query.csv: .* lacks place, hour .*decimalLatitude\+decimalLongitude"):
        layout.require_same(layout_for(["year", "month"]), "query.csv")
    with pytest.raises(MetadataError, match="another taxotrain version"):
        MetadataLayout.from_json(json.dumps({"version": 1, "components": {"place": ["x", "y"]}}))
    with pytest.raises(MetadataError, match="unknown metadata component"):
        MetadataLayout(("altitude",))


def test_select_keeps_the_chosen_records_and_their_problems() -> None:
    rows = [{"decimalLatitude": "95", "decimalLongitude": "1"}, {"decimalLatitude": "3", "decimalLongitude": "4"},
            {"decimalLatitude": "5", "decimalLongitude": "400"}]
    meta = parse_metadata(rows).select([2, 1])
    assert len(meta) == 2 and meta.arrays["place_valid"].tolist() == [False, True]
    assert np.isnan(meta.arrays["lat"][0]) and meta.arrays["lat"][1] == 3
    assert [(p.record, p.column) for p in meta.problems] == [("row 3", "decimalLongitude")]
