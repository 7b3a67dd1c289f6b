// Admin "Live turns": polls the staff-only JSON endpoint about once a second and
// updates each turn in place (text, actions, elapsed time), with a Cancel button.
(() => {
  "use strict";

  const root = document.getElementById("live-turns");
  if (!root) return;
  const list = document.getElementById("live-list");
  const summary = document.getElementById("live-summary");
  const dot = document.getElementById("live-dot");
  const dataUrl = root.dataset.dataUrl;
  const cancelUrl = (id) => root.dataset.cancelUrl.replace(/\/0\/cancel\/$/, `/${id}/cancel/`);
  const canCancel = root.dataset.canCancel === "1";
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
  const POLL_MS = 1000;

  const cards = new Map(); // message id -> {node, parts}
  let clockOffset = 0; // server time minus browser time
  let turns = JSON.parse(document.getElementById("live-initial")?.textContent || "[]");
  let failures = 0;

  const make = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const show = (value) => {
    if (value == null) return "";
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  };

  function elapsed(turn) {
    if (!turn.running) return turn.elapsed_seconds;
    return Math.max(0, (Date.now() + clockOffset - Date.parse(turn.started_at)) / 1000);
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    return `${minutes} min ${Math.floor(seconds % 60)} s`;
  }

  function field(label, value, testid) {
    const span = make("span", "chat-field");
    span.append(`${label} `);
    const strong = make("b", "", value);
    if (testid) strong.dataset.testid = testid;
    span.append(strong);
    return span;
  }

  function createCard(turn) {
    const node = make("article", "chat-turn");
    node.dataset.testid = "live-turn";
    const head = make("div", "chat-turn-head");
    const status = make("span", "chat-badge");
    status.dataset.testid = "live-status";
    const user = field("user", "", "live-user");
    const thread = make("span", "chat-field");
    const threadLink = make("a");
    threadLink.dataset.testid = "live-thread";
    thread.append("thread ", threadLink);
    const turnId = make("span", "chat-field");
    const turnCode = make("code");
    turnCode.dataset.testid = "live-turn-id";
    turnId.append("turn ", turnCode);
    const time = field("elapsed", "", "live-elapsed");
    const length = field("text", "", "live-length");
    const tokens = field("tokens", "", "live-tokens");
    const model = field("model", "");
    const spacer = make("span", "chat-spacer");
    const messageLink = make("a", "", "details");
    head.append(status, user, thread, turnId, model, time, length, tokens, spacer, messageLink);
    let cancel = null;
    if (canCancel) {
      cancel = make("button", "button chat-cancel", "Cancel turn");
      cancel.type = "button";
      cancel.dataset.testid = "live-cancel";
      cancel.addEventListener("click", () => cancelTurn(Number(node.dataset.messageId), cancel));
      head.append(cancel);
    }
    const question = make("p", "chat-turn-question");
    const text = make("pre", "chat-pre chat-pre-text chat-turn-text");
    text.dataset.testid = "live-text";
    const actions = make("ul", "chat-turn-actions");
    actions.dataset.testid = "live-actions";
    node.append(head, question, text, actions);
    return { node, status, user, threadLink, turnCode, time, length, tokens, model, messageLink, cancel, question, text, actions };
  }

  function updateCard(card, turn) {
    const { node } = card;
    node.dataset.messageId = String(turn.message_id);
    node.dataset.turnId = turn.turn_id;
    node.dataset.status = turn.status;
    node.classList.toggle("running", turn.running);
    node.classList.toggle("finished", !turn.running);
    card.status.className = `chat-badge chat-badge-${turn.status}`;
    card.status.textContent = turn.cancel_requested && turn.running ? "cancelling" : turn.status;
    card.user.querySelector("b").textContent = turn.user;
    card.threadLink.textContent = `#${turn.thread_id}${turn.thread_title ? ` ${turn.thread_title}` : ""}`;
    card.threadLink.href = `../../thread/${turn.thread_id}/change/`;
    card.turnCode.textContent = turn.turn_id;
    card.model.querySelector("b").textContent = [turn.agent, turn.model].filter(Boolean).join(" / ") || "?";
    card.time.querySelector("b").textContent = formatSeconds(elapsed(turn));
    card.length.querySelector("b").textContent = `${turn.length} chars`;
    card.tokens.querySelector("b").textContent = turn.usage
      ? `${turn.usage.total_tokens} (${turn.usage.prompt_tokens} + ${turn.usage.completion_tokens})`
      : turn.running
        ? `counting… (≈${turn.words} words so far)`
        : "-";
    card.messageLink.href = `../${turn.message_id}/change/`;
    if (card.cancel) {
      card.cancel.hidden = !turn.running;
      if (!turn.running) card.cancel.disabled = false;
    }
    card.question.textContent = turn.question ? `Q: ${turn.question}` : "";
    const text = (turn.truncated ? "…" : "") + turn.text;
    if (card.text.textContent !== text) {
      const atBottom = card.text.scrollHeight - card.text.scrollTop - card.text.clientHeight < 24;
      card.text.textContent = text;
      if (atBottom) card.text.scrollTop = card.text.scrollHeight;
    }
    const actionKey = JSON.stringify(turn.actions.map((a) => [a.id, a.status]));
    if (card.actionKey !== actionKey) {
      card.actionKey = actionKey;
      card.actions.replaceChildren(
        ...turn.actions.map((action) => {
          const item = make("li");
          item.dataset.testid = "live-action";
          item.dataset.status = action.status;
          const badge = make("span", `chat-badge chat-badge-${action.status}`, action.status);
          const name = make("b", "", action.tool);
          const input = make("code", "", show(action.input));
          item.append(badge, name, input);
          if (action.status !== "pending") item.append(" → ", make("code", "", show(action.output)));
          if (action.duration_ms != null) item.append(make("span", "chat-quiet", `${action.duration_ms} ms`));
          return item;
        }),
      );
    }
  }

  function render() {
    const running = turns.filter((t) => t.running).length;
    summary.textContent =
      `${running} running turn${running === 1 ? "" : "s"}` +
      (turns.length > running ? `, ${turns.length - running} finished recently` : "");
    const seen = new Set();
    turns.forEach((turn, index) => {
      seen.add(turn.message_id);
      let card = cards.get(turn.message_id);
      if (!card) {
        card = createCard(turn);
        cards.set(turn.message_id, card);
      }
      updateCard(card, turn);
      if (list.children[index] !== card.node) list.insertBefore(card.node, list.children[index] || null);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.node.remove();
        cards.delete(id);
      }
    }
    let empty = list.querySelector(".chat-empty");
    if (!turns.length && !empty) {
      empty = make("div", "chat-empty", "No turn is running right now.");
      empty.dataset.testid = "live-empty";
      list.append(empty);
    } else if (turns.length && empty) {
      empty.remove();
    }
  }

  async function poll() {
    try {
      const response = await fetch(dataUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      clockOffset = Date.parse(data.now) - Date.now();
      turns = data.turns;
      failures = 0;
      dot.classList.remove("stale");
      render();
    } catch {
      failures += 1;
      dot.classList.add("stale");
      summary.textContent = "Cannot reach the server; retrying…";
    }
    setTimeout(poll, Math.min(POLL_MS * 2 ** Math.min(failures, 4), 15000));
  }

  async function cancelTurn(messageId, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const response = await fetch(cancelUrl(messageId), {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRFToken": csrf },
        credentials: "same-origin",
      });
      const data = await response.json().catch(() => ({}));
      if (!data.cancelled) button.textContent = "Not running";
    } catch {
      button.disabled = false;
      button.textContent = "Cancel turn";
    }
  }

  // Elapsed times tick between polls.
  setInterval(() => {
    for (const turn of turns) {
      const card = cards.get(turn.message_id);
      if (card && turn.running) card.time.querySelector("b").textContent = formatSeconds(elapsed(turn));
    }
  }, 250);

  render();
  setTimeout(poll, POLL_MS);
})();
