// The open thread: its state (changed only through store.js), its socket, and
// the turns sent in it. What a frame means beyond the state (sending pending
// messages again, a refused message back in the composer, a gap to fill) is
// done here.

import { api } from "./api.js";
import { refusalText } from "./format.js";
import { goToLogin } from "./navigation.js";
import { toast } from "./notify.js";
import { ThreadSocket } from "./socket.js";
import * as outgoing from "./outgoing.js";
import * as store from "./store.js";

const SNAPSHOT_WAIT_MS = 5000; // a message sent while the thread opens waits this long for the socket
const RESYNC_PAUSE_MS = 1000; // at most one fresh snapshot asked for in this time

/** A new turn id; the server stores a message once per turn id, so a resend is harmless. */
function newTurnId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class OpenThread {
  /**
   * @param {{changed: () => void, connection: (state: object) => void,
   *          stored: (message: object, entry: object | null) => void, refused: (entry: object) => void}} hooks
   *   changed: the state changed (draw it); connection: the socket's state changed (show it now);
   *   stored: the server stored a user message, with its pending entry if sent from here;
   *   refused: the server refused a message sent from here.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.state = store.openThread(null);
    this.socket = null;
    this.ready = null; // {promise, resolve}: resolved by the next snapshot (true) or a fatal close (false)
    this.resyncing = false;
    this.snapshots = 0; // snapshots received, so a resync knows when its own has come
  }

  /** Show another thread (null: a new chat): a fresh state and a socket of its own. */
  open(threadId) {
    this.socket?.stop();
    this.socket = null;
    this.ready = null;
    this.state = store.openThread(threadId);
    if (threadId !== null) {
      this.ready = deferred();
      const socket = new ThreadSocket(threadId, {
        onFrame: (frame) => socket === this.socket && this.onFrame(frame),
        onState: (connection) => socket === this.socket && this.onConnection(connection),
        onFatal: (code) => socket === this.socket && this.onFatal(code),
      });
      this.socket = socket;
      socket.start();
    }
    this.hooks.connection(this.state);
    this.hooks.changed();
  }

  onFrame(frame) {
    const before = this.state;
    this.state = store.applyFrame(before, frame);
    if (frame.thread_id === undefined || frame.thread_id === before.threadId) this.afterFrame(frame, before);
    this.hooks.changed();
  }

  /** The effects of a frame of this thread, beyond the state. */
  afterFrame(frame, before) {
    if (frame.type === "snapshot") this.afterSnapshot();
    else if (frame.type === "user_message") this.afterStored(frame, before);
    else if (frame.type === "error") this.afterRefusal(frame, before);
    if (this.state.outOfSync) this.resync();
  }

  /** Send again what the server has not stored; a send waiting for the socket may go on. */
  afterSnapshot() {
    this.snapshots += 1;
    for (const frame of outgoing.pendingFrames(this.state)) this.socket.send(frame);
    this.ready?.resolve(true);
    this.ready = null;
  }

  afterStored(frame, before) {
    const message = frame.data?.message || frame.message;
    if (message) this.hooks.stored(message, store.pendingEntry(before, message.turn_id));
  }

  afterRefusal(frame, before) {
    const entry = store.pendingEntry(before, frame.turn_id);
    if (entry) this.hooks.refused(entry);
    if (frame.code === "turn_not_found") return; // a Stop that arrived after the turn ended
    toast(refusalText(frame), { error: true });
  }

  /** The page missed something it cannot rebuild from the frames: take a fresh snapshot. */
  resync() {
    if (this.resyncing || !this.socket) return;
    this.resyncing = true;
    const snapshots = this.snapshots;
    this.socket.restart();
    setTimeout(() => {
      this.resyncing = false;
      // A gap found after the fresh snapshot, during the pause (an edit right after a regenerate), is not dropped.
      if (this.state.outOfSync && this.snapshots > snapshots) this.resync();
    }, RESYNC_PAUSE_MS);
  }

  onConnection(connection) {
    this.state = store.setConnection(this.state, connection);
    this.hooks.connection(this.state);
    this.hooks.changed();
  }

  /** 4401: the session ended, log in again; 4404: the thread is not there (or not the user's). */
  onFatal(code) {
    this.ready?.resolve(false);
    this.ready = null;
    if (code === 4401) {
      goToLogin();
      return;
    }
    this.state = store.markNotFound(this.state);
    this.hooks.connection(this.state);
    this.hooks.changed();
  }

  /**
   * Send a user message as a new turn; false, with a toast saying why, when it was not sent.
   * `parent` (an edit) is the answer it follows, null for a new first message; absent, it follows the last one.
   */
  async send(content, { fromComposer = false, autoTitle = false, parent } = {}) {
    if (this.socket?.state !== "connected" && this.ready) {
      await Promise.race([this.ready.promise, sleep(SNAPSHOT_WAIT_MS)]); // the thread is opening
    }
    const turnId = newTurnId();
    const frame = outgoing.userMessageFrame(turnId, content, parent);
    if (outgoing.frameTooLarge(frame)) {
      toast("That message is too long to send. Shorten it and try again.", { error: true });
      return false;
    }
    if (!this.socket || this.socket.state !== "connected" || !this.socket.send(frame)) {
      toast("Not connected, so the message was not sent. It is still in the box: send it again when the connection is back.", {
        error: true,
      });
      return false;
    }
    this.state = store.addPendingMessage(this.state, turnId, content, { fromComposer, autoTitle, parent });
    this.hooks.changed();
    return true;
  }

  /** Ask for a new version of an answer; it streams as a turn and becomes the one shown. */
  regenerate(messageId) {
    this.sendOrSay(outgoing.regenerateFrame(newTurnId(), messageId), "the answer was not regenerated");
  }

  /** Show another version of a message: the server answers with a fresh snapshot of that path. */
  switchVersion(messageId) {
    this.sendOrSay(outgoing.switchVersionFrame(messageId), "the other version could not be shown");
  }

  sendOrSay(frame, what) {
    if (this.socket?.state !== "connected" || !this.socket.send(frame)) {
      toast(`Not connected: ${what}. Try again when the connection is back.`, { error: true });
    }
  }

  /** Ask the server to stop the running turn. */
  stop() {
    const turn = this.state.activeTurn;
    if (!turn) return;
    if (!this.socket?.send({ type: "cancel", turn_id: turn.turn_id })) {
      toast("Not connected: the answer could not be stopped. Try again when the connection is back.", { error: true });
    }
  }

  /** Load the messages older than the snapshot's; true when the state changed. */
  async loadEarlier() {
    const threadId = this.state.threadId;
    if (threadId === null) return false;
    try {
      const thread = await api.getThread(threadId);
      if (this.state.threadId !== threadId) return false;
      this.state = store.prependEarlier(this.state, thread.messages || []);
      return true;
    } catch (error) {
      toast(`Could not load earlier messages: ${error.message}`, { error: true });
      return false;
    }
  }
}
