// memberledger member attribution, for the member site: include it on every page with
//   <script src="https://YOUR-MEMBERLEDGER/assets/member-attribution.js" defer></script>
// As Ghost's member-attribution.js: it keeps the pages a visitor saw in sessionStorage (15
// entries, 24 hours), with the referrer and UTM parameters of the landing page, and removes
// those parameters from the address bar. Links to the portal's sign-up page carry the history
// in their fragment (never sent to a server), and the sign-up page sends it with the signup.
(function () {
  "use strict";
  var KEY = "ml-history";
  var LIMIT = 15;
  var MAX_AGE = 24 * 60 * 60 * 1000;
  var ATTRIBUTION_PARAMS = ["ref", "source", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
  var script = document.currentScript;
  var portal = script ? new URL(script.src, window.location.href).origin : window.location.origin;

  function read() {
    try {
      var history = JSON.parse(window.sessionStorage.getItem(KEY) || "[]");
      return Array.isArray(history) ? history : [];
    } catch (e) { return []; }
  }

  var now = Date.now();
  var history = read().filter(function (entry) { return entry && now - entry.time < MAX_AGE; });
  var url = new URL(window.location.href);
  var params = url.searchParams;
  var entry = { path: url.pathname, time: now };
  var referrer = document.referrer ? new URL(document.referrer) : null;
  if (referrer && referrer.host !== url.host) entry.referrer_url = document.referrer;
  var source = params.get("ref") || params.get("source");
  if (source) entry.referrer_source = source;
  ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"].forEach(function (name) {
    var value = params.get(name);
    if (value) entry[name] = value;
  });
  var last = history[history.length - 1];
  if (!last || last.path !== entry.path) history.push(entry);
  history = history.slice(-LIMIT);
  try { window.sessionStorage.setItem(KEY, JSON.stringify(history)); } catch (e) { /* private mode */ }

  // Attribution parameters are ours to read, not to keep in shared links.
  var cleaned = false;
  ATTRIBUTION_PARAMS.forEach(function (name) {
    if (params.has(name)) { params.delete(name); cleaned = true; }
  });
  if (cleaned && window.history.replaceState) {
    window.history.replaceState(null, "", url.pathname + (params.toString() ? "?" + params : "") + url.hash);
  }

  // Links to the portal's sign-up carry the history (in the fragment).
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[href]") : null;
    if (!link) return;
    var target = new URL(link.href, window.location.href);
    if (target.origin !== portal || target.pathname !== "/account/signup") return;
    target.hash = "ml-history=" + encodeURIComponent(JSON.stringify(read()));
    link.href = target.toString();
  }, true);
})();
