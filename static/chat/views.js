// DOM for one message: user text as plain text, assistant answers as Markdown
// with tool cards placed at their position in the text. Updates are keyed, so a
// streaming answer re-renders only its last piece of text.

import { el } from "./dom.js";
import { answerParts, cpLen, formatDuration, formatValue, inputSummary, versionPosition } from "./format.js";
import { enhanceCodeBlocks, markdownToHtml, renderRich } from "./markdown.js";

const svg = (markup) => {
  const span = el("span", "tool-icon");
  span.innerHTML = markup; // constant markup only
  return span;
};

const ICONS = {
  tool: '<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><path d="M14.7 6.3a4 4 0 0 0-5.4 5.4L3 18v3h3l6.3-6.3a4 4 0 0 0 5.4-5.4l-2.5 2.5-2.4-.6-.6-2.4z" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/></svg>',
  copy: '<svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true"><rect x="9" y="9" width="11" height="11" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M5 15V5a2 2 0 0 1 2-2h8" fill="none" stroke="currentColor" stroke-width="2"/></svg>',
};

function actionDuration(action) {
  if (action.duration_ms != null) return action.duration_ms;
  if (action.started_at && action.finished_at) return Date.parse(action.finished_at) - Date.parse(action.started_at);
  return null;
}

export class MessageView {
  /**
   * @param {object} message
   * @param {{openCards: Set<string>, isLast: () => boolean}} ctx
   */
  constructor(message, ctx) {
    this.ctx = ctx;
    this.role = message.role;
    this.root = el("article", `msg msg-${message.role}`, { "data-testid": "message" });
    this.parts = new Map(); // key -> {node, signature}
    this.tools = el("div", "msg-tools", { "data-testid": "message-tools" });
    if (message.role === "user") {
      this.body = el("div", "msg-body", { "data-testid": "message-content" });
      this.editor = null;
      this.root.append(this.body, this.tools);
    } else {
      const avatar = el("span", "avatar avatar-bot", { "aria-hidden": "true", text: "AI" });
      this.main = el("div", "msg-main");
      this.thinking = el("div", "thinking", { "data-testid": "thinking", hidden: true });
      this.thinkingText = el("span", "thinking-text");
      const dots = el("span", "thinking-dots");
      dots.append(el("i"), el("i"), el("i"));
      this.thinking.append(dots, this.thinkingText);
      this.body = el("div", "msg-body", { "data-testid": "message-content" });
      this.notice = el("div", "notice", { "data-testid": "message-notice", hidden: true });
      this.footer = el("div", "msg-footer");
      this.copyButton = el("button", "icon-btn", {
        type: "button",
        title: "Copy answer",
        "data-testid": "copy-answer",
        "data-action": "copy-answer",
      });
      this.copyButton.innerHTML = ICONS.copy;
      this.usage = el("span", "usage", { "data-testid": "usage" });
      this.footer.append(this.tools, this.copyButton, this.usage);
      this.main.append(this.thinking, this.body, this.notice, this.footer);
      this.root.append(avatar, this.main);
    }
  }

  update(message, thinkingText) {
    const root = this.root;
    root.dataset.role = message.role;
    root.dataset.status = message.status;
    root.dataset.messageId = String(message.id);
    root.dataset.turnId = message.turn_id || "";
    root.dataset.length = String(message.length ?? cpLen(message.content || ""));
    root.classList.toggle("streaming", message.status === "streaming");
    root.classList.toggle("sending", message.status === "sending");
    this.updateTools(message);
    if (message.role === "user") {
      if (this.body.textContent !== message.content) this.body.textContent = message.content;
      return;
    }
    this.updateThinking(message, thinkingText);
    this.updateBody(message);
    this.updateNotice(message);
    this.updateFooter(message);
  }

