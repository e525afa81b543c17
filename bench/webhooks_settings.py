"""Settings of ``bench/webhooks.py`` only: the product's settings with a URLconf that adds a bare view.

Never used by the product: the bare view exists so the benchmark can compare the webhook endpoint
with the cheapest possible Django view on the same server, middleware and workers.
"""

from aggregator.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhooks_urls"
