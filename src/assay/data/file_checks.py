"""What a local data file is checked for before it is loaded: text files are non-blank UTF-8 with one
JSON object per line, Parquet files are readable and have rows, and the text columns hold a string in
every row. The first row that does not is named, with its line, so a bad file is one clear error line
instead of a failure deep inside ``datasets``."""

from __future__ import annotations

from pathlib import Path

from assay.errors import UserError


def error_reason(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def describe_value(value: object) -> str:
    """A value found where text belongs, with its type: ``int 7``, ``null``, ``list ['a', 'b']``."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def is_blank(path: Path) -> bool:
    """True when the file holds nothing but whitespace (read until the first other byte)."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def check_utf8(path: Path, field_name: str, value: str) -> None:
    """Text files must be UTF-8 (JSON requires it). Arrow's JSON reader accepts other bytes and only
    fails when a row is read back, deep inside training setup; here the file is decoded once, in
    chunks, and the first bad byte is reported with its line."""
    import codecs

    decoder, line, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                bad = offset + e.start
                line += chunk[: e.start].count(b"\n")
                raise UserError(field_name, value, f"is not UTF-8 text: byte 0x{chunk[e.start]:02x} at offset {bad} (line {line}); re-encode it as UTF-8") from None
            line += chunk.count(b"\n")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(field_name, value, f"is not UTF-8 text: it ends inside a multi-byte character (offset {offset})") from None


def check_json_lines(path: Path, field_name: str, value: str, text_columns: list[str]) -> set[str]:
    """Every non-blank line is a JSON object, and every ``text_columns`` value a string; the first
    line (and row, counted from 0 over the non-blank lines as the loader counts them) that is not is
    named. A column no row has is left to the missing-column check, which lists the file's columns.
    Returns the columns of the file (every key any row has)."""
    import json

    bad: dict[str, tuple[int, int, str]] = {}
    seen: set[str] = set()
    keys: set[str] = set()
    row = 0
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(field_name, value, f"line {line_no} is not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno}); a JSON-lines file holds one JSON object per line") from None
            if not isinstance(obj, dict):
                raise UserError(field_name, value, f"line {line_no} holds {describe_value(obj)}, not a JSON object; a JSON-lines file holds one object per line")
            keys.update(obj)
            for column in text_columns:
                if column in obj:
                    seen.add(column)
                if column not in bad and not isinstance(obj.get(column), str):
                    bad[column] = (row, line_no, f"no {column!r}" if column not in obj else describe_value(obj[column]))
            row += 1
    found = sorted((where, column) for column, where in bad.items() if column in seen)
    if found:
        (row, line_no, what), column = found[0]
        raise UserError(field_name, value, f"column {column!r} must be text (a string) in every row; row {row} (line {line_no}) has {what}")
    return keys


def _is_text_type(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _is_text_type(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)


def _may_hold_nulls(pf, column: str) -> bool:
    """From the row groups' statistics: False only when every row group records no null in ``column``."""
    md = pf.metadata
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        for j in range(rg.num_columns):
            chunk = rg.column(j)
            if chunk.path_in_schema == column:
                st = chunk.statistics
                if st is None or not st.has_null_count or st.null_count:
                    return True
    return False


def check_parquet(path: Path, field_name: str, value: str, text_columns: list[str]) -> set[str]:
    """A readable Parquet file with rows, whose ``text_columns`` hold a string in every row: read
    from its footer, and the text columns alone where the statistics leave nulls possible. Returns the
    file's columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError or others for a bad footer
        raise UserError(field_name, value, f"is not a readable Parquet file ({error_reason(e)})") from None
    if pf.metadata.num_rows == 0:
        raise UserError(field_name, value, f"file has no rows (it has the columns {schema.names} but no data)")
    for column in text_columns:
        if column not in schema.names:
            continue  # reported with the other absent columns in _normalise
        text = _is_text_type(schema.field(column).type)
        if text and not _may_hold_nulls(pf, column):
            continue
        try:
            values = pf.read(columns=[column]).column(column)
        except Exception as e:  # noqa: BLE001 - a corrupt page
            raise UserError(field_name, value, f"is not a readable Parquet file (column {column!r}: {error_reason(e)})") from None
        if text:
            index = pc.index(pc.is_null(values), True).as_py()
            if index < 0:
                continue
            what = "null"
        else:
            index = max(pc.index(pc.is_valid(values), True).as_py(), 0)
            what = f"{describe_value(values[index].as_py())} (the column holds {schema.field(column).type})"
        raise UserError(field_name, value, f"column {column!r} must be text (a string) in every row; row {index} (counting from 0) has {what}")
    return set(schema.names)
