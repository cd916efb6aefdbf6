// The portal's shell: sign-in, the hash router (#/ resources, #/vm/<resource id>[/tab]), the
// header, notices and the confirmation dialog. Each page is its own module.

import { ApiError, call, token } from "./api.js";
import { renderResources } from "./resources.js";
import { el, errorText, notify, setCrumbs } from "./ui.js";
import { renderVm } from "./vm.js";

const main = document.getElementById("main");
let leaveCurrentPage = null; // what the current page must stop (polling, a websocket)

function renderWho() {
  const who = document.getElementById("who");
  if (!token.get()) {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(
    el("span", { id: "user" }, token.user() || "signed in"),
    el("button", { class: "secondary", type: "button", onclick: signOut }, "Sign out"),
  );
}

function signOut() {
  token.clear();
  location.hash = "#/";
  route();
}

function renderSignIn(message) {
  setCrumbs({ label: "Sign in" });
  const input = el("textarea", {
    id: "token", name: "token", rows: "4", required: true, spellcheck: "false",
    autocomplete: "off", "aria-describedby": "token-help",
  });
  const error = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = el(
    "form", { class: "card signin", onsubmit: async (e) => {
      e.preventDefault();
      token.set(input.value.trim());
      try {
        await call("GET", "/subscriptions"); // proves the token before showing anything
      } catch (err) {
        token.clear();
        error.textContent = errorText(err);
        input.focus();
        return;
      }
      renderWho();
      route();
    } },
    el("h1", {}, "Sign in"),
    el("label", { for: "token" }, "Lab token"),
    input,
    el("p", { id: "token-help", class: "help" },
      "Print one with ", el("code", {}, "lab token"), " (", el("code", {}, "lab token --help"),
      " for roles and scopes). It stays in this tab only."),
    error,
    el("button", { type: "submit", id: "signin" }, "Sign in"),
  );
  main.replaceChildren(form);
  input.focus();
}

export function route() {
  if (leaveCurrentPage) leaveCurrentPage();
  leaveCurrentPage = null;
  notify("");
  renderWho();
  if (!token.get()) {
    renderSignIn();
    return;
  }
  const hash = decodeURIComponent(location.hash.slice(1) || "/");
  const vm = hash.match(/^\/vm(\/subscriptions\/.+?)(?:\/-\/(\w+))?$/);
  const onAuthFailure = (err) => {
    // An expired or refused token: back to sign-in with the API's own words.
    if (err instanceof ApiError && err.status === 401) {
      token.clear();
      renderWho();
      renderSignIn(errorText(err));
      return true;
    }
    return false;
  };
  const context = { main, onAuthFailure };
  leaveCurrentPage = vm
    ? renderVm(context, vm[1], vm[2] || "overview")
    : renderResources(context);
}

window.addEventListener("hashchange", route);
route();
