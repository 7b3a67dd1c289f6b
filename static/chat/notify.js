// Toasts and the confirm dialog of the chat page.

import { el } from "./dom.js";

const MAX_TOASTS = 3;

/** Show a short message in the corner; errors are announced as alerts. */
export function toast(text, { error = false, timeout = 6000 } = {}) {
  const box = document.getElementById("toasts");
  const node = el("div", `toast${error ? " toast-error" : ""}`, { "data-testid": "toast" });
  node.setAttribute("role", error ? "alert" : "status");
  const close = el("button", "", { type: "button", text: "×", "aria-label": "Dismiss" });
  close.onclick = () => node.remove();
  node.append(el("span", "", { text }), close);
  box.append(node);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  if (timeout) setTimeout(() => node.remove(), timeout);
}

/** Ask a yes/no question in the page's dialog; resolves true when the user confirms. */
export function confirmDialog(title, text, okLabel) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  dialog.querySelector("[value=ok]").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}
