// Pretty JSON as DOM lines, each tagged with its JSON path, so the paths a comparison reported can be
// highlighted. Paths are written the way the comparison engine writes them: `$.items[3].created_at`, and
// `$['a b']` for keys that are not identifiers.

import { h } from "./dom.js";

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function childPath(parent, key) {
  if (typeof key === "number") return `${parent}[${key}]`;
  if (IDENTIFIER.test(key)) return `${parent}.${key}`;
  return `${parent}['${key.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}']`;
}

function scalar(value) {
  if (value === null) return h("span", { class: "j-null" }, "null");
  switch (typeof value) {
    case "string": return h("span", { class: "j-str" }, JSON.stringify(value));
    case "number": return h("span", { class: "j-num" }, String(value));
    case "boolean": return h("span", { class: "j-bool" }, String(value));
    default: return h("span", {}, String(value));
  }
}

/**
 * Render `value` as lines. `marks` maps a concrete path to a class ("hl-diff" or "hl-ignored"); a marked
 * container marks every line inside it.
 */
export function renderJSON(value, marks) {
  const lines = [];
  const walk = (val, path, key, depth, last, inherited) => {
    const mark = marks.get(path) || inherited;
    const head = [h("span", { class: "j-indent" }, "  ".repeat(depth))];
    if (key !== undefined) {
      head.push(h("span", { class: "j-key" }, JSON.stringify(String(key))), ": ");
    }
    const comma = last ? "" : ",";
    const line = (parts, p) => {
      const el = h("div", { class: `j-line${mark ? ` ${mark}` : ""}`, dataset: { path: p } }, parts);
      if (mark) el.title = p;
      lines.push(el);
    };
    if (val !== null && typeof val === "object") {
      const isArray = Array.isArray(val);
      const entries = isArray ? val.map((v, i) => [i, v]) : Object.entries(val);
      const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
      if (!entries.length) {
        line([...head, `${open}${close}${comma}`], path);
        return;
      }
      line([...head, open], path);
      entries.forEach(([k, v], i) => {
        walk(v, childPath(path, k), isArray ? undefined : k, depth + 1, i === entries.length - 1, mark);
      });
      line([h("span", { class: "j-indent" }, "  ".repeat(depth)), `${close}${comma}`], path);
    } else {
      line([...head, scalar(val), comma], path);
    }
  };
  walk(value, "$", undefined, 0, true, "");
  return h("div", { class: "code json" }, lines);
}

/** Plain text as numbered lines; `marks` maps "body:line:N" (1-based) to a class. */
export function renderText(text, marks) {
  const lines = text.split("\n").map((t, i) => {
    const path = `body:line:${i + 1}`;
    const mark = marks.get(path) || "";
    return h("div", { class: `j-line${mark ? ` ${mark}` : ""}`, dataset: { path } },
      h("span", { class: "lineno" }, String(i + 1)), t);
  });
  return h("div", { class: "code text" }, lines);
}
