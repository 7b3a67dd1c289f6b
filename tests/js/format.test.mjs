// The text helpers shared by the chat page and the admin pages (static/chat/format.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  answerParts,
  cpLen,
  cpSliceFrom,
  escapeHtml,
  formatDuration,
  formatValue,
  inputSummary,
  refusalText,
  threadTitle,
  titleFrom,
} from "../../static/chat/format.js";

describe("code points", () => {
  test("cpLen counts an astral character as one, as Python's len does", () => {
    assert.equal(cpLen(""), 0);
    assert.equal(cpLen("abc"), 3);
    assert.equal(cpLen("😀"), 1);
    assert.equal(cpLen("a😀b𝔸"), 4);
    assert.equal(cpLen("é"), 1);
  });

  test("cpSliceFrom drops whole code points, never half a surrogate pair", () => {
    assert.equal(cpSliceFrom("hello", 2), "llo");
    assert.equal(cpSliceFrom("😀😀x", 1), "😀x");
    assert.equal(cpSliceFrom("😀", 1), "");
    assert.equal(cpSliceFrom("abc", 0), "abc");
    assert.equal(cpSliceFrom("abc", -1), "abc");
  });
});

describe("answer parts", () => {
  const action = (id, position) => ({ id, position, tool: "calculator", status: "success" });

  test("an answer without tool calls is one piece of text", () => {
    assert.deepEqual(answerParts({ content: "plain", actions: [] }), [{ kind: "text", key: "s0", text: "plain" }]);
  });

  test("tool cards sit at their position in code points, in position order", () => {
    const parts = answerParts({ content: "😀 before after", actions: [action(2, 9), action(1, 2)] });
    assert.deepEqual(
      parts.map((p) => (p.kind === "text" ? p.text : `[${p.action.id}]`)),
      ["😀 ", "[1]", "before ", "[2]", "after"],
    );
  });

  test("a card at the start comes before any text, and one past the end after it", () => {
    const parts = answerParts({ content: "14", actions: [action(1, 0), action(2, 99)] });
    assert.deepEqual(parts.map((p) => p.key), ["a1", "s1", "a2"]);
  });
});

describe("formatting", () => {
  test("formatDuration reads as ms, seconds, or minutes and seconds", () => {
    assert.equal(formatDuration(null), "");
    assert.equal(formatDuration(12), "12 ms");
    assert.equal(formatDuration(4200), "4.2 s");
    assert.equal(formatDuration(12400), "12 s");
    assert.equal(formatDuration(185000), "3 min 5 s");
  });

  test("formatDuration never shows 60 seconds after the minutes", () => {
    assert.equal(formatDuration(119600), "2 min 0 s");
  });

  test("formatValue shows text as it is and other values as JSON, indented or on one line", () => {
    assert.equal(formatValue("text"), "text");
    assert.equal(formatValue(null), "");
    assert.equal(formatValue({ a: 1 }), '{\n  "a": 1\n}');
    assert.equal(formatValue({ a: 1 }, 0), '{"a":1}');
  });

  test("inputSummary is the value of a single plain field, else compact JSON", () => {
    assert.equal(inputSummary({ expression: "2+3" }), "2+3");
    assert.equal(inputSummary({ a: 1, b: 2 }), '{"a":1,"b":2}');
    assert.equal(inputSummary(undefined), "");
  });

  test("escapeHtml writes every character HTML gives a meaning to as an entity", () => {
    assert.equal(escapeHtml(`<img src="x" onerror='y'> & more`), "&lt;img src=&quot;x&quot; onerror=&#39;y&#39;&gt; &amp; more");
  });
});

describe("titles", () => {
  test("an untitled thread is a New chat", () => {
    assert.equal(threadTitle({ title: "  " }), "New chat");
    assert.equal(threadTitle(null), "New chat");
    assert.equal(threadTitle({ title: " Plans " }), "Plans");
  });

  test("a title from a first message is its first line, cut at 60 characters", () => {
    assert.equal(titleFrom("  what is 2+3*4\nand more"), "what is 2+3*4");
    const long = titleFrom("word ".repeat(30));
    assert.ok(long.length <= 58 && long.endsWith("…"), long);
    assert.equal(titleFrom("   "), "New chat");
  });
});

describe("refusals", () => {
  test("a rate limit says how long to wait", () => {
    assert.equal(refusalText({ code: "rate_limited", retry_after: 2.2 }), "You are sending messages too quickly. Try again in 3 s.");
    assert.equal(refusalText({ code: "rate_limited" }), "You are sending messages too quickly. Try again shortly.");
  });

  test("other refusals say what the server said", () => {
    assert.equal(refusalText({ code: "message_too_large" }), "That message is too long to send.");
    assert.equal(refusalText({ code: "invalid_message", message: "content is empty" }), "The message was refused: content is empty.");
    assert.equal(refusalText({ code: "server_error", message: "Try later." }), "Try later.");
    assert.equal(refusalText({ code: "server_error" }), "Something went wrong.");
  });
});
