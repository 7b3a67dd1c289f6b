// The chat page: wires the open thread (thread.js, its state in store.js) to
// the message list (render.js), the composer, the thread list and the URL.

import { copyText } from "./markdown.js";
import { Composer } from "./composer.js";
import { titleFrom } from "./format.js";
import { initialThreadId, onHistoryMove, showThreadUrl } from "./navigation.js";
import { toast } from "./notify.js";
import { ThreadView, renderLoop } from "./render.js";
import { Drawer, Sidebar } from "./sidebar.js";
import { findMessage, questionOf } from "./store.js";
import { OpenThread } from "./thread.js";
import { Threads } from "./threads.js";

const COPIED_FOR_MS = 1500;

const view = new ThreadView({ onLoadEarlier: () => loadEarlier() });
const composer = new Composer({ onSend: (content) => sendMessage(content, { fromComposer: true }), onStop: () => thread.stop() });
const drawer = new Drawer();
const sidebar = new Sidebar(document.getElementById("thread-list"), {
  onOpen: (id) => navigate(id),
  onRename: (id, title) => threads.rename(id, title),
  onDelete: (id) => deleteThread(id),
});

const draw = renderLoop(() => {
  view.draw(thread.state, threads.get(thread.state.threadId));
  composer.draw(thread.state);
});
const threads = new Threads(sidebar, { changed: draw, openId: () => thread.state.threadId });
const thread = new OpenThread({
  changed: draw,
  connection: (state) => view.drawConnection(state),
  stored: (message, entry) => {
    threads.touch(thread.state.threadId, message.created_at);
    if (entry?.autoTitle) threads.autoTitle(thread.state.threadId, message.content);
  },
  refused: (entry) => {
    if (entry.fromComposer) composer.restore(entry.content);
  },
});

/** Open a thread (null: a new chat) and show it in the URL, the sidebar and the page. */
function navigate(id, { replace = false } = {}) {
  showThreadUrl(id, { replace });
  openThread(id);
  drawer.close();
}

function openThread(id) {
  view.clear();
  thread.open(id);
  sidebar.setActive(id);
  composer.focus();
}

async function newChat() {
  const created = await threads.create();
  if (created) navigate(created.id);
}

async function deleteThread(id) {
  if ((await threads.remove(id)) && thread.state.threadId === id) navigate(null);
}

/** Send a message in the open thread; on the new-chat page, create its thread first. */
async function sendMessage(content, { fromComposer = false } = {}) {
  if (!content.trim()) return false;
  let autoTitle = false;
  if (thread.state.threadId === null) {
    const created = await threads.create(titleFrom(content));
    if (!created) return false;
    navigate(created.id);
  } else {
    autoTitle = threads.isUntitled(thread.state.threadId);
  }
  const sent = await thread.send(content, { fromComposer, autoTitle });
  if (sent) view.followLatest();
  return sent;
}

/** Retry an answer: send its question again, as a new turn. */
function retry(answer) {
  const question = questionOf(thread.state, answer);
  if (!question) {
    toast("The question of this answer is not loaded, so it cannot be retried.", { error: true });
    return;
  }
  sendMessage(question.content);
}

async function loadEarlier() {
  if (await thread.loadEarlier()) view.drawAbove(thread.state, threads.get(thread.state.threadId));
}

/** The buttons inside messages: copy a code block, copy an answer, retry. */
async function onMessageClick(event) {
  const target = event.target.closest("[data-action]");
  if (!target) return;
  const article = target.closest("[data-message-id]");
  const message = article ? findMessage(thread.state, article.dataset.messageId) : null;
  const action = target.dataset.action;
  if (action === "copy-code") {
    const code = target.closest(".code-block")?.querySelector("pre")?.textContent ?? "";
    flashCopied(target, await copyText(code));
  } else if (action === "copy-answer" && message) {
    flashCopied(target, await copyText(message.content));
  } else if (action === "retry" && message) {
    retry(message);
  }
}

/** Say on the button, for a moment, whether the copy worked. */
function flashCopied(button, ok) {
  const label = button.querySelector("span");
  const text = ok ? "Copied" : "Copy failed";
  if (label) label.textContent = text;
  else button.title = text;
  setTimeout(() => {
    if (label) label.textContent = "Copy";
    else button.title = "Copy answer";
  }, COPIED_FOR_MS);
}

document.getElementById("new-chat").addEventListener("click", newChat);
document.getElementById("messages").addEventListener("click", onMessageClick);
onHistoryMove(openThread);
window.addEventListener("focus", () => threads.load());

const app = document.getElementById("app");
openThread(initialThreadId(app));
threads.load();
app.dataset.ready = "true"; // the page's handlers are in place (tests wait for this)
