"""Darwin Core Archives (GBIF, OBIS and IPT exports): occurrence records, their images, and labels per rank.

:func:`read_dwca` reads ``meta.xml`` and the occurrence core it describes (a zip file, or a folder holding the
unzipped files), then joins the images of a Simple Multimedia (``http://rs.gbif.org/terms/1.0/Multimedia``:
``identifier``, else ``references``) or Audubon Core (``http://rs.tdwg.org/ac/terms/Multimedia``: ``accessURI``,
else ``identifier``) extension to their occurrence by ``coreid``. Image references are kept as written (a path
relative to the archive's ``meta.xml``, a relative file path or a URL); the caller resolves them
(:meth:`DwcArchive.member` gives the bytes of one packed inside the archive). Media that are not still images
(``type`` Sound or MovingImage, a non-``image/`` ``format``) are left out with their reason.

Each occurrence is a dict of short Darwin Core names (the last part of each term URI: ``decimalLatitude``,
``genus``, ``scientificName``) plus ``id``. :func:`rank_labels` turns it into one label per wanted rank, ``None``
below the rank the identification reaches: ``Globicephala sp.`` is known to genus, ``Delphinidae sp.`` to family.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from taxotrain.data.ingest import PATH_COLUMN, IngestError

STILL_IMAGE_TYPES = ("StillImage", "Image")  # DCMI type vocabulary (dc:type) of a photograph in a media extension
_STILL = {t.lower() for t in STILL_IMAGE_TYPES}

__all__ = ["AUDUBON_MULTIMEDIA", "OCCURRENCE", "SIMPLE_MULTIMEDIA", "DwcArchive", "Occurrence", "canonical_name",
           "manifest_rows", "rank_labels", "read_dwca", "require_ranks", "short_name"]

OCCURRENCE = "http://rs.tdwg.org/dwc/terms/Occurrence"
SIMPLE_MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
AUDUBON_MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"
# the columns holding the image of one extension row, first found wins
IMAGE_TERMS = {SIMPLE_MULTIMEDIA: ("identifier", "references"), AUDUBON_MULTIMEDIA: ("accessURI", "identifier")}
ID_COLUMN = "id"
NAME_COLUMN = "scientificName"
# Darwin Core's rank columns, coarse to fine: a name known only to one of them nulls the finer ones
HIERARCHY = ("kingdom", "phylum", "class", "order", "superfamily", "family", "subfamily", "tribe", "subtribe", "genus",
             "subgenus", "specificEpithet", "infraspecificEpithet", NAME_COLUMN)
_PLACEHOLDERS = {"sp", "sp.", "spp", "spp.", "indet", "indet.", "sp.indet.", "spec.", "ssp"}
_UNCERTAIN = {"cf", "cf.", "aff", "aff.", "?"}  # "Tursiops cf. truncatus": sure of the genus only
_MARKERS = {"subsp.", "ssp.", "var.", "subvar.", "f.", "forma", "x", "\u00d7"}  # followed by an epithet
_PARTICLES = {"van", "von", "de", "da", "du", "del", "della", "der", "den", "le", "la", "ex", "in", "et"}  # authors
_EPITHET = re.compile(r"[a-z][a-z-]*")
_SUBGENUS = re.compile(r"\([A-Z][a-z]+\)")


@dataclass
class Occurrence:
    """One core record: its ``id``, its fields by short Darwin Core name, and its image references as written."""

    id: str
    fields: dict[str, str]
    images: list[str] = field(default_factory=list)


@dataclass
class DwcArchive:
    """The occurrences of an archive, the core's columns, the image extensions read and the rows left out."""

    path: Path
    columns: list[str]
    occurrences: list[Occurrence]
    media: list[str] = field(default_factory=list)  # rowTypes of the image extensions joined
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file line N, reason) of extension rows
    root: str = ""  # the folder of meta.xml inside the archive ("" at its top)

    def member(self, ref: str) -> bytes | None:
        """The bytes of the file ``ref`` names inside the archive (relative to ``meta.xml``), else None."""
        if "://" in ref or ".." in PurePosixPath(ref).parts:
            return None
        try:
            return _Source(self.path).read(_join(self.root, ref))
        except (KeyError, OSError, zipfile.BadZipFile):
            return None


