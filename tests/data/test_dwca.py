"""Darwin Core Archives: the real cetacean archive in ../shared (2,176 occurrences with real partial
identifications, places and dates) and hand-made archives with a multimedia extension and tiny images."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxotrain.data.dwca import (
    AUDUBON_MULTIMEDIA,
    OCCURRENCE,
    SIMPLE_MULTIMEDIA,
    DwcArchive,
    canonical_name,
    manifest_rows,
    rank_labels,
    read_dwca,
    require_ranks,
    short_name,
)
from taxotrain.data.ingest import IngestError, from_rows
from taxotrain.data.metadata import parse_metadata

ARCHIVE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cetacean_dwca" / "dwca-nssd-v1.0.zip"
RANKS = ["order", "family", "genus", "scientificName"]
DWC = "http://rs.tdwg.org/dwc/terms/"
DC = "http://purl.org/dc/terms/"


@pytest.fixture(scope="module")
def cetaceans() -> DwcArchive:
    """The real archive, read once."""
    if not ARCHIVE.is_file():
        pytest.skip(f"real Darwin Core Archive not found at {ARCHIVE} (the ../shared folder beside the repo)")
    return read_dwca(ARCHIVE)


# --- the real archive


def test_real_archive_has_every_occurrence_with_its_fields(cetaceans: DwcArchive) -> None:
    assert len(cetaceans.occurrences) == 2176
    assert len({o.id for o in cetaceans.occurrences}) == 2176
    assert {"id", "decimalLatitude", "decimalLongitude", "year", "month", "day", *RANKS} <= set(cetaceans.columns)
    first = cetaceans.occurrences[0]
    assert first.id == "urn:catalog:AADC:NSSD:NSSD-3855" == first.fields["id"]
    assert (first.fields["scientificName"], first.fields["year"], first.fields["decimalLatitude"]) == (
        "Mirounga leonina", "1981", "-54.6666666667")
    # fieldsEnclosedBy="" in meta.xml: a quote inside a field is text, not CSV quoting
    quoted = next(o for o in cetaceans.occurrences if o.id == "urn:catalog:AADC:NSSD:NSSD-5044")
    assert quoted.fields["fieldNotes"] == '"What looked like Bottlenose Dolphins"'
    assert quoted.fields["scientificName"] == "Tursiops truncatus"
    assert cetaceans.media == [] and all(o.images == [] for o in cetaceans.occurrences)


def test_real_partial_identifications_keep_their_known_ranks(cetaceans: DwcArchive) -> None:
    labels = Counter((o.fields["scientificName"], rank_labels(o.fields, RANKS)) for o in cetaceans.occurrences)
    assert labels[("Globicephala sp.", ("Cetacea", "Delphinidae", "Globicephala", None))] == 83
    assert labels[("Balaenoptera sp.", ("Cetacea", "Balaenopteridae", "Balaenoptera", None))] == 3
    # the export copies the family into the genus column; the name says the genus is unknown
    raw = {o.fields["genus"] for o in cetaceans.occurrences if o.fields["scientificName"] == "Delphinidae sp."}
    assert raw == {"Delphinidae"}
    assert labels[("Delphinidae sp.", ("Cetacea", "Delphinidae", None, None))] == 82
    species = [(n, lab) for (n, lab), k in labels.items() for _ in range(k) if " sp." not in n]
    assert len(species) == 2176 - 168 and all(lab[-1] == n and None not in lab for n, lab in species)
    assert sum(k for (_, lab), k in labels.items()) == 2176  # every record kept, each known at least to order


def test_real_places_and_dates_parse(cetaceans: DwcArchive) -> None:
    occ = cetaceans.occurrences
    meta = parse_metadata([o.fields for o in occ], cetaceans.columns, [o.id for o in occ])
    assert len(meta) == 2176 and meta.layout.components == ("place", "date", "year")
    assert meta.valid_counts() == {"place": 2065, "date": 2133, "year": 2133}  # 108 without a place, 43 no date
    lat, lon = meta.arrays["lat"][meta.arrays["place_valid"]], meta.arrays["lon"][meta.arrays["place_valid"]]
    assert [lat.min(), lat.max(), lon.min(), lon.max()] == pytest.approx([-77.4333, 38.9, -176.0, 179.9167], abs=1e-3)
    years = meta.arrays["year"][meta.arrays["year_valid"]]
    assert (years.min(), years.max()) == (1955, 1999)
    assert meta.arrays["day_of_year"][0] == 2  # 1981-01-02
    # the archive's own errors: a latitude without longitude, a longitude of 199.7, a 0/0 placeholder
    assert [(p.record, p.column, p.value) for p in meta.problems] == [
        ("urn:catalog:AADC:NSSD:NSSD-5129", "decimalLongitude", ""),
        ("urn:catalog:AADC:NSSD:NSSD-6144", "decimalLongitude", "199.733333333"),
        ("urn:catalog:AADC:NSSD:NSSD-5194", "decimalLatitude", "0, 0")]


def test_real_archive_manifest_rows_and_missing_rank(cetaceans: DwcArchive) -> None:
    columns, rows = manifest_rows(cetaceans, RANKS)
    assert columns[0] == "filepath" and len(rows) == 2176 and all(r["filepath"] == "" for r in rows)
    globi = next(r for r in rows if r["scientificName"] == "" and r["genus"] == "Globicephala")
    assert globi["family"] == "Delphinidae"
    with pytest.raises(IngestError, match=r"no column\(s\) species .* its columns are: id, modified, .*genus"):
        require_ranks(cetaceans, ["family", "species"])


# --- names


@pytest.mark.parametrize(("name", "canonical"), [
    ("Tursiops truncatus (Montagu, 1821)", "Tursiops truncatus"),
    ("Tursiops truncatus Montagu 1821", "Tursiops truncatus"),
    ("Globicephala sp.", "Globicephala"),
    ("Delphinidae spp.", "Delphinidae"),
    ("Delphinidae Gray, 1821", "Delphinidae"),
    ("Tursiops cf. truncatus", "Tursiops"),
    ("Arctostaphylos crustacea crustacea", "Arctostaphylos crustacea crustacea"),
    ("Quercus agrifolia var. oxyadenia (Torr.) J.T.Howell", "Quercus agrifolia var. oxyadenia"),
    ("Carabus (Megodontus) violaceus Linnaeus, 1758", "Carabus violaceus"),
    ("Aus bus van der Wulp, 1890", "Aus bus"),
    ("unidentified dolphin", None),
    ("", None),
])
def test_canonical_name(name: str, canonical: str | None) -> None:
    assert canonical_name(name) == canonical


@pytest.mark.parametrize(("fields", "labels"), [
    ({"family": "Delphinidae", "genus": "Globicephala", "scientificName": "Globicephala"},
     ("Delphinidae", "Globicephala", None)),  # genus-only, no "sp."
    ({"family": "Delphinidae", "genus": "Tursiops", "specificEpithet": "truncatus", "scientificName": ""},
     ("Delphinidae", "Tursiops", "Tursiops truncatus")),  # no name: genus + epithet
    ({"family": "Delphinidae", "genus": "Tursiops", "specificEpithet": "", "scientificName": ""},
     ("Delphinidae", "Tursiops", None)),
    ({"family": "Delphinidae", "genus": "", "scientificName": "Lissodelphis", "taxonRank": "genus"},
     ("Delphinidae", None, None)),  # the rank from taxonRank, the genus cell itself empty
    ({"family": "Ziphiidae", "genus": "Mesoplodon", "scientificName": "Ziphiidae", "taxonRank": "family"},
     ("Ziphiidae", None, None)),
    ({"family": "Delphinidae", "genus": "Tursiops", "scientificName": "Tursiops cf. truncatus"},
     ("Delphinidae", "Tursiops", None)),
])
def test_rank_labels(fields: dict[str, str], labels: tuple[str | None, ...]) -> None:
    assert rank_labels(fields, ["family", "genus", "scientificName"]) == labels


def test_short_names() -> None:
    assert short_name(DWC + "decimalLatitude") == "decimalLatitude"
    assert short_name("http://rs.tdwg.org/ac/terms/accessURI") == short_name("ac:accessURI") == "accessURI"


# --- hand-made archives

OCC_FIELDS = ["occurrenceID", "scientificName", "family", "genus", "decimalLatitude", "decimalLongitude", "eventDate"]
OCC_ROWS = [
    ["o1", "o1", "Tursiops truncatus (Montagu, 1821)", "Delphinidae", "Tursiops", "-33.8", "151.2", "2021-05-03"],
    ["o2", "o2", "Globicephala sp.", "Delphinidae", "Globicephala", "-34", "150", ""],
    ["o3", "o3", "Delphinidae", "Delphinidae", "", "", "", "2020-02"],
]
COLOURS = {"o1_a.png": (255, 0, 0), "o1_b.png": (0, 255, 0), "o2.png": (0, 0, 255)}


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), colour).save(buf, format="PNG")
    return buf.getvalue()


def _meta(core_type: str, ext_type: str, ext_terms: list[str]) -> str:
    defaults = {"eventDate": ' default="2000-06-01"'}
    occ = "".join(f'<field index="{i + 1}" term="{DWC}{t}"{defaults.get(t, "")}/>' for i, t in enumerate(OCC_FIELDS))
    ext = "".join(f'<field index="{i + 1}" term="{t}"/>' for i, t in enumerate(ext_terms))
    return (
        '<?xml version="1.0"?><archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">'
        f'<core encoding="UTF-8" fieldsTerminatedBy="," fieldsEnclosedBy="&quot;" ignoreHeaderLines="1" '
        f'rowType="{core_type}"><files><location>occurrence.csv</location></files><id index="0"/>{occ}'
        f'<field term="{DWC}basisOfRecord" default="MachineObservation"/></core>'
        f'<extension encoding="UTF-8" fieldsTerminatedBy="\\t" fieldsEnclosedBy="" ignoreHeaderLines="1" '
        f'rowType="{ext_type}"><files><location>multimedia.txt</location></files><coreid index="0"/>{ext}'
        '</extension></archive>')


def _files(ext_type: str = SIMPLE_MULTIMEDIA, core_type: str = OCCURRENCE) -> dict[str, bytes]:
    """The files of a small archive: 3 occurrences, a media extension with 3 images, a sound and an orphan row."""
    occ = io.StringIO()
    occ.write("id,occurrenceID,scientificName,family,genus,decimalLatitude,decimalLongitude,eventDate\r\n")
    for row in OCC_ROWS:
        occ.write(",".join(f'"{c}"' if "," in c else c for c in row) + "\r\n")
    if ext_type == SIMPLE_MULTIMEDIA:
        terms = [DC + "identifier", DC + "references", DC + "type", DC + "format"]
        media = [["o1", "media/o1_a.png", "", "StillImage", "image/png"],
                 ["o1", "media/o1_b.png", "", "http://purl.org/dc/dcmitype/StillImage", ""],
                 ["o2", "", "media/o2.png", "", ""],  # no identifier: references is the image
                 ["o2", "media/o2.wav", "", "Sound", "audio/wav"],
                 ["o9", "media/o9.png", "", "StillImage", ""],  # no such occurrence
                 ["o1", "media/o1_a.png", "", "", ""]]  # listed twice
    else:
        terms = ["http://rs.tdwg.org/ac/terms/accessURI", DC + "identifier", "http://purl.org/dc/elements/1.1/format"]
        media = [["o1", "media/o1_a.png", "img-1", "image/png"], ["o1", "media/o1_b.png", "img-2", ""],
                 ["o2", "media/o2.png", "img-3", "image/png"], ["o2", "media/o2.mp4", "vid-1", "video/mp4"],
                 ["o9", "media/o9.png", "img-9", ""]]
    text = "\n".join("\t".join(r) for r in [["coreid", *(short_name(t) for t in terms)], *media]) + "\n"
    files = {"meta.xml": _meta(core_type, ext_type, terms).encode(), "occurrence.csv": occ.getvalue().encode(),
             "multimedia.txt": text.encode(), "eml.xml": b"<eml/>"}
    return files | {f"media/{name}": _png(c) for name, c in COLOURS.items()}


def _zip(path: Path, files: dict[str, bytes], folder: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(folder + name, data)
    return path


def _check_join(archive: DwcArchive) -> None:
    by_id = {o.id: o for o in archive.occurrences}
    assert list(by_id) == ["o1", "o2", "o3"]
    assert by_id["o1"].images == ["media/o1_a.png", "media/o1_b.png"]
    assert by_id["o2"].images == ["media/o2.png"] and by_id["o3"].images == []
    for occ in archive.occurrences:
        for ref in occ.images:
            pixels = np.asarray(Image.open(io.BytesIO(archive.member(ref))))
            assert tuple(pixels[0, 0]) == COLOURS[ref.split("/")[-1]]
    assert archive.member("media/missing.png") is None and archive.member("https://example.org/a.jpg") is None


def test_simple_multimedia_join(tmp_path: Path) -> None:
    archive = read_dwca(_zip(tmp_path / "dwca.zip", _files()))
    assert archive.media == [SIMPLE_MULTIMEDIA]
    _check_join(archive)
    assert [r.split(" ", 1)[1] for _, r in archive.skipped] == ["is Sound, not a still image",
                                                               "'o9' matches no occurrence id in the core"]
    assert [w for w, _ in archive.skipped] == ["multimedia.txt line 5", "multimedia.txt line 6"]
    o1, o2, o3 = (o.fields for o in archive.occurrences)
    assert o1["scientificName"] == "Tursiops truncatus (Montagu, 1821)"  # a quoted comma stays in its field
    assert o2["eventDate"] == "2000-06-01" and o1["eventDate"] == "2021-05-03"  # default for an empty cell
    assert o3["basisOfRecord"] == "MachineObservation"  # a constant field
    assert [rank_labels(f, ["family", "genus", "scientificName"]) for f in (o1, o2, o3)] == [
        ("Delphinidae", "Tursiops", "Tursiops truncatus"), ("Delphinidae", "Globicephala", None),
        ("Delphinidae", None, None)]


def test_audubon_core_join_from_an_archive_with_a_top_folder(tmp_path: Path) -> None:
    archive = read_dwca(_zip(tmp_path / "ac.zip", _files(AUDUBON_MULTIMEDIA), folder="export/"))
    assert archive.media == [AUDUBON_MULTIMEDIA] and archive.root == "export"
    _check_join(archive)
    assert [r for _, r in archive.skipped] == ["media/o2.mp4 is video/mp4, not a still image",
                                               "coreid 'o9' matches no occurrence id in the core"]


def test_unzipped_folder_feeds_the_manifest_ingest(tmp_path: Path) -> None:
    folder = tmp_path / "unzipped"
    for name, data in _files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    archive = read_dwca(folder)
    _check_join(archive)
    ranks = ["family", "genus", "scientificName"]
    columns, rows = manifest_rows(archive, ranks)
    ingested = from_rows(folder / "meta.xml", columns, rows, ranks, None, group_by="id", base=folder)
    assert [(r.relpath, r.names, r.group) for r in ingested.records] == [
        ("media/o1_a.png", ("Delphinidae", "Tursiops", "Tursiops truncatus"), "o1"),
        ("media/o1_b.png", ("Delphinidae", "Tursiops", "Tursiops truncatus"), "o1"),
        ("media/o2.png", ("Delphinidae", "Globicephala", None), "o2")]
    assert all(Path(r.path).is_file() for r in ingested.records)
    assert [reason for _, reason in ingested.skipped] == ["empty filepath"]  # o3 has no image


def _refused(path: Path) -> str:
    with pytest.raises(IngestError) as info:
        read_dwca(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_archive_errors_are_one_line(tmp_path: Path) -> None:
    files = _files()
    no_meta = _zip(tmp_path / "nometa.zip", {k: v for k, v in files.items() if k != "meta.xml"})
    assert "nometa.zip: no meta.xml" in _refused(no_meta)
    event = _zip(tmp_path / "event.zip", _files(core_type="http://rs.tdwg.org/dwc/terms/Event"))
    assert "its core is Event records (http://rs.tdwg.org/dwc/terms/Event), not occurrences" in _refused(event)
    lost = _zip(tmp_path / "lost.zip", {k: v for k, v in files.items() if k != "occurrence.csv"})
    assert "names occurrence.csv, which is not in the archive" in _refused(lost)
    (tmp_path / "plain.zip").write_text("not a zip")
    assert "is not a zip file" in _refused(tmp_path / "plain.zip")
    assert "not found" in _refused(tmp_path / "absent.zip")
    broken = _zip(tmp_path / "broken.zip", files | {"meta.xml": b"<archive><core"})
    assert "meta.xml is not valid XML" in _refused(broken)
    bad_index = files | {"meta.xml": files["meta.xml"].replace(b'<id index="0"/>', b'<id index="first"/>')}
    assert "meta.xml's core has a bad number" in _refused(_zip(tmp_path / "index.zip", bad_index))
    no_location = files | {"meta.xml": files["meta.xml"].replace(b"<location>occurrence.csv</location>", b"")}
    assert "has no file location" in _refused(_zip(tmp_path / "noloc.zip", no_location))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "meta.xml").write_bytes(files["meta.xml"])
    assert "names occurrence.csv, which is not in the archive" in _refused(folder)
    archive = read_dwca(_zip(tmp_path / "ok.zip", files))
    with pytest.raises(IngestError, match=r"no column\(s\) order .*its columns are: id, occurrenceID, scientificName"):
        require_ranks(archive, ["order", "family"])
