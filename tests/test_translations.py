"""The Japanese catalog: every string translated, the compiled catalog up to date, and every
literal string of the templates in it."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "locale" / "ja" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")


def _entries() -> list[tuple[str, str, bool]]:
    """(msgid, msgstr, fuzzy) of each active entry, header left out."""
    entries = []
    for block in PO.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("#~")]
        fuzzy = any(line.startswith("#,") and "fuzzy" in line for line in lines)
        fields: dict[str, str] = {}
        current = ""
        for line in lines:
            match = re.match(r'^(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?) (".*")$', line)
            if match:
                current = match.group(1)
                fields[current] = ast.literal_eval(match.group(2))
            elif line.startswith('"') and current:
                fields[current] += ast.literal_eval(line)
        if fields.get("msgid"):
            entries.append((fields["msgid"], fields.get("msgstr", fields.get("msgstr[0]", "")), fuzzy))
    return entries


def test_every_japanese_string_is_translated() -> None:
    entries = _entries()
    assert len(entries) > 500
    assert [msgid for msgid, msgstr, fuzzy in entries if not msgstr or fuzzy] == []


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt is not installed: apt-get install gettext")
def test_the_compiled_catalog_is_up_to_date(tmp_path: Path) -> None:
    compiled = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(PO)], check=True)
    assert compiled.read_bytes() == MO.read_bytes(), (
        "locale/ja/LC_MESSAGES/django.mo is stale: msgfmt --check -o locale/ja/LC_MESSAGES/django.mo "
        "locale/ja/LC_MESSAGES/django.po"
    )


def test_every_literal_template_string_is_in_the_catalog() -> None:
    known = {msgid for msgid, _, _ in _entries()}
    tag = re.compile(r'{%\s*(?:translate|trans)\s+"([^"]+)"')
    missing = {
        f"{path.relative_to(ROOT)}: {text}"
        for path in (ROOT / "templates").rglob("*.*")
        if path.suffix in {".html", ".txt"} and not path.is_relative_to(ROOT / "templates" / "admin")
        for text in tag.findall(path.read_text(encoding="utf-8"))
        if text not in known
    }
    assert sorted(missing) == []


def test_every_decline_message_reads_in_japanese() -> None:
    from django.utils import translation

    from billing.payments.gateways.base import DECLINE_MESSAGES

    with translation.override("ja"):
        untranslated = sorted(
            message for message in set(DECLINE_MESSAGES.values()) if translation.gettext(message) == message
        )
    assert untranslated == []
