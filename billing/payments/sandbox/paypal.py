"""A loopback PayPal for tests and the offline demo: OAuth tokens, Orders v2, a buyer approval
page, refunds, and webhooks signed like PayPal's with a certificate made at startup.

What it serves (shapes from payments.md §3):

=====================================================  ===============================================
``POST /v1/oauth2/token``                              client credentials (Basic auth) -> Bearer token
``POST /v2/checkout/orders``                           create; ``PayPal-Request-Id`` replays (200);
                                                       ``DUPLICATE_INVOICE_ID`` for an invoice id that
                                                       a completed capture already carries
``GET /v2/checkout/orders/<id>``                       the order
``POST /v2/checkout/orders/<id>/capture``              ``ORDER_NOT_APPROVED``, ``INSTRUMENT_DECLINED``,
                                                       ``ORDER_ALREADY_CAPTURED``, ``DUPLICATE_INVOICE_ID``
``POST /v2/payments/captures/<id>/refund``             full or partial refund
``GET /checkoutnow?token=<id>``                        the buyer's page: Approve, Approve with a card
                                                       that will be declined, Cancel
``GET /v1/notifications/certs/CERT-sandbox``           the webhook signing certificate (PEM)
=====================================================  ===============================================

Every event it makes (``PAYMENT.CAPTURE.COMPLETED``, ``PAYMENT.CAPTURE.REFUNDED``) is kept in
``events``; with ``webhook_url`` set it is also POSTed there, signed, about a second later (as
PayPal does). ``signed(event)`` gives the body and headers of a delivery, for tests to send.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import uuid
import zlib
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxServer, SandboxVendor

CLIENT_ID = "sandbox-paypal-client-FAKE-0001"
CLIENT_SECRET = "sandbox-paypal-secret-FAKE-0001"  # noqa: S105  (a sandbox-only fake)
WEBHOOK_ID = "WH-SANDBOX-FAKE-0001"
CERT_PATH = "/v1/notifications/certs/CERT-sandbox"
TOKEN_SECONDS = 32400


def _paypal_id(length: int = 17) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, name: str, issue: str = "", *, description: str = "", links: Any = None) -> SandboxResponse:
    body: dict[str, Any] = {"name": name, "message": description or name.replace("_", " ").title(),
                            "debug_id": _paypal_id(13).lower()}  # fmt: skip
    if issue:
        body["details"] = [{"issue": issue, "description": description or issue}]
    if links:
        body["links"] = links
    return SandboxResponse(status, body)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class PayPalSandbox(SandboxVendor):
    vendor = "paypal"

    def __init__(
        self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, webhook_id: str = WEBHOOK_ID,
        webhook_url: str = "", seed: str = "demo",
    ) -> None:  # fmt: skip
        super().__init__(seed=seed)
        self.client_id, self.client_secret = client_id, client_secret
        self.webhook_id, self.webhook_url = webhook_id, webhook_url
        self.orders: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[tuple[str, int]] = []  # (event id, HTTP status) of webhook POSTs
        self.base_url = ""  # from the Host header of the latest request
        self._tokens: set[str] = set()
        self._request_ids: dict[str, str] = {}  # PayPal-Request-Id -> order id
        self._captured_invoices: dict[str, str] = {}  # invoice_id -> order id
        self._captures: dict[str, str] = {}  # capture id -> order id
        self._state = threading.Lock()
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = _self_signed(self.private_key)

    def reset(self) -> None:
        """Forget orders, events and request ids (tokens and the signing key stay valid)."""
        with self._state:
            self.orders.clear()
            self.events.clear()
            self.deliveries.clear()
            self.requests.clear()
            self._request_ids.clear()
            self._captured_invoices.clear()
            self._captures.clear()

    # --- signing ------------------------------------------------------------------------------

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}{CERT_PATH}"

    def signed(
        self, event: dict[str, Any], *, transmission_time: str | None = None, webhook_id: str | None = None,
        cert_url: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """The raw body and PayPal's headers of a delivery of ``event``, signed as PayPal signs:
        SHA256withRSA over ``transmission_id|transmission_time|webhook_id|crc32(body)``."""
        body = json.dumps(event).encode()
        transmission_id = str(uuid.uuid4())
        sent_at = transmission_time or _now()
        message = f"{transmission_id}|{sent_at}|{webhook_id or self.webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF}"
        signature = self.private_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return body, {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent_at,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": cert_url or self.cert_url,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "Content-Type": "application/json",
        }

    def event(self, event_type: str, resource: dict[str, Any], *, resource_type: str = "capture") -> dict[str, Any]:
        """An event in PayPal's shape (kept in ``events`` and delivered when ``webhook_url`` is set)."""
        with self._state:
            return self._event(event_type, resource, resource_type)

    def _event(self, event_type: str, resource: dict[str, Any], resource_type: str) -> dict[str, Any]:
        event_id = f"WH-{_paypal_id(17)}-{_paypal_id(17)}"
        event = {
            "id": event_id, "create_time": _now(), "resource_type": resource_type, "event_type": event_type,
            "summary": event_type.replace(".", " ").lower(), "resource": resource, "event_version": "1.0",
            "resource_version": "2.0",
            "links": [{"href": f"{self.base_url}/v1/notifications/webhooks-events/{event_id}", "rel": "self",
                       "method": "GET"}],
        }  # fmt: skip
        self.events.append(event)
        if self.webhook_url:
            timer = threading.Timer(1.0, self._deliver, args=(event,))
            timer.daemon = True
            timer.start()
        return event

    def _deliver(self, event: dict[str, Any]) -> None:
        body, headers = self.signed(event)
        try:
            status = httpx.post(self.webhook_url, content=body, headers=headers, timeout=10).status_code
        except httpx.HTTPError:
            status = 0
        with self._state:
            self.deliveries.append((event["id"], status))

    # --- routing --------------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        host = request.headers.get("host")
        if host:
            self.base_url = f"http://{host}"
        path, method = request.path.rstrip("/") or "/", request.method
        if path == CERT_PATH and method == "GET":
            pem = self.certificate.public_bytes(serialization.Encoding.PEM)
            return SandboxResponse(200, pem, content_type="application/x-pem-file")
        if path == "/checkoutnow":
            return self._approval_page(request) if method == "GET" else self._approval_answer(request)
        if path == "/v1/oauth2/token" and method == "POST":
            return self._token(request)
        if not self._authorized(request):
            return SandboxResponse(
                401, {"error": "invalid_token", "error_description": "Token signature verification failed"}
            )
        parts = path.strip("/").split("/")
        with self._state:
            if parts == ["v2", "checkout", "orders"] and method == "POST":
                return self._order_create(request)
            if parts[:3] == ["v2", "checkout", "orders"] and len(parts) == 4 and method == "GET":
                order = self.orders.get(parts[3])
                return SandboxResponse(200, self._public(order)) if order else self._not_found(parts[3])
            if parts[:3] == ["v2", "checkout", "orders"] and parts[4:] == ["capture"] and method == "POST":
                return self._order_capture(parts[3])
            if parts[:3] == ["v2", "payments", "captures"] and parts[4:] == ["refund"] and method == "POST":
                return self._refund(parts[3], request)
        return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", description=f"No route {method} {path}")

    def _token(self, request: SandboxRequest) -> SandboxResponse:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = parse_qs(request.body.decode())
        if request.headers.get("authorization") != f"Basic {expected}" or form.get("grant_type") != [
            "client_credentials"
        ]:
            return SandboxResponse(
                401, {"error": "invalid_client", "error_description": "Client Authentication failed"}
            )
        token = f"A21AA{secrets.token_urlsafe(24)}"
        with self._state:
            self._tokens.add(token)
        return SandboxResponse(200, {"scope": "https://uri.paypal.com/services/payments/payment", "access_token": token,
                                     "token_type": "Bearer", "app_id": "APP-SANDBOX", "expires_in": TOKEN_SECONDS,
                                     "nonce": _paypal_id(20)})  # fmt: skip

    def _authorized(self, request: SandboxRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._state:
            return scheme == "Bearer" and token in self._tokens

    # --- orders ---------------------------------------------------------------------------------

    def _order_create(self, request: SandboxRequest) -> SandboxResponse:
        request_id = request.headers.get("paypal-request-id", "")
        if request_id and request_id in self._request_ids:
            return SandboxResponse(200, self._public(self.orders[self._request_ids[request_id]]))
        try:
            body = request.json()
            unit = body["purchase_units"][0]
            currency, value = str(unit["amount"]["currency_code"]), str(unit["amount"]["value"])
            if body.get("intent") != "CAPTURE" or Decimal(value) <= 0:
                raise ValueError(value)
        except (ValueError, KeyError, TypeError, IndexError, InvalidOperation):
            return _error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER",
                          description="intent CAPTURE and purchase_units[0].amount are required")  # fmt: skip
        invoice_id = str(unit.get("invoice_id") or "")
        if invoice_id and invoice_id in self._captured_invoices:
            return _duplicate_invoice()
        order_id = _paypal_id()
        context = ((body.get("payment_source") or {}).get("paypal") or {}).get("experience_context") or {}
        context = context or body.get("application_context") or {}
        redirect = "payer-action" if body.get("payment_source") else "approve"
        purchase_unit: dict[str, Any] = {
            "reference_id": str(unit.get("reference_id") or "default"),
            "amount": {"currency_code": currency, "value": value}, "custom_id": str(unit.get("custom_id") or ""),
            "description": str(unit.get("description") or ""),
        }  # fmt: skip
        if invoice_id:
            purchase_unit["invoice_id"] = invoice_id
        order: dict[str, Any] = {
            "id": order_id, "intent": "CAPTURE", "create_time": _now(),
            "status": "PAYER_ACTION_REQUIRED" if redirect == "payer-action" else "CREATED",
            "purchase_units": [purchase_unit],
            "_redirect": redirect, "_return_url": str(context.get("return_url") or ""),
            "_cancel_url": str(context.get("cancel_url") or ""), "_decline": False,
        }  # fmt: skip
        self.orders[order_id] = order
        if request_id:
            self._request_ids[request_id] = order_id
        return SandboxResponse(201, self._public(order))

    def _order_capture(self, order_id: str) -> SandboxResponse:
        order = self.orders.get(order_id)
        if order is None:
            return self._not_found(order_id)
        if order["status"] == "COMPLETED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED",
                          description="Order already captured.If 'intent=CAPTURE' only one capture per order "
                                      "is allowed.")  # fmt: skip
        if order["status"] != "APPROVED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED",
                          description="Payer has not yet approved the Order for payment.")  # fmt: skip
        if order["_decline"]:
            # As PayPal does: the buyer goes back to the approval page to choose another funding source.
            order["_decline"], order["_declined"], order["status"] = False, True, self._waiting_status(order)
            links = [{"href": "https://developer.paypal.com/api/rest/reference/orders/v2/errors/#INSTRUMENT_DECLINED",
                      "rel": "information_link", "method": "GET"},
                     {"href": self._approval_url(order_id), "rel": "redirect", "method": "GET"}]  # fmt: skip
            return _error(422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED",
                          description="The instrument presented was either declined by the processor or bank, or "
                                      "it can't be used for this payment.", links=links)  # fmt: skip
        unit = order["purchase_units"][0]
        invoice_id = unit.get("invoice_id") or ""
        if invoice_id and self._captured_invoices.get(invoice_id, order_id) != order_id:
            return _duplicate_invoice()
        capture_id = _paypal_id()
        amount = unit["amount"]
        capture = {
            "id": capture_id, "status": "COMPLETED", "amount": dict(amount), "final_capture": True,
            "seller_protection": {"status": "ELIGIBLE"}, "custom_id": unit.get("custom_id", ""),
            "seller_receivable_breakdown": {"gross_amount": dict(amount)},
            "supplementary_data": {"related_ids": {"order_id": order_id}},
            "links": [{"href": f"{self.base_url}/v2/payments/captures/{capture_id}", "rel": "self", "method": "GET"},
                      {"href": f"{self.base_url}/v2/payments/captures/{capture_id}/refund", "rel": "refund",
                       "method": "POST"},
                      {"href": f"{self.base_url}/v2/checkout/orders/{order_id}", "rel": "up", "method": "GET"}],
            "create_time": _now(), "update_time": _now(),
        }  # fmt: skip
        if invoice_id:
            capture["invoice_id"] = invoice_id
            self._captured_invoices[invoice_id] = order_id
        unit["payments"] = {"captures": [capture]}
        order["status"] = "COMPLETED"
        self._captures[capture_id] = order_id
        self._event("PAYMENT.CAPTURE.COMPLETED", dict(capture), "capture")
        return SandboxResponse(201, self._public(order))

    def _refund(self, capture_id: str, request: SandboxRequest) -> SandboxResponse:
        order = self.orders.get(self._captures.get(capture_id, ""))
        if order is None:
            return self._not_found(capture_id)
        capture = order["purchase_units"][0]["payments"]["captures"][0]
        try:
            body = request.json() or {}
        except ValueError:
            body = {}
        total = Decimal(capture["amount"]["value"])
        refunded = Decimal(capture.get("_refunded", "0"))
        value = Decimal(str((body.get("amount") or {}).get("value") or (total - refunded)))
        if value <= 0 or refunded + value > total:
            return _error(422, "UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED",
                          description="The refund amount must be less than or equal to the capture amount that has "
                                      "not yet been refunded.")  # fmt: skip
        refunded += value
        capture["_refunded"] = str(refunded)
        capture["status"] = "REFUNDED" if refunded == total else "PARTIALLY_REFUNDED"
        currency = capture["amount"]["currency_code"]
        refund = {
            "id": _paypal_id(), "status": "COMPLETED", "amount": {"currency_code": currency, "value": str(value)},
            "seller_payable_breakdown": {"total_refunded_amount": {"currency_code": currency, "value": str(refunded)}},
            "links": [{"href": f"{self.base_url}/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"}],
            "create_time": _now(), "update_time": _now(),
        }  # fmt: skip
        self._event("PAYMENT.CAPTURE.REFUNDED", dict(refund), "refund")
        return SandboxResponse(201, refund)

    # --- the buyer's approval page ----------------------------------------------------------------

    def _approval_url(self, order_id: str) -> str:
        return f"{self.base_url}/checkoutnow?token={order_id}"

    @staticmethod
    def _waiting_status(order: dict[str, Any]) -> str:
        return "PAYER_ACTION_REQUIRED" if order["_redirect"] == "payer-action" else "CREATED"

    def _approval_page(self, request: SandboxRequest) -> SandboxResponse:
        order_id = request.param("token") or ""
        with self._state:
            order = self.orders.get(order_id)
        if order is None or order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"):
            return SandboxResponse(404, "<!doctype html><p>This PayPal payment is not waiting for approval.</p>",
                                   content_type="text/html; charset=utf-8")  # fmt: skip
        unit = order["purchase_units"][0]
        amount = f"{unit['amount']['value']} {unit['amount']['currency_code']}"
        token = escape(order_id)
        what = unit.get("description") or unit.get("invoice_id") or order_id
        declined = (
            '<p id="declined" style="color: #b91c1c">The payment method you chose was declined. '
            "Choose another way to pay.</p>"
            if order.get("_declined")
            else ""
        )
        html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>PayPal sandbox</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto">
