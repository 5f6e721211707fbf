// Woo Companion console: the little that needs script. Everything works without it except
// select-all and the live selection count.
(function () {
  "use strict";
  var form = document.getElementById("bulk-form");
  if (!form) { return; }
  var all = document.getElementById("select-all");
  var count = document.getElementById("selection-count");
  var apply = document.getElementById("bulk-apply");
  var action = document.getElementById("bulk-action");
  function boxes() { return form.querySelectorAll("input[name=customer_id]"); }
  function refresh() {
    var list = boxes(), picked = 0;
    for (var i = 0; i < list.length; i++) { if (list[i].checked) { picked++; } }
    if (count) { count.textContent = "(" + picked + " selected)"; }
    if (apply) { apply.disabled = picked === 0; }
    if (all) {
      all.checked = list.length > 0 && picked === list.length;
      all.indeterminate = picked > 0 && picked < list.length;
    }
  }
  function showFields() {
    if (!action) { return; }
    var parts = form.querySelectorAll("[data-for]");
    for (var i = 0; i < parts.length; i++) {
      parts[i].hidden = parts[i].getAttribute("data-for") !== action.value;
    }
  }
  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      var list = boxes();
      for (var i = 0; i < list.length; i++) { list[i].checked = all.checked; }
      refresh();
    });
  }
  form.addEventListener("change", function (event) {
    if (event.target.name === "customer_id") { refresh(); }
    if (event.target === action) { showFields(); }
  });
  refresh();
  showFields();
}());
