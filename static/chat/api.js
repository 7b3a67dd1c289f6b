// JSON calls to the chat HTTP API with the session cookie and the CSRF token.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, url, body) {
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
  if (response.status === 401 || response.redirected && new URL(response.url).pathname.startsWith("/accounts/login")) {
    window.location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
    throw new ApiError(401, "Please sign in again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error?.message || data?.message || data?.detail || `Request failed (${response.status}).`;
    throw new ApiError(response.status, message);
  }
  return data;
}

export const api = {
  listThreads: () => call("GET", "/api/threads/"),
  createThread: (title) => call("POST", "/api/threads/", title ? { title } : {}),
  getThread: (id) => call("GET", `/api/threads/${id}/`),
  renameThread: (id, title) => call("PATCH", `/api/threads/${id}/`, { title }),
  deleteThread: (id) => call("DELETE", `/api/threads/${id}/`),
};
