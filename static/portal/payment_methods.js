/* Add a card on the payment methods page: a SetupIntent from the server, confirmed in the browser
 * with stripe.confirmCardSetup (3-D Secure included), then stored by the server, which reads the
 * SetupIntent back from Stripe. Card data goes only to Stripe. No inline script (CSP). */
(function () {
  'use strict';

  var config = document.getElementById('setup-config');
  var form = document.getElementById('setup-form');
  if (!config || !form) { return; }
  var cfg = config.dataset;
  var messagesNode = document.getElementById('setup-messages');
  var messages = messagesNode ? JSON.parse(messagesNode.textContent || '{}') : {};
  var errorsEl = document.getElementById('setup-errors');
  var statusEl = document.getElementById('setup-status');
  var button = document.getElementById('save-card-button');
  var csrfInput = form.querySelector('input[name=csrfmiddlewaretoken]');

  function errorText(error) {
    return window.PortalPayments.errorText(error, messages);
  }

  function post(url, data) {
    return window.PortalPayments.post(url, data, csrfInput ? csrfInput.value : '');
  }

  if (typeof window.Stripe !== 'function') {
    errorsEl.textContent = messages.network || '';
    return;
  }
  var stripe = window.Stripe(cfg.publishableKey);
  var card = stripe.elements().create('card');
  card.mount('#setup-card-element');
  card.on('change', function (event) {
    errorsEl.textContent = event && event.error ? event.error.message : '';
  });
  button.disabled = false;

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    errorsEl.textContent = '';
    statusEl.textContent = cfg.textWorking;
    button.disabled = true;
    post(cfg.setupUrl, {})
      .then(function (setup) {
        return stripe.confirmCardSetup(setup.client_secret, {payment_method: {card: card}});
      })
      .then(function (result) {
        if (result.error) { throw result.error; }
        return post(cfg.finishUrl, {setup_intent: result.setupIntent.id});
      })
      .then(function () { window.location.reload(); })
      .catch(function (error) {
        statusEl.textContent = '';
        errorsEl.textContent = errorText(error);
        button.disabled = false;
      });
  });
}());
