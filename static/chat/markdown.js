// Markdown to safe HTML: marked renders, raw HTML in the text is shown as text,
// and DOMPurify removes anything executable that could still get through.

import bash from "../vendor/highlight/languages/bash.js";
import c from "../vendor/highlight/languages/c.js";
import cpp from "../vendor/highlight/languages/cpp.js";
import css from "../vendor/highlight/languages/css.js";
import diff from "../vendor/highlight/languages/diff.js";
import go from "../vendor/highlight/languages/go.js";
import java from "../vendor/highlight/languages/java.js";
import javascript from "../vendor/highlight/languages/javascript.js";
import json from "../vendor/highlight/languages/json.js";
import markdown from "../vendor/highlight/languages/markdown.js";
import plaintext from "../vendor/highlight/languages/plaintext.js";
import python from "../vendor/highlight/languages/python.js";
import rust from "../vendor/highlight/languages/rust.js";
import shell from "../vendor/highlight/languages/shell.js";
import sql from "../vendor/highlight/languages/sql.js";
import typescript from "../vendor/highlight/languages/typescript.js";
import xml from "../vendor/highlight/languages/xml.js";
import yaml from "../vendor/highlight/languages/yaml.js";
import { escapeHtml } from "./format.js";

const LANGUAGES = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, plaintext, python, rust, shell, sql, typescript, xml, yaml };
const hljs = window.hljs;
if (hljs) {
  for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);
}
// Math as the model writes it: $$display$$ and $inline$ (KaTeX's auto-render).
const MATH_DELIMITERS = [
  { left: "$$", right: "$$", display: true },
  { left: "\\[", right: "\\]", display: true },
  { left: "$", right: "$", display: false },
  { left: "\\(", right: "\\)", display: false },
];

const parser = new window.marked.Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // What a model or a user writes as HTML is displayed, never interpreted.
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? "");
    },
  },
});

const purifier = window.DOMPurify;
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
};

/** Sanitized HTML for a piece of Markdown. */
export function markdownToHtml(text) {
  let html;
  try {
    html = parser.parse(text, { async: false });
  } catch {
    html = `<p>${escapeHtml(text)}</p>`;
  }
  return purifier.sanitize(html, PURIFY_CONFIG);
}

const COPY_ICON =
  '<svg viewBox="0 0 24 24" width="14" height="14" aria-hidden="true"><rect x="9" y="9" width="11" height="11" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M5 15V5a2 2 0 0 1 2-2h8" fill="none" stroke="currentColor" stroke-width="2"/></svg>';

/** Wrap every code block of `root` in a frame with its language and a Copy button. */
export function enhanceCodeBlocks(root) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.parentElement?.classList.contains("code-block")) continue;
    const code = pre.querySelector("code");
    const language = (code?.className.match(/language-([\w+#.-]+)/) || [])[1] || "text";
    const frame = document.createElement("div");
    frame.className = "code-block";
    const head = document.createElement("div");
    head.className = "code-head";
    const label = document.createElement("span");
    label.textContent = language;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-btn";
    button.dataset.testid = "copy-code";
    button.dataset.action = "copy-code";
    button.innerHTML = `${COPY_ICON}<span>Copy</span>`;
    head.append(label, button);
    pre.replaceWith(frame);
    frame.append(head, pre);
  }
}

/** Syntax colours for code blocks in a language highlight.js knows, and math typeset by KaTeX. */
export function renderRich(root) {
  if (hljs) {
    for (const code of root.querySelectorAll("pre code[class*=language-]")) {
      const language = (code.className.match(/language-([\w+#.-]+)/) || [])[1];
      if (language && hljs.getLanguage(language)) hljs.highlightElement(code);
    }
  }
  if (window.renderMathInElement) {
    window.renderMathInElement(root, {
      delimiters: MATH_DELIMITERS,
      throwOnError: false,
      ignoredTags: ["script", "noscript", "style", "textarea", "pre", "code"],
    });
  }
}

/** Put `text` on the clipboard; falls back to a hidden textarea outside secure contexts. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* fall back below */
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}
