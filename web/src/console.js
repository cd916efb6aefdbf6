// The serial console pane: xterm.js on the gateway's websocket, with the handshake the Azure
// CLI's extension does (connect for a wss:// connection string; the server speaks first; the
// client answers with its bearer token as a text frame), then keystrokes out and console bytes
// in. The gateway replays recent output on open, so the screen shows where the guest is.
//
// Toolbar: SysRq (a key or a sequence), NMI, Restart (graceful, through the guest) and Reset
// (hard), with the cloud's confirmations. Copy and paste are Ctrl+Shift+C and Ctrl+Shift+V
// (Ctrl+C and Ctrl+V belong to the guest); a paste over PASTE_LIMIT characters is refused with a
// notice rather than cut, since half a command line typed into a root shell is worse than none.

import { CONFIRM_NMI, CONFIRM_RESET, adminCommand, connect } from "./admin.js";
import { longRunning, token } from "./api.js";
import { serialTerminal } from "./terminal.js";
import { confirmAction, el, errorText } from "./ui.js";

export const PASTE_LIMIT = 2048;
// Paste is sent in slices this big, so a long line does not arrive as one huge frame.
const PASTE_SLICE = 256;

export function renderConsole(panel, resourceId, vm) {
  const screen = el("div", { class: "terminal", id: "terminal" });
  const status = el("p", { class: "console-status", id: "console-status", role: "status" });
  const sysrqKeys = el("input", {
    id: "sysrq-keys", size: "8", maxlength: "32", value: "h", "aria-label": "SysRq keys",
    title: "One key (h: help) or a sequence (reisub)",
  });
  let ws = null;
  let connectionString = null;
  let closedByUs = false;

  const say = (text, kind = "info") => {
    status.textContent = text;
    status.className = `console-status ${kind}`;
  };

  const term = serialTerminal({ cursorBlink: true });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);

  async function admin(command, parameters, done) {
    try {
      if (!connectionString) throw new Error("the console is not connected");
      await adminCommand(connectionString, command, parameters);
      say(done);
    } catch (err) {
      say(errorText(err), "error");
    }
  }

  const toolbar = el("div", { class: "toolbar", role: "toolbar", "aria-label": "Serial console" },
    el("label", { for: "sysrq-keys" }, "SysRq"),
    sysrqKeys,
    el("button", { type: "button", id: "send-sysrq", onclick: () => {
      const keys = sysrqKeys.value.trim();
      if (!keys) return say("Type a SysRq key (h for help) or a sequence such as reisub.", "error");
      admin("sysrq", { SysRqCommand: keys }, `SysRq ${keys} sent.`);
    } }, "Send SysRq"),
    el("button", { type: "button", id: "send-nmi", class: "danger", onclick: async () => {
      if (await confirmAction("Send Non-Maskable Interrupt (NMI)", CONFIRM_NMI, "Send NMI")) {
        admin("nmi", {}, "NMI sent successfully.");
      }
    } }, "NMI"),
    el("button", { type: "button", id: "console-restart", onclick: async () => {
      if (await confirmAction("Restart VM", `Do you want to restart '${vm.name}'? The console drops briefly and resumes.`)) {
        say(`Restarting ${vm.name}...`);
        try {
          await longRunning("POST", `${resourceId}/restart`);
          say(`${vm.name} restarted.`);
        } catch (err) {
          say(errorText(err), "error");
        }
      }
    } }, "Restart VM"),
    el("button", { type: "button", id: "console-reset", class: "danger", onclick: async () => {
      if (await confirmAction("Reset VM (hard)", CONFIRM_RESET, "Reset")) {
        admin("reset", {}, "Reset sent: the VM restarts; this console stays connected.");
      }
    } }, "Reset VM"),
    el("button", { type: "button", id: "console-reconnect", onclick: () => open() }, "Reconnect"),
  );
  panel.replaceChildren(
    toolbar,
    status,
    screen,
    el("p", { class: "help" },
      "Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes (at most ",
      PASTE_LIMIT.toLocaleString("en"), " characters). F6 leaves the terminal for the toolbar."),
  );
  term.open(screen);
  fit.fit();

  function paste(text) {
    if (!text) return;
    if (text.length > PASTE_LIMIT) {
      say(`Paste refused: ${text.length.toLocaleString("en")} characters, over the limit of ` +
        `${PASTE_LIMIT.toLocaleString("en")}. Nothing was sent; paste a shorter piece.`, "error");
      return;
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const data = text.replace(/\r?\n/g, "\r"); // what Enter sends
    for (let i = 0; i < data.length; i += PASTE_SLICE) ws.send(data.slice(i, i + PASTE_SLICE));
  }

  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== "keydown") return true;
    if (e.ctrlKey && e.shiftKey && e.code === "KeyC") {
      const selection = term.getSelection();
      if (selection) navigator.clipboard.writeText(selection).then(
        () => say("Copied to the clipboard."),
        (err) => say(`Copy failed: ${err.message}`, "error"));
      e.preventDefault();
      return false;
    }
    if (e.ctrlKey && e.shiftKey && e.code === "KeyV") {
      navigator.clipboard.readText().then(paste,
        (err) => say(`Paste failed: ${err.message}`, "error"));
      e.preventDefault();
      return false;
    }
    if (e.key === "F6") {
      sysrqKeys.focus();
      e.preventDefault();
      return false;
    }
    return true;
  });
  // A paste from the browser's own menu goes through the same limit.
  screen.addEventListener("paste", (e) => {
    e.preventDefault();
    e.stopPropagation();
    paste(e.clipboardData.getData("text/plain"));
  }, true);
  term.onData((data) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
  });

  async function open() {
    if (ws) {
      closedByUs = true;
      ws.close();
    }
    closedByUs = false;
    say("Connecting...");
    try {
      connectionString = await connect(resourceId);
    } catch (err) {
      connectionString = null;
      say(errorText(err), "error");
      return;
    }
    const socket = new WebSocket(connectionString);
    ws = socket;
    socket.binaryType = "arraybuffer";
    let greeted = false;
    socket.onmessage = (event) => {
      if (!greeted) {
        // The server's first frame asks for the token; it is not console output.
        greeted = true;
        socket.send(token.get());
        say(`Connected to ${vm.name}. Press Enter if the screen is blank.`);
        term.focus();
        return;
      }
      term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
    };
    socket.onclose = (event) => {
      if (ws !== socket || closedByUs) return;
      const reason = event.reason || `the connection closed (code ${event.code})`;
      say(`Disconnected: ${reason}. Press Reconnect to connect again.`,
        /another user/.test(reason) ? "warning" : "error");
      ws = null;
    };
    socket.onerror = () => say("The console connection failed.", "error");
  }

  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  // The scenario panel's checks take the console over; it asks for it back when they end.
  const onReconnect = () => {
    if (!ws) open();
  };
  window.addEventListener("lab-console-reconnect", onReconnect);
  open();
  return () => {
    closedByUs = true;
    window.removeEventListener("resize", onResize);
    window.removeEventListener("lab-console-reconnect", onReconnect);
    if (ws) ws.close();
    term.dispose();
    if (window.labTerminal === term) window.labTerminal = null;
  };
}
