// The trainee's scenario panel, beside a scenario VM's pages: the ticket (story and
// objective), a timer against the time limit, hints one at a time on request, "Check my
// fix", which runs the scenario's checks in the guest (server-side, over the serial console)
// and shows each check's result and what it saw, reset (with a confirmation), and the report
// once it is solved.

import { call } from "./api.js";
import { confirmAction, el, errorText } from "./ui.js";

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function resultList(results) {
  return el("ul", { class: "checks", id: "check-results" }, results.map((r) =>
    el("li", { class: r.passed ? "pass" : "fail" },
      el("strong", {}, r.passed ? "PASS " : "FAIL "), r.name,
      el("div", { class: "saw" }, r.saw))));
}

function report(s) {
  const minutes = s.seconds ? (s.seconds / 60).toFixed(1) : "?";
  return el("div", { class: "report", id: "scenario-report" },
    el("h3", {}, "Report"),
    el("p", {}, `Solved in ${minutes} minutes, with ${s.hints.shown.length} of ${s.hints.total} ` +
      `hints and ${s.resets} reset(s).`));
}

export function renderScenario(aside, group, name, { onAuthFailure }) {
  const base = `/_portal/api/scenarios/${encodeURIComponent(group)}/${encodeURIComponent(name)}`;
  let ticker = null;
  aside.hidden = false;
  // The panel takes width from the console beside it: the terminal fits itself again.
  window.dispatchEvent(new Event("resize"));
  aside.replaceChildren(el("p", { class: "muted" }, "Loading the scenario..."));

  function render(s) {
    const timer = el("p", { class: "timer", id: "scenario-timer", role: "timer" });
    const hints = el("ol", { class: "hints", id: "hints" }, s.hints.shown.map((h) => el("li", {}, h)));
    const hintButton = el("button", { type: "button", id: "hint", class: "secondary" });
    const results = el("div", { id: "results" }, s.lastResults ? resultList(s.lastResults) : null);
    const checkStatus = el("p", { role: "status", id: "check-status", class: "muted" });
    const skew = Date.now() / 1000 - s.now; // the server's clock decides
    const limit = s.timeLimitMinutes * 60;

    const tick = () => {
      if (!s.startedAt) {
        timer.textContent = "Not started.";
        return;
      }
      const end = s.solvedAt || Date.now() / 1000 - skew;
      const used = end - s.startedAt;
      timer.textContent = s.solvedAt
        ? `Solved in ${clock(used)}.`
        : `${clock(used)} of ${clock(limit)}` + (used > limit ? " (over time)" : "");
      timer.classList.toggle("over", used > limit && !s.solvedAt);
    };
    const hintLabel = () => {
      const n = s.hints.shown.length;
      hintButton.textContent = n >= s.hints.total ? `All ${s.hints.total} hints shown` : `Show hint ${n + 1} of ${s.hints.total}`;
      hintButton.disabled = n >= s.hints.total;
    };
    hintButton.addEventListener("click", async () => {
      try {
        const h = await call("POST", `${base}/hint`);
        if (h.number > s.hints.shown.length) {
          s.hints.shown.push(h.hint);
          hints.append(el("li", {}, h.hint));
        }
        hintLabel();
      } catch (err) {
        checkStatus.textContent = errorText(err);
      }
    });
    const checkButton = el("button", { type: "button", id: "check", onclick: async () => {
      checkButton.disabled = true;
      checkStatus.textContent = "Running the checks in the guest over the serial console " +
        "(they take the console over while they run)...";
      try {
        const r = await call("POST", `${base}/check`);
        results.replaceChildren(resultList(r.results));
        checkStatus.textContent = r.passed ? "Every check passed: well done." : "Not fixed yet: see the failed checks.";
        if (r.solvedAt) {
          s.solvedAt = r.solvedAt;
          s.seconds = r.seconds;
          reportBox.replaceChildren(report(s));
        }
        tick();
      } catch (err) {
        checkStatus.textContent = errorText(err);
      } finally {
        checkButton.disabled = false;
        window.dispatchEvent(new CustomEvent("lab-console-reconnect"));
      }
    } }, "Check my fix");
    const reportBox = el("div", {}, s.solvedAt ? report(s) : null);
    const resetButton = el("button", { type: "button", id: "scenario-reset", class: "danger", onclick: async () => {
      const ok = await confirmAction("Reset the scenario",
        "Start over: the VM's disk goes back to its broken state and the VM boots again. " +
        "Everything you changed in it is lost.", "Reset");
      if (!ok) return;
      resetButton.disabled = true;
      checkStatus.textContent = "Resetting: the VM boots again from its broken disk...";
      try {
        const fresh = await call("POST", `${base}/reset`);
        s.resets = fresh.resets;
        checkStatus.textContent = "Reset: the VM is booting from its broken disk again.";
      } catch (err) {
        checkStatus.textContent = errorText(err);
      } finally {
        resetButton.disabled = false;
        window.dispatchEvent(new CustomEvent("lab-console-reconnect"));
      }
    } }, "Reset the scenario");
    hintLabel();
    tick();
    ticker = setInterval(tick, 1000);
    aside.replaceChildren(
      el("h2", {}, s.title),
      el("p", { class: "muted" }, `${s.level} - ${s.timeLimitMinutes} minutes`),
      timer,
      el("h3", {}, "The ticket"),
      el("p", { class: "story" }, s.story),
      el("h3", {}, "Objective"),
      el("p", {}, s.objective),
      el("h3", {}, "Hints"),
      hints, hintButton,
      el("h3", {}, "Your fix"),
      checkButton, checkStatus, results, reportBox,
      el("h3", {}, "Start over"),
      resetButton,
    );
  }

  call("GET", base).then(render, (err) => {
    if (!onAuthFailure(err)) aside.replaceChildren(el("p", { class: "error" }, errorText(err)));
  });
  return () => clearInterval(ticker);
}