@dataclass(frozen=True)
class _Table:
    """One ``<core>`` or ``<extension>`` of meta.xml."""

    row_type: str
    locations: tuple[str, ...]
    delimiter: str
    quotechar: str | None
    header_lines: int
    encoding: str
    key_index: int | None  # <id> of the core, <coreid> of an extension
    fields: tuple[tuple[int | None, str, str], ...]  # (index or None for a constant, short name, default)


class _Source:
    """The files of an archive: a zip file or a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise IngestError(f"{path} not found; give a Darwin Core Archive (.zip) or the folder it unzips to")
        if path.is_file() and not zipfile.is_zipfile(path):
            raise IngestError(f"{path} is not a zip file; a Darwin Core Archive is a .zip with meta.xml inside")

    def names(self) -> list[str]:
        if self.path.is_dir():
            return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        with zipfile.ZipFile(self.path) as zf:
            return zf.namelist()

    def read(self, name: str) -> bytes:
        """The bytes of file ``name``; KeyError when the archive has no such file."""
        try:
            if self.path.is_dir():
                return (self.path / name).read_bytes()
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(name)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise KeyError(name) from exc


def short_name(term: str) -> str:
    """The short name of a term URI or prefixed name: ``http://rs.tdwg.org/dwc/terms/genus`` -> ``genus``."""
    return re.split(r"[/#:]", term.strip().rstrip("/#"))[-1]


def _join(root: str, name: str) -> str:
    return str(PurePosixPath(root, name.strip()))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_dwca(path: Path) -> DwcArchive:
    """The occurrences of the Darwin Core Archive at ``path`` (zip or folder) with their joined images.

    Raises :class:`IngestError` when there is no ``meta.xml``, its core is not occurrences, or a file is missing or
    unreadable. A cell left empty takes the field's ``default`` from meta.xml; a short row is padded with empty cells.
    A zip file is parsed once per process while it is unchanged (``prepare --dwca`` asks for it up to three
    times: to choose the store kind, the default ranks and the records); treat the result as read-only.
    """
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return _read_zip(str(path), stat.st_mtime_ns, stat.st_size)
    return _read(path)


@functools.lru_cache(maxsize=1)
def _read_zip(path: str, mtime_ns: int, size: int) -> DwcArchive:
    """:func:`_read` of a zip file, keyed by its path, modification time and size."""
    return _read(Path(path))


def _read(path: Path) -> DwcArchive:
    source = _Source(path)
    metas = sorted((n for n in source.names() if PurePosixPath(n).name == "meta.xml"), key=lambda n: n.count("/"))
    if not metas:
        raise IngestError(f"{path}: no meta.xml, so its columns are unknown; export it again as a Darwin Core "
                          "Archive (GBIF/IPT 'DwC-A'), which describes its files in meta.xml")
    root = str(PurePosixPath(metas[0]).parent).strip(".")
    core, extensions = _parse_meta(path, source.read(metas[0]))
    if core.row_type != OCCURRENCE:
        raise IngestError(f"{path}: its core is {short_name(core.row_type)} records ({core.row_type}), not "
                          "occurrences; export the data set as an occurrence-core Darwin Core Archive")
    occurrences = [Occurrence(key, {ID_COLUMN: key, **fields}) for key, fields, _ in _rows(path, source, root, core)]
    columns = list(dict.fromkeys([ID_COLUMN, *(name for _, name, _ in core.fields)]))
    archive = DwcArchive(path, columns, occurrences, root=root)
    by_id: dict[str, list[Occurrence]] = {}
    for occ in occurrences:
        by_id.setdefault(occ.id, []).append(occ)
    for ext in extensions:
        if ext.row_type in IMAGE_TERMS:
            archive.media.append(ext.row_type)
            _join_images(path, source, root, ext, by_id, archive.skipped)
    return archive


def _parse_meta(path: Path, raw: bytes) -> tuple[_Table, list[_Table]]:
    try:
        top = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise IngestError(f"{path}: meta.xml is not valid XML ({exc}); export the archive again") from exc
    tables: dict[str, list[_Table]] = {"core": [], "extension": []}
    for node in top:
        if _local(node.tag) in tables:
            try:
                tables[_local(node.tag)].append(_table(path, node))
            except IngestError:
                raise
            except ValueError as exc:  # a non-numeric index or ignoreHeaderLines
                raise IngestError(f"{path}: meta.xml's {_local(node.tag)} has a bad number ({exc}); export the "
                                  "archive again") from exc
    if len(tables["core"]) != 1:
        raise IngestError(f"{path}: meta.xml has {len(tables['core'])} <core> elements, a Darwin Core Archive has "
                          "exactly one; export the archive again")
    return tables["core"][0], tables["extension"]


