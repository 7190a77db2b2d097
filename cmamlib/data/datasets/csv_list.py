"""The generic list format of any dataset: a CSV / TSV file ``path,pid,camid,modality[,split]``
with paths relative to the file.
"""

from __future__ import annotations

import csv
import io
import os

from ..records import MODALITIES, DatasetError, Record
from .common import (
    PathLike,
    Problems,
    _abs,
    _finish,
    _parse_int,
    _read_text,
    _Resolver,
)

# ----------------------------------------------------------------------------- generic list

_LIST_REQUIRED = ("path", "pid", "camid", "modality")
_LIST_COLUMNS = _LIST_REQUIRED + ("split",)


def read_list(
    csv_path: PathLike,
    split: str | None = None,
    *,
    verify: bool = False,
    problems: Problems = None,
) -> list[Record]:
    """Read a generic CSV/TSV image list with header ``path,pid,camid,modality[,split]``.

    Columns may come in any order; ``path`` is relative to the list's folder (absolute
    paths are kept), ``modality`` is ``visible`` or ``infrared``.  The delimiter is a tab
    for ``.tsv`` files or when the header holds a tab, a comma otherwise.

    Args:
        csv_path: the list file.
        split: keep only rows whose ``split`` column equals it (the file must have one);
            ``None`` keeps every row.
        verify: decode every image and raise on unreadable ones.
        problems: collect per-file problems instead of raising (module docstring).

    Returns:
        Records sorted by path.

    Raises:
        DatasetError: missing or empty file, wrong header, a row with the wrong number
            of fields or a bad value (naming file and line), no row of ``split``, a
            missing image.
    """
    list_file = _abs(csv_path)
    text = _read_text(list_file, "a CSV/TSV list with header path,pid,camid,modality[,split]")
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise DatasetError(f"{list_file}: empty list file, expected a header path,pid,camid,modality[,split] and rows")
    delimiter = "\t" if list_file.lower().endswith(".tsv") or "\t" in lines[first] else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    base = os.path.dirname(list_file)
    resolve = _Resolver("list", list_file, [base])
    records = []
    splits_seen: set[str] = set()
    n_rows = 0
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            if (
                not set(_LIST_REQUIRED) <= set(header)
                or not set(header) <= set(_LIST_COLUMNS)
                or len(set(header)) != len(header)
            ):
                raise DatasetError(
                    f"{list_file} line {lineno}: expected a header with columns "
                    f"path,pid,camid,modality[,split] ({'tab' if delimiter == chr(9) else 'comma'}-"
                    f"separated), got {row}"
                )
            col = {c: header.index(c) for c in header}
            if split is not None and "split" not in col:
                raise DatasetError(
                    f"{list_file}: split={split!r} requested, expected a 'split' column, found columns {header}"
                )
            continue
        if len(row) != len(header):
            raise DatasetError(
                f"{list_file} line {lineno}: expected {len(header)} fields ({','.join(header)}), got {len(row)}: {row}"
            )
        n_rows += 1
        cells = [c.strip() for c in row]
        if "split" in col:
            splits_seen.add(cells[col["split"]])
            if split is not None and cells[col["split"]] != split:
                continue
        fmt = ",".join(header)
        pid = _parse_int(cells[col["pid"]], list_file, lineno, "pid", fmt)
        camid = _parse_int(cells[col["camid"]], list_file, lineno, "camid", fmt)
        modality = cells[col["modality"]].lower()
        if modality not in MODALITIES:
            raise DatasetError(
                f"{list_file} line {lineno}: expected modality in {MODALITIES}, got {cells[col['modality']]!r}"
            )
        records.append(Record(resolve(cells[col["path"]], lineno), pid, camid, modality))
    if header is None or n_rows == 0:
        raise DatasetError(f"{list_file}: expected at least one row after the header, found none")
    if split is not None and not records:
        raise DatasetError(f"{list_file}: expected rows with split={split!r}, found splits {sorted(splits_seen)}")
    missing = resolve.raise_missing(problems)
    records = [r for r in records if r.path not in missing]
    return _finish(records, verify, "list")