  /** Time, version arrows ("2 / 3"), and Edit (questions) or Regenerate (finished answers). */
  updateTools(message) {
    const stored = !message.local;
    const position = stored ? versionPosition(message) : null;
    const canRegenerate = stored && message.role === "assistant" && message.status !== "streaming";
    const canEdit = stored && message.role === "user" && !this.editor;
    const signature = JSON.stringify([message.created_at, position, canRegenerate, canEdit]);
    if (this.tools.dataset.signature === signature) return;
    this.tools.dataset.signature = signature;
    this.tools.replaceChildren();
    if (position) {
      const nav = el("span", "versions", { "data-testid": "versions" });
      const previous = el("button", "icon-btn version-btn", {
        type: "button", text: "‹", title: "Previous version", "aria-label": "Previous version",
        "data-action": "version", "data-target": String(position.previous ?? ""), "data-testid": "version-previous",
      });
      const next = el("button", "icon-btn version-btn", {
        type: "button", text: "›", title: "Next version", "aria-label": "Next version",
        "data-action": "version", "data-target": String(position.next ?? ""), "data-testid": "version-next",
      });
      previous.disabled = position.previous === null;
      next.disabled = position.next === null;
      const label = el("span", "version-label", { text: `${position.index + 1} / ${position.count}`, "data-testid": "version-label" });
      nav.append(previous, label, next);
      this.tools.append(nav);
    }
    if (canEdit) {
      this.tools.append(el("button", "btn-link", { type: "button", text: "Edit", "data-action": "edit", "data-testid": "edit" }));
    }
    if (canRegenerate) {
      this.tools.append(
        el("button", "btn-link", { type: "button", text: "Regenerate", "data-action": "regenerate", "data-testid": "regenerate" }),
      );
    }
    if (message.created_at) {
      const when = new Date(message.created_at);
      const time = el("time", "msg-time", {
        dateTime: message.created_at,
        title: when.toLocaleString(),
        text: when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
        "data-testid": "message-time",
      });
      this.tools.append(time);
    }
  }

  /** Edit in place: the question becomes a box with Save and Cancel (user messages only). */
  startEdit(message) {
    if (this.role !== "user" || this.editor) return null;
    const editor = el("form", "edit-form", { "data-testid": "edit-form" });
    const area = el("textarea", "edit-input", { "data-testid": "edit-input", "aria-label": "Edit message", rows: "3" });
    area.value = message.content;
    const save = el("button", "btn btn-small btn-primary", { type: "submit", text: "Save and send", "data-testid": "edit-save" });
    const cancel = el("button", "btn btn-small", { type: "button", text: "Cancel", "data-testid": "edit-cancel" });
    editor.append(area, save, cancel);
    this.editor = editor;
    this.body.hidden = true;
    this.body.after(editor);
    this.tools.dataset.signature = "";
    area.focus();
    return { editor, area, cancel };
  }

  stopEdit() {
    this.editor?.remove();
    this.editor = null;
    this.body.hidden = false;
    this.tools.dataset.signature = "";
  }

  updateThinking(message, thinkingText) {
    const streaming = message.status === "streaming";
    const waiting = streaming && !message.content && !(message.actions || []).some((a) => a.status === "pending");
    const show = streaming && (Boolean(thinkingText) || waiting);
    this.thinking.hidden = !show;
    const text = thinkingText || "Thinking…";
    if (this.thinkingText.textContent !== text) this.thinkingText.textContent = text;
  }

  updateBody(message) {
    const wanted = answerParts(message);
    const seen = new Set();
    let index = 0;
    for (const part of wanted) {
      seen.add(part.key);
      let entry = this.parts.get(part.key);
      if (!entry || entry.kind !== part.kind) {
        entry = { kind: part.kind, node: part.kind === "text" ? el("div", "md") : this.makeCard(), signature: null };
        this.parts.set(part.key, entry);
      }
      if (part.kind === "text") {
        if (entry.signature !== part.text) {
          entry.node.innerHTML = markdownToHtml(part.text);
          enhanceCodeBlocks(entry.node);
          renderRich(entry.node);
          entry.signature = part.text;
        }
      } else {
        this.fillCard(entry, part.action);
      }
      if (this.body.children[index] !== entry.node) this.body.insertBefore(entry.node, this.body.children[index] || null);
      index += 1;
    }
    for (const [key, entry] of this.parts) {
      if (!seen.has(key)) {
        entry.node.remove();
        this.parts.delete(key);
      }
    }
  }

