// The open chat's agent and system prompt, chosen in the top bar, and its
// export links. A new chat keeps the choice until its thread is created.

import { api } from "./api.js";
import { toast } from "./notify.js";

export class ChatSettings {
  /** @param {{thread: () => object | null, saved: (thread: object) => void}} hooks */
  constructor(hooks) {
    this.hooks = hooks;
    this.picker = document.getElementById("agent-picker");
    this.dialog = document.getElementById("prompt-dialog");
    this.promptInput = document.getElementById("prompt-input");
    this.exportJson = document.getElementById("export-json");
    this.exportMarkdown = document.getElementById("export-markdown");
    this.agents = [];
    this.draft = { agent: null, system_prompt: "" }; // the new chat's choice
    this.picker.addEventListener("change", () => this.save({ agent: Number(this.picker.value) }));
    document.getElementById("prompt-open").addEventListener("click", () => this.openPrompt());
    this.dialog.addEventListener("close", () => {
      if (this.dialog.returnValue === "ok") this.save({ system_prompt: this.promptInput.value });
    });
  }

  async load() {
    try {
      this.agents = (await api.listAgents()).agents || [];
    } catch (error) {
      toast(`Could not load the agents: ${error.message}`, { error: true });
    }
    this.draw();
  }

  /** The fields a new thread is created with. */
  newThreadFields() {
    const fields = {};
    if (this.draft.agent !== null) fields.agent = this.draft.agent;
    if (this.draft.system_prompt) fields.system_prompt = this.draft.system_prompt;
    return fields;
  }

  /** A new chat starts from the default agent and no prompt. */
  reset() {
    this.draft = { agent: null, system_prompt: "" };
    this.draw();
  }

  current() {
    const thread = this.hooks.thread();
    if (thread) return { agent: thread.agent, system_prompt: thread.system_prompt || "" };
    const fallback = this.agents.find((a) => a.default)?.id ?? null;
    return { agent: this.draft.agent ?? fallback, system_prompt: this.draft.system_prompt };
  }

  draw() {
    const { agent } = this.current();
    const options = this.agents.map((a) => {
      const option = document.createElement("option");
      option.value = String(a.id);
      option.textContent = a.model && a.model !== a.name ? `${a.name} (${a.model})` : a.name;
      option.title = a.description || "";
      return option;
    });
    this.picker.replaceChildren(...options);
    if (agent !== null && agent !== undefined) this.picker.value = String(agent);
    const thread = this.hooks.thread();
    for (const [link, kind] of [[this.exportJson, "json"], [this.exportMarkdown, "markdown"]]) {
      link.hidden = !thread;
      if (thread) link.href = `/api/threads/${thread.id}/export/?format=${kind}`;
    }
  }

  openPrompt() {
    this.promptInput.value = this.current().system_prompt;
    this.dialog.showModal();
    this.promptInput.focus();
  }

  save(fields) {
    const thread = this.hooks.thread();
    if (!thread) {
      this.draft = { ...this.draft, ...fields };
      this.draw();
      return Promise.resolve();
    }
    const saving = this.store(thread.id, fields);
    this.saving = saving;
    return saving;
  }

  async store(threadId, fields) {
    try {
      this.hooks.saved(await api.updateThread(threadId, fields));
    } catch (error) {
      toast(`Could not change this chat: ${error.message}`, { error: true });
    }
    this.draw();
  }

  /** Resolves once the last change sent to the server was answered: a message sent next runs with it. */
  settled() {
    return this.saving || Promise.resolve();
  }
}
