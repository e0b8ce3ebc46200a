// dcguard web pages: live updates of the control room. The server sends an SSE event when
// alarms or incidents change (and a tick every 15 s); the page then re-fetches its live
// fragment. No framework, no build step; served from /static so the CSP allows it.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch) { return; }
  var status = document.getElementById("stream-status");
  var fragment = live.getAttribute("data-fragment");
  var busy = false, pending = false, seq = 0;

  function typing() {
    // Never swap the fragment under an operator who is filling in a form.
    var a = document.activeElement;
    return a && live.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT") &&
      (a.tagName === "SELECT" || a.value !== "");
  }

  function refresh() {
    if (busy || typing()) { pending = true; return; }
    busy = true; pending = false;
    fetch(fragment, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        if (text !== null && text !== undefined && !typing()) {
          live.innerHTML = text;
          seq += 1;
          live.setAttribute("data-refreshed", String(seq));
        } else if (text) { pending = true; }
      })
      .catch(function () { pending = true; })
      .then(function () { busy = false; });
  }

  function setStatus(ok) {
    if (!status) { return; }
    status.textContent = status.getAttribute(ok ? "data-live" : "data-offline");
    status.className = ok ? "status" : "status offline";
  }

  var source = new EventSource(live.getAttribute("data-events"));
  source.addEventListener("changed", refresh);
  source.addEventListener("tick", refresh);
  source.addEventListener("open", function () { setStatus(true); });
  source.addEventListener("error", function () { setStatus(false); });
  window.setInterval(function () { if (pending) { refresh(); } }, 2000);
})();
