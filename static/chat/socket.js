// One WebSocket per open thread, reconnecting with exponential backoff and jitter.
//
// The server's first frame on every connection is a `snapshot`, so a reconnect
// needs no bookkeeping here: the page replaces its state by the snapshot and
// applies the events that follow.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const OPEN_TIMEOUT_MS = 10000;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;

// Close codes after which retrying cannot help: 4401 not logged in, 4404 no
// such thread of this user (the only two the server closes with).
export const FATAL_CLOSE_CODES = new Set([4401, 4404]);

export class ThreadSocket {
  /**
   * @param {number} threadId
   * @param {{onFrame: (frame: object) => void, onState: (state: string) => void, onFatal: (code: number) => void}} handlers
   */
  constructor(threadId, handlers) {
    this.threadId = threadId;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.everConnected = false;
    this.stopped = false;
    this.retryTimer = null;
    this.openTimer = null;
    this.pingTimer = null;
    this.awaitingPongSince = 0;
    this.state = "idle";
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.goOffline();
    this.onVisible = () => {
      if (document.visibilityState === "visible" && !this.isOpen()) this.reconnectNow();
    };
  }

  start() {
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.clearTimers();
    this.closeSocket();
    this.setState("idle");
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send one frame; false when the socket is not open (nothing was sent). */
  send(frame) {
    if (!this.isOpen()) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws/threads/${this.threadId}/`;
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.onState(state);
  }

  connect() {
    if (this.stopped) return;
    this.clearTimers();
    this.closeSocket();
    if (navigator.onLine === false) {
      this.goOffline();
      return;
    }
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.openTimer = setTimeout(() => {
      if (ws === this.ws && ws.readyState !== WebSocket.OPEN) ws.close();
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      if (ws !== this.ws) return;
      clearTimeout(this.openTimer);
      this.startPinging();
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.awaitingPongSince = 0;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "snapshot") {
        this.attempt = 0;
        this.everConnected = true;
        this.setState("connected");
      }
      if (frame.type === "pong") return;
      this.handlers.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.clearTimers();
      if (this.stopped) return;
      if (FATAL_CLOSE_CODES.has(event.code)) {
        this.setState("closed");
        this.handlers.onFatal(event.code);
        return;
      }
      this.scheduleRetry();
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }

  /** Exponential backoff with "equal jitter": half the delay fixed, half random. */
  scheduleRetry() {
    if (this.stopped) return;
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.setState(navigator.onLine === false ? "offline" : "reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.isOpen()) return;
    this.attempt = 0;
    this.connect();
  }

  /** Drop the connection and open a new one at once (the server sends a fresh snapshot). */
  restart() {
    if (this.stopped) return;
    this.attempt = 0;
    this.connect();
  }

  goOffline() {
    if (this.stopped) return;
    this.clearTimers();
    this.closeSocket();
    this.setState("offline");
    // navigator.onLine can be wrong; keep trying now and then.
    this.retryTimer = setTimeout(() => this.connect(), MAX_DELAY_MS);
  }

  startPinging() {
    clearInterval(this.pingTimer);
    this.awaitingPongSince = 0;
    this.pingTimer = setInterval(() => {
      if (!this.isOpen()) return;
      if (this.awaitingPongSince && Date.now() - this.awaitingPongSince > PONG_TIMEOUT_MS) {
        // The connection is dead without having said so: drop it and reconnect.
        const ws = this.ws;
        this.ws = null;
        ws.close();
        this.clearTimers();
        this.scheduleRetry();
        return;
      }
      if (!this.awaitingPongSince) this.awaitingPongSince = Date.now();
      this.send({ type: "ping" });
    }, PING_EVERY_MS);
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.openTimer);
    clearInterval(this.pingTimer);
    this.retryTimer = this.openTimer = this.pingTimer = null;
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    }
  }
}
