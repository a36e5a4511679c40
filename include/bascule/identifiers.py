"""PostgreSQL names as manifests and evidence write them, and back.

A manifest writes a name as the database shows it (``\\dn``, ``\\dt``), not as SQL
would: ``ClinicalData`` is the schema ``ClinicalData`` (SQL folds an unquoted name to
lower case, a manifest does not), ``Clinical Data`` is the schema with a space. Only a
part that contains a dot or a double quote, or begins or ends with white space, has to
be double-quoted, with inner quotes doubled: ``"my.schema"."Encounter ""v2"" draft"`` is the
table ``Encounter "v2" draft`` of the schema ``my.schema``.

The same text form names tables everywhere inside Bascule (inventories, copy plans,
XCom, evidence, logs): ``qualified_name`` writes it and ``split_qualified`` reads it
back, so a name survives every hop unchanged. SQL never sees this form: statements
take the two parts as ``sql.Identifier(schema, table)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from bascule.exceptions import BasculeError

# NAMEDATALEN - 1: PostgreSQL silently truncates a longer name, so two long names in a
# manifest could end up naming one object. Refused instead.
MAX_IDENTIFIER_BYTES = 63
_FIX = (
    "write each part as the database shows it; double-quote a part that contains '.' or '\"' "
    'or begins or ends with a space, doubling inner quotes, e.g. "my.schema"."Encounter ""v2""" '
    "(docs/workloads.md#identifiers)"
)


class IdentifierError(BasculeError, ValueError):
    """A name is not one PostgreSQL could hold. A ValueError, so manifest validation reports it by field."""


def parse_name(text: str) -> str:
    """One name (a schema, a role): ``Clinical Data`` -> ``Clinical Data``, ``"a.b"`` -> ``a.b``."""
    parts = _parts(text)
    if len(parts) != 1:
        raise IdentifierError(f"'{text}' has {len(parts)} dot-separated parts where one name is expected: {_FIX}")
    return parts[0]


def split_qualified(text: str) -> tuple[str, str]:
    """``schema.table`` -> ``(schema, table)``, each part as PostgreSQL stores it."""
    parts = _parts(text)
    if len(parts) != 2:
        if len(parts) == 1:
            raise IdentifierError(f"table '{text}' must be schema-qualified, e.g. public.patients; {_FIX}")
        raise IdentifierError(
            f"'{text}' has {len(parts)} parts: a table is written schema.table, e.g. public.patients; {_FIX}"
        )
    return parts[0], parts[1]


def split_columns(tables: Iterable[str]) -> tuple[list[str], list[str]]:
    """Qualified names as two parallel lists, schemas and tables, for a catalogue lookup.

    The catalogue is matched part by part as it stores names, never on a concatenated
    ``schema || '.' || table`` (which a dot inside a name makes ambiguous):
    ``(n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))``.
    """
    pairs = [split_qualified(t) for t in tables]
    return [schema for schema, _ in pairs], [name for _, name in pairs]


def format_name(name: str) -> str:
    """The inverse of ``parse_name``: bare unless the name needs quotes to read back the same."""
    if name and '"' not in name and "." not in name and name == name.strip():
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, name: str) -> str:
    """The inverse of ``split_qualified``: ``("my.schema", "Encounter")`` -> ``"my.schema".Encounter``."""
    return f"{format_name(schema)}.{format_name(name)}"


def _parts(text: str) -> list[str]:
    parts: list[str] = []
    i = 0
    while True:
        part, i = _quoted(text, i) if text.startswith('"', i) else _bare(text, i)
        _check(text, part)
        parts.append(part)
        if i == len(text):
            return parts
        i += 1  # the dot that _quoted or _bare stopped at


def _quoted(text: str, start: int) -> tuple[str, int]:
    out, i = [], start + 1
    while True:
        end = text.find('"', i)
        if end < 0:
            raise IdentifierError(f"'{text}' has an unbalanced double quote: close it; {_FIX}")
        out.append(text[i:end])
        if text.startswith('""', end):  # a doubled quote stands for one quote inside the name
            out.append('"')
            i = end + 2
            continue
        end += 1
        if end < len(text) and text[end] != ".":
            raise IdentifierError(
                f"'{text}': a quoted part must end at a dot or at the end of the name, "
                f"found {text[end]!r} after it; {_FIX}"
            )
        return "".join(out), end


def _bare(text: str, start: int) -> tuple[str, int]:
    end = text.find(".", start)
    end = len(text) if end < 0 else end
    part = text[start:end]
    if '"' in part:
        raise IdentifierError(f"'{text}': a double quote inside an unquoted part; {_FIX}")
    if part != part.strip():
        raise IdentifierError(f"'{text}': the part '{part}' begins or ends with white space; {_FIX}")
    return part, end


def _check(text: str, part: str) -> None:
    if not part:
        raise IdentifierError(f"'{text}' has an empty part (two dots, or a dot at either end); {_FIX}")
    if "\x00" in part:
        raise IdentifierError(f"'{text}': PostgreSQL names cannot hold the NUL character")
    size = len(part.encode())
    if size > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(
            f"'{text}': the part '{part}' is {size} bytes in UTF-8, over PostgreSQL's {MAX_IDENTIFIER_BYTES}; "
            "PostgreSQL would truncate it, so it cannot name an object there (check the name in the database)"
        )