<h1>PayPal (local sandbox)</h1>
{declined}<p>Pay <strong>{escape(amount)}</strong> for {escape(what)}.</p>
<form method="post" action="/checkoutnow">
<input type="hidden" name="token" value="{token}">
<p><button type="submit" name="action" value="approve" id="approve">Approve</button></p>
<p><button type="submit" name="action" value="decline" id="approve-declined">
Approve with a card that will be declined</button></p>
<p><button type="submit" name="action" value="cancel" id="cancel">Cancel and return</button></p>
</form></body></html>"""
        return SandboxResponse(200, html, content_type="text/html; charset=utf-8")

    def _approval_answer(self, request: SandboxRequest) -> SandboxResponse:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        return self.approve(form.get("token", ""), action=form.get("action", "approve"))

    def approve(self, order_id: str, *, action: str = "approve") -> SandboxResponse:
        """What the buyer's click does: approve (``decline``: with a funding source that capture
        will decline) or cancel; the answer redirects to the order's return or cancel URL."""
        with self._state:
            order = self.orders.get(order_id)
            if order is None or order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"):
                return self._not_found(order_id)
            if action == "cancel":
                return SandboxResponse(302, "", headers={"Location": _with_query(order["_cancel_url"], token=order_id)})
            order["status"], order["_decline"] = "APPROVED", action == "decline"
            order["payer"] = {"payer_id": "SANDBOXPAYER01", "email_address": "buyer@example.com",
                              "name": {"given_name": "Sandbox", "surname": "Buyer"}}  # fmt: skip
            location = _with_query(order["_return_url"], token=order_id, PayerID="SANDBOXPAYER01")
        return SandboxResponse(302, "", headers={"Location": location})

    # --- shapes ---------------------------------------------------------------------------------

    def _public(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as PayPal shows it: without our bookkeeping, with its HATEOAS links."""
        data = json.loads(json.dumps({k: v for k, v in order.items() if not k.startswith("_")}))
        for unit in data["purchase_units"]:
            for capture in (unit.get("payments") or {}).get("captures") or []:
                capture.pop("_refunded", None)
        base = f"{self.base_url}/v2/checkout/orders/{order['id']}"
        links = [{"href": base, "rel": "self", "method": "GET"}]
        if order["status"] in ("CREATED", "PAYER_ACTION_REQUIRED"):
            links.append({"href": self._approval_url(order["id"]), "rel": order["_redirect"], "method": "GET"})
        if order["status"] in ("CREATED", "APPROVED", "PAYER_ACTION_REQUIRED"):
            links.append({"href": f"{base}/capture", "rel": "capture", "method": "POST"})
        data["links"] = links
        return data

    @staticmethod
    def _not_found(resource_id: str) -> SandboxResponse:
        return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID",
                      description=f"Specified resource ID {resource_id} does not exist.")  # fmt: skip


def demo_server() -> SandboxServer | None:
    """For the offline demo (``run_sandboxes``): a sandbox serving on the loopback address and port of
    ``PAYPAL_API_BASE``, with the configured credentials and webhook id, posting its webhooks to
    ``SITE_URL``. None when PayPal is not configured or ``PAYPAL_API_BASE`` is not on loopback."""
    from django.conf import settings

    address = urlsplit(str(getattr(settings, "PAYPAL_API_BASE", "") or ""))
    if address.hostname not in ("127.0.0.1", "localhost") or not address.port or not settings.PAYPAL_CLIENT_ID:
        return None
    sandbox = PayPalSandbox(
        client_id=settings.PAYPAL_CLIENT_ID, client_secret=settings.PAYPAL_CLIENT_SECRET,
        webhook_id=settings.PAYPAL_WEBHOOK_ID or WEBHOOK_ID,
        webhook_url=f"{str(settings.SITE_URL).rstrip('/')}/webhooks/paypal/",
    )  # fmt: skip
    sandbox.base_url = f"http://{address.hostname}:{address.port}"
    return SandboxServer(sandbox, host=address.hostname, port=address.port).start()


def _duplicate_invoice() -> SandboxResponse:
    return _error(422, "UNPROCESSABLE_ENTITY", "DUPLICATE_INVOICE_ID",
                  description="Duplicate Invoice ID detected. To avoid a potential duplicate transaction your account "
                              "setting requires that Invoice Id be unique for each transaction.")  # fmt: skip


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A certificate like PayPal's webhook signing one, for the sandbox's own key."""
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PayPal local sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.sandbox.local")])  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
