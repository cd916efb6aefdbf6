// Watching a trainee's serial console (#/watch/<group>/<scenario>): read-only, for the
// trainee's instructors. The server replays the recent output first, so the screen shows where
// the trainee is; keystrokes are not sent (the server would refuse them anyway).

import { token } from "./api.js";
import { serialTerminal } from "./terminal.js";
import { el, setCrumbs } from "./ui.js";

export function renderWatch({ main }, group, name) {
  setCrumbs({ label: "Classes", href: "#/classes" }, { label: `${group} / ${name}` }, { label: "Watch" });
  const status = el("p", { class: "console-status", id: "console-status", role: "status" }, "Connecting...");
  const screen = el("div", { class: "terminal", id: "terminal" });
  main.replaceChildren(
    el("h1", {}, `${group} / ${name} `, el("span", { class: "muted" }, "serial console, read-only")),
    status, screen);
  const term = serialTerminal({ cursorBlink: false, disableStdin: true });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  const url = `${location.origin.replace(/^http/, "ws")}/_portal/api/watch/${encodeURIComponent(group)}/${encodeURIComponent(name)}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  let greeted = false;
  ws.onmessage = (event) => {
    if (!greeted) {
      greeted = true; // the server's first frame asks for the token
      ws.send(token.get());
      status.textContent = `Watching ${group}/${name} (read-only).`;
      return;
    }
    term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  };
  ws.onclose = (event) => {
    status.textContent = `Disconnected: ${event.reason || `code ${event.code}`}.`;
  };
  return () => {
    ws.close();
    term.dispose();
    if (window.labTerminal === term) window.labTerminal = null;
  };
}
