// The Live turns page's state (static/chat/live-state.js): cards and progress from the staff socket.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { TEXT_LIMIT, applyCards, applyProgress, estimateWords, fromTurns, ordered } from "../../static/chat/live-state.js";
import { deepFreeze } from "./frames.mjs";

const NOW = Date.parse("2026-12-01T22:00:00Z");

function card(fields = {}) {
  return {
    message_id: 41,
    thread_id: 7,
    running: true,
    status: "streaming",
    started_at: "2026-12-01T21:59:00Z",
    updated_at: "2026-12-01T21:59:59Z",
    text: "Hello ",
    length: 6,
    truncated: false,
    words: 1,
    actions: [],
    ...fields,
  };
}

const progress = (offset, text, message_id = 41) => ({ message_id, offset, text, length: offset + [...text].length });

describe("progress", () => {
  test("a piece continues the card's text; the part it already has is skipped", () => {
    const state = deepFreeze(fromTurns([card()]));
    const { state: next, stale } = applyProgress(state, [progress(3, "lo world")]);
    assert.equal(stale, false);
    assert.equal(next.cards.get(41).text, "Hello world");
    assert.equal(next.cards.get(41).length, 11);
    assert.equal(next.cards.get(41).words, 2);
  });

  test("a piece the card already holds changes nothing", () => {
    const state = fromTurns([card()]);
    const { state: next } = applyProgress(state, [progress(0, "Hel")]);
    assert.equal(next.cards.get(41).text, "Hello ");
  });

  test("offsets count code points, as the server's do", () => {
    const state = fromTurns([card({ text: "😀 ", length: 2 })]);
    const { state: next } = applyProgress(state, [progress(1, " 😀!")]);
    assert.equal(next.cards.get(41).text, "😀 😀!");
    assert.equal(next.cards.get(41).length, 4);
  });

  test("a gap, or a turn whose start was not seen, asks for a full read", () => {
    const state = fromTurns([card()]);
    assert.equal(applyProgress(state, [progress(9, "late")]).stale, true);
    assert.equal(applyProgress(state, [progress(0, "x", 99)]).stale, true);
  });

  test("the card keeps the last TEXT_LIMIT code points and says it is cut", () => {
    const state = fromTurns([card({ text: "", length: 0, words: 0 })]);
    const long = "word ".repeat(400); // 2,000 code points
    const { state: next } = applyProgress(state, [progress(0, long)]);
    const held = next.cards.get(41);
    assert.equal([...held.text].length, TEXT_LIMIT);
    assert.equal(held.length, 2000);
    assert.equal(held.truncated, true);
    assert.equal(held.words, 400);
  });

  test("progress of a finished card is ignored", () => {
    const state = fromTurns([card({ running: false, status: "completed" })]);
    const { state: next, stale } = applyProgress(state, [progress(6, "more")]);
    assert.equal(next.cards.get(41).text, "Hello ");
    assert.equal(stale, false);
  });
});

describe("cards", () => {
  test("an end replaces the running card; a late start does not bring it back", () => {
    let state = fromTurns([card()]);
    state = applyCards(state, [card({ running: false, status: "cancelled", text: "Hello there", length: 11 })]);
    state = applyCards(state, [card()]);
    assert.equal(state.cards.get(41).status, "cancelled");
    assert.equal(state.cards.get(41).text, "Hello there");
  });

  test("a running card read before the latest progress keeps the newer text", () => {
    let state = fromTurns([card()]);
    state = applyProgress(state, [progress(6, "world")]).state;
    state = applyCards(state, [card({ actions: [{ id: 1, status: "pending" }] })]);
    assert.equal(state.cards.get(41).text, "Hello world");
    assert.equal(state.cards.get(41).actions.length, 1);
  });
});

describe("order", () => {
  test("running oldest first, then finished newest first; old finished ones drop out", () => {
    const state = fromTurns([
      card({ message_id: 1, started_at: "2026-12-01T21:50:00Z" }),
      card({ message_id: 2, started_at: "2026-12-01T21:40:00Z" }),
      card({ message_id: 3, running: false, updated_at: "2026-12-01T21:59:00Z" }),
      card({ message_id: 4, running: false, updated_at: "2026-12-01T21:59:30Z" }),
      card({ message_id: 5, running: false, updated_at: "2026-12-01T21:50:00Z" }),
    ]);
    assert.deepEqual(
      ordered(state, NOW, 120).map((t) => t.message_id),
      [2, 1, 4, 3],
    );
  });

  test("words are estimated from the end when the card holds only part of the text", () => {
    assert.equal(estimateWords("a b c d", 7), 4);
    assert.equal(estimateWords("a b c d", 70), 40);
  });
});