def _table(path: Path, node: ET.Element) -> _Table:
    children = {_local(c.tag): c for c in node}
    locations = tuple((loc.text or "").strip() for c in node if _local(c.tag) == "files"
                      for loc in c if _local(loc.tag) == "location")
    key = children.get("id", children.get("coreid"))
    fields = []
    for c in node:
        if _local(c.tag) == "field":
            index = c.get("index")
            fields.append((int(index) if index not in (None, "") else None, short_name(c.get("term", "")),
                           c.get("default", "")))
    delimiter = (node.get("fieldsTerminatedBy") or ",").replace("\\t", "\t")
    quote = node.get("fieldsEnclosedBy", '"')
    if not locations or len(delimiter) != 1:
        raise IngestError(f"{path}: meta.xml's {_local(node.tag)} {node.get('rowType')} has no file location or a "
                          f"field separator {delimiter!r} that is not one character; export the archive again")
    return _Table(node.get("rowType", ""), locations, delimiter, quote or None,
                  int(node.get("ignoreHeaderLines") or 0), node.get("encoding") or "UTF-8",
                  int(key.get("index", 0)) if key is not None else None, tuple(fields))


def _rows(path: Path, source: _Source, root: str, table: _Table) -> Iterator[tuple[str, dict[str, str], str]]:
    """(key, fields, "file line N") of each data row of ``table``'s files."""
    quoting = {"quotechar": table.quotechar} if table.quotechar else {"quoting": csv.QUOTE_NONE}
    encoding = "utf-8-sig" if table.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else table.encoding
    for location in table.locations:
        name = _join(root, location)
        try:
            text = source.read(name).decode(encoding)
        except KeyError:
            raise IngestError(f"{path}: meta.xml names {location}, which is not in the archive; export it again") \
                from None
        except (LookupError, UnicodeDecodeError) as exc:
            raise IngestError(f"{path}: {location} cannot be read as {table.encoding} ({exc}); fix the encoding "
                              "in meta.xml or re-export as UTF-8") from exc
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=table.delimiter, **quoting)
        try:
            for n, cells in enumerate(reader):
                if n < table.header_lines or not any(cells):
                    continue
                key, fields = _cells_to_row(table, cells)
                yield key, fields, f"{location} line {reader.line_num}"
        except csv.Error as exc:
            raise IngestError(f"{path}: {location} line {reader.line_num}: {exc}; fix the file or "
                              "fieldsEnclosedBy in meta.xml") from exc


def _cells_to_row(table: _Table, cells: list[str]) -> tuple[str, dict[str, str]]:
    def cell(index: int | None) -> str:
        return cells[index].strip() if index is not None and index < len(cells) else ""

    fields = {name: cell(index) or default for index, name, default in table.fields}
    return cell(table.key_index), fields


def _join_images(path: Path, source: _Source, root: str, ext: _Table, by_id: Mapping[str, list[Occurrence]],
                 skipped: list[tuple[str, str]]) -> None:
    for key, fields, where in _rows(path, source, root, ext):
        ref = next((fields[t] for t in IMAGE_TERMS[ext.row_type] if fields.get(t)), "")
        kind, fmt = short_name(fields.get("type", "")), fields.get("format", "")
        if not ref:
            skipped.append((where, f"no {' or '.join(IMAGE_TERMS[ext.row_type])}: the image is not named"))
        elif (kind and kind.lower() not in _STILL) or (fmt and not fmt.startswith("image/")):
            skipped.append((where, f"{ref} is {kind or fmt}, not a still image"))
        elif key not in by_id:
            skipped.append((where, f"coreid {key!r} matches no occurrence id in the core"))
        else:
            for occ in by_id[key]:
                if ref not in occ.images:
                    occ.images.append(ref)


