// The composer: the message box with Send and Stop, Enter to send, and the
// welcome page's suggestions, which send their prompt.

const MAX_HEIGHT_SHARE = 0.4; // of the window's height, before the box scrolls

export class Composer {
  /** @param {{onSend: (content: string) => Promise<boolean>, onStop: () => void}} handlers */
  constructor({ onSend, onStop }) {
    this.onSend = onSend;
    this.form = document.getElementById("composer");
    this.input = document.getElementById("input");
    this.sendButton = document.getElementById("send");
    this.hint = document.getElementById("composer-hint");
    this.stopButton = document.getElementById("stop");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => this.onKey(event));
    this.input.addEventListener("input", () => this.autosize());
    this.stopButton.addEventListener("click", onStop);
    for (const button of document.querySelectorAll(".suggestion")) {
      button.addEventListener("click", () => this.sendPrompt(button.dataset.prompt));
    }
  }

  /** Enter sends; Shift+Enter, and Enter while an input method composes, add to the text. */
  onKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      this.submit();
    }
  }

  /** Send the box's text; it is cleared only once sent, and only if the user did not change it meanwhile. */
  async submit() {
    const content = this.input.value;
    if (!content.trim()) return;
    this.sendButton.disabled = true;
    const sent = await this.onSend(content);
    if (sent && this.input.value === content) {
      this.input.value = "";
      this.autosize();
    }
    this.drawSend();
  }

  sendPrompt(prompt) {
    this.input.value = prompt;
    this.autosize();
    this.submit();
  }

  /** Put back a message the server refused, unless the user typed something else since. */
  restore(content) {
    if (this.input.value.trim()) return;
    this.input.value = content;
    this.autosize();
  }

  focus() {
    if (window.matchMedia("(pointer: fine)").matches) this.input.focus({ preventScroll: true });
  }

  /** Grow the box with its text, up to a share of the window. */
  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, window.innerHeight * MAX_HEIGHT_SHARE)}px`;
    this.drawSend();
  }

  drawSend() {
    this.sendButton.disabled = !this.input.value.trim();
  }

  /** Send follows the text; Stop shows while a turn runs, and Send then says that it stops the answer. */
  draw(state) {
    this.drawSend();
    const streaming = Boolean(state.activeTurn);
    this.stopButton.hidden = !streaming;
    const label = streaming ? "Stop the answer and send" : "Send message";
    if (this.sendButton.getAttribute("aria-label") !== label) {
      this.sendButton.setAttribute("aria-label", label);
      this.sendButton.title = streaming ? "Stop the answer and send (Enter)" : "Send (Enter)";
      this.hint.textContent = streaming
        ? "An answer is being written: sending now stops it · Shift+Enter for a new line"
        : "Enter to send · Shift+Enter for a new line";
    }
  }
}
