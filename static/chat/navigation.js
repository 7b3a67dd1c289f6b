// The open thread follows the URL: `/threads/<id>/`, or `/` for a new chat.

/** The thread id in a path, or null for any other path. */
export function threadIdFromPath(pathname) {
  const match = pathname.match(/^\/threads\/(\d+)\/?$/);
  return match ? Number(match[1]) : null;
}

export function threadPath(id) {
  return id === null ? "/" : `/threads/${id}/`;
}

/** The login page, coming back to this page after. */
export function loginUrl(pathname) {
  return `/accounts/login/?next=${encodeURIComponent(pathname)}`;
}

export function goToLogin() {
  window.location.href = loginUrl(location.pathname);
}

/** Show the thread's URL: as a new history entry, or in place of the current one with `replace`. */
export function showThreadUrl(id, { replace = false } = {}) {
  const url = threadPath(id);
  if (location.pathname === url) return;
  if (replace) history.replaceState({ threadId: id }, "", url);
  else history.pushState({ threadId: id }, "", url);
}

/** The thread the page was served for: the server's `data-thread-id`, else the URL. */
export function initialThreadId(app) {
  const id = app.dataset.threadId ? Number(app.dataset.threadId) : threadIdFromPath(location.pathname);
  history.replaceState({ threadId: id }, "", location.pathname);
  return id;
}

/** Call `open(id)` with the thread of the URL whenever Back or Forward changes it. */
export function onHistoryMove(open) {
  window.addEventListener("popstate", () => open(threadIdFromPath(location.pathname)));
}
