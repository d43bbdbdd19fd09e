"use strict";
// One job's page (GET /ui/jobs/{id}): live progress from GET /jobs/{id}/events until the job
// ends, then its verdict or failure, its downloads and report.html in a sandboxed frame.

(() => {
  const { json, call, el, showProblem, problemOf, download, events, progressText, ended, localTime } = Harden;
  const RETRY_MS = 2000;
  const jobId = () => document.getElementById("job").dataset.jobId;
  let job = null;
  let updates = 0;
  let reportUrl = null;

  function render() {
    const state = document.getElementById("state");
    state.textContent = job.state + (job.cancel_requested && !ended(job.state) ? " (cancelling)" : "");
    state.className = "state state-" + job.state;
    document.getElementById("job").dataset.state = job.state;
    const method = [].concat(job.spec.method || []).join(", ");
    document.getElementById("summary").textContent =
      method + " on " + job.spec.dataset + " · " + job.model_format + " upload · submitted " + localTime(job.created_at) +
      (job.finished_at ? " · ended " + localTime(job.finished_at) : "");
    const bar = document.getElementById("progress");
    bar.value = job.progress;
    bar.hidden = job.state === "failed" || job.state === "cancelled";
    document.getElementById("progress-text").textContent = progressText(job);
    document.getElementById("cancel").hidden = ended(job.state) || job.cancel_requested;
    const error = document.getElementById("error");
    if (job.error) {
      showProblem(error, { detail: job.error.message, hint: job.error.hint, code: job.error.code, errors: [] });
    } else {
      error.hidden = true;
    }
    const verdict = document.getElementById("verdict");
    if (job.verdict) {
      const label = job.verdict.label;
      verdict.replaceChildren(
        el("span", { className: "verdict-label verdict-" + label.replace(/ /g, "-") }, label),
        el("p", {}, job.verdict.headline),
      );
      verdict.hidden = false;
    } else {
      verdict.hidden = true;
    }
  }

  function setLive(text) {
    document.getElementById("live").textContent = text;
  }

  function showDownloads() {
    const box = document.getElementById("downloads");
    const names = Object.keys(job.artifacts || {});
    if (!names.length) return;
    const problem = el("div", { className: "problem", hidden: true });
    box.replaceChildren(el("span", {}, "Downloads: "), ...names.map((name) => {
      const button = el("button", { type: "button", "data-artifact": name }, name);
      button.addEventListener("click", () => download(job.artifacts[name].href, name).catch((p) => showProblem(problem, p)));
      return button;
    }), problem);
    box.hidden = false;
  }

  async function showReport() {
    const artifact = (job.artifacts || {})["report.html"];
    if (!artifact) return;
    const response = await call(artifact.href);
    if (!response.ok) {
      showProblem(document.getElementById("error"), await problemOf(response));
      return;
    }
    const html = await response.text();
    // sandbox="" (no scripts, an opaque origin): the report cannot read this page or its key.
    document.getElementById("report").srcdoc = html;
    reportUrl = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    document.getElementById("report-card").hidden = false;
  }

  async function finish() {
    job = await json("/jobs/" + jobId()); // the whole job again: its artifacts and verdict
    render();
    setLive("Ended · " + updates + " live update" + (updates === 1 ? "" : "s") + " received.");
    if (job.state === "succeeded") {
      showDownloads();
      await showReport();
    }
  }

  async function follow() {
    setLive("Connecting to the job's event stream…");
    try {
      for await (const { event, data } of events("/jobs/" + jobId() + "/events")) {
        if (event === "job") {
          job = data;
        } else if (event === "progress") {
          // What is null is left out of a progress event: an ETA gone stays gone.
          job = Object.assign({}, job, { eta_s: null, error: null, verdict: null }, data);
        } else if (event === "end") {
          await finish();
          return;
        } else {
          continue;
        }
        updates += 1;
        render();
        setLive("Live · " + updates + " update" + (updates === 1 ? "" : "s") + " received.");
      }
      throw new Error("the event stream closed early");
    } catch (problem) {
      if (problem && problem.status) {
        const state = document.getElementById("state");
        state.textContent = problem.status === 404 ? "not found" : "not shown";
        state.className = "state state-failed";
        showProblem(document.getElementById("error"), problem);
        setLive("");
        return;
      }
      // The connection dropped (a restart, a proxy): follow again; the stream starts with
      // the whole job.
      setLive("Reconnecting (" + (problem && problem.message ? problem.message : problem) + ")…");
      setTimeout(follow, RETRY_MS);
    }
  }

  async function cancel() {
    const button = document.getElementById("cancel");
    button.disabled = true;
    try {
      job = await json("/jobs/" + jobId() + "/cancel", { method: "POST" });
      render();
    } catch (problem) {
      showProblem(document.getElementById("error"), problem);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("cancel").addEventListener("click", cancel);
    document.getElementById("report-open").addEventListener("click", () => {
      if (reportUrl) window.open(reportUrl, "_blank", "noopener");
    });
    follow();
  });
})();
