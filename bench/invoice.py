"""Invoice PDF: the project's full render against bare WeasyPrint on the same final HTML.

    python bench/invoice.py [--repeat N]

Full = ``billing.invoicing.delivery.invoice_pdf_render``: reading the invoice and its lines, building the
context, the Django template, the usage CSV, the font check and WeasyPrint. Bare = ``weasyprint.HTML(string=
html).write_pdf(attachments=[the same CSV])`` on the HTML that the full render produced. Both are the best of
``--repeat`` runs after one warm-up. Cases: a 1-page invoice (4 lines) and a 200-line invoice (6 pages), English,
no tax regime (goal: full / bare <= 1.25), and the same 1-page invoice from an EU VAT issuer, which adds the
Factur-X XML and PDF/A-3b (printed for information, no goal).

Runs on a throwaway SQLite database and media folder in a temporary directory, with DEBUG=1 and an in-memory
Celery broker (the delivery task queued by finalization is never run). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["BENCH_INVOICE_DIR"] = tempfile.mkdtemp(prefix="bench-invoice-")
os.environ["DJANGO_SETTINGS_MODULE"] = "aggregator.settings"
os.environ["DEBUG"] = "1"
os.environ["VAR_DIR"] = os.environ["BENCH_INVOICE_DIR"]
os.environ["DATABASE_URL"] = f"sqlite:///{Path(os.environ['BENCH_INVOICE_DIR']) / 'bench.sqlite3'}"
os.environ["MEDIA_ROOT"] = str(Path(os.environ["BENCH_INVOICE_DIR"]) / "media")
os.environ["CELERY_BROKER_URL"] = "memory://"
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from aggregator.tenancy.models import Issuer, Organization  # noqa: E402
from billing.invoicing.delivery import invoice_html, invoice_pdf_render, invoice_usage_csv, usage_csv_name  # noqa: E402
from billing.invoicing.models import Invoice, InvoiceLine  # noqa: E402
from billing.invoicing.services import invoice_finalize  # noqa: E402

_TMP = os.environ["BENCH_INVOICE_DIR"]
for noisy in ("weasyprint", "factur-x"):  # per-step progress lines at INFO
    logging.getLogger(noisy).setLevel(logging.WARNING)


def best(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: imports, template and font caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_invoice(slug: str, issuer: Issuer, lines: int, **organization: object) -> Invoice:
    fields = {"name": slug.title(), "legal_name": f"{slug.title()} Corp", "address": "1 Main Road\nSpringfield",
              "country": "US", "currency": "USD", "billing_email": f"ap@{slug}.test", **organization}  # fmt: skip
    org = Organization.objects.create(slug=slug, **fields)
    invoice = Invoice.objects.create(organization=org, issuer=issuer, period_start=date(2026, 10, 1),
                                     period_end=date(2026, 10, 31), currency=org.currency, locale="en",
                                     billing_mode="consolidated")  # fmt: skip
    for n in range(lines):
        vendor = ("openai", "OpenAI") if n % 2 == 0 else ("anthropic", "Claude")
        InvoiceLine.objects.create(invoice=invoice, position=n, kind="usage", vendor=vendor[0], vendor_label=vendor[1],
                                   description=f"model-{n:03d}", quantity=Decimal(1_000_000 + n), unit="tokens",
                                   original_amount=Decimal("1.2345"), original_currency="EUR", rate=Decimal("1.08"),
                                   amount=Decimal("1.33"))  # fmt: skip
    return invoice_finalize(invoice_id=invoice.pk, on=date(2026, 11, 2))


def measure(label: str, invoice: Invoice, repeat: int, goal: float | None) -> None:
    from weasyprint import HTML, Attachment

    invoice = Invoice.objects.select_related("issuer", "organization").get(pk=invoice.pk)
    html = invoice_html(invoice)
    csv = invoice_usage_csv(invoice=invoice)

    def full() -> object:
        return invoice_pdf_render(invoice=Invoice.objects.select_related("issuer", "organization").get(pk=invoice.pk))

    def bare() -> object:
        return HTML(string=html).write_pdf(attachments=[Attachment(string=csv, name=usage_csv_name(invoice))])

    t_full, t_bare = best(full, repeat), best(bare, repeat)
    verdict = "" if goal is None else ("  ok" if t_full / t_bare <= goal else f"  ABOVE GOAL {goal}")
    print(f"{label:<34} full {t_full * 1000:8.1f} ms   bare {t_bare * 1000:8.1f} ms   "
          f"ratio {t_full / t_bare:5.2f}{verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    plain = Issuer.objects.create(name="Operator Inc.", country="US", address="1 Market Street",
                                  bank_details="Bank: First Test Bank\nAccount: 000123456789")  # fmt: skip
    eu = Issuer.objects.create(name="Operator GmbH", country="DE", address="Hauptstraße 1\n10115 Berlin",
                               tax_regime="eu_vat", vat_id="DE136695976")  # fmt: skip
    print(f"WeasyPrint render, best of {args.repeat} (throwaway database and media in {_TMP})")
    measure("1-page invoice (4 lines)", make_invoice("one", plain, 4), args.repeat, goal=1.25)
    measure("200-line invoice (6 pages)", make_invoice("long", plain, 200), args.repeat, goal=1.25)
    measure("1-page EU invoice (+ Factur-X)", make_invoice("eu", eu, 4, country="FR"), args.repeat, goal=None)


def run() -> None:
    try:
        main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)


if __name__ == "__main__":
    run()
