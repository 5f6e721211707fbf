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

// Confirm before a destructive form (delete a template or workflow); without script the
// API's own rules still apply.
(function () {
  "use strict";
  var forms = document.querySelectorAll("form[data-confirm]");
  for (var i = 0; i < forms.length; i++) {
    forms[i].addEventListener("submit", function (event) {
      if (!window.confirm(this.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  }
}());

// Show only the fields of the chosen option (a workflow's trigger, a template's channel).
// Without script every field shows, and the server reads only the relevant ones.
(function () {
  "use strict";
  function follow(selectId, attribute) {
    var select = document.getElementById(selectId);
    if (!select) { return; }
    var parts = document.querySelectorAll("[" + attribute + "]");
    function show() {
      for (var i = 0; i < parts.length; i++) {
        parts[i].hidden = parts[i].getAttribute(attribute) !== select.value;
      }
    }
    select.addEventListener("change", show);
    show();
  }
  follow("w-trigger", "data-trigger");
  follow("t-channel", "data-channel");
}());

// The template editor's live preview: the form is sent (with its CSRF token) to the console,
// which asks the API to render it with sample data; the answer fills the preview. The
// Preview button does the same with a page load where script is off.
(function () {
  "use strict";
  var form = document.getElementById("template-form");
  if (!form || !window.fetch || !window.FormData) { return; }
  var url = form.getAttribute("data-preview");
  var status = document.getElementById("preview-status");
  var error = document.getElementById("preview-error");
  var subject = document.getElementById("preview-subject");
  var html = document.getElementById("preview-html");
  var text = document.getElementById("preview-text");
  var timer = null, sequence = 0;
  function refresh() {
    var mine = ++sequence;
    status.textContent = "Updating the preview…";
    fetch(url, { method: "POST", body: new FormData(form), credentials: "same-origin",
                 headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        if (mine !== sequence) { return; }  // a newer request is on its way
        if (answer.ok) {
          error.hidden = true;
          error.textContent = "";
          subject.textContent = answer.rendered.subject || "–";
          html.srcdoc = answer.rendered.html || "";
          text.textContent = answer.rendered.text || "";
          status.textContent = "Preview updated.";
        } else {
          error.hidden = false;
          error.textContent = answer.error;
          status.textContent = "The template does not render yet.";
        }
      })
      .catch(function (failure) {
        if (mine === sequence) { status.textContent = "Preview unavailable (" + failure.message + ")."; }
      });
  }
  form.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 400);
  });
  form.addEventListener("change", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 100);
  });
  form.setAttribute("data-live", "on");
}());
