// Search over the user's messages (GET /api/search/) in the sidebar, and
// import of an exported chat. A result opens its thread at that message.

import { api } from "./api.js";
import { el } from "./dom.js";
import { toast } from "./notify.js";

const SEARCH_DELAY_MS = 250;
const MIN_QUERY = 2;

export class Search {
  /** @param {{open: (result: object) => void}} hooks */
  constructor(hooks) {
    this.hooks = hooks;
    this.input = document.getElementById("search-input");
    this.results = document.getElementById("search-results");
    this.list = document.getElementById("thread-list");
    this.timer = null;
    this.asked = 0; // answers to older queries are dropped
    this.input.addEventListener("input", () => this.schedule());
    this.input.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), SEARCH_DELAY_MS);
  }

  async run() {
    const query = this.input.value.trim();
    const asked = ++this.asked;
    if (query.length < MIN_QUERY) {
      this.show(null);
      return;
    }
    try {
      const { results } = await api.search(query);
      if (asked === this.asked) this.show(results);
    } catch (error) {
      toast(`Search failed: ${error.message}`, { error: true });
    }
  }

  /** Results instead of the thread list; null shows the thread list again. */
  show(results) {
    this.results.hidden = results === null;
    this.list.hidden = results !== null;
    if (results === null) return;
    if (!results.length) {
      this.results.replaceChildren(el("div", "thread-empty", { text: "No message matches.", "data-testid": "search-empty" }));
      return;
    }
    this.results.replaceChildren(
      ...results.map((result) => {
        const button = el("button", "search-result", { type: "button", "data-testid": "search-result" });
        button.dataset.messageId = String(result.message_id);
        button.append(el("strong", "", { text: result.thread_title || "Untitled chat" }), el("span", "", { text: result.snippet }));
        button.addEventListener("click", () => this.hooks.open(result));
        return button;
      }),
    );
  }

  clear() {
    this.input.value = "";
    this.show(null);
  }
}

/** The Import control: an exported JSON file becomes a new chat. */
export function listenForImport(opened) {
  const input = document.getElementById("import-file");
  input.addEventListener("change", async () => {
    const file = input.files?.[0];
    input.value = "";
    if (!file) return;
    try {
      opened(await api.importThread(await file.text()));
    } catch (error) {
      toast(`Could not import ${file.name}: ${error.message}`, { error: true });
    }
  });
}
