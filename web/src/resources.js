// The resource list: subscriptions -> resource groups -> VMs, scale sets and their instances,
// with power states polled every few seconds. Only what the token may read is listed (the API
// leaves the rest out). When only states change, only their cells are updated, so keyboard
// focus stays where it is.

import { call, powerState } from "./api.js";
import { el, errorText, notify, setCrumbs } from "./ui.js";

const POLL_MS = 3000;

/** Everything the list shows, read from the API: [{subscription, groups: [{name, rows}]}]. */
async function load() {
  const subscriptions = (await call("GET", "/subscriptions")).value;
  return Promise.all(
    subscriptions.map(async (sub) => {
      const base = `/subscriptions/${sub.subscriptionId}`;
      const [groups, vms, sets] = await Promise.all([
        call("GET", `${base}/resourcegroups`),
        call("GET", `${base}/providers/Microsoft.Compute/virtualMachines?statusOnly=true`),
        call("GET", `${base}/providers/Microsoft.Compute/virtualMachineScaleSets`),
      ]);
      const instancesOf = await Promise.all(
        sets.value.map((s) =>
          call("GET", `${s.id}/virtualMachines?$expand=instanceView`).then(
            (r) => r.value,
            () => [], // a set the caller may see but not its instances: list it alone
          ),
        ),
      );
      const rows = [];
      for (const vm of vms.value) rows.push(vmRow(vm));
      sets.value.forEach((set, i) => {
        rows.push({
          id: set.id, name: set.name, kind: "Scale set", group: groupOf(set.id),
          size: `${set.sku.name} x ${set.sku.capacity}`, state: "", href: null,
        });
        for (const inst of instancesOf[i]) rows.push({ ...vmRow(inst), kind: "Instance", child: true });
      });
      return {
        subscription: sub,
        groups: groups.value.map((g) => ({
          name: g.name,
          rows: rows.filter((r) => r.group.toLowerCase() === g.name.toLowerCase()),
        })),
      };
    }),
  );
}

function groupOf(id) {
  return id.split("/")[4];
}

function vmRow(vm) {
  const props = vm.properties;
  return {
    id: vm.id,
    name: vm.name,
    kind: "Virtual machine",
    group: groupOf(vm.id),
    size: (props.hardwareProfile && props.hardwareProfile.vmSize) || (vm.sku && vm.sku.name) || "",
    image: props.storageProfile.imageReference.offer,
    state: powerState(props.instanceView),
    href: `#/vm${vm.id}`,
  };
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function table(group) {
  if (!group.rows.length) return el("p", { class: "empty" }, "No resources you can see.");
  return el(
    "table", { class: "resources" },
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "Type"),
      el("th", { scope: "col" }, "Size"), el("th", { scope: "col" }, "Image"),
      el("th", { scope: "col" }, "Power state"))),
    el("tbody", {}, group.rows.map((r) =>
      el("tr", { class: r.child ? "child" : "", "data-id": r.id },
        el("th", { scope: "row" }, r.href ? el("a", { href: r.href }, r.name) : r.name),
        el("td", {}, r.kind), el("td", {}, r.size), el("td", {}, r.image || ""),
        el("td", { class: "state-cell" }, r.state ? stateBadge(r.state) : "")))),
  );
}

function render(main, data) {
  main.replaceChildren(
    el("h1", {}, "Resources"),
    ...(data.length ? [] : [el("p", { class: "empty" }, "This token can see no subscription.")]),
    ...data.map((s) =>
      el("section", { class: "subscription", "aria-label": s.subscription.displayName },
        el("h2", {}, s.subscription.displayName, " ",
          el("span", { class: "muted" }, s.subscription.subscriptionId)),
        ...s.groups.map((g) =>
          el("section", { class: "card group" },
            el("h3", {}, el("span", { class: "muted" }, "Resource group "), g.name),
            table(g))))),
    el("p", { class: "muted live" }, `Power states refresh every ${POLL_MS / 1000} s.`),
  );
}

function shape(data) {
  return JSON.stringify(data.map((s) => s.groups.map((g) => [g.name, g.rows.map((r) => r.id)])));
}

export function renderResources({ main, onAuthFailure }) {
  setCrumbs({ label: "Resources", href: "#/" });
  main.replaceChildren(el("p", { class: "muted" }, "Loading resources..."));
  let stopped = false;
  let lastShape = null;
  let timer = null;

  async function refresh() {
    try {
      const data = await load();
      if (stopped) return;
      const now = shape(data);
      if (now !== lastShape) {
        render(main, data);
        lastShape = now;
      } else {
        for (const row of data.flatMap((s) => s.groups.flatMap((g) => g.rows))) {
          const cell = main.querySelector(`tr[data-id="${CSS.escape(row.id)}"] .state-cell`);
          if (cell && row.state && cell.textContent !== row.state) {
            cell.replaceChildren(stateBadge(row.state));
          }
        }
      }
      notify("");
    } catch (err) {
      if (stopped || onAuthFailure(err)) return;
      notify(errorText(err));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
