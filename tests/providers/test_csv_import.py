"""The CSV cost-import parser: exact amounts, every bad line reported, all or nothing."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from providers.connectors.csv_import import (
    COLUMNS,
    CsvImportError,
    LineError,
    columns_markdown,
    parse_cost_csv,
)

HEADER = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ServiceName,ChargeDescription,SubAccountId"
DOC = Path(__file__).resolve().parents[2] / "docs" / "cost-import-format.md"


def csv_text(*lines: str, header: str = HEADER) -> str:
    return "\n".join([header, *lines]) + "\n"


def errors_of(text: str | bytes, **options: int) -> list[LineError]:
    with pytest.raises(CsvImportError) as caught:
        parse_cost_csv(text, vendor="mistral", **options)
    return caught.value.errors


def test_valid_file_parses_with_exact_amounts() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,12.345678901234,EUR,mistral-large-latest,Input tokens,proj-a",
        "2026-08-01,2026-08-02,0.000001,EUR,mistral-large-latest,Output tokens,proj-a",
        "2026-08-02,2026-08-03,7,USD,command-r,,",
    )

    rows = parse_cost_csv(text, vendor="mistral")

    assert [r.billed_cost for r in rows] == [Decimal("12.345678901234"), Decimal("0.000001"), Decimal("7")]
    assert all(isinstance(r.billed_cost, Decimal) for r in rows)
    first = rows[0]
    assert first.charge_period_start == datetime(2026, 8, 1, tzinfo=UTC)
    assert first.charge_period_end == datetime(2026, 8, 2, tzinfo=UTC)
    assert (first.billing_currency, first.service_name, first.charge_description, first.project) == (
        "EUR",
        "mistral-large-latest",
        "Input tokens",
        "proj-a",
    )
    assert rows[2].billing_currency == "USD" and rows[2].project == "" and rows[2].charge_description == ""
    assert len({r.source_key for r in rows}) == 3


def test_every_bad_line_is_reported_with_its_line_and_column() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,1.50,EUR,mistral-small,,",  # line 2: fine
        "2026-13-01,2026-08-02,1.50,EUR,mistral-small,a,",  # line 3: bad month
        '2026-08-01,2026-08-02,"1,234.50",EUR,mistral-small,b,',  # line 4: thousands separator
        "2026-08-01,2026-08-02,$3,EUR,mistral-small,c,",  # line 5: currency symbol
        "2026-08-01,2026-08-02,1.50,EURO,mistral-small,d,",  # line 6: not ISO 4217
        "2026-08-01,2026-08-02,1.50,ZZZ,mistral-small,e,",  # line 7: unknown currency
        "2026-08-01,2026-08-02,1.50,EUR,,f,",  # line 8: no service
        "2026-08-02,2026-08-01,1.50,EUR,mistral-small,g,",  # line 9: end before start
        "2026-08-01,2026-08-01,1.50,EUR,mistral-small,h,",  # line 10: empty period
        "2026-08-01,2026-08-02,,EUR,mistral-small,i,",  # line 11: no amount
        "2026-08-01,2026-08-02,NaN,EUR,mistral-small,j,",  # line 12: not a number
        "2026-08-01,2026-08-02,1.50,EUR,mistral-small",  # line 13: too few values
        ",2026-08-02,1.50,EUR,mistral-small,k,",  # line 14: no start
    )

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [
        (3, "ChargePeriodStart"),
        (4, "BilledCost"),
        (5, "BilledCost"),
        (6, "BillingCurrency"),
        (7, "BillingCurrency"),
        (8, "ServiceName"),
        (9, "ChargePeriodEnd"),
        (10, "ChargePeriodEnd"),
        (11, "BilledCost"),
        (12, "BilledCost"),
        (13, ""),
        (14, "ChargePeriodStart"),
    ]
    by_line = {e.line: e.message for e in errors}
    assert "ISO 8601" in by_line[3]
    assert "thousands separators" in by_line[4]
    assert "without currency symbols" in by_line[5]
    assert "ISO 4217" in by_line[6] and "ISO 4217" in by_line[7]
    assert "exclusive" in by_line[9]
    assert "5 values" in by_line[13] and "7 columns" in by_line[13]


def test_one_bad_line_means_nothing_is_imported() -> None:
    good = [f"2026-08-{d:02d},2026-08-{d + 1:02d},1.00,EUR,mistral-small,,proj" for d in range(1, 20)]
    text = csv_text(*good, "2026-08-20,2026-08-21,oops,EUR,mistral-small,,proj")

    with pytest.raises(CsvImportError) as caught:
        parse_cost_csv(text, vendor="mistral")

    assert caught.value.errors == [
        LineError(21, "BilledCost", caught.value.errors[0].message),
    ]
    assert isinstance(caught.value, ValueError)
    assert "nothing was imported" in str(caught.value) and "line 21, BilledCost" in str(caught.value)


def test_byte_order_mark_is_ignored_in_bytes_and_text() -> None:
    text = csv_text("2026-08-01,2026-08-02,2.50,EUR,mistral-small,,")

    from_bytes = parse_cost_csv(text.encode("utf-8-sig"), vendor="mistral")
    from_text = parse_cost_csv("\ufeff" + text, vendor="mistral")

    assert from_bytes == from_text == parse_cost_csv(text, vendor="mistral")


def test_windows_line_endings_and_quoted_multiline_values_keep_line_numbers() -> None:
    text = csv_text(
        '2026-08-01,2026-08-02,2.50,EUR,mistral-small,"first line\nsecond line",',
        "2026-08-01,2026-08-02,bad,EUR,mistral-small,other,",
    ).replace("\n", "\r\n")

    errors = errors_of(text)

    # The quoted value spans lines 2 and 3, so the bad row starts on line 4.
    assert [(e.line, e.column) for e in errors] == [(4, "BilledCost")]


def test_unquoted_comma_is_reported_with_a_quoting_hint() -> None:
    errors = errors_of(csv_text("2026-08-01,2026-08-02,2.50,EUR,mistral-small,Input tokens, batch,proj"))

    assert [(e.line, e.column) for e in errors] == [(2, "")]
    assert "8 values" in errors[0].message and "double quotes" in errors[0].message


def test_trailing_empty_cells_from_spreadsheets_are_tolerated() -> None:
    (row,) = parse_cost_csv(csv_text("2026-08-01,2026-08-02,2.50,EUR,mistral-small,,,,"), vendor="mistral")

    assert row.billed_cost == Decimal("2.50")


def test_negative_amounts_are_credits() -> None:
    text = csv_text("2026-08-01,2026-09-01,-25.00,USD,groq,Promotional credit,")

    (row,) = parse_cost_csv(text, vendor="groq")

    assert row.billed_cost == Decimal("-25.00")


def test_dates_and_datetimes_with_offsets_are_utc() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,1,EUR,a,,",
        "2026-08-01T00:00:00Z,2026-08-01T12:00:00+00:00,1,EUR,b,,",
        "2026-08-01T09:00:00+09:00,2026-08-01T10:00:00+09:00,1,EUR,c,,",
        "2026-08-01 06:00:00,2026-08-01T07:30:00,1,EUR,d,,",
    )

    rows = parse_cost_csv(text, vendor="cohere")

    assert [(r.charge_period_start, r.charge_period_end) for r in rows] == [
        (datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 8, 2, tzinfo=UTC)),
        (datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 8, 1, 12, tzinfo=UTC)),
        (datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 8, 1, 1, tzinfo=UTC)),
        (datetime(2026, 8, 1, 6, tzinfo=UTC), datetime(2026, 8, 1, 7, 30, tzinfo=UTC)),
    ]
    assert all(r.charge_period_start.tzinfo is UTC for r in rows)


def test_quantity_without_unit_is_refused() -> None:
    header = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ServiceName,ConsumedQuantity,ConsumedUnit"
    text = csv_text(
        "2026-08-01,2026-08-02,1.25,EUR,mistral-small,1250000,Tokens",
        "2026-08-01,2026-08-02,1.25,EUR,mistral-large,1250000,",
        "2026-08-01,2026-08-02,1.25,EUR,mistral-medium,,Tokens",
        '2026-08-01,2026-08-02,1.25,EUR,codestral,"1,250",Tokens',
        header=header,
    )

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [
        (3, "ConsumedUnit"),
        (4, "ConsumedQuantity"),
        (5, "ConsumedQuantity"),
    ]
    assert "ConsumedUnit" in errors[0].message


def test_quantity_with_unit_is_kept_exactly() -> None:
    header = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ServiceName,ConsumedQuantity,ConsumedUnit"
    text = csv_text("2026-08-01,2026-08-02,1.25,EUR,mistral-small,1250000.5,Tokens", header=header)

    (row,) = parse_cost_csv(text, vendor="mistral")

    assert (row.consumed_quantity, row.consumed_unit) == (Decimal("1250000.5"), "Tokens")


def test_missing_and_unknown_header_columns_are_reported() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,EUR,mistral-small,x",
        header="ChargePeriodStart,ChargePeriodEnd,BillingCurrency,Model,Cost",
    )

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [(1, "Model"), (1, "Cost"), (1, "BilledCost"), (1, "ServiceName")]
    assert "unknown column" in errors[0].message and "ServiceName" in errors[0].message
    assert "required column missing" in errors[2].message


def test_header_names_match_case_insensitively_and_optional_columns_may_be_absent() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,3.10,eur,mistral-small",
        header="chargeperiodstart, ChargePeriodEnd ,billedcost,BILLINGCURRENCY,ServiceName",
    )

    (row,) = parse_cost_csv(text, vendor="mistral")

    assert row.billed_cost == Decimal("3.10") and row.billing_currency == "EUR"


def test_semicolon_separated_file_gets_a_specific_hint() -> None:
    errors = errors_of(
        "ChargePeriodStart;ChargePeriodEnd;BilledCost;BillingCurrency;ServiceName\n2026-08-01;2026-08-02;1;EUR;x\n"
    )

    assert any("commas as separators" in e.message for e in errors)
    assert all(e.line == 1 for e in errors)


def test_header_after_blank_lines_keeps_real_line_numbers() -> None:
    errors = errors_of("\n\n" + csv_text("2026-08-01,2026-08-02,x,EUR,mistral-small,,"))

    assert [(e.line, e.column) for e in errors] == [(4, "BilledCost")]


def test_duplicate_and_empty_header_cells_are_reported() -> None:
    errors = errors_of(csv_text("1,2,3,4,5,6,7", header=HEADER.replace("SubAccountId", "ServiceName") + ","))

    assert [(e.line, e.column) for e in errors] == [(1, "ServiceName"), (1, "")]


def test_empty_file_is_reported() -> None:
    for empty in ("", b"", "\ufeff", "\n\n"):
        errors = errors_of(empty)
        assert [(e.line, e.column) for e in errors] == [(1, "")]
        assert "empty" in errors[0].message


def test_header_without_rows_is_reported() -> None:
    errors = errors_of(HEADER + "\n")

    assert "no cost rows" in errors[0].message


def test_duplicate_rows_are_flagged_with_the_first_line() -> None:
    text = csv_text(
        "2026-08-01,2026-08-02,1.00,EUR,mistral-small,Input tokens,proj",
        "2026-08-01,2026-08-02,2.00,EUR,mistral-small,Output tokens,proj",
        "2026-08-01T00:00:00Z,2026-08-02,1.00,EUR,mistral-small,Input tokens,proj",
    )

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [(4, "")]
    assert "duplicates line 2" in errors[0].message


def test_source_key_is_stable_across_imports_and_follows_content() -> None:
    line = "2026-08-01,2026-08-02,1.00,EUR,mistral-small,Input tokens,proj"
    first = parse_cost_csv(csv_text(line), vendor="mistral")
    again = parse_cost_csv(csv_text(line.replace("1.00", "1.40")), vendor="mistral")
    same_period_other_form = parse_cost_csv(
        csv_text("2026-08-01T00:00:00Z,2026-08-02T00:00:00+00:00,1.00,EUR,mistral-small,Input tokens,proj"),
        vendor="mistral",
    )
    other_project = parse_cost_csv(csv_text(line.replace(",proj", ",proj-2")), vendor="mistral")

    assert first[0].source_key == again[0].source_key == same_period_other_form[0].source_key
    assert again[0].billed_cost == Decimal("1.40")
    assert other_project[0].source_key != first[0].source_key


def test_non_utf8_bytes_are_reported_with_their_line() -> None:
    text = csv_text("2026-08-01,2026-08-02,1.00,EUR,caf\u00e9,,").encode("latin-1")

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [(2, "")]
    assert "UTF-8" in errors[0].message


def test_unbalanced_quote_is_reported() -> None:
    errors = errors_of(csv_text('2026-08-01,2026-08-02,1.00,EUR,"mistral-small,,'))

    assert [(e.line, e.column) for e in errors] == [(2, "")]
    assert "double quotes" in errors[0].message


def test_too_many_rows_are_refused() -> None:
    lines = [f"2026-08-01,2026-08-02,1.00,EUR,model-{i},," for i in range(4)]

    errors = errors_of(csv_text(*lines), max_rows=3)

    assert [(e.line, e.column) for e in errors] == [(5, "")]
    assert "split it" in errors[0].message


def test_absurd_amount_is_refused() -> None:
    errors = errors_of(csv_text("2026-08-01,2026-08-02,1E+30,EUR,mistral-small,,"))

    assert [(e.line, e.column) for e in errors] == [(2, "BilledCost")]


def test_amounts_in_exponent_notation_are_exact() -> None:
    (row,) = parse_cost_csv(csv_text("2026-08-01,2026-08-02,1.5E-7,EUR,mistral-small,,"), vendor="mistral")

    assert row.billed_cost == Decimal("0.00000015")


def test_two_vendors_in_one_file_are_refused() -> None:
    header = "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ServiceName,ProviderName"
    text = csv_text(
        "2026-08-01,2026-08-02,1,EUR,mistral-small,Mistral AI",
        "2026-08-01,2026-08-02,1,EUR,mistral-large,mistral ai",
        "2026-08-01,2026-08-02,1,USD,command-r,Cohere",
        header=header,
    )

    errors = errors_of(text)

    assert [(e.line, e.column) for e in errors] == [(4, "ProviderName")]
    assert "line 2" in errors[0].message


def test_columns_constant_matches_the_documentation() -> None:
    doc = DOC.read_text(encoding="utf-8")

    assert columns_markdown() in doc
    assert {c.name for c in COLUMNS if c.required} == {
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "BilledCost",
        "BillingCurrency",
        "ServiceName",
    }


def test_documented_example_file_parses() -> None:
    doc = DOC.read_text(encoding="utf-8")
    example = doc.split("```csv\n", 1)[1].split("```", 1)[0]

    rows = parse_cost_csv(example, vendor="mistral")

    assert len(rows) == 4
    assert sum(r.billed_cost for r in rows) == Decimal("9.1250")


def test_documented_error_report_is_what_the_parser_says() -> None:
    doc = DOC.read_text(encoding="utf-8")
    bad_file = doc.split("```text\n", 1)[1].split("```", 1)[0]
    report = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])

    with pytest.raises(CsvImportError) as caught:
        parse_cost_csv(bad_file, vendor="file_import")

    assert report["error"]["message"] == str(caught.value)
    assert report["error"]["lines"] == [asdict(e) for e in caught.value.errors]
