// loopd dashboard: live updates and actions. Vanilla JS, no build step. Every request goes to
// the daemon's own origin with the session cookie; state changes are fetch POSTs (which carry
// a same-origin Origin header).
"use strict";
(function () {
  // Errors the page met, for people and for the browser tests (read with execute-script).
  var errors = [];
  window.loopDashErrors = errors;
  window.addEventListener("error", function (e) { errors.push(String(e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + String(e.reason)); });
  document.addEventListener("securitypolicyviolation", function (e) { errors.push("csp: " + e.violatedDirective); });

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function errorText(status, body) {
    try {
      var j = JSON.parse(body);
      if (j && j.error) {
        var m = j.error.message || j.error.code;
        if (j.error.paths && j.error.paths.length) { m += " — conflicting paths: " + j.error.paths.join(", "); }
        return status + ": " + m;
      }
    } catch (_) { /* not JSON */ }
    return status + ": " + body.slice(0, 300);
  }

  // POST JSON to the API; resolves {ok, status, body}.
  function post(path, payload) {
    var init = { method: "POST", credentials: "same-origin", headers: {} };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (t) { return { ok: r.ok, status: r.status, body: t }; });
    });
  }

  function say(el, text, bad) {
    if (!el) { return; }
    el.textContent = text;
    el.className = bad ? "error" : "";
  }

  // ---- The runs list: rows refresh every second without a reload. ----
  function runsList(table) {
    if (table.getAttribute("data-live") !== "1") { return; }
    var query = table.getAttribute("data-query") || "";
    var busy = false;
    function tick() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch("/ui/rows" + (query ? "?" + query : ""), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          busy = false;
          if (html === null) { return; }
          var tpl = document.createElement("template");
          tpl.innerHTML = "<table><tbody>" + html + "</tbody></table>";
          var fresh = $all("tbody > tr", tpl.content);
          var tbody = table.tBodies[0];
          var old = $all(":scope > tr", tbody);
          var ids = function (rows) { return rows.map(function (r) { return r.getAttribute("data-run-id"); }).join(","); };
          if (ids(fresh) !== ids(old)) {
            tbody.innerHTML = html;
            return;
          }
          fresh.forEach(function (row, i) {
            if (row.getAttribute("data-sig") !== old[i].getAttribute("data-sig")) {
              tbody.replaceChild(row, old[i]);
            } else if (row.lastElementChild && old[i].lastElementChild) {
              old[i].lastElementChild.textContent = row.lastElementChild.textContent;
            }
          });
        })
        .catch(function () { busy = false; });
    }
    setInterval(tick, 1000);
  }

  // ---- A run's page. ----
  var TERMINAL = { RUN_COMPLETED: 1, RUN_FAILED: 1, RUN_CANCELED: 1 };
  // Pause before opening a stream again that the browser gave up on.
  var RETRY_MS = 1000;

  function runPage(live) {
    var id = live.getAttribute("data-run-id");
    var msg = $("#msg");
    var refreshing = false, again = false;
    function terminal() {
      var head = $(".run-head", live);
      return head && head.getAttribute("data-terminal") === "true";
    }
    function refresh() {
      if (refreshing) { again = true; return; }
      refreshing = true;
      fetch("/ui/runs/" + id + "/live", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          refreshing = false;
          if (html !== null && html !== live.innerHTML) { live.innerHTML = html; }
          if (again) { again = false; refresh(); }
        })
        .catch(function () { refreshing = false; });
    }
    setInterval(function () { if (!terminal() && !document.hidden) { refresh(); } }, 1000);

    $all("#actions button[data-action]").forEach(function (b) {
      b.addEventListener("click", function () {
        var action = b.getAttribute("data-action");
        b.disabled = true;
        say(msg, action + "…");
        post("/runs/" + id + "/" + action).then(function (r) {
          b.disabled = false;
          say(msg, r.ok ? action + ": done" : errorText(r.status, r.body), !r.ok);
          refresh();
          if (r.ok && action === "retry") { openEvents(); openOutput(); }
        }).catch(function (e) { b.disabled = false; say(msg, action + " failed: " + e, true); });
      });
    });

    // Events: appended live; the stream resumes after the last one shown (Last-Event-ID on
    // reconnects), so nothing repeats.
    var table = $("#events");
    var tbody = table.tBodies[0];
    var lastSeq = parseInt(table.getAttribute("data-after") || "0", 10);
    var kinds = (table.getAttribute("data-kinds") || "").split(",");
    var events = null;
    function onEvent(e) {
      var seq = parseInt(e.lastEventId, 10);
      if (!(seq > lastSeq)) { return; }
      lastSeq = seq;
      var data = {};
      try { data = JSON.parse(e.data); } catch (_) { /* keep empty */ }
      var tr = document.createElement("tr");
      tr.setAttribute("data-seq", String(seq));
      var payload = data.payload;
      var details = payload && typeof payload.message === "string" ? payload.message
        : (payload === undefined || payload === null ? "" : JSON.stringify(payload));
      if (details.length > 240) { details = details.slice(0, 240) + "…"; }
      [String(seq), data.ts || "", e.type, details].forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 0) { td.className = "num"; }
        if (i === 2) { var c = document.createElement("code"); c.textContent = text; td.appendChild(c); }
        else { td.textContent = text; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
      refresh();
      if (TERMINAL[e.type]) {
        if (events) { events.close(); events = null; }
        setTimeout(function () { if (output) { output.close(); output = null; setOutputState("finished"); } }, 1500);
      }
    }
    function openEvents() {
      if (events) { return; }
      events = new EventSource("/runs/" + id + "/events?after=" + lastSeq);
      kinds.forEach(function (k) { if (k) { events.addEventListener(k, onEvent); } });
      events.onerror = function () {
        if (!events) { return; }
        if (terminal()) { events.close(); events = null; return; }
        // The browser retries a dropped stream by itself, but gives up on an error answer
        // (a daemon restarting, say): then open a new one after the last event shown.
        if (events.readyState === EventSource.CLOSED) {
          events = null;
          setTimeout(openEvents, RETRY_MS);
        }
      };
    }

    // Live agent output: frames carry `<step>:<byte offset>` ids; bytes already shown are
    // skipped, so a reconnect (which replays the current step) adds nothing twice.
    var box = $("#output");
    var follow = $("#autoscroll");
    var enc = new TextEncoder(), dec = new TextDecoder();
    var steps = {};
    var output = null;
    function setOutputState(t) { var s = $("#output-state"); if (s) { s.textContent = t; } }
    function stepBox(stepId) {
      var s = steps[stepId];
      if (!s) {
        var head = document.createElement("div");
        head.className = "o-step";
        head.textContent = "— step " + stepId;
        box.appendChild(head);
        var body = document.createElement("div");
        var pending = document.createElement("div");
        pending.className = "o-raw";
        box.appendChild(body);
        box.appendChild(pending);
        s = steps[stepId] = { have: 0, partial: "", body: body, pending: pending };
      }
      return s;
    }
    function line(s, text) {
      var el = document.createElement("div");
      var j = null;
      if (text.charAt(0) === "{") { try { j = JSON.parse(text); } catch (_) { j = null; } }
      if (j && typeof j === "object") {
        if (j.type === "assistant" && j.message && Array.isArray(j.message.content)) {
          j.message.content.forEach(function (c) {
            var d = document.createElement("div");
            if (c.type === "text") { d.className = "o-text"; d.textContent = c.text; }
            else if (c.type === "tool_use") {
              d.className = "o-tool";
              var input = JSON.stringify(c.input || {});
              d.textContent = "▶ " + c.name + " " + (input.length > 200 ? input.slice(0, 200) + "…" : input);
            } else if (c.type === "thinking") { d.className = "o-raw"; d.textContent = "(thinking)"; }
            else { d.className = "o-raw"; d.textContent = JSON.stringify(c); }
            s.body.appendChild(d);
          });
          return;
        }
        if (j.type === "user" && j.message && Array.isArray(j.message.content)) {
          j.message.content.forEach(function (c) {
            if (c.type !== "tool_result") { return; }
            var d = document.createElement("div");
            d.className = "o-result";
            var t = typeof c.content === "string" ? c.content : JSON.stringify(c.content);
            d.textContent = "◀ " + (t.length > 300 ? t.slice(0, 300) + "…" : t);
            s.body.appendChild(d);
          });
          return;
        }
        if (j.type === "result") {
          el.className = "o-result";
          el.textContent = "result: " + (j.result !== undefined ? j.result : JSON.stringify(j));
          s.body.appendChild(el);
          return;
        }
        if (j.type === "system") {
          el.className = "o-raw";
          el.textContent = "system: " + (j.subtype || "") + (j.model ? " (" + j.model + ")" : "");
          s.body.appendChild(el);
          return;
        }
      }
      el.className = "o-raw";
      el.textContent = text;
      s.body.appendChild(el);
    }
    function onOutput(e) {
      var idx = e.lastEventId.lastIndexOf(":");
      var stepId = e.lastEventId.slice(0, idx);
      var offset = parseInt(e.lastEventId.slice(idx + 1), 10) || 0;
      var s = stepBox(stepId);
      var bytes = enc.encode(e.data);
      if (offset + bytes.length <= s.have) { return; }
      var text = offset < s.have ? dec.decode(bytes.slice(s.have - offset)) : e.data;
      s.have = offset + bytes.length;
      var all = s.partial + text;
      var parts = all.split("\n");
      s.partial = parts.pop();
      parts.forEach(function (p) { line(s, p); });
      s.pending.textContent = s.partial;
      if (follow && follow.checked) { box.scrollTop = box.scrollHeight; }
    }
    function openOutput() {
      if (output) { return; }
      output = new EventSource("/runs/" + id + "/output");
      output.addEventListener("step", function (e) {
        try { stepBox(JSON.parse(e.data).step_id); } catch (_) { /* ignore */ }
      });
      output.addEventListener("output", onOutput);
      output.onopen = function () { setOutputState("live"); };
      output.onerror = function () {
        if (!output) { return; }
        if (terminal() || box.getAttribute("data-terminal") === "true") {
          output.close();
          output = null;
          setOutputState("finished");
          return;
        }
        setOutputState("reconnecting…");
        if (output.readyState === EventSource.CLOSED) {
          output = null;
          setTimeout(openOutput, RETRY_MS);
        }
      };
    }
    openEvents();
    openOutput();
  }

  // ---- The review page: actions behind a confirmation. ----
  function reviewPage(section) {
    var id = section.getAttribute("data-run-id");
    var box = $("#confirm"), text = $("#confirm-text"), result = $("#review-result");
    var pending = null;
    var words = {
      merge: function () { return "Merge this run into " + $("#merge-target").value + " (" + $("#merge-strategy").value + ")?"; },
      scrap: function () { return "Scrap this run: remove its worktree and delete its branch?"; },
      "create-pr": function () { return "Open a pull request for this run's branch with gh?"; }
    };
    $all("button[data-confirm]", section).forEach(function (b) {
      b.addEventListener("click", function () {
        pending = b.getAttribute("data-confirm");
        text.textContent = words[pending]();
        box.hidden = false;
        $("#confirm-yes").focus();
      });
    });
    $("#confirm-no").addEventListener("click", function () { box.hidden = true; pending = null; });
    $("#confirm-yes").addEventListener("click", function () {
      if (!pending) { return; }
      var action = pending;
      box.hidden = true;
      pending = null;
      var payload = action === "merge" ? { strategy: $("#merge-strategy").value, target: $("#merge-target").value } : undefined;
      say(result, action + "…");
      post("/runs/" + id + "/" + action, payload).then(function (r) {
        if (!r.ok) { say(result, errorText(r.status, r.body), true); return; }
        var j = {};
        try { j = JSON.parse(r.body); } catch (_) { /* keep empty */ }
        var status = j.review_status || "done";
        var details = Array.isArray(j.details) && j.details.length ? " — " + j.details.join("; ") : "";
        say(result, action + ": " + status + (j.pr_url ? " " + j.pr_url : "") + details);
        var rs = $("#review-status");
        if (rs) { rs.textContent = status; }
      }).catch(function (e) { say(result, action + " failed: " + e, true); });
    });
  }

  // ---- The start-a-run form. ----
  function newRunForm(form) {
    var ws = $("#workspace"), spec = $("#spec"), plan = $("#plan"), msg = $("#form-msg");
    function fill(select, values, keepFirst) {
      while (select.options.length > (keepFirst ? 1 : 0)) { select.remove(select.options.length - 1); }
      values.forEach(function (v) { var o = document.createElement("option"); o.value = v; o.textContent = v; select.appendChild(o); });
    }
    function loadSpecs() {
      if (!ws.value) { return; }
      fetch("/ui/specs?workspace=" + encodeURIComponent(ws.value), { credentials: "same-origin" })
        .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, status: r.status, body: t }; }); })
        .then(function (r) {
          if (!r.ok) { fill(spec, []); say(msg, errorText(r.status, r.body), true); return; }
          var j = JSON.parse(r.body);
          fill(spec, j.specs);
          fill(plan, j.plans, true);
          // Prefer a spec that has its default plan (specs/planning/<stem>-plan.md).
          var planned = j.specs.filter(function (s) {
            var stem = s.replace(/^.*\//, "").replace(/\.md$/, "");
            return j.plans.indexOf("specs/planning/" + stem + "-plan.md") >= 0;
          });
          if (planned.length) { spec.value = planned[0]; }
          say(msg, j.specs.length ? "" : "No specs in " + ws.value + "/specs.", !j.specs.length);
        })
        .catch(function (e) { say(msg, "cannot list specs: " + e, true); });
    }
    ws.addEventListener("change", loadSpecs);
    loadSpecs();
    function request() {
      var override = {};
      var reviewer = $("#reviewer").value;
      if (reviewer) { override.reviewer = reviewer === "true"; }
      [["iterations", parseInt], ["max_cost_usd", parseFloat], ["max_tokens", parseInt], ["max_wall_sec", parseInt]].forEach(function (p) {
        var v = $("#" + p[0]).value;
        if (v !== "") { override[p[0]] = p[1](v, 10); }
      });
      var req = { workspace_root: ws.value, spec_path: spec.value };
      if (plan.value) { req.plan_path = plan.value; }
      if ($("#name").value) { req.name = $("#name").value; }
      if (Object.keys(override).length) { req.config_override = override; }
      return req;
    }
    $("#preview").addEventListener("click", function () {
      say(msg, "preview…");
      post("/prompt", request()).then(function (r) {
        if (!r.ok) { say(msg, errorText(r.status, r.body), true); return; }
        var j = JSON.parse(r.body);
        $("#prompt-preview").textContent = j.implementation;
        $("#preview-warnings").textContent = (j.warnings || []).join(" ");
        $("#preview-box").hidden = false;
        say(msg, "");
      }).catch(function (e) { say(msg, "preview failed: " + e, true); });
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(msg, "starting…");
      post("/runs", request()).then(function (r) {
        if (!r.ok) { say(msg, errorText(r.status, r.body), true); return; }
        var j = JSON.parse(r.body);
        window.location.assign("/ui/runs/" + j.id);
      }).catch(function (e) { say(msg, "start failed: " + e, true); });
    });
  }

  function start() {
    var runs = $("#runs"); if (runs) { runsList(runs); }
    var live = $("#live"); if (live) { runPage(live); }
    var review = $("#review-actions"); if (review) { reviewPage(review); }
    var form = $("#new-run"); if (form) { newRunForm(form); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
