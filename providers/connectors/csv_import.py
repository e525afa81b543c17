"""Cost import from a CSV file, for vendors with no billing API (Mistral, Cohere, Groq, any other).

The format is a subset of FinOps FOCUS (invoicing.md §4): one header row, then one row per charge.
``parse_cost_csv`` validates the whole file before returning anything: if any line is wrong it
raises ``CsvImportError`` listing every problem by line and column, and nothing is imported.
The format is documented in docs/cost-import-format.md; ``COLUMNS`` is its source of truth.

This is not an HTTP connector and is not registered with ``@register``: it exposes ``slug`` and
``display_name`` like a vendor module so the portal can offer it next to them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from aggregator.money import CurrencyError, currency_code
from providers.connectors.base import CostRow

slug = "csv_import"
display_name = "CSV cost import"

MAX_ROWS = 200_000
# Past this many problems the file is clearly in another format; more lines would not help.
MAX_ERRORS = 500


@dataclass(frozen=True)
class CsvColumn:
    name: str
    required: bool
    description: str
    example: str


COLUMNS: tuple[CsvColumn, ...] = (
    CsvColumn(
        "ChargePeriodStart",
        True,
        "Start of the charge period, inclusive: an ISO 8601 date (UTC midnight) or date-time. "
        "A time without an offset is read as UTC.",
        "2026-08-01",
    ),
    CsvColumn(
        "ChargePeriodEnd",
        True,
        "End of the charge period, exclusive, after the start: a charge for 1 August ends on 2026-08-02.",
        "2026-08-02",
    ),
    CsvColumn(
        "BilledCost",
        True,
        "Amount billed, a plain decimal number with a dot; negative for credits and refunds. "
        "No currency symbol, no thousands separator.",
        "12.345678",
    ),
    CsvColumn("BillingCurrency", True, "ISO 4217 code of the amount.", "EUR"),
    CsvColumn("ServiceName", True, "The model or service charged.", "mistral-large-latest"),
    CsvColumn("ChargeDescription", False, "What the line is, as on the vendor's bill.", "Input tokens"),
    CsvColumn("ConsumedQuantity", False, "Quantity consumed, a plain decimal number.", "1250000"),
    CsvColumn("ConsumedUnit", False, "Unit of ConsumedQuantity; required when a quantity is given.", "Tokens"),
    CsvColumn("SubAccountId", False, "Project, workspace or API key the charge belongs to.", "proj-support-bot"),
    CsvColumn(
        "ProviderName",
        False,
        "The vendor. Informational; one file holds one vendor's costs.",
        "Mistral AI",
    ),
)
REQUIRED = tuple(c.name for c in COLUMNS if c.required)
_BY_LOWER_NAME = {c.name.lower(): c.name for c in COLUMNS}

# Plain decimal, optional sign and exponent (FOCUS allows E-notation). Stricter than Decimal(),
# which would also take "1_000", "NaN" or "Infinity".
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# A "1E+30" typo must not reach the ledger; no AI bill line comes near this.
_TOO_LARGE = Decimal(10) ** 18


@dataclass(frozen=True)
class LineError:
    """One problem: ``line`` as a text editor or spreadsheet numbers it (the header is line 1),
    the column concerned ("" for the whole line), and what to fix."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.column}" if self.column else "")
        return f"{where}: {self.message}"


class CsvImportError(ValueError):
    """The file was refused; ``errors`` lists every problem found. Nothing was imported."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        shown = "; ".join(str(e).rstrip(".") for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"The cost file has {len(errors)} {noun}; nothing was imported. {shown}{more}.")


class _TooManyErrors(Exception):
    pass


class _Unreadable(Exception):
    """The CSV itself cannot be read past ``line`` (an unbalanced quote)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


class _Errors:
    """Collects line errors, stopping the parse once there are MAX_ERRORS."""

    def __init__(self) -> None:
        self.items: list[LineError] = []

    def add(self, line: int, column: str, message: str) -> None:
        self.items.append(LineError(line, column, message))
        if len(self.items) >= MAX_ERRORS:
            self.items.append(
                LineError(
                    line, "", f"stopped after {MAX_ERRORS} problems: check that this is the documented cost format."
                )
            )
            raise _TooManyErrors


def parse_cost_csv(text: str | bytes, *, vendor: str, max_rows: int = MAX_ROWS) -> list[CostRow]:
    """Every row of the file as a ``CostRow``, or ``CsvImportError`` listing every problem."""
    errors = _Errors()
    rows: list[CostRow] = []
    try:
        rows = _parse(_decode(text, errors), vendor=vendor, max_rows=max_rows, errors=errors)
    except _TooManyErrors:
        pass
    if errors.items:
        raise CsvImportError(errors.items)
    return rows


