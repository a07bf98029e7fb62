"""The plankton and camera-trap platforms' exports, read as manifests: EcoTaxa TSV and COCO Camera Traps JSON.

Each importer turns its export into manifest rows (``filepath``, one column per rank, the group column) and hands
them to :func:`taxotrain.data.ingest.from_rows`, so verification, the taxonomy checks, splits and the report are
the same as for a CSV manifest. A row an importer cannot use is kept with its reason and listed in the report.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

from taxotrain.data.ingest import PATH_COLUMN, SKIP_COLUMN, Ingested, IngestError, from_rows

ECOTAXA_FILE = "img_file_name"
ECOTAXA_HIERARCHY = "object_annotation_hierarchy"
ECOTAXA_CATEGORY = "object_annotation_category"
ECOTAXA_STATUS = "object_annotation_status"
ECOTAXA_GROUP = "sample_id"  # a natural split group: one net tow or cast
COCO_GROUP = "location"  # one camera site
_TYPE_CELL = re.compile(r"^\[[a-z]\]$")  # EcoTaxa's second row: [t] text, [f] float


def _group(columns: list[str], group_by: str | None, natural: str) -> str | None:
    """``--group-by``: the column named, none for ``none``, else the platform's natural group when present."""
    if group_by == "none":
        return None
    return group_by or (natural if natural in columns else None)


def from_ecotaxa(tsv: Path, ranks: Sequence[str], taxonomy_csv: Path | None = None, group_by: str | None = None,
                 images: Path | None = None, workers: int = 1) -> Ingested:
    """Records of an EcoTaxa export (TSV). ``img_file_name`` is relative to ``images`` (default: the TSV's folder).

    The finest of ``ranks`` is ``object_annotation_category`` (EcoTaxa's unique display name; else the hierarchy's
    last level), and each coarser rank the next level up ``object_annotation_hierarchy``
    (``living>Eukaryota>...>Copepoda>Calanoida``), null where the hierarchy is shorter or absent (then
    ``taxonomy_csv`` may give them). Rows whose ``object_annotation_status`` is not ``validated`` (predicted or
    dubious labels) are left out with that reason. The second row of column types (``[t]``, ``[f]``) is skipped.
    Records are grouped by ``sample_id`` unless ``group_by`` names another column (or ``none``).
    """
    if not tsv.is_file():
        raise IngestError(f"{tsv} not found")
    with tsv.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
        columns = [c.strip() for c in (reader.fieldnames or [])]
    first_line = 2
    if rows and all(_TYPE_CELL.match(v) for v in rows[0].values() if v):
        rows, first_line = rows[1:], 3
    if ECOTAXA_FILE not in columns or not {ECOTAXA_HIERARCHY, ECOTAXA_CATEGORY} & set(columns):
        raise IngestError(f"{tsv}: not an EcoTaxa export: it needs {ECOTAXA_FILE} and {ECOTAXA_HIERARCHY} (or "
                          f"{ECOTAXA_CATEGORY}); its columns are: {', '.join(columns)}")
    ranks = list(ranks)
    out = []
    for row in rows:
        path = [p.strip() for p in row.get(ECOTAXA_HIERARCHY, "").split(">") if p.strip()]
        # the finest rank is the category (EcoTaxa's unique display name, e.g. "egg<Actinopterygii", where the
        # hierarchy's last level, "egg", recurs under several parents); the coarser ranks the levels above it
        category = row.get(ECOTAXA_CATEGORY) or (path[-1] if path else "")
        names = ([None] * len(ranks) + path[:-1] + [category or None])[-len(ranks):]
        status = row.get(ECOTAXA_STATUS, "validated") or "validated"
        record = {**row, PATH_COLUMN: row.get(ECOTAXA_FILE, ""), **_ecotaxa_place_and_time(row),
                  **dict(zip(ranks, [n or "" for n in names], strict=True))}
        if status != "validated":
            record[SKIP_COLUMN] = f"{ECOTAXA_STATUS} is {status!r}: only validated labels are trained on"
        out.append(record)
    group = _group(columns, group_by, ECOTAXA_GROUP)
    dwc = [c for c in ("decimalLatitude", "decimalLongitude", "eventDate") if any(c in r for r in out)]
    return from_rows(tsv, [*columns, PATH_COLUMN, *ranks, *dwc], out, ranks, taxonomy_csv, group, first_line,
                     base=images, workers=workers)


def _ecotaxa_place_and_time(row: dict[str, str]) -> dict[str, str]:
    """EcoTaxa's ``object_lat``/``object_lon`` (decimal degrees), ``object_date`` (YYYYMMDD) and ``object_time``
    (HHMMSS) as the Darwin Core columns the metadata reader takes; a value it cannot read is listed in the report
    there."""
    out = {}
    if row.get("object_lat") or row.get("object_lon"):
        out["decimalLatitude"], out["decimalLongitude"] = row.get("object_lat", ""), row.get("object_lon", "")
    day, time = row.get("object_date", ""), row.get("object_time", "")
    if day:
        iso = f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 and day.isdigit() else day
        if len(time) == 6 and time.isdigit() and time != "000000":
            iso += f"T{time[:2]}:{time[2:4]}:{time[4:]}"
        out["eventDate"] = iso
    return out


def from_coco_ct(json_path: Path, ranks: Sequence[str], taxonomy_csv: Path | None = None,
                 group_by: str | None = None, images: Path | None = None, workers: int = 1) -> Ingested:
    """Records of a COCO Camera Traps file: ``images`` (``id``, ``file_name``, ``location``, ``datetime``),
    ``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``). The category name is the
    finest of ``ranks``; ``taxonomy_csv`` gives the coarser ones. An image without an annotation, or with two
    different categories (a classifier gives one label per image), is left out with that reason. ``file_name`` is
    relative to ``images`` (default: the JSON's folder). Records are grouped by ``location`` unless ``group_by``
    names another field (or ``none``)."""
    if not json_path.is_file():
        raise IngestError(f"{json_path} not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        per_image: dict[object, set[str]] = {}
        for a in data["annotations"]:
            per_image.setdefault(a["image_id"], set()).add(categories[a["category_id"]])
        image_rows = data["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IngestError(f"{json_path}: not a COCO Camera Traps file ({type(exc).__name__}: {exc}); it needs "
                          "images, annotations and categories") from exc
    ranks = list(ranks)
    rows, columns = [], [PATH_COLUMN, *ranks]
    for image in image_rows:
        row = {k: "" if v is None else str(v) for k, v in image.items() if not isinstance(v, (dict, list))}
        row[PATH_COLUMN] = str(image.get("file_name", ""))
        if row.get("datetime"):  # "2019-05-03 14:20:00" in COCO-CT: the event's date and local time
            row["eventDate"] = row["datetime"].replace(" ", "T", 1)
        found = sorted(per_image.get(image.get("id"), set()))
        for rank in ranks:
            row[rank] = ""
        if len(found) == 1:
            row[ranks[-1]] = found[0]
        else:
            row[SKIP_COLUMN] = ("no annotation" if not found else
                                f"{len(found)} categories in one image ({', '.join(found)}): a classifier gives one "
                                "label per image")
        rows.append(row)
        columns += [k for k in row if k not in columns and k != SKIP_COLUMN]
    if taxonomy_csv is None and len(ranks) > 1:
        raise IngestError(f"--coco-ct gives one label per image (its category); --ranks {','.join(ranks)} needs "
                          "--taxonomy FILE.csv for the coarser ranks")
    return from_rows(json_path, columns, rows, ranks, taxonomy_csv, _group(columns, group_by, COCO_GROUP),
                     first_line=1, base=images, workers=workers)
