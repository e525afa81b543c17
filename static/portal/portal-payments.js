/* Helpers shared by the portal's payment pages (pay.js, confirm.js, payment_methods.js): the
 * customer's words for an error, and a same-origin JSON POST with the CSRF token. Loaded (defer)
 * before the page's own script. No inline script (CSP). */
(function () {
  'use strict';

  /* A Stripe.js error, one of ours ({code, message}) or an exception, in the customer's words. */
  function errorText(error, messages) {
    if (!error) { return messages.generic; }
    if (error.type === 'validation_error' && error.message) { return error.message; }
    var code = error.decline_code || error.code;
    if (code && messages[code]) { return messages[code]; }
    if (typeof error.message === 'string' && !(error instanceof Error)) { return error.message; }
    return messages.unexpected || messages.generic;
  }

  /* POST ``data`` form-encoded; the JSON body, or a thrown {code, message} (``network`` when the
   * request did not arrive). ``accept(response, body)`` may take a non-2xx answer as a result. */
  function post(url, data, csrfToken, accept) {
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        'X-CSRFToken': csrfToken || '',
        'Content-Type': 'application/x-www-form-urlencoded',
        'Accept': 'application/json'
      },
      body: new URLSearchParams(data || {}).toString()
    }).catch(function () {
      throw {code: 'network'};
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (accept && accept(response, body)) { return body; }
        if (!response.ok) { throw (body && body.error) || {code: 'unexpected'}; }
        return body;
      });
    });
  }

  window.PortalPayments = {errorText: errorText, post: post};
}());
