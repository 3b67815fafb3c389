// Afterword dashboard: plain JavaScript, no dependencies, no build step.
// It polls GET /stats and GET /jobs every 2 s, follows one job with GET /jobs/{id}/events (SSE),
// and calls POST /jobs/{id}/retry and DELETE /jobs/{id} for its buttons. Every call carries the
// API key kept in this browser, if any, as X-API-Key; a 401 makes the page ask for a key (a read
// key shows the data), a 403 on a button for a full one.
"use strict";

(() => {
  const body = document.body;
  const ROOT = body.dataset.root || "";
  const AUTH_REQUIRED = body.dataset.auth === "required";
  const STATUSES = (body.dataset.statuses || "").split(" ").filter(Boolean);
  const NAMES = (body.dataset.names || "").split(" ").filter(Boolean);
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const RETRYABLE = new Set(["failed", "cancelled"]);
  const CANCELLABLE = new Set(["queued", "deferred", "retrying", "in_progress"]);
  const POLL_MS = 2000;
  const STATS_MINUTES = 15;
  const RECENT_LIMIT = 30;
  const FAILED_LIMIT = 20;
  const QUEUE_SAMPLES = 90;
  const KEY_STORAGE = "afterword.apiKey";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  let clockOffset = 0; // the gateway's clock minus this browser's, in ms
  const queueHistory = [];
  let view = { kind: "lists", status: "", name: "" };
  let detail = null; // { id, source, job }
  let timer = null;
  let ticking = false;
  let again = false;

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function badge(status) {
    return el("span", { class: "badge", "data-status": status, text: status.replace("_", " ") });
  }

  let toastTimer = null;
  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  // ---------------------------------------------------------------- time

  function parseTime(iso) {
    return iso ? Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1")) : NaN;
  }

  function human(seconds) {
    if (!Number.isFinite(seconds)) return "–";
    const s = Math.max(0, seconds);
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h`;
    return `${Math.floor(s / 86400)} d`;
  }

  function ago(iso) {
    return human((Date.now() + clockOffset - parseTime(iso)) / 1000);
  }

  function millis(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
    if (ms === 0) return "0";
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return human(ms / 1000);
  }

  function between(fromIso, toIso) {
    return fromIso && toIso ? millis(parseTime(toIso) - parseTime(fromIso)) : "–";
  }

  function clock(iso) {
    const t = parseTime(iso);
    return Number.isFinite(t) ? new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
  }

  function stamp(iso) {
    const t = parseTime(iso);
    return Number.isFinite(t) ? `${new Date(t).toLocaleString()} (${ago(iso)} ago)` : "–";
  }

  // ---------------------------------------------------------------- API

  class HttpError extends Error {
    constructor(status, message, key) {
      super(message);
      this.status = status;
      this.key = key; // the API key the request carried ("" for none)
    }
  }

  async function errorText(response) {
    try {
      const data = await response.json();
      if (typeof data.detail === "string") return data.detail;
      return JSON.stringify(data.detail ?? data);
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  function withKey(headers, key) {
    return key ? { ...headers, "X-API-Key": key } : headers;
  }

  async function getJSON(path) {
    const key = sessionKey;
    const headers = withKey({ Accept: "application/json" }, key);
    const response = await fetch(ROOT + path, { headers, cache: "no-store" });
    if (!response.ok) throw new HttpError(response.status, await errorText(response), key);
    return response.json();
  }

  function storedKey() {
    try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
  }

  function saveKey(key) {
    try { localStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: kept for this page only */ }
    sessionKey = key;
  }

  function forgetKey() {
    try { localStorage.removeItem(KEY_STORAGE); } catch { /* nothing kept */ }
    sessionKey = "";
  }

  let sessionKey = storedKey();
  let keyDeclined = false; // the page asked for a key to read with and was given none
  let keyPrompt = null; // the open dialog's promise: one dialog at a time, however many calls wait

  const REASON = {
    read: "This gateway needs an API key to show its jobs: a read key will do.",
    change: "Retrying or cancelling a job needs a full API key.",
    refused: "The gateway refused that API key. Retrying or cancelling a job needs a full API key.",
    readOnly: "That API key may only read. Retrying or cancelling a job needs a full API key.",
    any: "A read key shows this gateway's jobs; a full key also retries and cancels them.",
  };

  function updateKeyButton() {
    const button = $("api-key-button");
    button.hidden = !AUTH_REQUIRED && !sessionKey;
    button.textContent = sessionKey ? "API key ✓" : "API key";
    button.title = sessionKey ? "An API key is kept in this browser; click to change or forget it" : "Set the API key";
  }

  // The key dialog; resolves to the key saved, or null. A call while it is open gets the same answer.
  function askKey(reason) {
    if (keyPrompt) return keyPrompt;
    const dialog = $("key-dialog");
    const input = $("key-input");
    input.value = "";
    $("key-reason").textContent = reason || REASON.any;
    keyPrompt = new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        keyPrompt = null;
        const key = dialog.returnValue === "ok" ? input.value.trim() : "";
        if (key) {
          saveKey(key);
          keyDeclined = false;
        } else if (dialog.returnValue === "ok") {
          forgetKey();
        }
        updateKeyButton();
        resolve(key || null);
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  // A read got 401: forget the key it carried if that is still the one kept, and ask for one,
  // unless this page was already given none (the API key button asks again).
  function keyNeeded(error) {
    if (error.key && error.key === sessionKey) {
      forgetKey();
      updateKeyButton();
    }
    setLocked();
    if (keyDeclined) return;
    askKey(REASON.read).then((key) => {
      if (key) refreshNow();
      else keyDeclined = true;
    });
  }

  // POST /jobs/{id}/retry or DELETE /jobs/{id}, with the API key when the gateway wants one.
  async function act(method, path, label) {
    let key = sessionKey;
    if (AUTH_REQUIRED && !key) {
      key = await askKey(REASON.change);
      if (!key) return false;
    }
    for (let attempt = 0; attempt < 3; attempt += 1) {
      let response;
      try {
        response = await fetch(ROOT + path, { method, headers: withKey({ Accept: "application/json" }, key) });
      } catch {
        toast(`${label}: the gateway cannot be reached`);
        return false;
      }
      if (response.status === 401 || response.status === 403) {
        if (response.status === 401) {
          forgetKey();
          updateKeyButton();
        }
        toast(response.status === 401 ? "The gateway refused that API key." : "That API key may only read.");
        key = await askKey(response.status === 401 ? REASON.refused : REASON.readOnly);
        if (!key) return false;
        continue;
      }
      if (!response.ok) {
        toast(`${label} failed: ${await errorText(response)}`);
        return false;
      }
      toast(`${label}: done`);
      return true;
    }
    return false;
  }

  function actionButtons(job) {
    const box = el("span", { class: "actions" });
    if (RETRYABLE.has(job.status)) {
      box.append(el("button", { type: "button", "data-action": "retry", "data-job-id": job.id, text: "Retry" }));
    }
    if (CANCELLABLE.has(job.status)) {
      box.append(el("button", {
        type: "button", class: "danger", "data-action": "cancel", "data-job-id": job.id, text: "Cancel",
      }));
    }
    return box;
  }

  async function onAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.stopPropagation();
    event.preventDefault();
    const id = button.dataset.jobId;
    button.disabled = true;
    try {
      if (button.dataset.action === "retry") {
        await act("POST", `/jobs/${encodeURIComponent(id)}/retry`, "Retry");
      } else {
        await act("DELETE", `/jobs/${encodeURIComponent(id)}`, "Cancel");
      }
    } finally {
      button.disabled = false;
    }
    if (detail && detail.id === id) {
      const job = await loadDetail(id);
      if (job && !FINAL.has(job.status)) openEvents(id);
    }
    refreshNow();
  }

  // ---------------------------------------------------------------- job lists

  function cell(attrs, ...children) {
    return el("td", attrs, ...children);
  }

  function fillRow(tr, job) {
    const link = el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, text: job.name });
    tr.replaceChildren(
      cell({}, badge(job.status)),
      cell({}, link),
      cell({ class: "opt" }, el("code", { text: job.id.slice(0, 8), title: job.id })),
      cell({ class: "num", text: job.tries }),
      cell({ class: "num", title: job.enqueued_at, text: ago(job.enqueued_at) }),
      cell({ class: "err opt", title: job.error || "", text: job.error || "" }),
      cell({}, actionButtons(job)),
    );
  }

  function renderJobs(tbody, jobs, empty) {
    const rows = new Map([...tbody.children].map((tr) => [tr.dataset.jobId, tr]));
    jobs.forEach((job, index) => {
      let tr = rows.get(job.id);
      rows.delete(job.id);
      const signature = `${job.status}|${job.tries}|${job.error || ""}`;
      if (!tr) {
        tr = el("tr", { "data-testid": "job-row", "data-job-id": job.id, "data-name": job.name, tabindex: "0" });
      }
      if (tr.dataset.signature !== signature) {
        tr.dataset.signature = signature;
        tr.dataset.status = job.status;
        fillRow(tr, job);
      } else {
        tr.children[4].textContent = ago(job.enqueued_at);
      }
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
    });
    for (const tr of rows.values()) tr.remove();
    empty.hidden = jobs.length > 0;
  }

  function onRowClick(event) {
    if (event.target.closest("button, a")) return;
    const tr = event.target.closest("tr[data-job-id]");
    if (tr) location.hash = `#/jobs/${encodeURIComponent(tr.dataset.jobId)}`;
  }

  function onRowKey(event) {
    if (event.key !== "Enter" || event.target.closest("button, a")) return;
    onRowClick(event);
  }

  async function refreshLists() {
    const wanted = view;
    const query = new URLSearchParams({ limit: String(RECENT_LIMIT) });
    if (view.status) query.set("status", view.status);
    if (view.name) query.set("name", view.name);
    const [recent, failed] = await Promise.all([
      getJSON(`/jobs?${query}`),
      getJSON(`/jobs?status=failed&limit=${FAILED_LIMIT}`),
    ]);
    if (view !== wanted) return; // the filters changed meanwhile: the next round fetches anew
    renderJobs($("recent-jobs"), recent.jobs, $("recent-empty"));
    renderJobs($("failed-jobs"), failed.jobs, $("failed-empty"));
    $("failed-count").textContent = failed.next_cursor ? `(${FAILED_LIMIT}+)` : `(${failed.jobs.length})`;
  }

  // ---------------------------------------------------------------- overview

  function renderWorkers(workers) {
    $("worker-count").textContent = String(workers.length);
    const list = $("workers");
    list.replaceChildren(...workers.map((w) => el("li", { "data-testid": "worker", title: w.id },
      el("span", { class: "name", text: `${w.host}:${w.pid}` }),
      el("span", { class: "age", text: `beat ${ago(w.last_beat)} ago` }))));
    if (!workers.length) list.append(el("li", { class: "empty", text: "No worker is alive." }));
  }

  function renderCounts(counts, estimated) {
    // A status with more jobs than STATS_EXACT_COUNT_LIMIT is Postgres' estimate: shown as "≈ n".
    $("status-counts").replaceChildren(...STATUSES.map((status) => {
      const approximate = estimated.includes(status);
      const count = String(counts[status] ?? 0);
      return el("li", { "data-testid": "status-count", "data-status": status },
        el("span", { text: status.replace("_", " ") }),
        el("b", approximate ? { text: `≈ ${count}`, title: "estimated by Postgres" } : { text: count }));
    }));
  }

  const CHART = { width: 600, height: 180, left: 44, right: 8, top: 10, bottom: 22 };

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function frame(chart, max, minutes, format) {
    const { width, height, left, right, top, bottom } = CHART;
    const plotBottom = height - bottom;
    chart.append(
      svg("line", { class: "axis", x1: left, y1: plotBottom, x2: width - right, y2: plotBottom }),
      svg("line", { class: "axis", x1: left, y1: top, x2: width - right, y2: top }),
      svg("text", { x: left - 6, y: top + 4, "text-anchor": "end" }, format(max)),
      svg("text", { x: left - 6, y: plotBottom, "text-anchor": "end" }, format(0)),
    );
    if (minutes.length) {
      chart.append(
        svg("text", { x: left, y: height - 4 }, clock(minutes[0])),
        svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, clock(minutes[minutes.length - 1])),
      );
    }
  }

  function renderThroughput(rows) {
    const chart = $("throughput-chart");
    chart.replaceChildren(svg("title", {}, "Jobs ended per minute"));
    const { width, height, left, right, top, bottom } = CHART;
    const max = niceMax(Math.max(0, ...rows.map((r) => r.succeeded + r.failed)));
    frame(chart, max, rows.map((r) => r.minute), (v) => String(Math.round(v)));
    const slot = (width - left - right) / Math.max(rows.length, 1);
    const scale = (height - top - bottom) / max;
    rows.forEach((row, i) => {
      const x = left + i * slot + slot * 0.15;
      const w = Math.max(slot * 0.7, 1);
      const okHeight = row.succeeded * scale;
      const badHeight = row.failed * scale;
      const group = svg("g", { "data-minute": row.minute });
      group.append(svg("title", {}, `${clock(row.minute)}: ${row.succeeded} succeeded, ${row.failed} failed`));
      if (okHeight) group.append(svg("rect", { class: "ok", x, y: height - bottom - okHeight, width: w, height: okHeight }));
      if (badHeight) {
        group.append(svg("rect", {
          class: "bad", x, y: height - bottom - okHeight - badHeight, width: w, height: badHeight,
        }));
      }
      group.append(svg("rect", { x, y: top, width: w, height: height - top - bottom, fill: "transparent" }));
      chart.append(group);
    });
  }

  function renderLatency(stats) {
    const chart = $("latency-chart");
    chart.replaceChildren(svg("title", {}, "Pickup latency per minute (ms)"));
    const minutes = stats.throughput.map((r) => r.minute);
    const index = new Map(minutes.map((m, i) => [parseTime(m), i]));
    const points = stats.pickup_latency_by_minute
      .map((row) => ({ ...row, i: index.get(parseTime(row.minute)) }))
      .filter((row) => row.i !== undefined);
    const max = niceMax(Math.max(0, ...points.map((p) => p.p99 ?? 0)));
    frame(chart, max, minutes, (v) => millis(v));
    const { width, height, left, right, top, bottom } = CHART;
    const slot = (width - left - right) / Math.max(minutes.length, 1);
    const x = (i) => left + i * slot + slot / 2;
    const y = (v) => height - bottom - (v / max) * (height - top - bottom);
    for (const key of ["p99", "p95", "p50"]) {
      let path = "";
      let previous = -2;
      for (const point of points) {
        if (point[key] === null) continue;
        path += `${point.i === previous + 1 ? "L" : "M"}${x(point.i).toFixed(1)},${y(point[key]).toFixed(1)} `;
        previous = point.i;
        const dot = svg("circle", { class: key, cx: x(point.i), cy: y(point[key]), r: 2.5, fill: "currentColor" });
        dot.style.fill = `var(--${key})`;
        dot.append(svg("title", {}, `${clock(point.minute)} ${key} ${millis(point[key])}`));
        chart.append(dot);
      }
      if (path) chart.append(svg("path", { class: `line ${key}`, d: path.trim() }));
    }
    const now = stats.pickup_latency_ms;
    $("latency-now").textContent = now.p50 === null
      ? `no job started in the last ${stats.minutes} min`
      : `p50 ${millis(now.p50)} · p95 ${millis(now.p95)} · p99 ${millis(now.p99)} over ${stats.minutes} min`;
  }

  function renderQueue(depth) {
    $("queue-depth").textContent = depth === null ? "–" : String(depth);
    if (depth !== null) {
      queueHistory.push(depth);
      if (queueHistory.length > QUEUE_SAMPLES) queueHistory.shift();
    }
    const chart = $("queue-chart");
    const width = 300;
    const height = 60;
    const max = niceMax(Math.max(1, ...queueHistory));
    const step = width / Math.max(queueHistory.length - 1, 1); // the samples so far span the whole width
    const coords = queueHistory.map((v, i) => [i * step, height - 2 - (v / max) * (height - 4)]);
    chart.replaceChildren(svg("title", {}, `Queue depth, last ${Math.round((QUEUE_SAMPLES * POLL_MS) / 60000)} min`));
    if (coords.length > 1) {
      const line = coords.map(([cx, cy], i) => `${i ? "L" : "M"}${cx.toFixed(1)},${cy.toFixed(1)}`).join(" ");
      chart.append(
        svg("path", { class: "area", d: `${line} L${width},${height} L0,${height} Z` }),
        svg("path", { class: "spark", d: line }),
      );
    }
  }

  async function refreshStats() {
    const stats = await getJSON(`/stats?minutes=${STATS_MINUTES}`);
    clockOffset = parseTime(stats.now) - Date.now();
    renderQueue(stats.queue_depth);
    renderWorkers(stats.workers);
    renderCounts(stats.jobs_by_status, stats.jobs_by_status_estimated ?? []);
    renderThroughput(stats.throughput);
    renderLatency(stats);
  }

  // ---------------------------------------------------------------- one job

  function fact(list, name, value) {
    list.append(el("dt", { text: name }), el("dd", {}, value));
  }

  function renderDetail(job) {
    detail.job = job;
    $("detail-missing").hidden = true;
    $("detail-name").textContent = job.name;
    $("detail-id").textContent = job.id;
    const status = $("detail-status");
    status.textContent = job.status.replace("_", " ");
    status.dataset.status = job.status;
    $("detail-actions").replaceChildren(actionButtons(job));
    const facts = $("detail-facts");
    facts.replaceChildren();
    fact(facts, "Tries", String(job.tries));
    fact(facts, "Enqueued", stamp(job.enqueued_at));
    fact(facts, "Due (run at)", stamp(job.run_at));
    fact(facts, "Started", stamp(job.started_at));
    fact(facts, "Finished", stamp(job.finished_at));
    fact(facts, "Waited", between(job.run_at, job.started_at));
    fact(facts, "Ran for", between(job.started_at, job.finished_at));
    if (job.request_id) fact(facts, "Request id", el("code", { text: job.request_id }));
    if (job.error) fact(facts, "Error", el("span", { class: "error-text", text: job.error }));
    $("detail-attempts").replaceChildren(...job.attempts.map((a) => el("tr", { "data-testid": "attempt" },
      cell({ class: "num", text: a.try }),
      cell({}, el("code", { text: a.worker })),
      cell({ title: a.started_at, text: clock(a.started_at) }),
      cell({ class: "num", text: between(a.started_at, a.finished_at) }),
      cell({}, a.outcome ? badge(a.outcome) : el("span", { text: "running" })),
      cell({ class: "err opt", title: a.error || "", text: a.error || "" }))));
    $("detail-payload").textContent = JSON.stringify(job.payload ?? {}, null, 2);
    $("detail-result").textContent = job.result === null || job.result === undefined
      ? "–" : JSON.stringify(job.result, null, 2);
  }

  async function loadDetail(id) {
    let job;
    try {
      job = await getJSON(`/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (detail && detail.id === id && error.status === 404) {
        const missing = $("detail-missing");
        missing.textContent = `No job with id ${id}.`;
        missing.hidden = false;
      }
      return null;
    }
    if (!detail || detail.id !== id) return null;
    renderDetail(job);
    return job;
  }

  function addEvent(data) {
    const list = $("detail-events");
    const time = new Date(parseTime(data.at)).toLocaleTimeString();
    const text = `${time} ${data.status.replace("_", " ")}${data.tries ? ` (try ${data.tries})` : ""}`;
    list.append(el("li", { "data-testid": "detail-event", "data-status": data.status, text }));
  }

  // GET /jobs/{id}/events, read with fetch rather than EventSource: EventSource cannot send the
  // API key's header, and a key in the URL would end up in logs. Reconnects as EventSource does,
  // after the stream's "retry" delay, until the job ends or the view closes it.
  function openEvents(id) {
    if (!detail || detail.id !== id || detail.source) return;
    const controller = new AbortController();
    const follower = {
      active: true,
      close() {
        this.active = false;
        controller.abort();
      },
    };
    detail.source = follower;
    followEvents(id, follower, controller.signal).finally(() => {
      follower.active = false;
      if (detail && detail.source === follower) detail.source = null; // polling takes over
    });
  }

  async function followEvents(id, follower, signal) {
    let retryMs = 2000;
    while (follower.active) {
      try {
        const response = await fetch(`${ROOT}/jobs/${encodeURIComponent(id)}/events`, {
          headers: withKey({ Accept: "text/event-stream" }, sessionKey), cache: "no-store", signal,
        });
        if (!response.ok || !response.body) return; // 401 or 404: the next poll says why
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
          buffer = blocks.pop();
          for (const block of blocks) {
            const event = parseEvent(block);
            if (event.retry !== null) retryMs = event.retry;
            if (event.type === "status" && event.data !== null) onStatus(id, JSON.parse(event.data));
          }
        }
      } catch {
        if (!follower.active) return; // closed on purpose
      }
      if (follower.active) await new Promise((resolve) => { setTimeout(resolve, retryMs); });
    }
  }

  // One event of a text/event-stream: its type, its data lines joined, its retry delay.
  function parseEvent(block) {
    const event = { type: "message", data: null, retry: null };
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.type = value;
      else if (field === "data") event.data = event.data === null ? value : `${event.data}\n${value}`;
      else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
    }
    return event;
  }

  function onStatus(id, data) {
    if (!detail || detail.id !== id) return;
    addEvent(data);
    const status = $("detail-status");
    status.textContent = data.status.replace("_", " ");
    status.dataset.status = data.status;
    if (FINAL.has(data.status)) closeEvents();
    loadDetail(id);
  }

  function closeEvents() {
    if (detail && detail.source) {
      detail.source.close();
      detail.source = null;
    }
  }

  async function refreshDetail() {
    if (!detail || detail.source) return; // the event stream keeps it current
    const job = await loadDetail(detail.id);
    if (job && !FINAL.has(job.status)) openEvents(detail.id);
  }

  // ---------------------------------------------------------------- views and polling

  function route() {
    const hash = location.hash || "#/";
    const match = hash.match(/^#\/jobs\/([^/?#]+)/);
    if (match) {
      const id = decodeURIComponent(match[1]);
      view = { kind: "detail", status: view.status, name: view.name };
      $("lists").hidden = true;
      $("overview").hidden = true;
      $("detail").hidden = false;
      if (!detail || detail.id !== id) {
        closeEvents();
        detail = { id, source: null, job: null };
        $("detail-events").replaceChildren();
        $("detail-attempts").replaceChildren();
        $("detail-facts").replaceChildren();
        $("detail-name").textContent = "";
        $("detail-id").textContent = id;
        $("detail-status").textContent = "";
        $("detail-payload").textContent = "";
        $("detail-result").textContent = "";
        refreshDetail();
      }
      window.scrollTo(0, 0);
    } else {
      closeEvents();
      detail = null;
      const query = new URLSearchParams(hash.split("?")[1] || "");
      view = { kind: "lists", status: query.get("status") || "", name: query.get("name") || "" };
      $("filter-status").value = view.status;
      $("filter-name").value = view.name;
      $("lists").hidden = false;
      $("overview").hidden = false;
      $("detail").hidden = true;
    }
    refreshNow();
  }

  function onFilter() {
    const query = new URLSearchParams();
    if ($("filter-status").value) query.set("status", $("filter-status").value);
    if ($("filter-name").value) query.set("name", $("filter-name").value);
    const text = query.toString();
    location.hash = text ? `#/?${text}` : "#/";
  }

  function setLive(ok) {
    const live = $("live");
    live.dataset.state = ok ? "live" : "offline";
    live.textContent = ok
      ? `live · updated ${new Date().toLocaleTimeString()}`
      : "the gateway cannot be reached · retrying";
  }

  function setLocked() {
    const live = $("live");
    live.dataset.state = "locked";
    live.textContent = "an API key is needed to show the jobs";
  }

  async function tick() {
    if (ticking) {
      again = true;
      return;
    }
    ticking = true;
    clearTimeout(timer);
    try {
      if (!document.hidden) {
        const work = [refreshStats()];
        work.push(view.kind === "lists" ? refreshLists() : refreshDetail());
        await Promise.all(work);
        setLive(true);
        body.dataset.ready = "true";
      }
    } catch (error) {
      if (error instanceof HttpError && error.status === 401) keyNeeded(error);
      else setLive(false);
    } finally {
      ticking = false;
      if (again) {
        again = false;
        timer = setTimeout(tick, 0);
      } else {
        timer = setTimeout(tick, POLL_MS);
      }
    }
  }

  function refreshNow() {
    if (ticking) again = true;
    else tick();
  }

  function start() {
    for (const status of STATUSES) $("filter-status").append(el("option", { value: status, text: status }));
    for (const name of NAMES) $("filter-name").append(el("option", { value: name, text: name }));
    $("filters").addEventListener("change", onFilter);
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    for (const id of ["recent-jobs", "failed-jobs"]) {
      $(id).addEventListener("click", onAction);
      $(id).addEventListener("click", onRowClick);
      $(id).addEventListener("keydown", onRowKey);
    }
    $("detail-actions").addEventListener("click", onAction);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("key-dialog").close(event.submitter ? event.submitter.value : "ok");
    });
    $("api-key-button").addEventListener("click", () => {
      askKey(REASON.any).then((key) => { if (key) refreshNow(); });
    });
    updateKeyButton();
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshNow(); });
    route();
  }

  start();
})();
