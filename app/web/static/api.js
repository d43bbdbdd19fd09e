"use strict";
// The pages' calls to the JSON API (served by app/web/routes/pages.py). The API key, when the
// service asks for one, is kept in this tab's sessionStorage and sent as the Authorization
// header, on every call and on the event stream too (read with fetch, not EventSource, which
// cannot send headers): it never goes into a URL, which access logs and proxies keep.

const Harden = (() => {
  const KEY_ITEM = "harden.apiKey";
  const openMode = () => document.body.dataset.auth === "open";
  const storedKey = () => sessionStorage.getItem(KEY_ITEM);

  function headers(extra) {
    const all = new Headers(extra || {});
    const key = storedKey();
    if (!openMode() && key) all.set("Authorization", "Bearer " + key);
    return all;
  }

  // A problem+json answer as {status, code, detail, hint, errors}; any other failure likewise.
  async function problemOf(response) {
    let body = {};
    try {
      body = await response.json();
    } catch (_) {
      body = {};
    }
    return {
      status: response.status,
      code: body.code || "http_" + response.status,
      detail: body.detail || response.status + " " + response.statusText,
      hint: body.hint || "",
      errors: Array.isArray(body.errors) ? body.errors : [],
    };
  }

  // fetch() with the key; a 401 also tells the key panel, which asks for a key.
  async function call(path, options) {
    const init = Object.assign({ cache: "no-store" }, options || {});
    init.headers = headers(init.headers);
    const response = await fetch(path, init);
    if (response.status === 401) {
      showAuthProblem(await problemOf(response.clone()));
    }
    return response;
  }

  // The JSON of a successful answer, or throws its problem.
  async function json(path, options) {
    const response = await call(path, options);
    if (!response.ok) throw await problemOf(response);
    return response.json();
  }

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Shows a problem in `element`: what went wrong, the hint to fix it, the fields at fault.
  function showProblem(element, problem) {
    const fields = (problem.errors || []).map((error) =>
      el("li", {}, el("code", {}, error.field || ""), " ", error.message || ""));
    element.replaceChildren(
      el("strong", { className: "problem-detail" }, problem.detail),
      problem.hint ? el("span", { className: "problem-hint" }, "How to fix it: " + problem.hint) : "",
      fields.length ? el("ul", { className: "problem-fields" }, fields) : "",
    );
    element.dataset.code = problem.code || "";
    element.hidden = false;
  }

  function showAuthProblem(problem) {
    const panel = document.getElementById("key-panel");
    const box = document.getElementById("auth-problem");
    if (!panel || !box) return;
    panel.hidden = false;
    document.getElementById("key-form").hidden = false;
    showProblem(box, problem);
  }

  function setUpKeyPanel() {
    if (openMode()) return; // open mode: no key is asked for, none is sent
    const panel = document.getElementById("key-panel");
    const form = document.getElementById("key-form");
    const status = document.getElementById("key-status");
    panel.hidden = false;
    const known = Boolean(storedKey());
    form.hidden = known;
    status.hidden = !known;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = document.getElementById("api-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_ITEM, key);
      location.reload();
    });
    document.getElementById("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      location.reload();
    });
  }

  // A download through fetch (the key stays in the header), saved under `name`.
  async function download(href, name) {
    const response = await call(href);
    if (!response.ok) throw await problemOf(response);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // Server-sent events read from a fetch() body: yields {event, data} until the stream ends.
  async function* events(path, signal) {
    const response = await call(path, { signal, headers: { Accept: "text/event-stream" } });
    if (!response.ok) throw await problemOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // a keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  // "42% · training the student · about 3 min 5 s left"
  function progressText(job) {
    const parts = [Math.floor(job.progress * 100) + "%"];
    if (job.stage && !["succeeded", "failed", "cancelled"].includes(job.state)) {
      parts.push(job.stage);
    }
    if (job.eta_s !== null && job.eta_s !== undefined) {
      parts.push(job.eta_s < 1 ? "almost done" : "about " + duration(job.eta_s) + " left");
    }
    return parts.join(" · ");
  }

  const ended = (state) => ["succeeded", "failed", "cancelled", "expired"].includes(state);
  const TIME = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  const localTime = (iso) => (iso ? new Date(iso).toLocaleString(undefined, TIME) : "");

  document.addEventListener("DOMContentLoaded", setUpKeyPanel);

  return { call, json, el, showProblem, problemOf, download, events, duration, progressText, ended, localTime };
})();
