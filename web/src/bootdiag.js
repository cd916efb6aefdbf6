// Boot diagnostics: the serial log (every byte since the first power-on) and the latest
// screenshot, read from the blob URIs that retrieveBootDiagnosticsData signs (SAS). Follow mode
// reads only the new bytes (a Range request from the last offset), as `lab boot-log --follow`.

import { call } from "./api.js";
import { el, errorText } from "./ui.js";

const FOLLOW_MS = 2000;
// The log view keeps this much text; the download has all of it.
const VIEW_LIMIT = 512 * 1024;

/** What a person reads: terminal control sequences and carriage returns left out. */
function readable(text) {
  return text
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "")
    .replace(/\x1b[()][0-9A-Za-z]/g, "")
    .replace(/\r(?!\n)/g, "")
    .replace(/\r\n/g, "\n");
}

export function renderBootDiagnostics(panel, resourceId, vm) {
  if (!vm.properties.diagnosticsProfile.bootDiagnostics.enabled) {
    panel.replaceChildren(el("p", { class: "card" },
      "Boot diagnostics is off for this VM, so there is no serial log or screenshot."));
    return () => {};
  }
  const log = el("pre", { class: "serial-log", id: "serial-log", tabindex: "0",
    "aria-label": "Serial log" });
  const status = el("p", { class: "muted", id: "log-status", role: "status" });
  const follow = el("input", { type: "checkbox", id: "follow", checked: true });
  const download = el("a", { id: "log-download", class: "button", download: `${vm.name}.serialconsole.log` },
    "Download log");
  const shot = el("img", { id: "screenshot", alt: `Latest screenshot of ${vm.name}` });
  let uris = null;
  let offset = 0;
  const decoder = new TextDecoder(); // keeps a character split across two reads whole
  let timer = null;
  let stopped = false;

  async function sign() {
    uris = await call("POST", `${resourceId}/retrieveBootDiagnosticsData?sasUriExpirationTimeInMinutes=60`);
    download.href = uris.serialConsoleLogBlobUri;
  }

  async function readLog() {
    clearTimeout(timer);
    try {
      if (!uris) await sign();
      // From one byte before the offset: a range that starts at the end would be a 416, which
      // the browser logs as an error on every quiet poll. That byte is dropped again.
      const from = Math.max(0, offset - 1);
      const r = await fetch(uris.serialConsoleLogBlobUri, { headers: { Range: `bytes=${from}-` } });
      if (r.status === 206 || r.status === 200) {
        const bytes = new Uint8Array(await r.arrayBuffer()).slice(offset - from);
        offset += bytes.length;
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.textContent = (log.textContent + readable(decoder.decode(bytes, { stream: true }))).slice(-VIEW_LIMIT);
        if (follow.checked && atBottom) log.scrollTop = log.scrollHeight;
      } else if (r.status !== 416) { // 416: an empty log (nothing printed yet)
        throw new Error(`reading the log: HTTP ${r.status}`);
      }
      status.textContent = `${offset.toLocaleString("en")} bytes` + (follow.checked ? ", following" : "");
    } catch (err) {
      status.textContent = errorText(err);
    }
    if (!stopped && follow.checked) timer = setTimeout(readLog, FOLLOW_MS);
  }

  async function screenshot() {
    try {
      if (!uris) await sign();
      // A new query string each time: the screenshot is taken when the blob is read.
      shot.src = `${uris.consoleScreenshotBlobUri}&t=${Date.now()}`;
    } catch (err) {
      status.textContent = errorText(err);
    }
  }

  follow.addEventListener("change", () => {
    if (follow.checked) {
      log.scrollTop = log.scrollHeight;
      readLog();
    }
  });
  panel.replaceChildren(
    el("div", { class: "bootdiag" },
      el("section", { class: "card", "aria-labelledby": "log-title" },
        el("h2", { id: "log-title" }, "Serial log"),
        el("div", { class: "toolbar" },
          el("label", {}, follow, " Follow"),
          download,
          el("button", { type: "button", onclick: () => readLog() }, "Refresh")),
        status, log),
      el("section", { class: "card", "aria-labelledby": "shot-title" },
        el("h2", { id: "shot-title" }, "Screenshot"),
        el("div", { class: "toolbar" },
          el("button", { type: "button", id: "shot-refresh", onclick: screenshot }, "Refresh")),
        shot)),
  );
  readLog().then(screenshot);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
