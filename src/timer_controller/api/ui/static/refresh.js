// Refreshes the overview in place: fetch the panel's HTML every few seconds
// and swap it in. Pauses while the tab is hidden; keeps the last panel (and
// says so) when a fetch fails; keeps open <details> open and the keyboard
// focus where it was. No framework, nothing from a CDN.
(function () {
  "use strict";
  var box = document.getElementById("overview");
  if (!box) { return; }
  var url = box.getAttribute("data-refresh-url");
  var everyMs = 1000 * Number(box.getAttribute("data-refresh-s") || "5");
  var busy = false;

  function swap(html) {
    var open = Array.prototype.map.call(box.querySelectorAll("details[open][id]"), function (d) { return d.id; });
    var focused = box.contains(document.activeElement) ? document.activeElement : null;
    var focusKey = focused && (focused.id || focused.getAttribute("href"));
    box.innerHTML = html;
    open.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) { details.open = true; }
    });
    if (focusKey) {
      var again = document.getElementById(focusKey) || box.querySelector('[href="' + focusKey + '"]');
      if (again) { again.focus(); }
    }
    box.removeAttribute("data-stale");
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.assign("/ui/login?next=/ui"); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html !== null) { swap(html); }
      })
      .catch(function () { box.setAttribute("data-stale", "true"); })
      .finally(function () { busy = false; });
  }

  window.setInterval(refresh, everyMs);
  document.addEventListener("visibilitychange", refresh);
})();
