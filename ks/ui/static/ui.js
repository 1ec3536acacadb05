// KIWIspray dashboard: live updates over Server-Sent Events and a select-all box.
// Pages work without it; it only saves reloading.
(function () {
  "use strict";
  var body = document.body;
  var live = body.getAttribute("data-live");

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="host"][type="checkbox"]').forEach(function (box) { box.checked = all.checked; });
    });
  }

  if (!live || !window.EventSource) { return; }
  var status = document.getElementById("live");
  var base = body.getAttribute("data-base");
  var pending = {};
  var countsDue = false;
  var newHosts = 0;
  var timer = null;

  function say(text) { if (status) { status.textContent = text; } }

  function fetchHtml(path) {
    return fetch(base + path, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.text();
    });
  }

  function replace(element, html) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var fresh = holder.content.firstElementChild;
    if (!fresh) { return; }
    var box = element.querySelector('input[name="host"]');
    var newBox = fresh.querySelector('input[name="host"]');
    if (box && newBox) { newBox.checked = box.checked; }
    element.replaceWith(fresh);
  }

  function flush() {
    timer = null;
    var ids = Object.keys(pending);
    pending = {};
    ids.forEach(function (id) {
      if (live === "overview") {
        var row = document.getElementById("host-" + id);
        if (row) { fetchHtml("hosts/" + id + "/row").then(function (html) { replace(row, html); }).catch(function () { row.classList.add("gone"); }); }
      } else if (live === "host" && id === body.getAttribute("data-host")) {
        var part = document.getElementById("host-live");
        fetchHtml("hosts/" + id + "/live").then(function (html) { replace(part, html); }).catch(function () {});
      }
    });
    if (countsDue && live === "overview") {
      countsDue = false;
      var counts = document.getElementById("counts");
      fetchHtml("counts").then(function (html) { replace(counts, html); }).catch(function () {});
    }
  }

  function later() { if (!timer) { timer = setTimeout(flush, 300); } }

  function showProgress(cell, item) {
    var span = document.createElement("span");
    span.className = "progress";
    span.setAttribute("data-phase", item.phase);
    var words = item.phase === "downloading" ? "downloading " + item.percent + " %" : item.phase;
    if (item.percent !== null) {
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.value = item.percent;
      bar.setAttribute("aria-label", words);
      span.appendChild(bar);
      span.appendChild(document.createTextNode(" "));
    }
    var phase = document.createElement("span");
    phase.className = "phase";
    phase.textContent = words;
    span.appendChild(phase);
    cell.replaceChildren(span);
  }

  var source = new EventSource(base + "events");
  source.onopen = function () { say("live"); };
  source.onerror = function () {
    // A refused stream (503: the server holds as many as it may) is not retried by the browser.
    say(source.readyState === EventSource.CLOSED ? "no live updates (the server is busy); reload to try again"
      : "live updates reconnecting");
  };
  source.onmessage = null;
  // Every kind of history line, as the server names them (ks.records.events.EventKind).
  (body.getAttribute("data-kinds") || "").split(" ").filter(Boolean).forEach(function (kind) {
    source.addEventListener(kind, function (event) {
      var doc = JSON.parse(event.data);
      pending[String(doc.host_id)] = true;
      var note = document.getElementById("new-hosts");
      if (kind === "register" && note && !document.getElementById("host-" + doc.host_id)) {
        newHosts += 1;
        note.textContent = newHosts + " new host" + (newHosts === 1 ? "" : "s") + " registered since this page was loaded; reload to list them";
      }
      countsDue = true;
      later();
    });
  });
  source.addEventListener("ended", function () {
    source.close();
    say("session ended");
    window.location.reload();  // the dashboard asks for the token again
  });
  source.addEventListener("progress", function (event) {
    JSON.parse(event.data).forEach(function (item) {
      var cell = live === "overview" ? document.querySelector("#host-" + item.id + " .progress-cell")
        : (String(item.id) === body.getAttribute("data-host") ? document.getElementById("host-progress") : null);
      if (cell) { showProgress(cell, item); }
    });
  });
}());