  makeCard() {
    const card = el("details", "tool-card", { "data-testid": "tool-card" });
    card.addEventListener("toggle", () => {
      const id = card.dataset.actionId;
      if (!id) return;
      if (card.open) this.ctx.openCards.add(id);
      else this.ctx.openCards.delete(id);
    });
    return card;
  }

  fillCard(entry, action) {
    const duration = actionDuration(action);
    const signature = JSON.stringify([action.status, action.tool, action.input, action.output, duration, action.id]);
    const card = entry.node;
    card.dataset.actionId = String(action.id);
    card.dataset.status = action.status;
    card.dataset.tool = action.tool;
    card.open = this.ctx.openCards.has(String(action.id));
    if (entry.signature === signature) return;
    entry.signature = signature;
    card.replaceChildren();
    const summary = el("summary");
    summary.append(
      svg(ICONS.tool),
      el("span", "tool-name", { text: action.tool }),
      el("span", "tool-summary", { text: inputSummary(action.input) }),
      el("span", `badge badge-${action.status}`, { text: action.status, "data-testid": "tool-status" }),
    );
    if (duration != null && action.status !== "pending") {
      summary.append(el("span", "tool-duration", { text: formatDuration(duration), "data-testid": "tool-duration" }));
    }
    const body = el("div", "tool-body");
    const inputBox = el("div");
    inputBox.append(el("div", "tool-label", { text: "Input" }), el("pre", "", { text: formatValue(action.input), "data-testid": "tool-input" }));
    body.append(inputBox);
    if (action.status !== "pending") {
      const outputBox = el("div");
      outputBox.append(
        el("div", "tool-label", { text: action.status === "error" ? "Error" : "Output" }),
        el("pre", "", { text: formatValue(action.output), "data-testid": "tool-output" }),
      );
      body.append(outputBox);
    }
    card.append(summary, body);
  }

  updateNotice(message) {
    const notice = this.notice;
    const error = message.error;
    let kind = null;
    let text = "";
    let retry = false;
    if (message.status === "cancelled") {
      kind = "muted";
      text = "Stopped.";
    } else if (message.status === "failed") {
      kind = "error";
      text = `Something went wrong: ${error?.message || "the answer failed."}`;
      retry = true;
    } else if (message.status === "interrupted") {
      kind = "warn";
      text = "This answer was interrupted before it finished (the server stopped).";
      retry = true;
    }
    retry = retry && this.ctx.isLast(message);
    const signature = `${kind}|${text}|${retry}`;
    if (notice.dataset.signature === signature) return;
    notice.dataset.signature = signature;
    notice.hidden = !kind;
    notice.className = `notice notice-${kind || "muted"}`;
    notice.dataset.kind = kind || "";
    notice.replaceChildren();
    if (!kind) return;
    notice.append(el("span", "", { text }));
    if (retry) {
      notice.append(
        el("button", "btn btn-small", { type: "button", text: "Retry", "data-testid": "retry", "data-action": "retry" }),
      );
    }
  }

  updateFooter(message) {
    const final = message.status !== "streaming";
    this.footer.hidden = !final;
    const usage = message.usage;
    if (!usage) {
      this.usage.textContent = "";
      this.usage.title = "";
      return;
    }
    const cost = (usage.cost_micros || 0) / 1e6;
    this.usage.textContent = `${usage.total_tokens ?? 0} tokens${usage.model ? ` · ${usage.model}` : ""}`;
    this.usage.title =
      `Prompt ${usage.prompt_tokens ?? 0} · completion ${usage.completion_tokens ?? 0} tokens` +
      ` · cost $${cost.toFixed(cost && cost < 0.01 ? 6 : 4)}`;
  }
}
