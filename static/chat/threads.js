// The user's threads: load, create, rename (also the automatic title of an
// untitled thread after its first message) and delete, through the API, with
// the sidebar's list kept in step. A failed call says so in a toast.

import { api } from "./api.js";
import { threadTitle, titleFrom } from "./format.js";
import { confirmDialog, toast } from "./notify.js";

export class Threads {
  /**
   * @param {import("./sidebar.js").Sidebar} sidebar
   * @param {{changed: () => void, openId: () => number | null}} hooks
   *   changed: a title may have changed (the heading shows it); openId: the open thread's id
   */
  constructor(sidebar, { changed, openId }) {
    this.sidebar = sidebar;
    this.changed = changed;
    this.openId = openId;
    // Threads this page created that no list from the server has held yet: a list
    // read before a create committed must not take them off the sidebar.
    this.unlisted = new Set();
  }

  /** Show a thread the server changed (its agent or prompt). */
  update(thread) {
    this.sidebar.upsert(thread);
  }

  get(id) {
    return id === null ? null : this.sidebar.get(id);
  }

  /** Whether the thread has no title of its own yet (also when the list is not loaded). */
  isUntitled(id) {
    return !(this.get(id)?.title || "").trim();
  }

  /** Show the server's list, keeping the threads created here that it does not hold yet. */
  async load() {
    try {
      const data = await api.listThreads();
      const listed = data.threads || [];
      for (const thread of listed) this.unlisted.delete(thread.id);
      const kept = [...this.unlisted].map((id) => this.get(id)).filter(Boolean);
      this.sidebar.setThreads([...listed, ...kept]);
      this.sidebar.setActive(this.openId());
      this.changed();
    } catch (error) {
      toast(`Could not load your chats: ${error.message}`, { error: true });
    }
  }

  /** A new thread, listed; null when the server could not make it. */
  async create(title, fields = {}) {
    try {
      const thread = await api.createThread(title, fields);
      this.unlisted.add(thread.id);
      this.sidebar.upsert(thread);
      return thread;
    } catch (error) {
      toast(`Could not start a new chat: ${error.message}`, { error: true });
      return null;
    }
  }

  /** Show the new title at once; put the old one back if the server refuses it. */
  async rename(id, title) {
    const thread = this.get(id);
    const previous = thread?.title;
    if (thread) this.sidebar.upsert({ ...thread, title });
    this.changed();
    try {
      const saved = await api.renameThread(id, title);
      if (saved) this.sidebar.upsert(saved);
    } catch (error) {
      if (thread) this.sidebar.upsert({ ...thread, title: previous });
      toast(`Could not rename the chat: ${error.message}`, { error: true });
    }
    this.changed();
  }

  /** Title an untitled thread after its first message. */
  async autoTitle(id, content) {
    const thread = this.get(id);
    if (!thread || (thread.title || "").trim()) return;
    await this.rename(id, titleFrom(content));
  }

  /** Delete the thread once the user confirms; true when it is gone (also if it was gone already). */
  async remove(id) {
    const ok = await confirmDialog(
      "Delete chat?",
      `“${threadTitle(this.get(id))}” and all its messages will be deleted. This cannot be undone.`,
      "Delete",
    );
    if (!ok) return false;
    try {
      await api.deleteThread(id);
    } catch (error) {
      if (error.status !== 404) {
        toast(`Could not delete the chat: ${error.message}`, { error: true });
        return false;
      }
    }
    this.unlisted.delete(id);
    this.sidebar.remove(id);
    return true;
  }

  /** Move the thread to the top, as the server's newest-first order will after a new message. */
  touch(id, when) {
    this.sidebar.touch(id, when);
  }
}
