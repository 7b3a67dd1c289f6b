// JSON calls to the server's HTTP API with the session cookie and the CSRF token.

import { goToLogin } from "./navigation.js";

/** The CSRF token Django put in the page: the chat page's meta tag, or a form's hidden field. */
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const field = document.querySelector("input[name=csrfmiddlewaretoken]");
  return meta?.content || field?.value || "";
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Whether the server sent the request to its login page: the session ended. */
function toLogin(response) {
  return response.status === 401 || (response.redirected && new URL(response.url).pathname.startsWith("/accounts/login"));
}

/** The JSON answer of one call (null for 204 or a body that is not JSON); ApiError when refused or unreachable. */
export async function requestJson(method, url, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check your connection.");
  }
  if (toLogin(response)) {
    goToLogin();
    throw new ApiError(401, "Please sign in again.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data?.error?.message || data?.message || data?.detail || `Request failed (${response.status}).`;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** POST a body that is already JSON text (an export file), as it is. */
async function requestRaw(method, url, text) {
  const response = await fetch(url, {
    method,
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    credentials: "same-origin",
    body: text,
  }).catch(() => null);
  if (!response) throw new ApiError(0, "The server cannot be reached. Check your connection.");
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data?.error?.message || `Request failed (${response.status}).`);
  return data;
}

export const api = {
  listThreads: () => requestJson("GET", "/api/threads/"),
  createThread: (title, fields = {}) => requestJson("POST", "/api/threads/", title ? { title, ...fields } : { ...fields }),
  updateThread: (id, fields) => requestJson("PATCH", `/api/threads/${id}/`, fields),
  listAgents: () => requestJson("GET", "/api/agents/"),
  search: (q) => requestJson("GET", `/api/search/?q=${encodeURIComponent(q)}`),
  importThread: (text) => requestRaw("POST", "/api/threads/import/", text),
  getThread: (id) => requestJson("GET", `/api/threads/${id}/`),
  renameThread: (id, title) => requestJson("PATCH", `/api/threads/${id}/`, { title }),
  deleteThread: (id) => requestJson("DELETE", `/api/threads/${id}/`),
};
