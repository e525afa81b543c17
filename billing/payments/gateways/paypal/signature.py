"""PayPal webhook signatures, verified offline as PayPal documents for self-verification
(payments.md §3.5): the message ``transmission_id|transmission_time|webhook_id|crc32(raw body)``
must verify with ``PAYPAL-TRANSMISSION-SIG`` (SHA256withRSA) under the public key of the certificate
at ``PAYPAL-CERT-URL``, which is fetched only from PayPal's hosts and cached."""

from __future__ import annotations

import base64
import binascii
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings

from billing.payments.gateways.base import WebhookInvalid

# Where PayPal serves its webhook signing certificates.
PAYPAL_CERT_HOSTS = frozenset(
    {"api.paypal.com", "api-m.paypal.com", "api.sandbox.paypal.com", "api-m.sandbox.paypal.com"}
)
WEBHOOK_TOLERANCE = 300  # seconds between PAYPAL-TRANSMISSION-TIME and now
CERT_CACHE_SECONDS = 24 * 3600


def setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


class SignatureVerifier:
    """Verifies deliveries; keeps the certificates it fetched (per URL, a day) for the process."""

    def __init__(self) -> None:
        self._certs: dict[str, tuple[float, x509.Certificate]] = {}
        self._lock = threading.Lock()

    def verify(self, body: bytes, headers: Mapping[str, str], *, webhook_id: str) -> None:
        """Raise ``WebhookInvalid`` unless ``body`` was signed by PayPal for ``webhook_id`` just now."""
        get = {key.lower(): value for key, value in headers.items()}.get
        transmission_id, sent_at = get("paypal-transmission-id", ""), get("paypal-transmission-time", "")
        cert_url, algorithm = get("paypal-cert-url", ""), get("paypal-auth-algo", "")
        signature = get("paypal-transmission-sig", "")
        if not (transmission_id and sent_at and cert_url and signature):
            raise WebhookInvalid(
                "The PayPal signature headers (PAYPAL-TRANSMISSION-ID, -TIME, -SIG, -CERT-URL) are missing."
            )
        if algorithm and algorithm != "SHA256withRSA":
            raise WebhookInvalid(f"PayPal signed with {algorithm!r}; only SHA256withRSA is accepted.")
        self._check_time(sent_at)
        certificate = self._certificate(cert_url)
        message = f"{transmission_id}|{sent_at}|{webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF}".encode()
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise WebhookInvalid("The PayPal certificate does not hold an RSA key.")
        try:
            public_key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            raise WebhookInvalid("The PAYPAL-TRANSMISSION-SIG header does not verify.") from None

    @staticmethod
    def _check_time(sent_at: str) -> None:
        try:
            moment = datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
        except ValueError:
            raise WebhookInvalid(f"PAYPAL-TRANSMISSION-TIME {sent_at!r} is not a time.") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        tolerance = int(setting("PAYPAL_WEBHOOK_TOLERANCE", WEBHOOK_TOLERANCE))
        if abs((datetime.now(UTC) - moment).total_seconds()) > tolerance:
            raise WebhookInvalid(
                f"The delivery was signed at {sent_at}, more than {tolerance} seconds from now: refused as stale."
            )

    @staticmethod
    def _allowed_cert_url(cert_url: str) -> bool:
        parts = urlparse(cert_url)
        host = (parts.hostname or "").lower()
        if host in PAYPAL_CERT_HOSTS:
            return parts.scheme == "https"
        extra = {str(h).lower() for h in setting("PAYPAL_WEBHOOK_CERT_HOSTS", [])}
        return host in extra and parts.scheme in ("http", "https")

    def _certificate(self, cert_url: str) -> x509.Certificate:
        """The signing certificate at ``cert_url`` (PayPal's hosts only), cached for a day."""
        if not self._allowed_cert_url(cert_url):
            raise WebhookInvalid(
                f"PAYPAL-CERT-URL {cert_url!r} is not on PayPal's hosts "
                f"({', '.join(sorted(PAYPAL_CERT_HOSTS))}): refused."
            )
        now = time.monotonic()
        with self._lock:
            cached = self._certs.get(cert_url)
        if cached is not None and cached[0] > now:
            certificate = cached[1]
        else:
            try:
                response = httpx.get(cert_url, timeout=10, follow_redirects=False)
                response.raise_for_status()
                certificate = x509.load_pem_x509_certificates(response.content)[0]
            except httpx.HTTPError as exc:
                # Not our customer's fault and maybe passing: 400 makes PayPal deliver again later.
                raise WebhookInvalid(f"The PayPal certificate could not be fetched: {type(exc).__name__}.") from None
            except ValueError:
                raise WebhookInvalid("PAYPAL-CERT-URL does not serve a PEM certificate.") from None
            with self._lock:
                if len(self._certs) > 100:
                    self._certs.clear()
                self._certs[cert_url] = (now + CERT_CACHE_SECONDS, certificate)
        moment = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise WebhookInvalid("The PayPal signing certificate is expired or not yet valid.")
        if (urlparse(cert_url).hostname or "").lower() in PAYPAL_CERT_HOSTS:
            names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            if not any(str(name.value).lower().endswith(".paypal.com") for name in names):
                raise WebhookInvalid("The signing certificate was not issued to PayPal.")
        return certificate
