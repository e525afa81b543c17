/* The invoice pay page (templates/portal/invoices/pay.html). No inline script: configuration
 * comes from data attributes of #pay-config and the JSON of #pay-messages.
 *
 * Card: Stripe.js card Element -> stripe.createToken(card) -> POST the token to the confirm URL
 * (the server confirms the invoice's PaymentIntent) -> if 3-D Secure is needed,
 * stripe.confirmCardPayment(client_secret). Works the same with Stripe.js and localstripe's
 * stand-in. Google Pay: Stripe's Express Checkout Element, created only when Stripe.js offers it
 * and shown only when its `ready` event says Google Pay can pay here; otherwise nothing shows.
 * Either way the invoice is marked paid by Stripe's webhook: the page polls the status URL.
 */
(function () {
  'use strict';

  var config = document.getElementById('pay-config');
  if (!config) { return; }
  var cfg = config.dataset;
  var messagesNode = document.getElementById('pay-messages');
  var messages = messagesNode ? JSON.parse(messagesNode.textContent || '{}') : {};
  var statusEl = document.getElementById('payment-status');
  var errorsEl = document.getElementById('card-errors');
  var form = document.getElementById('pay-form');
  var button = document.getElementById('pay-button');
  var methodsEl = document.getElementById('pay-methods');
  var doneEl = document.getElementById('pay-done');
  var csrfInput = document.querySelector('#pay input[name=csrfmiddlewaretoken]');
  var POLL_MS = 2000;
  var POLL_LIMIT = 90;
  var polling = null;

  function setState(state, text) {
    if (!statusEl) { return; }
    statusEl.dataset.state = state;
    statusEl.textContent = text || '';
  }

  function showError(text) {
    if (errorsEl) {
      errorsEl.textContent = text;
    } else {
      setState('failed', text);
    }
  }

  function clearError() {
    if (errorsEl) { errorsEl.textContent = ''; }
  }

  function busy(on) {
    if (button) { button.disabled = on; }
  }

  /* A Stripe.js error, one of ours ({code, message}) or an exception, in the customer's words. */
  function errorText(error) {
    return window.PortalPayments.errorText(error, messages);
  }

  function fail(error) {
    setState('failed', '');
    showError(errorText(error));
    if (methodsEl) { methodsEl.hidden = false; }
    busy(false);
  }

  function post(url, data) {
    return window.PortalPayments.post(url, data, csrfInput ? csrfInput.value : '');
  }

  function paid() {
    setState('paid', cfg.textPaid);
    if (methodsEl) { methodsEl.hidden = true; }
    if (doneEl) { doneEl.hidden = false; }
  }

  /* Ask the server until the webhook has marked the invoice paid (or the payment failed). */
  function poll(paymentIntent) {
    var count = 0;
    var url = cfg.statusUrl + (paymentIntent ? '?payment_intent=' + encodeURIComponent(paymentIntent) : '');
    if (polling) { clearTimeout(polling); }
    function tick() {
      count += 1;
      fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
        .then(function (response) { return response.json(); })
        .then(function (body) {
          if (body.state === 'paid') { paid(); return; }
          if (body.payment && body.payment.status === 'failed' && paymentIntent) {
            fail({message: body.payment.message});
            return;
          }
          if (count >= POLL_LIMIT) { setState('processing', cfg.textSlow); return; }
          polling = setTimeout(tick, POLL_MS);
        })
        .catch(function () { polling = setTimeout(tick, POLL_MS * 2); });
    }
    polling = setTimeout(tick, POLL_MS / 2);
  }

  function processing(paymentIntent) {
    setState('processing', cfg.textProcessing);
    clearError();
    if (methodsEl) { methodsEl.hidden = true; }
    poll(paymentIntent);
  }

  if (cfg.state === 'processing') { poll(null); }
  if (!cfg.publishableKey || cfg.state !== 'open') { return; }

  // Back from a redirect (a bank page of some payment methods): Stripe adds these to the URL.
  var query = new URLSearchParams(window.location.search);
  if (query.get('payment_intent') && query.get('redirect_status') === 'succeeded') {
    processing(query.get('payment_intent'));
    return;
  }

  if (typeof window.Stripe !== 'function') {
    if (form) { showError(messages.network); }
    return;
  }
  var stripe = window.Stripe(cfg.publishableKey);

  // --- Card -----------------------------------------------------------------------------------
  if (form && cfg.card === '1') {
    var card = stripe.elements().create('card');
    card.mount('#card-element');
    card.on('change', function (event) {
      if (event && event.error) { showError(event.error.message); } else { clearError(); }
    });
    busy(false);
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      clearError();
      busy(true);
      setState('working', cfg.textWorking);
      var paymentIntent = null;
      Promise.resolve()
        .then(function () { return stripe.createToken(card); })
        .then(function (result) {
          if (!result || result.error || !result.token) { throw (result && result.error) || {code: 'unexpected'}; }
          return post(cfg.confirmUrl, {token: result.token.id});
        })
        .then(function (confirmed) {
          paymentIntent = confirmed.payment_intent;
          if (confirmed.status !== 'requires_action') { return confirmed.status; }
          return stripe.confirmCardPayment(confirmed.client_secret).then(function (result) {
            if (result.error) { throw result.error; }
            var intent = result.paymentIntent || {};
            if (intent.status === 'requires_payment_method') {
              throw intent.last_payment_error || {code: 'payment_intent_authentication_failure'};
            }
            return intent.status;
          });
        })
        .then(function () { processing(paymentIntent); })
        .catch(fail);
    });
  }

  // --- Google Pay (Express Checkout Element) ----------------------------------------------------
  var expressEl = document.getElementById('express-checkout');
  if (expressEl && cfg.googlePay === '1') {
    var walletElements = null;
    var express = null;
    try {
      walletElements = stripe.elements({
        mode: 'payment', amount: parseInt(cfg.amountMinor, 10), currency: cfg.currency
      });
      express = walletElements.create('expressCheckout', {
        paymentMethods: {
          googlePay: 'always', applePay: 'never', link: 'never', paypal: 'never', amazonPay: 'never', klarna: 'never'
        },
        buttonType: {googlePay: 'pay'}
      });
    } catch (ignored) {
      express = null;  // this Stripe.js has no Express Checkout Element: card (and PayPal) only
    }
    if (express && typeof express.on === 'function' && typeof express.mount === 'function') {
      express.on('ready', function (event) {
        var available = event && event.availablePaymentMethods;
        expressEl.hidden = !(available && available.googlePay);
      });
      express.on('confirm', function (confirmEvent) {
        var paymentIntent = null;
        clearError();
        setState('working', cfg.textWorking);
        walletElements.submit()
          .then(function (submitted) {
            if (submitted && submitted.error) { throw submitted.error; }
            return post(cfg.intentUrl, {});
          })
          .then(function (intent) {
            paymentIntent = intent.payment_intent;
            return stripe.confirmPayment({
              elements: walletElements,
              clientSecret: intent.client_secret,
              confirmParams: {return_url: cfg.returnUrl},
              redirect: 'if_required'
            });
          })
          .then(function (result) {
            if (result && result.error) { throw result.error; }
            processing(paymentIntent);
          })
          .catch(function (error) {
            // Close the wallet's sheet with a failure, then say why on the page.
            if (confirmEvent && typeof confirmEvent.paymentFailed === 'function') {
              confirmEvent.paymentFailed({reason: 'fail'});
            }
            fail(error);
          });
      });
      try {
        express.mount(expressEl);
      } catch (ignored) {
        expressEl.hidden = true;
      }
    }
  }
}());
