// AMTP embedded dashboard: auto-refresh of the panels and the quick time ranges. No dependencies.
(function () {
  "use strict";
  var UNITS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

  function seconds(text) {
    var m = /^(\d+)(ms|s|m|h|d)$/.exec(text || "");
    return m ? Number(m[1]) * UNITS[m[2]] : 0;
  }

  function refreshLoop() {
    var period = seconds(document.body.getAttribute("data-refresh"));
    var live = document.getElementById("live");
    if (!period || !live) return;
    window.setInterval(function () {
      fetch(live.getAttribute("data-fragment"), { headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { live.innerHTML = html; live.removeAttribute("data-stale"); })
        .catch(function () { live.setAttribute("data-stale", "true"); });
    }, period * 1000);
  }

  function quickRanges() {
    var select = document.querySelector("select.quick-range");
    if (!select) return;
    select.addEventListener("change", function () {
      if (!select.value) return;
      var form = select.form;
      form.elements.from.value = select.value;
      form.elements.to.value = "now";
      form.submit();
    });
  }

  function variablesSubmit() {
    var selects = document.querySelectorAll("select[data-variable]");
    for (var i = 0; i < selects.length; i++) {
      selects[i].addEventListener("change", function (ev) { ev.target.form.submit(); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshLoop();
    quickRanges();
    variablesSubmit();
  });
})();
