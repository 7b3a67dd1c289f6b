// The chat page: wires the open thread (thread.js, its state in store.js) to
// the message list (render.js), the composer, the thread list and the URL.

import { api } from "./api.js";
import { copyText } from "./markdown.js";
import { Composer } from "./composer.js";
import { titleFrom } from "./format.js";
import { initialThreadId, onHistoryMove, showThreadUrl } from "./navigation.js";
import { toast } from "./notify.js";
import { ThreadView, renderLoop } from "./render.js";
import { Drawer, Sidebar } from "./sidebar.js";
import { listenForImport, Search } from "./search.js";
import { ChatSettings } from "./settings.js";
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

const announcer = document.getElementById("announcer");
let runningAnswer = null; // the answer being written, announced when it ends

const draw = renderLoop(() => {
  view.draw(thread.state, threads.get(thread.state.threadId));
  composer.draw(thread.state);
  settings.draw();
  announceFinished();
});

/** Tell screen readers that an answer ended, with its first words. */
function announceFinished() {
  const active = thread.state.activeTurn?.message_id ?? null;
  if (runningAnswer !== null && active !== runningAnswer) {
    const answer = findMessage(thread.state, runningAnswer);
    if (answer && answer.status !== "streaming") {
      const words = answer.content.split(/\s+/).slice(0, 30).join(" ");
      announcer.textContent = answer.status === "completed" ? `Answer: ${words}` : `The answer ended ${answer.status}.`;
    }
  }
  runningAnswer = active;
}
const threads = new Threads(sidebar, { changed: draw, openId: () => thread.state.threadId });
const settings = new ChatSettings({
  thread: () => threads.get(thread.state.threadId),
  saved: (changed) => {
    threads.update(changed);
    draw();
  },
});
const search = new Search({ open: (result) => openResult(result) });
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

/** The new-chat page; its thread is created with the first message, so no empty chat is left behind. */
function newChat() {
  settings.reset();
  navigate(null);
}

/** Open a search result's thread on the path through that message, scrolled to it. */
async function openResult(result) {
  try {
    await api.updateThread(result.thread_id, { active_message_id: result.message_id });
  } catch (error) {
    toast(`Could not open that message: ${error.message}`, { error: true });
    return;
  }
  search.clear();
  view.focusMessage(result.message_id);
  if (thread.state.threadId === result.thread_id) return; // the snapshot the switch sends redraws it
  navigate(result.thread_id);
}

async function deleteThread(id) {
  if ((await threads.remove(id)) && thread.state.threadId === id) navigate(null);
}

/** Send a message in the open thread; on the new-chat page, create its thread first. */
async function sendMessage(content, { fromComposer = false } = {}) {
  if (!content.trim()) return false;
  let autoTitle = false;
  if (thread.state.threadId === null) {
    const created = await threads.create(titleFrom(content), settings.newThreadFields());
    if (!created) return false;
    navigate(created.id, { replace: true }); // the new-chat page becomes this thread in the history
  } else {
    autoTitle = threads.isUntitled(thread.state.threadId);
    await settings.settled(); // a prompt or agent saved a moment ago applies to this message
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
  } else if (action === "version" && target.dataset.target) {
    thread.switchVersion(Number(target.dataset.target));
  } else if (action === "regenerate" && message) {
    thread.regenerate(message.id);
  } else if (action === "edit" && message) {
    editInPlace(message);
  }
}

/** The question becomes a box; Save sends it as a new version after the same answer. */
function editInPlace(message) {
  const messageView = view.viewOf(message.id);
  const editing = messageView?.startEdit(message);
  if (!editing) return;
  const { editor, area, cancel } = editing;
  cancel.addEventListener("click", () => messageView.stopEdit());
  editor.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = area.value;
    if (!content.trim()) return;
    if (await thread.send(content, { parent: message.parent_id ?? null })) {
      messageView.stopEdit();
      view.followLatest();
    }
  });
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
listenForImport((imported) => {
  threads.load();
  navigate(imported.id);
});
settings.load();
window.addEventListener("focus", () => threads.load());

const app = document.getElementById("app");
openThread(initialThreadId(app));
threads.load();
app.dataset.ready = "true"; // the page's handlers are in place (tests wait for this)
