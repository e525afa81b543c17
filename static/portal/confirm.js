/* Confirming an off-session charge that needs 3-D Secure (templates/portal/payments/confirm.html).
 * No inline script: configuration comes from data attributes of #confirm-config and the JSON of
 * #confirm-messages.
 *
 * The button POSTs to the intent URL for the PaymentIntent's client secret (never put in the page),
 * then stripe.confirmCardPayment(client_secret) runs the bank's check (with the saved card when
 * Stripe left the PaymentIntent waiting for a payment method after the off-session attempt). The
 * top-up is credited, or the invoice paid, by Stripe's webhook: the page polls the status URL.
 */
(function () {
  'use strict';

  var config = document.getElementById('confirm-config');
  if (!config) { return; }
  var cfg = config.dataset;
  var messagesNode = document.getElementById('confirm-messages');
  var messages = messagesNode ? JSON.parse(messagesNode.textContent || '{}') : {};
  var statusEl = document.getElementById('payment-status');
  var errorsEl = document.getElementById('confirm-errors');
  var openEl = document.getElementById('confirm-open');
  var button = document.getElementById('confirm-button');
  var nextEl = document.getElementById('confirm-next');
  var csrfInput = document.querySelector('#confirm input[name=csrfmiddlewaretoken]');
  var POLL_MS = 2000;
  var POLL_LIMIT = 90;
  var polling = null;

  function setState(state, text) {
    if (!statusEl) { return; }
    statusEl.dataset.state = state;
    statusEl.textContent = text || '';
  }

  function busy(on) {
    if (button) { button.disabled = on; }
  }

  function errorText(error) {
    return window.PortalPayments.errorText(error, messages);
  }

  function fail(error) {
    setState('open', '');
    if (errorsEl) { errorsEl.textContent = errorText(error); }
    if (openEl) { openEl.hidden = false; }
    busy(false);
  }

  /* The webhook settled it (or it cannot be confirmed any more): say so, offer what comes next. */
  function settled(state, text) {
    setState(state, text);
    if (openEl) { openEl.hidden = true; }
    if (nextEl) { nextEl.hidden = state === 'succeeded'; }
  }

  function post(url) {
    /* A 409 with a state: the charge was settled meanwhile (the page says how). */
    return window.PortalPayments.post(url, null, csrfInput ? csrfInput.value : '', function (response, body) {
      return response.status === 409 && Boolean(body.state);
    });
  }

  /* Ask the server until the webhook has settled the charge. */
  function poll() {
    var count = 0;
    if (polling) { clearTimeout(polling); }
    function tick() {
      count += 1;
      fetch(cfg.statusUrl, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
        .then(function (response) { return response.json(); })
        .then(function (body) {
          if (body.state === 'succeeded' || body.state === 'failed' || body.state === 'closed') {
            settled(body.state, body.message);
            return;
          }
          if (count >= POLL_LIMIT) { setState('processing', cfg.textSlow); return; }
          polling = setTimeout(tick, POLL_MS);
        })
        .catch(function () { polling = setTimeout(tick, POLL_MS * 2); });
    }
    polling = setTimeout(tick, POLL_MS / 2);
  }

  function processing() {
    setState('processing', cfg.textProcessing);
    if (errorsEl) { errorsEl.textContent = ''; }
    if (openEl) { openEl.hidden = true; }
    poll();
  }

  if (cfg.state === 'processing') { poll(); }
  if (!cfg.publishableKey || cfg.state !== 'open' || !button) { return; }
  if (typeof window.Stripe !== 'function') {
    fail({code: 'network'});
    busy(true);
    return;
  }
  var stripe = window.Stripe(cfg.publishableKey);
  busy(false);

  button.addEventListener('click', function () {
    if (errorsEl) { errorsEl.textContent = ''; }
    busy(true);
    setState('working', cfg.textWorking);
    post(cfg.intentUrl)
      .then(function (body) {
        if (body.state !== 'open') { return body; }
        var data;
        if (body.status === 'requires_payment_method' && body.payment_method) {
          data = {payment_method: body.payment_method};
        }
        return stripe.confirmCardPayment(body.client_secret, data).then(function (result) {
          if (result.error) { throw result.error; }
          var intent = result.paymentIntent || {};
          if (intent.status === 'requires_payment_method') {
            throw intent.last_payment_error || {code: 'payment_intent_authentication_failure'};
          }
          return {state: 'processing'};
        });
      })
      .then(function (body) {
        if (body.state === 'processing' || body.state === 'open') { processing(); return; }
        settled(body.state, body.message);
      })
      .catch(fail);
  });
}());
