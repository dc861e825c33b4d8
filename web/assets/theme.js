// Applies the saved theme (light, dark, or the system's) before the first paint.
// A classic script, loaded from a file because the page's CSP forbids inline script.
(function () {
  var t = null;
  try { t = localStorage.getItem('sb.theme'); } catch (e) { /* storage blocked */ }
  if (t === 'light' || t === 'dark') document.documentElement.dataset.theme = t;
})();
