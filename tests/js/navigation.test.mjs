// The thread in the URL (static/chat/navigation.js).

import assert from "node:assert/strict";
import { test } from "node:test";

import { loginUrl, threadIdFromPath, threadPath } from "../../static/chat/navigation.js";

test("a thread's path holds its id; the root is the new-chat page", () => {
  assert.equal(threadPath(12), "/threads/12/");
  assert.equal(threadPath(null), "/");
  assert.equal(threadIdFromPath("/threads/12/"), 12);
  assert.equal(threadIdFromPath("/threads/12"), 12);
});

test("any other path opens no thread", () => {
  for (const path of ["/", "/threads/", "/threads/abc/", "/threads/12/extra/", "/admin/threads/12/"]) {
    assert.equal(threadIdFromPath(path), null, path);
  }
});

test("the login page comes back to the page after", () => {
  assert.equal(loginUrl("/threads/3/"), "/accounts/login/?next=%2Fthreads%2F3%2F");
});