def _decode(text: str | bytes, errors: _Errors) -> str:
    if isinstance(text, str):
        return text.removeprefix("\ufeff")
    try:
        return text.decode("utf-8-sig")  # utf-8-sig drops the BOM spreadsheets write
    except UnicodeDecodeError as exc:
        line = text.count(b"\n", 0, exc.start) + 1
        errors.add(line, "", 'the file is not UTF-8 text: save it as "CSV UTF-8" and import it again.')
        return ""


def _parse(text: str, *, vendor: str, max_rows: int, errors: _Errors) -> list[CostRow]:
    if errors.items:
        return []
    records = _records(text)
    try:
        header = next(records, None)
        if header is None:
            errors.add(1, "", "the file is empty: it needs a header row and at least one cost row.")
            return []
        columns = _header(header[0], header[1], errors)
        if errors.items:
            return []  # without a usable header, every line would be reported wrong
        return _rows(records, columns, vendor=vendor, max_rows=max_rows, errors=errors)
    except _Unreadable as exc:
        errors.add(exc.line, "", f"unreadable CSV ({exc.reason}): check the double quotes on this line.")
        return []


def _rows(
    records: Iterator[tuple[int, list[str]]], columns: list[str], *, vendor: str, max_rows: int, errors: _Errors
) -> list[CostRow]:
    parsed: list[CostRow] = []
    seen: dict[tuple[object, ...], int] = {}
    provider: tuple[str, int] | None = None
    for count, (line, values) in enumerate(records, start=1):
        if count > max_rows:
            errors.add(line, "", f"the file has more than {max_rows} cost rows: split it into smaller files.")
            break
        cells = _cells(line, values, columns, errors)
        if cells is None:
            continue
        row = _row(line, cells, vendor=vendor, errors=errors)
        provider = _check_provider(line, cells.get("ProviderName", ""), provider, errors)
        if row is None:
            continue
        identity = (
            row.charge_period_start,
            row.charge_period_end,
            row.service_name,
            row.charge_description,
            row.project,
        )
        if identity in seen:
            errors.add(
                line,
                "",
                f"duplicates line {seen[identity]} (same period, ServiceName, ChargeDescription and SubAccountId): "
                "merge the two rows or tell them apart with ChargeDescription.",
            )
            continue
        seen[identity] = line
        parsed.append(row)
    if not parsed and not errors.items:
        errors.add(2, "", "the file has a header but no cost rows.")
    return parsed


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank records with the line each starts on (a quoted value may span several lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Unreadable(start, str(exc)) from None
        if any(v.strip() for v in values):
            yield start, values
        start = reader.line_num + 1


def _header(line: int, values: list[str], errors: _Errors) -> list[str]:
    """Canonical column names, in file order. Names match case-insensitively, spaces ignored."""
    names: list[str] = []
    known = ", ".join(c.name for c in COLUMNS)
    for raw in values:
        given = raw.strip()
        canonical = _BY_LOWER_NAME.get(given.lower())
        if canonical is None:
            if ";" in given or "\t" in given:
                errors.add(line, "", "the header is separated by ';' or tabs: save the file with commas as separators.")
            elif not given:
                errors.add(line, "", "a header cell is empty: name the column or delete it.")
            else:
                errors.add(line, given, f"unknown column: rename it to one of {known}, or remove it.")
        elif canonical in names:
            errors.add(line, canonical, "this column appears twice in the header: keep one.")
        names.append(canonical or given)
    for name in REQUIRED:
        if name not in names:
            errors.add(line, name, "required column missing from the header: add it.")
    return names


def _cells(line: int, values: list[str], columns: list[str], errors: _Errors) -> dict[str, str] | None:
    extra = values[len(columns) :]
    if len(values) < len(columns) or any(v.strip() for v in extra):
        fix = (
            "give every column a value (an empty one between two commas is fine)"
            if len(values) < len(columns)
            else "put values that contain commas in double quotes"
        )
        errors.add(line, "", f"has {len(values)} values but the header has {len(columns)} columns: {fix}.")
        return None
    return {name: value.strip() for name, value in zip(columns, values, strict=False)}


def _row(line: int, cells: dict[str, str], *, vendor: str, errors: _Errors) -> CostRow | None:
    before = len(errors.items)
    start = _moment(line, "ChargePeriodStart", cells["ChargePeriodStart"], errors)
    end = _moment(line, "ChargePeriodEnd", cells["ChargePeriodEnd"], errors)
    if start is not None and end is not None and end <= start:
        errors.add(
            line,
            "ChargePeriodEnd",
            f"{cells['ChargePeriodEnd']} is not after ChargePeriodStart {cells['ChargePeriodStart']}: the end is "
            "exclusive, so a charge for one day ends on the next day.",
        )
    cost = _number(line, "BilledCost", cells["BilledCost"], errors, required=True)
    currency = _currency(line, cells["BillingCurrency"], errors)
    service = cells["ServiceName"]
    if not service:
        errors.add(line, "ServiceName", "empty: give the model or service charged.")
    quantity = _number(line, "ConsumedQuantity", cells.get("ConsumedQuantity", ""), errors, required=False)
    unit = cells.get("ConsumedUnit", "")
    if cells.get("ConsumedQuantity") and not unit:
        errors.add(line, "ConsumedUnit", "a ConsumedQuantity needs its unit: give ConsumedUnit (e.g. Tokens).")
    if unit and not cells.get("ConsumedQuantity"):
        errors.add(
            line, "ConsumedQuantity", "ConsumedUnit is given without a quantity: add the quantity or remove the unit."
        )
    if len(errors.items) > before or start is None or end is None or cost is None or currency is None:
        return None
    description = cells.get("ChargeDescription", "")
    project = cells.get("SubAccountId", "")
    return CostRow(
        source_key=_source_key(vendor, start, end, service, description, project, unit),
        charge_period_start=start,
        charge_period_end=end,
        billed_cost=cost,
        billing_currency=currency,
        service_name=service,
        charge_description=description,
        project=project,
        consumed_quantity=quantity,
        consumed_unit=unit,
    )


def _moment(line: int, column: str, value: str, errors: _Errors) -> datetime | None:
    if not value:
        errors.add(line, column, "empty: give a date such as 2026-08-01 or a time such as 2026-08-01T00:00:00Z.")
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors.add(
            line,
            column,
            f"{value[:40]!r} is not an ISO 8601 date or time: write 2026-08-01 or 2026-08-01T00:00:00Z.",
        )
        return None
    # FOCUS periods are UTC; a time without an offset is taken as UTC (documented).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _number(line: int, column: str, value: str, errors: _Errors, *, required: bool) -> Decimal | None:
    if not value:
        if required:
            errors.add(line, column, "empty: give the amount, e.g. 12.50 (negative for a credit).")
        return None
    if not _NUMBER.match(value):
        hint = (
            "remove the thousands separators and use a dot for decimals, e.g. 1234.50"
            if "," in value or " " in value or "'" in value
            else "write a plain number such as 12.50 or -3.20, without currency symbols"
        )
        errors.add(line, column, f"{value[:40]!r} is not a number: {hint}.")
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:  # an exponent beyond Decimal's range
        number = None
    if number is None or abs(number) >= _TOO_LARGE:
        errors.add(line, column, f"{value[:40]!r} is out of range: amounts and quantities must stay below 10^18.")
        return None
    return number


def _currency(line: int, value: str, errors: _Errors) -> str | None:
    try:
        return currency_code(value)
    except CurrencyError as exc:
        errors.add(line, "BillingCurrency", str(exc))
        return None


def _check_provider(line: int, value: str, first: tuple[str, int] | None, errors: _Errors) -> tuple[str, int] | None:
    """One file holds one vendor: a second ProviderName is almost always two exports pasted together."""
    if not value:
        return first
    if first is None:
        return (value, line)
    if value.casefold() != first[0].casefold():
        errors.add(
            line,
            "ProviderName",
            f"{value!r} differs from {first[0]!r} on line {first[1]}: import each vendor's costs as its own file.",
        )
    return first


def _source_key(vendor: str, start: datetime, end: datetime, *parts: str) -> str:
    """Derived from the row's content only, so importing the same file again updates its rows.
    Times are normalized first: "2026-08-01" and "2026-08-01T00:00:00Z" are the same period."""
    content = "\x1f".join([start.isoformat(), end.isoformat(), *parts])
    return f"csv:{vendor}:{hashlib.sha256(content.encode()).hexdigest()[:32]}"


def columns_markdown() -> str:
    """The COLUMNS table in Markdown, as in docs/cost-import-format.md."""
    lines = ["| Column | Required | Meaning | Example |", "|---|---|---|---|"]
    for column in COLUMNS:
        lines.append(
            f"| `{column.name}` | {'yes' if column.required else 'no'} | {column.description} | `{column.example}` |"
        )
    return "\n".join(lines)
