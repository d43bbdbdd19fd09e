"use strict";
// The front door (GET /): the caller's jobs, refreshed while any of them runs, and the submit
// form, which posts model, dataset and config to POST /harden as the API documents them.

(() => {
  const { json, call, el, showProblem, problemOf, progressText, ended, localTime } = Harden;
  const PAGE = 20;
  const REFRESH_MS = 2000;
  let offset = 0;
  let refresh = null;

  // --- the jobs --------------------------------------------------------------------------
  function outcome(job) {
    if (job.state === "succeeded") {
      if (!job.verdict) return el("span", { className: "muted" }, "no evaluation");
      const label = job.verdict.label;
      return el("span", { className: "verdict-label verdict-" + label.replace(/ /g, "-"), title: job.verdict.headline }, label);
    }
    if (job.error) {
      return el("span", { className: "reason" },
        el("strong", {}, job.error.message),
        job.error.hint ? el("span", { className: "problem-hint" }, job.error.hint) : "");
    }
    return "";
  }

  function row(job) {
    const method = [].concat(job.spec.method || []).join(", ");
    const running = !ended(job.state);
    return el("tr", { "data-job-id": job.id, "data-state": job.state },
      el("td", {}, el("a", { href: "/ui/jobs/" + job.id }, el("code", {}, job.id.slice(0, 8)))),
      el("td", { className: "when" }, localTime(job.created_at)),
      el("td", {}, method),
      el("td", {}, job.spec.dataset || ""),
      el("td", {}, el("span", { className: "state state-" + job.state }, job.state)),
      el("td", { className: "progress-cell" },
        running || job.state === "succeeded" ? el("progress", { max: "1", value: String(job.progress) }) : "",
        running ? el("span", { className: "muted" }, progressText(job)) : ""),
      el("td", { className: "outcome" }, outcome(job)),
    );
  }

  async function loadJobs() {
    const status = document.getElementById("jobs-status");
    const table = document.getElementById("jobs");
    clearTimeout(refresh);
    let page;
    try {
      page = await json("/jobs?limit=" + PAGE + "&offset=" + offset);
    } catch (problem) {
      table.hidden = true;
      showProblem(status, problem);
      status.className = "problem";
      return;
    }
    status.className = "muted";
    status.textContent = page.total === 0
      ? "No jobs yet: submit one with the form."
      : page.total + " job" + (page.total === 1 ? "" : "s") + ", newest first.";
    table.tBodies[0].replaceChildren(...page.items.map(row));
    table.hidden = page.items.length === 0;
    document.getElementById("jobs-newer").hidden = offset === 0;
    document.getElementById("jobs-older").hidden = !page.next;
    if (page.items.some((job) => !ended(job.state))) {
      refresh = setTimeout(loadJobs, REFRESH_MS);
    }
  }

  async function loadDatasets() {
    const select = document.getElementById("registered-dataset");
    try {
      const page = await json("/datasets?limit=200");
      if (!page.items.length) return;
      select.replaceChildren(...page.items.map((dataset) =>
        el("option", { value: dataset.reference }, dataset.name + " (" + dataset.reference + ")")));
    } catch (_) {
      // The jobs list shows why the API refused (e.g. no key yet).
    }
  }

  // --- the config: the fields write into the JSON that is sent ---------------------------
  const configBox = () => document.getElementById("config");

  function readConfig() {
    const problem = document.getElementById("config-problem");
    try {
      const config = JSON.parse(configBox().value || "{}");
      if (config === null || typeof config !== "object" || Array.isArray(config)) {
        throw new SyntaxError("the config must be a JSON object");
      }
      problem.hidden = true;
      return config;
    } catch (error) {
      problem.textContent = "The config is not valid JSON (" + error.message + "): fix it, then change the fields again.";
      problem.hidden = false;
      return null;
    }
  }

  function setPath(config, path, value) {
    const names = path.split(".");
    const last = names.pop();
    let section = config;
    const parents = [];
    for (const name of names) {
      if (typeof section[name] !== "object" || section[name] === null) section[name] = {};
      parents.push([section, name]);
      section = section[name];
    }
    if (value === undefined) delete section[last];
    else section[last] = value;
    for (const [parent, name] of parents.reverse()) {
      if (Object.keys(parent[name]).length === 0) delete parent[name];
    }
  }

  function datasetChoice() {
    const source = document.querySelector("input[name=dataset-source]:checked").value;
    if (source === "builtin") return document.getElementById("builtin-dataset").value;
    if (source === "registered") return document.getElementById("registered-dataset").value || undefined;
    return "upload";
  }

  function fieldValue(field) {
    const text = field.value.trim();
    if (text === "") return undefined; // left to the contract's default
    if (field.dataset.type === "integer") return Number.parseInt(text, 10);
    if (field.dataset.type === "number") return Number(text);
    return text;
  }

  function writeField(config, field) {
    if (field.id === "evaluation") {
      setPath(config, "evaluation.enabled", field.value === "off" ? false : undefined);
      setPath(config, "evaluation.preset", field.value === "off" || field.value === field.options[0].value ? undefined : field.value);
    } else {
      setPath(config, field.dataset.config, fieldValue(field));
    }
  }

  function syncConfig(changed) {
    const config = readConfig();
    if (config === null) return;
    config.dataset = datasetChoice();
    if (config.dataset === undefined) delete config.dataset;
    for (const field of changed) writeField(config, field);
    configBox().value = JSON.stringify(config, null, 2);
  }

  // --- submitting ------------------------------------------------------------------------
  async function submit(event) {
    event.preventDefault();
    const problemBox = document.getElementById("submit-problem");
    problemBox.hidden = true;
    const model = document.getElementById("model").files[0];
    const refuse = (problem) => {
      showProblem(problemBox, problem);
      problemBox.scrollIntoView({ block: "nearest" }); // below the button: bring it into view
    };
    const local = (detail, hint) => refuse({ detail, hint, errors: [] });
    if (!model) return local("choose a model file", "a TorchScript (.pt), torch.export (.pt2), ONNX or safetensors file");
    const form = new FormData();
    form.append("model", model);
    if (datasetChoice() === "upload") {
      const dataset = document.getElementById("dataset-file").files[0];
      if (!dataset) return local("choose a dataset file, or pick a builtin or registered dataset", "an .npz (x_train, y_train, x_test, y_test) or an image-folder archive");
      form.append("dataset", dataset);
    }
    form.append("config", configBox().value);
    const button = document.getElementById("submit");
    button.disabled = true;
    try {
      const response = await call("/harden", { method: "POST", body: form });
      if (!response.ok) {
        refuse(await problemOf(response));
        return;
      }
      const job = await response.json();
      location.assign("/ui/jobs/" + job.id);
    } catch (error) {
      local("the service did not answer: " + error.message, "check that it runs, then submit again");
    } finally {
      button.disabled = false;
    }
  }

  function showMethodTitle() {
    const method = document.getElementById("method");
    document.getElementById("method-title").textContent = method.selectedOptions[0].dataset.title;
  }

  document.addEventListener("DOMContentLoaded", () => {
    showMethodTitle();
    document.getElementById("method").addEventListener("input", showMethodTitle);
    const fields = [...document.querySelectorAll("[data-config]")];
    syncConfig(fields);
    for (const field of fields) {
      field.addEventListener("input", () => syncConfig([field]));
    }
    for (const id of ["builtin-dataset", "registered-dataset", "dataset-file"]) {
      document.getElementById(id).addEventListener("change", () => {
        const source = { "builtin-dataset": "builtin", "registered-dataset": "registered", "dataset-file": "upload" }[id];
        document.querySelector("input[name=dataset-source][value=" + source + "]").checked = true;
        syncConfig([]);
      });
    }
    for (const radio of document.querySelectorAll("input[name=dataset-source]")) {
      radio.addEventListener("change", () => syncConfig([]));
    }
    document.getElementById("submit-form").addEventListener("submit", submit);
    document.getElementById("jobs-newer").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadJobs(); });
    document.getElementById("jobs-older").addEventListener("click", () => { offset += PAGE; loadJobs(); });
    loadJobs();
    loadDatasets();
  });
})();
