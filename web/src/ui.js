// Small shared pieces of the page: an element builder, notices, the confirmation dialog and
// the breadcrumb trail.

import { ApiError } from "./api.js";

/** Show an error or a piece of news at the top of the page (role=alert: screen readers say it). */
export function notify(message, kind = "error") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = !message;
}

export function errorText(err) {
  return err instanceof ApiError ? `${err.code}: ${err.message}` : String(err.message || err);
}

/** Ask before a disruptive action; resolves true for Yes. Esc and Cancel say no. */
export function confirmAction(title, text, yesLabel = "Yes") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yesLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    dialog.querySelector("button.secondary").focus(); // the safe choice has the focus
  });
}

/** A small element builder: el("button", {class: "x", onclick: f}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function setCrumbs(...items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(
    ...items.flatMap((item, i) => [
      ...(i ? [el("span", { class: "sep", "aria-hidden": "true" }, " / ")] : []),
      item.href ? el("a", { href: item.href }, item.label) : el("span", {}, item.label),
    ]),
  );
}
