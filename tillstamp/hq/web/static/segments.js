// The segment builder: the condition fields write the JSON definition, and every change asks
// HQ for the live count (POST /segments/preview with the session's CSRF token in a header).
(function () {
  "use strict";
  var root = document.getElementById("builder");
  if (!root) return;
  var csrf = root.getAttribute("data-csrf");
  var area = document.getElementById("definition");
  var out = document.getElementById("live-count");
  var err = document.getElementById("live-error");
  var fields = ["c-visits", "c-lapsed", "c-store", "c-consent"].map(function (id) { return document.getElementById(id); });
  var timer = null, asked = 0;

  function fromFields() {
    var all = [];
    var v = fields[0].value, l = fields[1].value, s = fields[2].value.trim(), c = fields[3].value;
    if (v !== "") all.push({ visits: { min: parseInt(v, 10) } });
    if (l !== "") all.push({ last_visit_days: { min: parseInt(l, 10) } });
    if (s !== "") all.push({ store: [s] });
    if (c !== "") all.push({ consent: c });
    if (!all.length) return null;
    return all.length === 1 ? all[0] : { all: all };
  }

  function count() {
    var def;
    try { def = JSON.parse(area.value); } catch (e) { err.textContent = "JSON: " + e.message; out.textContent = "—"; return; }
    var n = ++asked;
    fetch("/segments/preview", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ definition: def })
    }).then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (res) {
        if (n !== asked) return;  // an older answer must not overwrite a newer one
        if (res[0] === 200) { out.textContent = String(res[1].count); err.textContent = ""; }
        else { out.textContent = "—"; err.textContent = res[1].message || "error"; }
      });
  }

  function later() { clearTimeout(timer); timer = setTimeout(count, 200); }
  fields.forEach(function (f) {
    f.addEventListener("input", function () {
      var def = fromFields();
      if (def) area.value = JSON.stringify(def);
      later();
    });
  });
  area.addEventListener("input", later);
  count();
})();
