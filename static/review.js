// The review page, live: follows /review/run.json and fills the table in (no framework).
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root) return;
  var button = document.getElementById("run-review");
  var progress = document.getElementById("progress");

  function cell(row, name) { return row.querySelector('[data-cell="' + name + '"]'); }

  function show(run) {
    root.setAttribute("data-state", run.state);
    var done = {};
    run.rows.forEach(function (r) { done[r.id] = r; });
    Array.prototype.forEach.call(root.querySelectorAll("tr[id^='row-']"), function (row) {
      var id = row.id.slice(4);
      var tag = cell(row, "verdict"), r = done[id];
      if (r) {
        tag.className = "tag " + (r.verdict === "PASS" ? "pass" : "fail");
        tag.textContent = r.verdict;
        cell(row, "happened").textContent = r.happened;
        cell(row, "time").textContent = r.seconds;
      } else {
        var running = run.current === id && run.state === "running";
        tag.className = "tag " + (running ? "running" : "waiting");
        tag.textContent = running ? "…" : "—";
        cell(row, "happened").textContent = "";
        cell(row, "time").textContent = "";
      }
    });
    if (run.state === "running") {
      progress.textContent = "Running: " + run.done + " of " + run.total + " done";
    } else if (run.state === "done") {
      progress.textContent = run.failed === 0 ? "All " + run.total + " scenarios PASS" : run.failed + " FAIL";
    } else if (run.state === "error") {
      progress.textContent = "The review could not run";
    }
    var summary = document.getElementById("summary");
    summary.hidden = !run.summary;
    summary.textContent = run.summary || "";
    var error = document.getElementById("error");
    error.hidden = !run.error;
    error.textContent = run.error || "";
    document.getElementById("report-link").hidden = run.done === 0;
    document.getElementById("json-link").hidden = run.done === 0;
    if (button) {
      button.disabled = run.state === "running";
      button.textContent = run.state === "idle" ? "Run the review" : "Run it again";
    }
  }

  function poll() {
    fetch("/review/run.json", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (run) {
        show(run);
        if (run.state === "running") setTimeout(poll, 400);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }

  if (root.getAttribute("data-state") === "running") poll();
})();
