// The thread list in the sidebar: grouped by age, newest first, with rename
// and delete; and the sidebar as a drawer at phone width.

import { el } from "./dom.js";
import { threadTitle } from "./format.js";
import { threadPath } from "./navigation.js";

const DAY_MS = 86400000;

function groupLabel(updatedAt, now) {
  const startOfToday = new Date(now);
  startOfToday.setHours(0, 0, 0, 0);
  const time = Date.parse(updatedAt);
  if (Number.isNaN(time) || time >= startOfToday.getTime()) return "Today";
  if (time >= startOfToday.getTime() - DAY_MS) return "Yesterday";
  if (time >= startOfToday.getTime() - 7 * DAY_MS) return "Previous 7 days";
  if (time >= startOfToday.getTime() - 30 * DAY_MS) return "Previous 30 days";
  return "Older";
}

const ICON_EDIT =
  '<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><path d="M4 20h4L19 9l-4-4L4 16v4z" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/></svg>';
const ICON_DELETE =
  '<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><path d="M5 7h14M10 7V5h4v2M7 7l1 12h8l1-12" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round"/></svg>';

export class Sidebar {
  /**
   * @param {HTMLElement} root
   * @param {{onOpen: (id: number) => void, onRename: (id: number, title: string) => void, onDelete: (id: number) => void}} handlers
   */
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers;
    this.threads = [];
    this.activeId = null;
    this.editingId = null;
    root.addEventListener("click", (event) => this.onClick(event));
  }

  setThreads(threads) {
    this.threads = [...threads];
    this.sort();
    this.render();
  }

  get(id) {
    return this.threads.find((t) => t.id === id) || null;
  }

  upsert(thread) {
    const index = this.threads.findIndex((t) => t.id === thread.id);
    if (index >= 0) this.threads[index] = { ...this.threads[index], ...thread };
    else this.threads.push(thread);
    this.sort();
    this.render();
  }

  remove(id) {
    this.threads = this.threads.filter((t) => t.id !== id);
    this.render();
  }

  /** Move a thread to the top, as the server's newest-first order will after a new message. */
  touch(id, when) {
    const thread = this.get(id);
    if (!thread) return;
    thread.updated_at = when || new Date().toISOString();
    this.sort();
    this.render();
  }

  setActive(id) {
    this.activeId = id;
    for (const item of this.root.querySelectorAll(".thread-item")) {
      const active = Number(item.dataset.threadId) === id;
      item.classList.toggle("active", active);
      item.querySelector(".thread-link")?.toggleAttribute("aria-current", active);
    }
  }

  sort() {
    this.threads.sort((a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at) || b.id - a.id);
  }

  render() {
    if (this.editingId !== null) return; // do not steal the rename field from under the user
    const now = Date.now();
    const fragment = document.createDocumentFragment();
    let lastGroup = null;
    for (const thread of this.threads) {
      const group = groupLabel(thread.updated_at, now);
      if (group !== lastGroup) {
        fragment.append(el("div", "thread-group", { text: group }));
        lastGroup = group;
      }
      fragment.append(this.item(thread));
    }
    if (!this.threads.length) {
      fragment.append(el("div", "thread-empty", { text: "No conversations yet." }));
    }
    this.root.replaceChildren(fragment);
  }

  item(thread) {
    const item = el("div", "thread-item", { "data-testid": "thread-item", "data-thread-id": String(thread.id) });
    item.classList.toggle("untitled", !(thread.title || "").trim());
    item.classList.toggle("active", thread.id === this.activeId);
    const title = threadTitle(thread);
    const link = el("a", "thread-link", {
      href: threadPath(thread.id),
      text: title,
      title,
      "data-testid": "thread-link",
      "data-action": "open",
    });
    if (thread.id === this.activeId) link.setAttribute("aria-current", "page");
    const tools = el("div", "thread-tools");
    tools.append(
      this.iconButton("rename", "Rename", ICON_EDIT, "thread-rename"),
      this.iconButton("delete", "Delete", ICON_DELETE, "thread-delete"),
    );
    item.append(link, tools);
    return item;
  }

  iconButton(action, label, icon, testid) {
    const button = el("button", "icon-btn", { type: "button", title: label, "aria-label": label, "data-action": action, "data-testid": testid });
    button.innerHTML = icon; // constant markup only
    return button;
  }

  onClick(event) {
    const target = event.target.closest("[data-action]");
    const item = event.target.closest(".thread-item");
    if (!target || !item) return;
    const id = Number(item.dataset.threadId);
    if (target.dataset.action === "open") {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button === 1) return; // new tab
      event.preventDefault();
      this.handlers.onOpen(id);
    } else if (target.dataset.action === "rename") {
      this.startRename(item, id);
    } else if (target.dataset.action === "delete") {
      this.handlers.onDelete(id);
    }
  }

  startRename(item, id) {
    const thread = this.get(id);
    if (!thread) return;
    this.editingId = id;
    const input = el("input", "thread-rename-input", {
      value: thread.title || "",
      maxLength: 200,
      placeholder: "Chat title",
      "data-testid": "thread-rename-input",
      "aria-label": "New title",
    });
    item.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      this.editingId = null;
      const title = input.value.trim();
      if (save && title && title !== thread.title) this.handlers.onRename(id, title);
      this.render();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }
}

/** The sidebar at phone width: opened by the menu button; closed by its X, the backdrop, Escape or opening a thread. */
export class Drawer {
  constructor() {
    this.app = document.getElementById("app");
    this.backdrop = document.getElementById("sidebar-backdrop");
    document.getElementById("sidebar-open").addEventListener("click", () => this.open());
    document.getElementById("sidebar-close").addEventListener("click", () => this.close());
    this.backdrop.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
  }

  open() {
    this.app.classList.add("sidebar-visible");
    this.backdrop.hidden = false;
  }

  close() {
    this.app.classList.remove("sidebar-visible");
    this.backdrop.hidden = true;
  }
}
