// The instructor's pages: the classes they teach (#/classes), and a class's live table
// (#/class/<name>): trainees x scenarios with state, elapsed time, hints, resets, the last
// check and when it was solved. The table arrives by server push (server-sent events, read
// with fetch so the bearer token travels in a header, never in a URL); the page never polls
// the trainees. From a row: watch the trainee's console read-only, or reset their VM.

import { call, token } from "./api.js";
import { confirmAction, el, errorText, notify, setCrumbs } from "./ui.js";

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function renderClasses({ main, onAuthFailure }) {
  setCrumbs({ label: "Classes" });
  main.replaceChildren(el("h1", {}, "Classes"), el("p", { class: "muted" }, "Loading..."));
  call("GET", "/_portal/api/classes").then((r) => {
    main.replaceChildren(
      el("h1", {}, "Classes"),
      r.value.length
        ? el("ul", { id: "classes" }, r.value.map((c) => el("li", {},
          el("a", { href: `#/class/${encodeURIComponent(c.name)}` }, c.name),
          ` (${c.trainees} trainees)`)))
        : el("p", {}, "You teach no class. ", el("code", {}, "lab class create NAME --trainees N --instructor YOU"), " makes one."),
    );
  }, (err) => {
    if (!onAuthFailure(err)) notify(errorText(err));
  });
  return () => {};
}

/** Read a server-sent event stream with fetch; calls onEvent(name, data) per event. */
async function readEvents(url, signal, onEvent) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token.get()}` }, signal });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

async function download(path, filename) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token.get()}` } });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const link = el("a", { href: URL.createObjectURL(await r.blob()), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
}

export function renderClass({ main, onAuthFailure }, name) {
  setCrumbs({ label: "Classes", href: "#/classes" }, { label: name });
  const base = `/_portal/api/classes/${encodeURIComponent(name)}`;
  const status = el("p", { role: "status", id: "class-status", class: "muted" }, "Connecting...");
  const body = el("tbody");
  const abort = new AbortController();
  let table = null;
  let skew = 0;
  const exportButton = (kind) => el("button", {
    type: "button", class: "secondary", id: `export-${kind}`,
    onclick: () => download(`${base}/results.${kind}`, `${name}-results.${kind}`).catch(
      (err) => notify(errorText(err))),
  }, `Export ${kind.toUpperCase()}`);
  const endButton = el("button", { type: "button", class: "danger", id: "end-class", onclick: async () => {
    const ok = await confirmAction(`End class ${name}`,
      "Every trainee's VMs and disks are deleted and their accounts removed. The results are " +
      "kept in a file on the lab (export them first to have a copy here).", "End the class");
    if (!ok) return;
    endButton.disabled = true;
    try {
      const gone = await call("DELETE", base);
      notify(`Class ${name} ended: ${gone.vmsDeleted} VM(s) deleted; results kept in ${gone.results}.`, "info");
    } catch (err) {
      notify(errorText(err));
      endButton.disabled = false;
    }
  } }, "End the class");
  main.replaceChildren(
    el("h1", {}, `Class ${name}`),
    el("div", { class: "toolbar" }, exportButton("csv"), exportButton("json"), endButton),
    status,
    el("table", { class: "list", id: "class-table" },
      el("thead", {}, el("tr", {}, ["Trainee", "Scenario", "State", "Elapsed", "Hints", "Resets",
        "Last check", "Solved in", ""].map((h) => el("th", { scope: "col" }, h)))),
      body),
  );

  async function reset(row) {
    const ok = await confirmAction("Reset the trainee's VM",
      `Reset ${row.trainee}'s ${row.scenario} to its broken state? Their changes are lost.`, "Reset");
    if (!ok) return;
    try {
      await call("POST", `/_portal/api/scenarios/${encodeURIComponent(row.group)}/${encodeURIComponent(row.scenario)}/reset`);
      notify(`${row.trainee}'s ${row.scenario} was reset.`, "info");
    } catch (err) {
      notify(errorText(err));
    }
  }

  function elapsed(row) {
    if (!row.startedAt) return "-";
    if (row.solvedAt || row.state === "stopped") return clock(row.elapsedSeconds);
    return clock(Date.now() / 1000 - skew - row.startedAt);
  }

  function render() {
    if (!table) return;
    body.replaceChildren(...table.rows.map((row) => {
      const id = `${row.trainee}-${row.scenario || "none"}`;
      const live = row.scenario && !["stopped", "not started", "queued", "starting"].includes(row.state);
      let state = row.state;
      if (row.queuePosition) {
        state += row.queueEstimateSeconds === null ? ` (#${row.queuePosition}, waiting for memory)`
          : ` (#${row.queuePosition}, ~${Math.ceil(row.queueEstimateSeconds)} s)`;
      }
      return el("tr", { id: `row-${id}`, "data-state": row.state },
        el("td", {}, row.trainee),
        el("td", {}, row.scenario || "-"),
        el("td", { class: `state state-${row.state.replace(/\s/g, "-")}` }, state),
        el("td", { class: "elapsed" }, elapsed(row)),
        el("td", { class: "hints" }, String(row.hintsUsed ?? "-")),
        el("td", { class: "resets" }, String(row.resets ?? "-")),
        el("td", { class: "last-check" }, row.lastCheck || "-"),
        el("td", { class: "solved" }, row.solvedSeconds ? clock(row.solvedSeconds) : "-"),
        el("td", {}, live ? [
          el("a", { href: `#/watch/${encodeURIComponent(row.group)}/${encodeURIComponent(row.scenario)}`, class: "button secondary", id: `watch-${id}` }, "Watch"),
          " ",
          el("button", { type: "button", class: "danger", id: `reset-${id}`, onclick: () => reset(row) }, "Reset"),
        ] : null));
    }));
  }

  const ticker = setInterval(render, 1000); // elapsed times count on between pushes
  readEvents(`${base}/events`, abort.signal, (event, data) => {
    if (event === "ended") {
      status.textContent = "The class has ended.";
      return;
    }
    table = data;
    skew = Date.now() / 1000 - data.now;
    status.textContent = `Live: ${data.trainees.length} trainees. Updated ${new Date().toLocaleTimeString()}.`;
    window.labClassTable = data; // for tests and scripts
    render();
  }).catch((err) => {
    if (abort.signal.aborted) return;
    status.textContent = `The live table stopped: ${err.message}. Reload the page to reconnect.`;
  });
  return () => {
    abort.abort();
    clearInterval(ticker);
  };
}
