// Heron's dashboard: the little a page does in the browser. Everything works without it
// (a form without a confirmation asks on a page of its own); with it:
//  * a form with data-confirm asks first, then says it was confirmed;
//  * a live page ([data-live]) refreshes in place every few seconds, with its filters (the
//    same URL), unless paused (remembered in this browser) or the tab is hidden;
//  * times are shown in this browser's time zone as well, the zone named.
(function () {
  "use strict";

  // -- confirmations ---------------------------------------------------------------------------
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    if (!form.querySelector('input[name="confirmed"]')) {
      var confirmed = document.createElement("input");
      confirmed.type = "hidden";
      confirmed.name = "confirmed";
      confirmed.value = "yes";
      form.appendChild(confirmed);
    }
  });

  // -- times in this browser's zone --------------------------------------------------------------
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  var format = null;
  try {
    format = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
    });
  } catch (e) {
    format = null;
  }

  function localTimes(root) {
    if (!format) return;
    root.querySelectorAll("time[data-ts]").forEach(function (node) {
      var when = new Date(parseFloat(node.dataset.ts) * 1000);
      if (isNaN(when.getTime())) return;
      var local = format.format(when);
      if (node.hasAttribute("data-abs")) {
        node.title = node.textContent;  // the UTC time stays a hover away
        node.textContent = local;
      } else {
        node.title = node.title + " · " + local;
      }
    });
    document.querySelectorAll("[data-zone]").forEach(function (node) {
      if (zone && zone !== "UTC" && zone !== "Etc/UTC") node.textContent = zone + " (UTC on hover)";
    });
  }

  // -- auto-refresh ------------------------------------------------------------------------------
  var live = document.querySelector("[data-live]");
  var control = document.querySelector("[data-refresh]");
  var KEY = "heron.dashboard.refresh";

  function paused() {
    try {
      return window.localStorage.getItem(KEY) === "paused";
    } catch (e) {
      return false;
    }
  }

  function setPaused(value) {
    try {
      if (value) window.localStorage.setItem(KEY, "paused");
      else window.localStorage.removeItem(KEY);
    } catch (e) { /* private mode: per page only */ }
    show(value);
  }

  function show(isPaused, message) {
    if (!control) return;
    var seconds = control.dataset.refresh;
    control.classList.toggle("paused", isPaused);
    control.querySelector("[data-refresh-toggle]").textContent = isPaused ? "Resume" : "Pause";
    control.querySelector("[data-refresh-state]").textContent =
      message || (isPaused ? "Auto-refresh paused" : "Refreshes every " + seconds + " s");
  }

  function busy() {
    var active = document.activeElement;
    return active && live.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  var stopped = false;

  function refresh() {
    if (stopped || paused() || document.hidden || busy()) return;
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { "X-Heron-Refresh": "1" },
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 401) {
        stopped = true;
        show(true, "Signed out: reload the page to sign in again");
        return null;
      }
      if (!response.ok) return null;
      return response.text();
    }).then(function (text) {
      if (!text) return;
      var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("[data-live]");
      if (!fresh || busy()) return;
      // keep what the reader opened or closed
      var open = {};
      live.querySelectorAll("details").forEach(function (node, i) { open[i] = node.open; });
      live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes).map(function (node) {
        return document.adoptNode(node);
      }));
      live.querySelectorAll("details").forEach(function (node, i) {
        if (i in open) node.open = open[i];
      });
      localTimes(live);
      live.dispatchEvent(new CustomEvent("heron:refreshed", { bubbles: true }));
    }).catch(function () {
      show(paused(), "Could not refresh (offline?): trying again");
    });
  }

  if (live && control) {
    control.hidden = false;
    show(paused());
    control.querySelector("[data-refresh-toggle]").addEventListener("click", function () {
      setPaused(!paused());
    });
    var seconds = Math.max(2, parseInt(control.dataset.refresh, 10) || 5);
    window.setInterval(refresh, seconds * 1000);
  }

  localTimes(document);
})();