def canonical_name(name: str | None) -> str | None:
    """The taxon a scientific name reaches, without authorship and qualifiers; None when it names no taxon.

    ``Tursiops truncatus (Montagu, 1821)`` -> ``Tursiops truncatus``; ``Globicephala sp.`` -> ``Globicephala``;
    ``Tursiops cf. truncatus`` -> ``Tursiops`` (the species is uncertain); ``Delphinidae Gray, 1821`` ->
    ``Delphinidae``; infraspecific names keep their epithets and markers (``Quercus agrifolia var. oxyadenia``).
    """
    tokens = (name or "").split()
    if not tokens or not tokens[0][:1].isupper():
        return None
    out, i = [tokens[0]], 1
    while i < len(tokens):
        token, low = tokens[i], tokens[i].lower()
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if low in _PLACEHOLDERS or low in _UNCERTAIN:
            break
        if len(out) == 1 and _SUBGENUS.fullmatch(token) and _EPITHET.fullmatch(following):
            i += 1  # "Aus (Bus) cus": the subgenus is not part of the binomial
        elif len(out) > 1 and low in _MARKERS and _EPITHET.fullmatch(following):
            out += [token, following]
            i += 2
        elif _EPITHET.fullmatch(token) and low not in _PARTICLES and low not in _MARKERS:
            out.append(token)
            i += 1
        else:
            break
    return " ".join(out)


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if not value or value.lower() in _PLACEHOLDERS else value


def _reached_rank(name: str, fields: Mapping[str, str]) -> str | None:
    """The Darwin Core rank a one-word name stands at: the coarsest rank column holding it, else ``taxonRank``."""
    for rank in HIERARCHY:
        if (_clean(fields.get(rank)) or "").lower() == name.lower():
            return rank
    stated = (fields.get("taxonRank") or "").strip().lower()
    return next((r for r in HIERARCHY if r.lower() == stated), None)


def rank_labels(fields: Mapping[str, str], ranks: Sequence[str]) -> tuple[str | None, ...]:
    """The label at each of ``ranks`` (Darwin Core column names, coarse to fine), None below the rank that the
    identification reaches.

    ``scientificName`` is the name without authorship when it names a species (or below), else None; when it is
    empty, ``genus`` + ``specificEpithet`` stand in. A one-word name (``Globicephala sp.``, ``Delphinidae sp.``,
    ``Globicephala``) reaches the coarsest rank column that holds it (or ``taxonRank``): every finer Darwin Core rank
    is None, also where an export filled it with a copy (the real archive has genus ``Delphinidae``). Columns that
    are not Darwin Core ranks are kept as given; placeholder cells (``sp.``, ``indet.``) are None.
    """
    name = canonical_name(fields.get(NAME_COLUMN))
    if name is None:
        name = canonical_name(" ".join(p for p in (_clean(fields.get("genus")), _clean(fields.get("specificEpithet")))
                                       if p))
    species = name is not None and " " in name
    reached = _reached_rank(name, fields) if name is not None and not species else None
    limit = HIERARCHY.index(reached) if reached is not None else len(HIERARCHY)
    labels = []
    for rank in ranks:
        value = (name if species else None) if rank == NAME_COLUMN else _clean(fields.get(rank))
        labels.append(None if rank in HIERARCHY and HIERARCHY.index(rank) > limit else value)
    return tuple(labels)


def require_ranks(archive: DwcArchive, ranks: Sequence[str]) -> None:
    """Raise :class:`IngestError` when a wanted rank is not a column of the archive's core (naming its columns)."""
    missing = [r for r in ranks if r not in archive.columns]
    if missing:
        raise IngestError(f"{archive.path}: no column(s) {', '.join(missing)} in its occurrences (--ranks names Darwin "
                          f"Core columns, coarse to fine); its columns are: {', '.join(archive.columns)}")


def manifest_rows(archive: DwcArchive, ranks: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Manifest-like ``(columns, rows)`` for :func:`taxotrain.data.ingest.from_rows`: one row per image (an
    occurrence without an image gives one row with an empty ``filepath``), every Darwin Core field, and the rank
    columns replaced by :func:`rank_labels` (empty where unknown). ``id`` groups the images of one occurrence."""
    require_ranks(archive, ranks)
    ranks = list(ranks)
    rows = []
    for occ in archive.occurrences:
        labels = {r: v or "" for r, v in zip(ranks, rank_labels(occ.fields, ranks), strict=True)}
        for ref in occ.images or [""]:
            rows.append({**occ.fields, PATH_COLUMN: ref, **labels})
    return [PATH_COLUMN, *archive.columns], rows
