// The portal's one script (no inline script: the pages' Content-Security-Policy forbids it).
// - Copy buttons copy their key.
// - The sign-up form sends the visitor's URL history (recorded by member-attribution.js) for
//   attribution: from the link's fragment (#ml-history=..., when the member site is another
//   origin) or from this origin's sessionStorage.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var done = function () {
      var before = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = before; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing to do */ }
      area.remove();
    }
  });

  var field = document.getElementById("url_history");
  if (field) {
    var history = null;
    var match = /(?:^|[#&])ml-history=([^&]*)/.exec(window.location.hash);
    if (match) {
      try { history = JSON.parse(decodeURIComponent(match[1])); } catch (e) { history = null; }
      // Keep the fragment out of the address bar and of anything copied from it.
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    if (!history) {
      try { history = JSON.parse(window.sessionStorage.getItem("ml-history") || "null"); } catch (e) { history = null; }
    }
    if (Array.isArray(history)) field.value = JSON.stringify(history.slice(-15));
  }
})();
