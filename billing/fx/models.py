"""Foreign-exchange rates: ECB daily reference rates and operators' manual rates.

One row says "on ``date``, 1 ``base`` = ``rate`` ``quote``". ECB rows are always EUR-based, as
published; lookups derive inverse and cross rates (billing.fx.selectors). See docs/fx-rates.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import CurrencyField

# 24 digits with 12 decimals holds every published rate (IDR ~17 000, rates below 0.001) exactly,
# and leaves room for manual rates entered with more decimals than the ECB's 4-6 significant digits.
RATE_MAX_DIGITS = 24
RATE_DECIMAL_PLACES = 12


class FxRate(models.Model):
    class Source(models.TextChoices):
        ECB = "ecb", _("ECB reference rate")
        MANUAL = "manual", _("Manual")

    date = models.DateField(help_text="Day the rate applies to (the ECB publication day).")
    base = CurrencyField(help_text="1 unit of this currency…")
    quote = CurrencyField(help_text="…is worth `rate` units of this currency.")
    rate = models.DecimalField(max_digits=RATE_MAX_DIGITS, decimal_places=RATE_DECIMAL_PLACES)
    source = models.CharField(max_length=10, choices=Source.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-date", "base", "quote", "source"]
        verbose_name = _("FX rate")
        verbose_name_plural = _("FX rates")
        constraints = [
            models.UniqueConstraint(fields=["date", "base", "quote", "source"], name="fx_rate_unique_day_pair_source"),
            models.CheckConstraint(
                condition=models.Q(rate__gt=0),
                name="fx_rate_positive",
                violation_error_message=_("An exchange rate must be greater than zero."),
            ),
            # A currency against itself is always 1; a stored row could only contradict that.
            models.CheckConstraint(
                condition=~models.Q(base=models.F("quote")),
                name="fx_rate_distinct_currencies",
                violation_error_message=_("Base and quote must be two different currencies."),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.date} 1 {self.base} = {self.rate} {self.quote} ({self.source})"
