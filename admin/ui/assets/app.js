// CertLocker operator UI: live updates through the browser's EventSource.
// No inline script anywhere (the CSP allows only this file).
"use strict";
(function () {
  function text(el, v) { if (el) { el.textContent = v == null ? "" : String(v); } }
  function badge(el, state) { if (el) { el.className = "badge badge-" + state.replace(/_/g, "-"); el.textContent = state; } }

  // The workflows list: each "workflow" event updates (or adds) its row.
  var list = document.getElementById("workflows");
  if (list && list.dataset.live && window.EventSource) {
    var status = document.getElementById("live-status");
    var es = new EventSource(list.dataset.live);
    es.addEventListener("open", function () { text(status, "Live: states update as the workflows run."); });
    es.addEventListener("error", function () { text(status, "Live updates paused; reconnecting…"); });
    es.addEventListener("workflow", function (e) {
      var w = JSON.parse(e.data);
      var row = document.getElementById("wf-" + w.id);
      if (!row) {
        row = document.createElement("tr");
        row.id = "wf-" + w.id;
        row.dataset.id = w.id;
        var cells = ["domain", "state", "status", "issuer", "challenges", "last_message", "group", "age"];
        var heads = list.tHead ? list.tHead.rows[0].cells : [];
        cells.forEach(function (c, i) {
          var td = document.createElement("td");
          td.dataset.field = c;
          if (heads[i]) { td.dataset.label = heads[i].textContent.split(",")[0].trim(); }
          row.appendChild(td);
        });
        var a = document.createElement("a");
        a.href = "/workflows/" + encodeURIComponent(w.id);
        a.textContent = w.domains;
        row.children[0].appendChild(a);
        var b = document.createElement("span");
        b.dataset.field = "state";
        row.children[1].appendChild(b);
        text(row.children[3], w.issuer);
        text(row.children[4], w.challenges);
        text(row.children[7], "new");
        list.tBodies[0].insertBefore(row, list.tBodies[0].firstChild);
      }
      badge(row.querySelector("span[data-field=state]"), w.state);
      text(row.querySelector("[data-field=status]"), w.status);
      text(row.querySelector("[data-field=last_message]"), w.last_message);
    });
  }

  // A workflow's timeline: append each new event; update the state badge.
  var tl = document.getElementById("timeline");
  if (tl && window.EventSource && !tl.dataset.terminal) {
    var seen = 0;
    tl.querySelectorAll("li[data-seq]").forEach(function (li) { seen = Math.max(seen, +li.dataset.seq); });
    var src = new EventSource(tl.dataset.events);
    src.onmessage = null;
    var onEvent = function (e) {
      if (e.type === "end") {
        var end = JSON.parse(e.data);
        badge(document.getElementById("wf-state"), end.state);
        src.close();
        // the workflow finished: reload for the actions that apply now
        // (this page was rendered running, so it happens once)
        window.location.reload();
        return;
      }
      var ev = JSON.parse(e.data);
      if (ev.seq <= seen) { return; }
      seen = ev.seq;
      var li = document.createElement("li");
      li.className = "ev ev-" + ev.state;
      li.dataset.seq = ev.seq;
      var t = document.createElement("time"); t.textContent = ev.time; li.appendChild(t);
      li.appendChild(document.createTextNode(" "));
      var b = document.createElement("span"); badge(b, ev.state); li.appendChild(b);
      li.appendChild(document.createTextNode(" "));
      var s = document.createElement("strong"); s.textContent = ev.step || ""; li.appendChild(s);
      if (ev.identifier) { li.appendChild(document.createTextNode(" · " + ev.identifier)); }
      if (ev.message) { var p = document.createElement("p"); p.textContent = ev.message; li.appendChild(p); }
      if (ev.problem) { var pre = document.createElement("pre"); pre.className = "problem"; pre.textContent = JSON.stringify(ev.problem, null, 2); li.appendChild(pre); }
      tl.appendChild(li);
      badge(document.getElementById("wf-state"), ev.state);
      text(document.getElementById("wf-status"), ev.message);
    };
    ["pending", "ordering", "authorizing", "finalizing", "downloading", "issued", "failed", "cancelled", "retry_scheduled"].forEach(function (s) {
      src.addEventListener("state." + s, onEvent);
    });
    src.addEventListener("end", onEvent);
  }

  // New order: show the chosen ACME client's catalog information only.
  var issuerSel = document.getElementById("issuer_id");
  var cards = document.querySelectorAll(".issuer-card[data-issuer]");
  if (issuerSel && cards.length) {
    var showIssuer = function () {
      cards.forEach(function (c) { c.hidden = c.dataset.issuer !== issuerSel.value; });
    };
    issuerSel.addEventListener("change", showIssuer);
    showIssuer();
  }

  // New ACME client: opening a CA's card shows its guidance.
  document.querySelectorAll("#catalog input[name=catalog_id]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      document.querySelectorAll("#catalog details.guide").forEach(function (d) { d.open = false; });
      var card = radio.closest(".card");
      var g = card && card.querySelector("details.guide");
      if (g) { g.open = true; }
    });
  });

  // Copy buttons: data-copy names the element whose value or text to copy.
  document.querySelectorAll("button.copy[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.dataset.copy);
      if (!el) { return; }
      var v = el.value != null && el.tagName === "INPUT" ? el.value : el.textContent;
      var done = function () { btn.textContent = "Copied"; btn.dataset.copied = "1"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(v).then(done, function () { text(btn, "Copy failed: select and copy"); });
      } else if (el.select) { el.select(); if (document.execCommand("copy")) { done(); } }
    });
  });

  // The inventory drawer closes with Escape.
  var drawer = document.getElementById("drawer");
  if (drawer) {
    var close = drawer.querySelector(".close");
    if (close) { close.focus(); }
    document.addEventListener("keydown", function (e) { if (e.key === "Escape" && close) { window.location = close.href; } });
  }
})();
