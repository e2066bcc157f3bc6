// DOM helpers. Every piece of data reaches the page as a text node or an attribute value set through the DOM,
// never as markup: recorded bodies and headers come from backends and are untrusted.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("td", {class: "num"}, "12 ms"). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** A hash link inside the console: parts are URI-encoded, so data cannot change the route or the scheme. */
export function link(text, parts, query, attrs) {
  return h("a", { href: hashUrl(parts, query), ...(attrs || {}) }, text);
}

export function hashUrl(parts, query) {
  let url = "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const qs = q.toString();
  return qs ? `${url}?${qs}` : url;
}

/** Set an element's width as a percentage (through CSSOM, which the CSP allows, unlike style attributes). */
export function widthPct(el, pct) {
  el.style.width = `${Math.max(0, Math.min(100, pct))}%`;
  return el;
}

/**
 * One segment of a stacked bar, `pct` wide. The full label is its title; when the segment is too narrow for it,
 * the label is hidden whole (CSS wraps it out of sight) rather than cut to a fragment.
 */
export function segment(kind, label, pct, title) {
  return widthPct(h("div", { class: `seg ${kind}`, title: title || label || null },
    h("span", { class: "seg-label" }, label)), pct);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

export function fmtPct(p, digits = 1) {
  if (p === null || p === undefined || Number.isNaN(p)) return "–";
  // A share that is not zero never reads as zero (a visible sliver labelled "0.0%" is a small lie).
  const smallest = 10 ** -digits;
  const n = Number(p);
  if (n > 0 && n < smallest) return `<${smallest.toFixed(digits)}%`;
  if (n < 100 && n > 100 - smallest) return `>${(100 - smallest).toFixed(digits)}%`;
  return `${n.toFixed(digits)}%`;
}

export function fmtInt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

/** "12s ago" from a Unix time in seconds. */
export function fmtAgo(at) {
  if (!at) return "–";
  const secs = Math.max(0, Date.now() / 1000 - at);
  if (secs < 60) return `${Math.round(secs)}s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)}m ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)}h ago`;
  return `${Math.round(secs / 86400)}d ago`;
}

/** Local wall-clock time of a Unix time in seconds: 14:03:27. */
export function fmtTime(at) {
  if (!at) return "–";
  const d = new Date(at * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

export function fmtDateTime(at) {
  if (!at) return "–";
  const d = new Date(at * 1000);
  return `${d.toLocaleDateString("en-CA")} ${d.toLocaleTimeString("en-GB", { hour12: false })}`;
}

/** A small coloured label: stage, verdict, status. */
export function badge(text, kind) {
  return h("span", { class: `badge badge-${String(kind || text).replace(/[^a-z0-9-]/gi, "")}` }, text);
}

export function empty(text, extra) {
  return h("div", { class: "empty" }, h("p", {}, text), extra || null);
}
