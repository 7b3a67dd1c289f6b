// The render loop: the open thread's DOM drawn from its state (store.js), at
// most once an animation frame however many frames arrive in between.

import { el } from "./dom.js";
import { threadTitle } from "./format.js";
import { newestStored } from "./store.js";
import { MessageView } from "./views.js";

const STICK_DISTANCE_PX = 48; // this close to the bottom, the view follows new text
const HIDDEN_TAB_DELAY_MS = 100; // hidden tabs get no animation frames

const CONNECTION_LABELS = {
  idle: "",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

/** A function that schedules `draw`: called many times before the next frame, it draws once. */
export function renderLoop(draw) {
  let queued = false;
  const run = () => {
    if (!queued) return;
    queued = false;
    draw();
  };
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(run);
    setTimeout(run, HIDDEN_TAB_DELAY_MS);
  };
}

/** The message list, its scrolling, and the parts of the page that show the thread's state. */
export class ThreadView {
  /** @param {{onLoadEarlier: () => void}} handlers */
  constructor({ onLoadEarlier }) {
    const $ = (id) => document.getElementById(id);
    this.dom = {
      messages: $("messages"),
      scroller: $("scroller"),
      welcome: $("welcome"),
      missing: $("thread-missing"),
      composer: $("composer").closest(".composer-wrap"),
      title: $("thread-title"),
      conn: $("conn"),
      jump: $("jump-bottom"),
    };
    this.views = new Map(); // message id -> {view, message, thinking, newest}: what each view last drew
    this.openCards = new Set(); // ids of the tool cards the reader opened
    this.newestId = null;
    this.stick = true; // follow new text at the bottom
    this.focusId = null; // a message to scroll to once drawn (a search result)
    this.context = { openCards: this.openCards, isLast: (message) => message.id === this.newestId };
    this.earlier = el("div", "load-earlier");
    const button = el("button", "btn btn-small", { type: "button", text: "Show earlier messages", "data-testid": "load-earlier" });
    button.onclick = onLoadEarlier;
    this.earlier.append(button);
    this.listen();
  }

  listen() {
    const { scroller, jump } = this.dom;
    jump.addEventListener("click", () => {
      this.stick = true;
      scroller.scrollTo({ top: scroller.scrollHeight, behavior: "smooth" });
      this.drawJumpButton();
    });
    const onScroll = () => {
      this.stick = this.distanceFromBottom() < STICK_DISTANCE_PX;
      this.drawJumpButton();
    };
    scroller.addEventListener("scroll", onScroll, { passive: true });
  }

  /** Forget the views of the thread shown before. */
  clear() {
    for (const { view } of this.views.values()) view.root.remove();
    this.views.clear();
    this.stick = true;
  }

  /** Follow the newest message again (after the user sent one). */
  followLatest() {
    this.stick = true;
  }

  /** Draw `state`; `thread` is its entry in the thread list, for the heading. */
  draw(state, thread) {
    const stick = this.stick;
    this.drawMessages(state);
    this.drawPage(state, thread);
    const found = this.focusId === null ? null : this.views.get(this.focusId);
    if (found) {
      this.focusId = null;
      this.stick = false;
      found.view.root.classList.add("found");
      found.view.root.scrollIntoView({ block: "center" });
    } else if (stick) this.dom.scroller.scrollTop = this.dom.scroller.scrollHeight;
    this.drawJumpButton();
  }

  /** Scroll to this message when it is drawn, and mark it. */
  focusMessage(messageId) {
    this.focusId = messageId;
  }

  /** The view of a message, for editing in place. */
  viewOf(messageId) {
    return this.views.get(messageId)?.view ?? null;
  }

  /** Draw at once, keeping in place what the reader sees: messages were added above it. */
  drawAbove(state, thread) {
    const { scroller } = this.dom;
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    this.stick = false;
    this.draw(state, thread);
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  }

  /** Update the views whose message, thinking line or newest-ness changed, then put them in order. */
  drawMessages(state) {
    this.newestId = newestStored(state)?.id ?? null;
    for (const message of state.messages) {
      let entry = this.views.get(message.id);
      if (!entry) {
        entry = { view: new MessageView(message, this.context) };
        this.views.set(message.id, entry);
      }
      const thinking = state.thinking[message.id];
      const newest = message.id === this.newestId;
      if (entry.message === message && entry.thinking === thinking && entry.newest === newest) continue;
      Object.assign(entry, { message, thinking, newest });
      entry.view.update(message, thinking);
    }
    this.placeViews(state);
  }

  /** The message list's children in the state's order; views of messages gone are removed. */
  placeViews(state) {
    const wanted = new Set(state.messages.map((m) => m.id));
    for (const [id, { view }] of this.views) {
      if (wanted.has(id)) continue;
      view.root.remove();
      this.views.delete(id);
    }
    const list = this.dom.messages;
    const nodes = state.hasEarlier ? [this.earlier] : [];
    for (const m of state.messages) nodes.push(this.views.get(m.id).view.root);
    nodes.forEach((node, index) => {
      if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    });
    while (list.children.length > nodes.length) list.lastElementChild.remove();
  }

  /** The welcome, "not found" and composer blocks, and the heading. */
  drawPage(state, thread) {
    const { welcome, missing, composer, title } = this.dom;
    const empty = state.messages.length === 0 && (state.threadId === null || state.connection === "connected");
    missing.hidden = !state.notFound;
    welcome.hidden = !empty || state.notFound;
    composer.hidden = state.notFound;
    const heading = state.notFound ? "Conversation not found" : state.threadId === null ? "New chat" : threadTitle(thread);
    if (title.textContent !== heading) title.textContent = heading;
    document.title = state.threadId === null ? "Chat" : `${heading} · Chat`;
  }

  /** The connection badge; drawn at once so that each state the socket passes through shows. */
  drawConnection(state) {
    const { conn } = this.dom;
    const label = CONNECTION_LABELS[state.connection] ?? state.connection;
    conn.dataset.state = state.connection;
    conn.querySelector(".conn-label").textContent = label;
    conn.title = label;
  }

  distanceFromBottom() {
    const { scroller } = this.dom;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
  }

  drawJumpButton() {
    this.dom.jump.hidden = this.stick || this.distanceFromBottom() < STICK_DISTANCE_PX;
  }
}
