// Outbox's page behaviour. It lives here, not in the HTML, so that the Content-Security-Policy
// can refuse every inline script and handler (mailing/security.py).
(function () {
  "use strict";

  // An htmx request that failed shows its message instead of vanishing silently.
  document.addEventListener("htmx:responseError", function (e) {
    var box = document.getElementById("errors");
    if (!box) return;
    box.innerHTML = "";
    var p = document.createElement("p");
    p.className = "flash error";
    // Parsed inert (no scripts run, no images load), read as text only.
    var doc = new DOMParser().parseFromString(e.detail.xhr.responseText, "text/html");
    p.textContent = (doc.body ? doc.body.textContent.trim() : "") || ("Error " + e.detail.xhr.status);
    box.appendChild(p);
  });

  // A polling element marked data-poll-hold waits while a menu inside it is open, so the menu
  // does not close under the pointer (an hx-trigger filter would need eval, which CSP refuses).
  document.addEventListener("htmx:beforeRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll-hold") && elt.querySelector("details[open]")) {
      e.preventDefault();
    }
  });

  // Forms and buttons that ask first: data-confirm="question" (instead of onsubmit handlers).
  document.addEventListener("submit", function (e) {
    var asker = (e.submitter && e.submitter.getAttribute("data-confirm")) ? e.submitter : e.target;
    var question = asker && asker.getAttribute && asker.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      e.preventDefault();
    }
  }, true);
})();
