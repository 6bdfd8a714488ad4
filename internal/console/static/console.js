// Sagaflow console: live updates without reload, and no double submission of an action.
//
// Live updates: every region marked data-live is refreshed from a fresh copy of the same page,
// fetched every 2 s; while the server does not answer the delay doubles up to 30 s, and polling
// pauses while the tab is hidden. A region that holds the keyboard focus or an open form is left
// alone, so an operator typing a reason is never interrupted.
(function () {
  "use strict";

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("confirm")) {
      return;
    }
    if (form.dataset.sent === "1") {
      ev.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.setAttribute("aria-disabled", "true"); });
  });

  if (!document.querySelector("[data-live]")) {
    return;
  }
  var base = 2000, max = 30000, delay = base, timer = null;
  var state = document.getElementById("live-state");

  function say(text) {
    if (state && state.textContent !== text) {
      state.textContent = text;
    }
  }

  function busy(el) {
    var active = document.activeElement;
    return (active && active !== document.body && el.contains(active)) || el.querySelector("details[open]") !== null;
  }

  function schedule() {
    clearTimeout(timer);
    if (!document.hidden) {
      timer = setTimeout(poll, delay);
    }
  }

  function apply(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var changed = false;
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var next = fresh.querySelector('[data-live="' + el.dataset.live + '"]');
      if (next && !busy(el) && next.innerHTML !== el.innerHTML) {
        el.innerHTML = next.innerHTML;
        changed = true;
      }
    });
    if (changed) {
      say("Updated at " + new Date().toLocaleTimeString());
    }
  }

  function poll() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.redirected || !resp.ok) {
          throw new Error("status " + resp.status);
        }
        return resp.text();
      })
      .then(function (html) {
        apply(html);
        delay = base;
      })
      .catch(function () {
        delay = Math.min(delay * 2, max);
        say("Live updates paused: the server did not answer; next try in " + Math.round(delay / 1000) + " s");
      })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(timer);
    } else {
      delay = base;
      schedule();
    }
  });
  schedule();
})();
