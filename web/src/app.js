// The portal's shell: sign-in, the hash router (#/ resources, #/vm/<resource id>[/tab]), the
// header, notices and the confirmation dialog. Each page is its own module.

import { ApiError, call, signInWithPassword, token } from "./api.js";
import { renderCatalogue } from "./catalogue.js";
import { renderClass, renderClasses } from "./classroom.js";
import { renderResources } from "./resources.js";
import { el, errorText, notify, setCrumbs } from "./ui.js";
import { renderVm } from "./vm.js";
import { renderWatch } from "./watch.js";

const main = document.getElementById("main");
let leaveCurrentPage = null; // what the current page must stop (polling, a websocket)
let me = null; // who the token names (GET /_portal/api/me), read once per sign-in

function renderWho() {
  const who = document.getElementById("who");
  if (!token.get()) {
    who.replaceChildren();
    return;
  }
  const user = el("span", { id: "user" }, token.user() || "signed in");
  const roles = el("span", { id: "roles", class: "muted" });
  const links = el("nav", { class: "links", "aria-label": "Pages" },
    el("a", { href: "#/resources", id: "nav-resources" }, "Resources"), " ",
    el("a", { href: "#/scenarios", id: "nav-scenarios" }, "Scenarios"));
  who.replaceChildren(
    links, user, roles,
    el("button", { class: "secondary", type: "button", onclick: signOut }, "Sign out"),
  );
  // Who the API says this is, and the roles it holds now (they can change while signed in).
  call("GET", "/_portal/api/me").then((found) => {
    me = found;
    user.textContent = found.name;
    if (found.traineeOf) roles.textContent = `trainee of class ${found.traineeOf}`;
    else if (found.instructs.length) roles.textContent = `instructor of ${found.instructs.join(", ")}`;
    else roles.textContent = found.roleAssignments.map((r) => `${r.role} at ${r.scope}`).join("; ");
    if (found.instructs.length) {
      links.append(" ", el("a", { href: "#/classes", id: "nav-classes" }, "Classes"));
    }
  }).catch(() => {});
}

function signOut() {
  token.clear();
  me = null;
  location.hash = "#/";
  route();
}

/** Use `value` as the bearer token if the API takes it; otherwise say why, and keep none. */
async function tryToken(value, error) {
  token.set(value);
  try {
    await call("GET", "/subscriptions"); // proves the token before showing anything
  } catch (err) {
    token.clear();
    error.textContent = errorText(err);
    return false;
  }
  renderWho();
  route();
  return true;
}

function renderSignIn(message) {
  setCrumbs({ label: "Sign in" });
  const username = el("input", { id: "username", name: "username", required: true,
                                 autocomplete: "username" });
  const password = el("input", { id: "password", name: "password", type: "password",
                                 required: true, autocomplete: "current-password" });
  const error = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = el(
    "form", { class: "card signin", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      let access;
      try {
        access = await signInWithPassword(username.value.trim(), password.value);
      } catch (err) {
        if (/^AADSTS50055\b/.test(err.message)) {
          // A password from a class's sign-in sheet: good only to choose one's own.
          renderNewPassword(username.value.trim(), password.value);
          return;
        }
        error.textContent = errorText(err);
        password.select();
        return;
      }
      if (!(await tryToken(access, error))) password.focus();
    } },
    el("h1", {}, "Sign in"),
    el("label", { for: "username" }, "Username"), username,
    el("label", { for: "password" }, "Password"), password,
    el("p", { class: "help" }, "A lab user (", el("code", {}, "lab user add NAME --role Reader"),
      "). Your session stays in this tab only."),
    error,
    el("button", { type: "submit", id: "signin" }, "Sign in"),
  );
  // Scripts and tests keep the token box: any token the API takes (`lab token`, `az account
  // get-access-token`).
  const input = el("textarea", {
    id: "token", name: "token", rows: "4", spellcheck: "false", autocomplete: "off",
    "aria-describedby": "token-help",
  });
  const tokenError = el("p", { class: "error", role: "alert", id: "token-error" });
  const tokenForm = el(
    "details", { class: "card signin" },
    el("summary", {}, "Sign in with a token instead"),
    el("form", { onsubmit: async (e) => {
      e.preventDefault();
      if (!(await tryToken(input.value.trim(), tokenError))) input.focus();
    } },
      el("label", { for: "token" }, "Bearer token"),
      input,
      el("p", { id: "token-help", class: "help" },
        "Print one with ", el("code", {}, "lab token"), " or ",
        el("code", {}, "az account get-access-token"), "."),
      tokenError,
      el("button", { type: "submit", id: "token-signin" }, "Sign in with the token"),
    ),
  );
  main.replaceChildren(form, tokenForm);
  username.focus();
}

/** Choose a new password, after signing in with a temporary one; then sign in with it. */
function renderNewPassword(username, current) {
  setCrumbs({ label: "Choose a password" });
  const fresh = el("input", { id: "new-password", type: "password", required: true,
                              minlength: "8", autocomplete: "new-password" });
  const again = el("input", { id: "new-password-again", type: "password", required: true,
                              autocomplete: "new-password" });
  const error = el("p", { class: "error", role: "alert", id: "new-password-error" });
  main.replaceChildren(el(
    "form", { class: "card signin", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      if (fresh.value !== again.value) {
        error.textContent = "The two passwords differ.";
        again.select();
        return;
      }
      try {
        await call("POST", "/_portal/api/password",
          { username, currentPassword: current, newPassword: fresh.value });
        if (!(await tryToken(await signInWithPassword(username, fresh.value), error))) fresh.focus();
      } catch (err) {
        error.textContent = errorText(err);
        fresh.select();
      }
    } },
    el("h1", {}, "Choose your password"),
    el("p", { class: "help" }, `The password on your sheet was good for this one sign-in, ${username}. ` +
      "Choose your own (at least 8 characters); the sheet's no longer works."),
    el("label", { for: "new-password" }, "New password"), fresh,
    el("label", { for: "new-password-again" }, "New password, again"), again,
    error,
    el("button", { type: "submit", id: "new-password-save" }, "Save and sign in"),
  ));
  fresh.focus();
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
  const classPage = hash.match(/^\/class\/([^/]+)$/);
  const watch = hash.match(/^\/watch\/([^/]+)\/([^/]+)$/);
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
  if (vm) leaveCurrentPage = renderVm(context, vm[1], vm[2] || "overview");
  else if (hash === "/scenarios") leaveCurrentPage = renderCatalogue(context);
  else if (hash === "/classes") leaveCurrentPage = renderClasses(context);
  else if (classPage) leaveCurrentPage = renderClass(context, classPage[1]);
  else if (watch) leaveCurrentPage = renderWatch(context, watch[1], watch[2]);
  else if (hash === "/") {
    // Home: a trainee's is their catalogue; everyone else's the resource list.
    const home = (found) => {
      if (location.hash.slice(1) && location.hash !== "#/") return;
      if (found && found.traineeOf) location.hash = "#/scenarios";
      else leaveCurrentPage = renderResources(context);
    };
    if (me) home(me);
    else call("GET", "/_portal/api/me").then((found) => { me = found; home(found); }, () => home(null));
  } else leaveCurrentPage = renderResources(context);
}

window.addEventListener("hashchange", route);
route();
