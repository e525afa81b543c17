"""HTML to PDF with WeasyPrint: no resource is ever fetched, and Japanese text needs a CJK font.

The templates inline their CSS and use no images, so the URL fetcher refuses every URL: customer
data printed on an invoice can never make the renderer read a file or call a server
(WeasyPrint CVE-2025-68616 is about exactly that). WeasyPrint is imported on first use: the import
alone takes about half a second, which the web process should not pay at start.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JAPANESE_FONT_MISSING = "No Japanese font is installed: install Debian fonts-noto-cjk (apt-get install fonts-noto-cjk)"
FC_LIST_MISSING = (
    "Cannot check for a Japanese font: fc-list is missing. Install Debian fontconfig and fonts-noto-cjk "
    "(apt-get install fontconfig fonts-noto-cjk)."
)

# Hiragana, katakana, CJK ideographs (and extension A, compatibility), half-width katakana.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


class InvoiceRenderError(Exception):
    """A document cannot be rendered; the message says what to install or fix."""


@dataclass(frozen=True)
class PdfAttachment:
    name: str
    data: bytes
    description: str = ""
    relationship: str = "Supplement"  # ISO 32000-2 7.11.3: Source, Data, Alternative, Supplement, Unspecified


@functools.cache
def japanese_font_installed() -> bool:
    """Whether fontconfig knows a font covering Japanese (``fc-list :lang=ja``). Cached per process."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        raise InvoiceRenderError(FC_LIST_MISSING)
    result = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
        [fc_list, ":lang=ja", "family"], capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def needs_japanese_font(*, html: str, lang: str) -> bool:
    return lang.split("-")[0] == "ja" or _CJK.search(html) is not None


def require_fonts(*, html: str, lang: str) -> None:
    """Raise rather than print empty boxes where Japanese characters should be."""
    if needs_japanese_font(html=html, lang=lang) and not japanese_font_installed():
        raise InvoiceRenderError(JAPANESE_FONT_MISSING)


@functools.cache
def _fetcher() -> Any:
    from weasyprint.urls import FatalURLFetchingError, URLFetcher

    class NoFetcher(URLFetcher):
        """Documents are self-contained: any URL is a template bug, and it stops the rendering."""

        def fetch(self, url: str, headers: Any = None) -> Any:
            raise FatalURLFetchingError(f"Invoice documents load no external resource (tried {url[:80]!r}).")

    return NoFetcher()


def html_to_pdf(
    html: str, *, lang: str, pdf_variant: str | None = None, attachments: Sequence[PdfAttachment] = ()
) -> bytes:
    """Render self-contained HTML to PDF bytes (``pdf_variant="pdf/a-3b"`` for an archival PDF/A-3b)."""
    require_fonts(html=html, lang=lang)
    from weasyprint import HTML, Attachment
    from weasyprint.urls import FatalURLFetchingError

    try:
        document = HTML(string=html, url_fetcher=_fetcher()).render()
    except FatalURLFetchingError as exc:  # a BaseException: never let it reach the worker
        raise InvoiceRenderError(str(exc)) from None
    pdf: bytes = document.write_pdf(
        pdf_variant=pdf_variant,
        attachments=[
            Attachment(string=a.data, name=a.name, description=a.description, relationship=a.relationship)
            for a in attachments
        ],
    )
    return pdf
