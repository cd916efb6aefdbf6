// A VM's (or a scale-set instance's) page: the header with its power buttons, the tabs
// (overview, serial console, boot diagnostics), and the trainee's scenario panel when the VM is
// a training scenario's (tag `scenario`).

import { CONFIRM_RESET, adminCommandOn } from "./admin.js";
import { call, longRunning, parseId, powerState } from "./api.js";
import { renderBootDiagnostics } from "./bootdiag.js";
import { renderConsole } from "./console.js";
import { renderScenario } from "./scenario.js";
import { confirmAction, el, errorText, notify, setCrumbs } from "./ui.js";

const POLL_MS = 3000;
const TABS = [
  ["overview", "Overview"],
  ["console", "Serial console"],
  ["bootdiag", "Boot diagnostics"],
];

/** "demodiag" from "https://demodiag.blob.core.windows.net/"; null storageUri = managed. */
function storageAccount(uri) {
  if (!uri) return "managed storage account";
  try {
    return new URL(uri).hostname.split(".")[0];
  } catch {
    return uri;
  }
}

function overview(vm, ids) {
  const p = vm.properties;
  const bd = p.diagnosticsProfile.bootDiagnostics;
  const rows = [
    ["Resource group", ids.group],
    ["Status", el("span", { id: "power-state" }, powerState(p.instanceView))],
    ["Size", (p.hardwareProfile && p.hardwareProfile.vmSize) || (vm.sku && vm.sku.name)],
    ["Image", `${p.storageProfile.imageReference.offer} (${p.storageProfile.osDisk.osType})`],
    ["Computer name", p.osProfile.computerName],
    ["Admin user", p.osProfile.adminUsername],
    ["Boot diagnostics", bd.enabled ? `On: ${storageAccount(bd.storageUri)}` : "Off"],
    ["Location", vm.location],
    ["VM id", p.vmId],
  ];
  if (ids.kind === "instance") {
    rows.splice(1, 0, ["Scale set", ids.scaleSet], ["Instance id", ids.instanceId]);
    rows.push(["Latest model applied", p.latestModelApplied ? "Yes" : "No"]);
  }
  const tags = Object.entries(vm.tags || {});
  if (tags.length) rows.push(["Tags", tags.map(([k, v]) => `${k}: ${v}`).join(", ")]);
  return el("dl", { class: "card overview" },
    rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "")]));
}

/** The power buttons, with the cloud's confirmations for the disruptive ones. */
function powerButtons(resourceId, name, refresh) {
  const act = async (label, work) => {
    notify(`${label} ${name}...`, "info");
    try {
      await work();
      notify(`${label} ${name}: done.`, "info");
    } catch (err) {
      notify(errorText(err));
    }
    refresh();
  };
  const action = (a) => () => longRunning("POST", `${resourceId}/${a}`);
  return el("div", { class: "toolbar", role: "toolbar", "aria-label": "Power" },
    el("button", { type: "button", id: "vm-start", onclick: () => act("Starting", action("start")) },
      "Start"),
    el("button", { type: "button", id: "vm-restart", onclick: async () => {
      if (await confirmAction("Restart virtual machine", `Do you want to restart '${name}'?`)) {
        act("Restarting", action("restart"));
      }
    } }, "Restart"),
    el("button", { type: "button", id: "vm-stop", onclick: async () => {
      if (await confirmAction("Stop virtual machine", `Do you want to stop '${name}'?`)) {
        act("Stopping", action("powerOff"));
      }
    } }, "Stop"),
    el("button", { type: "button", id: "vm-reset", class: "danger", onclick: async () => {
      if (await confirmAction("Reset VM (hard)", CONFIRM_RESET, "Reset")) {
        act("Resetting", () => adminCommandOn(resourceId, "reset"));
      }
    } }, "Reset"),
  );
}

export function renderVm({ main, onAuthFailure }, resourceId, tab) {
  const ids = parseId(resourceId);
  let stopped = false;
  let timer = null;
  let leaveTab = null;
  let leaveScenario = null;
  if (!ids) {
    main.replaceChildren(el("p", { class: "error" }, `Not a VM's resource id: ${resourceId}`));
    return () => {};
  }
  setCrumbs({ label: "Resources", href: "#/" }, { label: ids.group }, { label: ids.name });
  const tabLink = ([key, label]) =>
    el("a", {
      href: `#/vm${resourceId}/-/${key}`, id: `tab-${key}`, role: "tab",
      "aria-selected": key === tab ? "true" : "false",
      "aria-current": key === tab ? "page" : null,
    }, label);
  const panel = el("section", { id: "tab-panel", role: "tabpanel", "aria-labelledby": `tab-${tab}` });
  const aside = el("aside", { id: "scenario", "aria-label": "Scenario", hidden: true });
  const header = el("div", { class: "vm-header" });
  main.replaceChildren(
    header,
    el("nav", { class: "tabs", role: "tablist", "aria-label": "VM views" }, TABS.map(tabLink)),
    el("div", { class: "vm-body" }, panel, aside),
  );

  async function refresh() {
    clearTimeout(timer);
    try {
      const vm = await call("GET", `${resourceId}?$expand=instanceView`);
      if (stopped) return;
      const state = powerState(vm.properties.instanceView);
      if (!header.firstChild) {
        header.replaceChildren(
          el("h1", {}, ids.name, " ",
            el("span", { class: "muted" }, ids.kind === "instance" ? "scale-set instance" : "virtual machine")),
          el("span", { class: `state state-${state}`, id: "header-state", "aria-live": "polite" }, state),
          powerButtons(resourceId, ids.name, refresh),
        );
        showTab(vm);
        const scenario = (vm.tags || {}).scenario;
        if (scenario) leaveScenario = renderScenario(aside, ids.group, scenario, { onAuthFailure });
      } else {
        const badge = header.querySelector("#header-state");
        badge.textContent = state;
        badge.className = `state state-${state}`;
        const cell = panel.querySelector("#power-state");
        if (cell) cell.textContent = state;
      }
    } catch (err) {
      if (stopped || onAuthFailure(err)) return;
      notify(errorText(err));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  function showTab(vm) {
    if (tab === "console") leaveTab = renderConsole(panel, resourceId, vm);
    else if (tab === "bootdiag") leaveTab = renderBootDiagnostics(panel, resourceId, vm);
    else panel.replaceChildren(overview(vm, ids));
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (leaveTab) leaveTab();
    if (leaveScenario) leaveScenario();
  };
}
