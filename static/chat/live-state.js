// The Live turns page's state: its cards by message id, changed by the staff socket's
// frames (live_snapshot, live_update) or by a poll of the data endpoint. Pure functions:
// each returns a new state and never changes the one it is given.

import { cpLen, cpSliceFrom } from "./format.js";

export const TEXT_LIMIT = 1000; // code points of an answer a card keeps (its end), as the server sends
export const RECENT_LIMIT = 100; // finished cards kept, the newest

/** A state holding exactly these cards (a snapshot, or a poll's answer). */
export function fromTurns(turns) {
  return { cards: new Map(turns.map((turn) => [turn.message_id, turn])) };
}

/** Cards pushed when turns start, end or change their tool calls.

A running card never replaces a finished one (it was read before the end),
and a card never takes the text back to before what progress already showed.
*/
export function applyCards(state, turns) {
  const cards = new Map(state.cards);
  for (const turn of turns) {
    const held = cards.get(turn.message_id);
    if (held && !held.running && turn.running) continue;
    if (held && turn.running && held.length > turn.length) {
      cards.set(turn.message_id, { ...turn, text: held.text, length: held.length, truncated: held.truncated, words: held.words });
    } else {
      cards.set(turn.message_id, turn);
    }
  }
  return { ...state, cards };
}

/** Text committed since the last push; `stale` is true when a piece cannot be placed (the page reads all again). */
export function applyProgress(state, items) {
  const cards = new Map(state.cards);
  let stale = false;
  for (const item of items) {
    const held = cards.get(item.message_id);
    if (!held) {
      stale = true; // its start was not seen
      continue;
    }
    if (!held.running) continue;
    if (item.offset > held.length) {
      stale = true; // a piece between them was lost
      continue;
    }
    const end = item.offset + cpLen(item.text);
    if (end <= held.length) continue;
    const joined = held.text + cpSliceFrom(item.text, held.length - item.offset);
    const over = cpLen(joined) - TEXT_LIMIT;
    const text = over > 0 ? cpSliceFrom(joined, over) : joined;
    cards.set(item.message_id, { ...held, text, length: end, truncated: end > cpLen(text), words: estimateWords(text, end) });
  }
  return { state: { ...state, cards }, stale };
}

/** Words of the whole answer, from its end: exact while the card holds all of it. */
export function estimateWords(text, length) {
  const words = text.split(/\s+/).filter(Boolean).length;
  const shown = cpLen(text);
  return length > shown && shown > 0 ? Math.round((words * length) / shown) : words;
}

/** The cards in page order: running ones oldest first, then finished ones newest first.

Finished cards older than `recentSeconds` (on the server's clock, `now` in ms)
and past the newest RECENT_LIMIT are left out.
*/
export function ordered(state, now, recentSeconds) {
  const running = [];
  const finished = [];
  for (const turn of state.cards.values()) {
    if (turn.running) running.push(turn);
    else if (now - Date.parse(turn.updated_at) <= recentSeconds * 1000) finished.push(turn);
  }
  running.sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at) || a.message_id - b.message_id);
  finished.sort((a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at) || b.message_id - a.message_id);
  return [...running, ...finished.slice(0, RECENT_LIMIT)];
}

/** The state without the cards `ordered` leaves out, so it does not grow for ever. */
export function pruned(state, now, recentSeconds) {
  return fromTurns(ordered(state, now, recentSeconds));
}
