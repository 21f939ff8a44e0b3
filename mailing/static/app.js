// Outbox's page behaviour. It lives here, not in the HTML, so that the Content-Security-Policy
// can refuse every inline script and handler (mailing/security.py).
(function () {
  "use strict";

  function textOf(html, status) {
    // Parsed inert (no scripts run, no images load), read as text only.
    var doc = new DOMParser().parseFromString(html || "", "text/html");
    return (doc.body ? doc.body.textContent.trim() : "") || ("Error " + status);
  }

  function say(text) {
    var live = document.getElementById("live-status");
    if (!live) return;
    live.textContent = "";
    // A fresh text node, so that screen readers announce a repeat of the same words too.
    window.setTimeout(function () { live.textContent = text; }, 30);
  }

  // --- refusals shown where they happened ------------------------------------------------
  // A refused row action is shown inside its row (and kept there across the row's polls for
  // a while); a refused form's message goes right after the form; anything else at the top.
  var rowErrors = {};

  function showRowError(row) {
    var e = rowErrors[row.id];
    if (!e) return;
    if (Date.now() - e.at > 15000) { delete rowErrors[row.id]; return; }
    var cell = row.querySelector(".status-cell") || row.lastElementChild;
    if (!cell || cell.querySelector(".row-error")) return;
    var p = document.createElement("p");
    p.className = "flash error row-error";
    p.setAttribute("role", "alert");
    p.textContent = e.text;
    cell.appendChild(p);
  }

  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr, elt = e.detail.elt;
    var text = textOf(xhr.responseText, xhr.status);
    var row = elt && elt.closest ? elt.closest("tr.issue-row") : null;
    if (row && !(elt === row)) {
      rowErrors[row.id] = { text: text, at: Date.now() };
      showRowError(row);
      var url = row.getAttribute("hx-get");
      if (url && window.htmx) {  // the row was out of date: show what is true now
        window.htmx.ajax("GET", url, { target: "#" + row.id, swap: "outerHTML" });
      }
      return;
    }
    if (row) return;  // a failed poll: the next one tries again
    var form = elt && elt.closest ? elt.closest("form") : null;
    var box = document.getElementById("errors");
    var p = document.createElement("p");
    p.className = "flash error";
    p.setAttribute("role", "alert");
    p.textContent = text;
    if (form) {
      var old = form.nextElementSibling;
      if (old && old.classList.contains("form-error")) old.remove();
      p.classList.add("form-error");
      form.insertAdjacentElement("afterend", p);
    } else if (box) {
      box.innerHTML = "";
      box.appendChild(p);
    }
  });

  // Status messages the server sends with an htmx answer (HX-Trigger: {"outbox:status": "…"}).
  document.addEventListener("outbox:status", function (e) {
    var v = e.detail && (e.detail.value || e.detail);
    if (typeof v === "string") say(v);
  });

  // --- the actions menu: a disclosure button, usable by keyboard --------------------------
  // `open` is what the person asked for (which row's menu is open, which item has focus), kept
  // outside the DOM, so that a row replaced by its poll opens its menu again with fresh items.
  var open = null;  // {row: "issue-5", item: "action-pause" | null}

  function menuOf(button) { return document.getElementById(button.getAttribute("aria-controls")); }
  function items(menu) { return Array.prototype.slice.call(menu.querySelectorAll(".menu-item")); }
  function rowIdOf(elt) { var r = elt.closest("tr.issue-row"); return r ? r.id : null; }
  function actionOf(item) {
    return Array.prototype.find.call(item.classList, function (c) { return c.indexOf("action-") === 0; }) || null;
  }

  function openMenu(button, focusFirst) {
    closeMenus(button);
    var menu = menuOf(button);
    if (!menu) return;
    button.setAttribute("aria-expanded", "true");
    open = { row: rowIdOf(button), item: null };
    if (focusFirst && items(menu)[0]) items(menu)[0].focus();
  }

  function closeMenu(button, refocus) {
    button.setAttribute("aria-expanded", "false");
    if (open && open.row === rowIdOf(button)) open = null;
    if (refocus) button.focus();
  }

  function closeMenus(except) {
    document.querySelectorAll(".menu-button[aria-expanded=true]").forEach(function (b) {
      if (b !== except) closeMenu(b, false);
    });
  }

  document.addEventListener("focusin", function (e) {
    if (open && e.target.classList && e.target.classList.contains("menu-item") && rowIdOf(e.target) === open.row) {
      open.item = actionOf(e.target);
    }
  });

  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest(".menu-button");
    if (button) {
      if (button.getAttribute("aria-expanded") === "true") closeMenu(button, false);
      else openMenu(button, e.detail === 0);  // a keyboard "click" (Enter/Space) enters the menu
      return;
    }
    var toggle = e.target.closest && e.target.closest(".nav-toggle");
    if (toggle) {
      toggle.setAttribute("aria-expanded", toggle.getAttribute("aria-expanded") === "true" ? "false" : "true");
      return;
    }
    if (!(e.target.closest && e.target.closest(".dropdown"))) closeMenus(null);
  });

  document.addEventListener("keydown", function (e) {
    var drop = e.target.closest && e.target.closest(".dropdown");
    if (!drop) return;
    var button = drop.querySelector(".menu-button"), menu = menuOf(button);
    var list = menu ? items(menu) : [], at = list.indexOf(document.activeElement);
    if (e.key === "Escape" && button.getAttribute("aria-expanded") === "true") {
      e.preventDefault();
      closeMenu(button, true);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (button.getAttribute("aria-expanded") !== "true") { openMenu(button, true); return; }
      var next = e.key === "ArrowDown" ? (at + 1) % list.length : (at <= 0 ? list.length - 1 : at - 1);
      if (list[next]) list[next].focus();
    } else if ((e.key === "Home" || e.key === "End") && at >= 0) {
      e.preventDefault();
      list[e.key === "Home" ? 0 : list.length - 1].focus();
    }
  });

  // --- polled rows --------------------------------------------------------------------------
  // A poll replaces the whole row, menu included, so the menu's items stay true; the menu the
  // person opened is opened again on the new row, with the same item focused. While the
  // pointer is pressed inside a menu the poll waits, so a click never lands on a row that
  // vanished under it.
  var pressed = null;
  document.addEventListener("pointerdown", function (e) {
    pressed = e.target.closest && e.target.closest("tr.issue-row .dropdown") ? e.target.closest("tr.issue-row") : null;
  });
  document.addEventListener("pointerup", function () { window.setTimeout(function () { pressed = null; }, 0); });

  document.addEventListener("htmx:beforeRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll-hold") && pressed === elt) e.preventDefault();
  });

  var focusBack = {};  // rows whose new version takes the focus (after an action, or it had it)
  document.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target, cfg = e.detail.requestConfig || {};
    if (!target || !target.classList || !target.classList.contains("issue-row")) return;
    if (open && open.row === target.id && (!cfg.verb || cfg.verb === "get") &&
        typeof e.detail.serverResponse === "string") {
      // The new row comes in with its menu already open: no moment without it. (htmx keeps
      // the focus on the element with the same id.)
      e.detail.serverResponse = e.detail.serverResponse.replace('aria-expanded="false"', 'aria-expanded="true"');
    }
    if (cfg.verb && cfg.verb !== "get") {  // an action (a POST from the menu)
      if (open && open.row === target.id) open = null;  // an action closes its menu...
      focusBack[target.id] = ".menu-button";  // ...and the focus goes back to the row
    } else if (target.contains(document.activeElement) && !(open && open.row === target.id && open.item)) {
      focusBack[target.id] = document.activeElement.classList.contains("menu-button") ? ".menu-button" : "a";
    }
  });

  function announceProgress(row) {
    var live = document.getElementById("progress-live");
    if (!live || live.getAttribute("data-for") !== row.id) return;
    var badge = row.querySelector(".badge");
    var text = badge ? badge.textContent.trim() : "";
    var pct = Number(row.getAttribute("data-percent") || 0);
    // Announce a change of status, or every tenth of the way: not every second.
    var key = row.getAttribute("data-status") + ":" + Math.floor(pct / 10);
    if (live.getAttribute("data-key") !== key) {
      live.setAttribute("data-key", key);
      live.textContent = text;
    }
  }

  document.addEventListener("htmx:load", function (e) {
    var row = e.detail.elt;
    if (!row || !row.classList || !row.classList.contains("issue-row") || !document.body.contains(row)) return;
    showRowError(row);
    announceProgress(row);
    var button = row.querySelector(".menu-button");
    var back = focusBack[row.id];
    delete focusBack[row.id];
    if (open && open.row === row.id) {
      if (!button) { open = null; return; }  // no action is left to offer
      button.setAttribute("aria-expanded", "true");
      var item = open.item ? row.querySelector(".menu-item." + open.item) : null;
      if (item) item.focus(); else if (open.item) { open.item = null; button.focus(); }
    } else if (back) {
      var target = row.querySelector(back) || row.querySelector("a");
      if (target) target.focus();
    }
  });

  // --- forms and buttons that ask first -----------------------------------------------------
  // data-confirm="question" (instead of onsubmit handlers).
  document.addEventListener("submit", function (e) {
    var asker = (e.submitter && e.submitter.getAttribute("data-confirm")) ? e.submitter : e.target;
    var question = asker && asker.getAttribute && asker.getAttribute("data-confirm");
    var only = asker && asker.getAttribute && asker.getAttribute("data-confirm-when");
    if (only) {  // ask only when this radio button is the one chosen (e.g. launch "now")
      var chosen = e.target.querySelector("input[type=radio]:checked");
      if (!chosen || chosen.value !== only) question = null;
    }
    if (question && !window.confirm(question)) {
      e.preventDefault();
    }
  }, true);

  // --- the user's time zone, sent once ------------------------------------------------------
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".issue-row").forEach(announceProgress);
    var url = document.body.getAttribute("data-time-zone-url");
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!url || !zone) return;
    var token = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
    var body = new URLSearchParams({ time_zone: zone });
    // Every time on the page names its zone, so this page stays right as it is; the next
    // one is shown in the browser's zone.
    fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRFToken": token } });
  });
})();
