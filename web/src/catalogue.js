// The trainee's catalogue (#/scenarios): every scenario with its level, estimated minutes and
// whether it is done, and Start. A start the lab cannot take at once is queued (capacity
// admission): the row shows its place and an estimate until it runs, then the page opens the
// VM's serial console with the scenario panel beside it.

import { call } from "./api.js";
import { el, errorText, notify, setCrumbs } from "./ui.js";

const POLL_MS = 1000;

function statusText(s) {
  if (s.started === undefined) return "";
  if (s.queue && s.queue.estimateSeconds === null) {
    return `Queued: #${s.queue.position}, waiting for memory (until other VMs stop)`;
  }
  if (s.queue) return `Queued: #${s.queue.position}, about ${Math.ceil(s.queue.estimateSeconds)} s`;
  if (s.starting) return "Starting...";
  if (s.started) return s.done ? "Done (running)" : "Started";
  return s.done ? "Done" : "Not done";
}

export function renderCatalogue({ main, onAuthFailure }) {
  setCrumbs({ label: "Scenarios" });
  let timer = null;
  let stopped = false;
  const opening = new Set(); // started from this page: open their console once they run
  const status = el("p", { role: "status", id: "catalogue-status", class: "muted" });
  const body = el("tbody");
  main.replaceChildren(
    el("h1", {}, "Scenarios"),
    el("p", { class: "help" }, "Each scenario is a VM of your own that does not boot properly. " +
      "Start one, fix it through its serial console, and press \"Check my fix\"."),
    status,
    el("table", { class: "list", id: "catalogue" },
      el("thead", {}, el("tr", {}, ["Scenario", "Level", "Minutes", "Status", ""].map(
        (h) => el("th", { scope: "col" }, h)))),
      body),
  );

  const consoleOf = (s) => `#/vm${s.vmId}/-/console`;

  async function start(s) {
    try {
      await call("POST", `/_portal/api/scenarios/${encodeURIComponent(groupOf(s))}/${encodeURIComponent(s.name)}/start`);
      opening.add(s.name);
      status.textContent = `Starting ${s.title}...`;
      refresh();
    } catch (err) {
      if (!onAuthFailure(err)) notify(errorText(err));
    }
  }

  function render(list) {
    body.replaceChildren(...list.value.map((s) => {
      let action = null;
      if (s.started) action = el("a", { href: consoleOf(s), class: "button", id: `open-${s.name}` }, "Open");
      else if (s.started === false && !s.starting && !s.queue) {
        action = el("button", { type: "button", id: `start-${s.name}`, onclick: () => start(s) }, "Start");
      }
      return el("tr", { id: `row-${s.name}`, class: s.done ? "done" : null },
        el("td", {}, el("strong", {}, s.title), el("div", { class: "muted" }, s.name)),
        el("td", {}, s.level),
        el("td", {}, String(s.timeLimitMinutes)),
        el("td", { class: "scenario-status", "aria-live": "polite" }, statusText(s)),
        el("td", {}, action));
    }));
  }

  let group = null;
  const groupOf = () => group;

  async function refresh() {
    clearTimeout(timer);
    try {
      const list = await call("GET", "/_portal/api/scenarios");
      if (stopped) return;
      group = list.group;
      render(list);
      for (const s of list.value) {
        if (opening.has(s.name) && s.started && !s.starting) {
          location.hash = consoleOf(s);
          return;
        }
      }
      const busy = list.value.some((s) => s.starting || s.queue);
      timer = setTimeout(refresh, busy ? POLL_MS : 5 * POLL_MS);
    } catch (err) {
      if (stopped || onAuthFailure(err)) return;
      status.textContent = errorText(err);
      timer = setTimeout(refresh, 5 * POLL_MS);
    }
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
