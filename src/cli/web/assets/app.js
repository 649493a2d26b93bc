// bundleq dashboard: refresh live pages every few seconds while the tab is
// visible, by fetching the same page and swapping its <main>. Nothing else:
// every page works without this script.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-live") || "0", 10);
  if (!seconds) { return; }
  var timer = null;
  function busy() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }
  function refresh() {
    if (document.visibilityState !== "visible" || busy()) { return schedule(); }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.getElementById("main");
          var main = document.getElementById("main");
          if (fresh && main) { main.replaceWith(document.importNode(fresh, true)); }
          var stamp = doc.querySelector("footer .as-of");
          var old = document.querySelector("footer .as-of");
          if (stamp && old) { old.textContent = stamp.textContent; }
        }
      })
      .catch(function () {})
      .then(schedule);
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, seconds * 1000);
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { refresh(); } else { clearTimeout(timer); }
  });
  schedule();
})();
