// The one DOM helper the page's modules and the admin pages share.

/**
 * A new element. `attrs`: `text` sets its text, `data-*` and `aria-*` keys set
 * attributes, any other key sets the property of that name (`type`, `hidden`).
 */
export function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  return node;
}
