// The traces page (Jaeger-style): recent traces with filters, and one trace as a waterfall drawn to scale,
// spans coloured by service, the shadow call marked, a span's attributes shown on click.

import { ApiError, getJSON, getOptional } from "./api.js";
import { badge, empty, fmtAgo, fmtDateTime, fmtInt, fmtMs, h, hashUrl, link } from "./dom.js";

const PALETTE = ["#1f6feb", "#d4760a", "#1a7f37", "#8250df", "#bf3989", "#0a7ea4", "#9a6700", "#57606a"];
const KNOWN = { gateway: 0, strangler: 0, legacy: 1, legacy_app: 1, reviews: 2, likes: 3 };

/** A service keeps its colour across traces and refreshes: known names first, else a hash of the name. */
export function serviceColour(service) {
  const name = String(service || "unknown");
  for (const [known, index] of Object.entries(KNOWN)) {
    if (name === known || name.startsWith(`${known}-`) || name.startsWith(`strangler-${known}`)) {
      return PALETTE[index];
    }
  }
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[4 + (hash % (PALETTE.length - 4))];
}

function attributesOf(span) {
  const attrs = span.attributes || {};
  if (Array.isArray(attrs)) {
    return Object.fromEntries(attrs.map((a) => [a.key, a.value && typeof a.value === "object"
      ? Object.values(a.value)[0] : a.value]));
  }
  return attrs;
}

function isShadow(span) {
  const v = attributesOf(span)["strangler.shadow"];
  return v === true || v === "true" || v === 1;
}

function statusOf(span) {
  const st = span.status;
  if (!st) return { code: "UNSET", message: "" };
  if (typeof st === "string") return { code: st.toUpperCase(), message: "" };
  const code = String(st.code ?? st.status_code ?? "UNSET").toUpperCase().replace("STATUS_CODE_", "");
  return { code: code === "2" ? "ERROR" : code, message: st.message || st.description || "" };
}

const ns = (v) => Number(v || 0);

const TRACE_ID = /^[0-9a-f]{32}$/;

/** A trace id in full: monospace and selectable, cut with an ellipsis by CSS only, the whole id in the title. */
function traceIdText(id) {
  return h("code", { class: "trace-id", title: id }, id);
}

/** "Open trace by id": checks the pasted X-Trace-Id (32 hex digits) and opens #/traces/ID. */
function openByIdForm(initial) {
  const input = h("input", { id: "trace-open-id", type: "text", size: 34, maxlength: 64, spellcheck: "false",
    autocomplete: "off", placeholder: "paste an X-Trace-Id", "aria-label": "trace id",
    value: initial || "" });
  const error = h("span", { id: "trace-open-error", class: "error small", role: "alert" });
  const form = h("form", { id: "trace-open", class: "filter trace-open" }, "Open trace ", input,
    h("button", { type: "submit", class: "small" }, "Open"), error);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim().toLowerCase();
    if (!TRACE_ID.test(id)) {
      error.textContent = "A trace id is 32 hex digits (the X-Trace-Id response header).";
      input.focus();
      return;
    }
    error.textContent = "";
    location.hash = hashUrl(["traces", id]);
  });
  input.addEventListener("input", () => { error.textContent = ""; });
  return form;
}

/** The shadow call's verdict as a badge (mismatch red, match green, ignored grey, error magenta). */
function shadowBadge(t) {
  if (!(t.shadow || t.has_shadow)) return null;
  const verdict = t.shadow_verdict;
  if (!verdict) return [" ", badge("shadow", "shadow")];
  return [" ", h("span", { class: `badge badge-shadow shadow-verdict shadow-${verdict.replace(/[^a-z]/g, "")}`,
    title: `the shadow call's comparison: ${verdict}` }, `shadow ${verdict}`)];
}

// ------------------------------------------------------------------------------------------------ list

function traceDuration(t) {
  if (t.duration_ms !== undefined && t.duration_ms !== null) return t.duration_ms;
  if (t.duration_ns !== undefined) return t.duration_ns / 1e6;
  if (t.end_ns && t.start_ns) return (ns(t.end_ns) - ns(t.start_ns)) / 1e6;
  return null;
}

function traceStart(t) {
  if (t.start_ns) return ns(t.start_ns) / 1e9;
  return t.at || t.start || t.started_at || null;
}

function traceRow(t, maxMs) {
  const ms = traceDuration(t);
  const status = statusOf({ status: t.status });
  const services = t.services || [];
  const open = hashUrl(["traces", t.trace_id]);
  // A click opens the trace, unless it ends a text selection (copying the id).
  return h("tr", { class: "clickable", dataset: { trace: t.trace_id, verdict: t.shadow_verdict || "" },
    onclick: (event) => {
      if (event.target.tagName !== "A" && !String(getSelection() || "")) location.hash = open;
    } },
  h("td", { class: "trace-id-cell" }, traceIdText(String(t.trace_id))),
  h("td", { class: "muted nowrap", title: fmtDateTime(traceStart(t)) }, fmtAgo(traceStart(t))),
  h("td", {}, t.route || ""),
  h("td", { class: "target" }, h("a", { href: open, title: "open this trace" },
    h("code", {}, t.name || t.root || [t.method, t.path].filter(Boolean).join(" ")))),
  h("td", {}, services.map((svc) => h("span", { class: "svc" },
    h("span", { class: "swatch", dataset: { service: svc } }), svc))),
  h("td", { class: "num" }, fmtInt(t.span_count ?? t.spans ?? null)),
  h("td", {}, status.code === "ERROR" ? badge("error", "verdict-error") : badge(t.http_status || "ok", "ok"),
    shadowBadge(t)),
  h("td", { class: "num duration" }, fmtMs(ms),
    h("div", { class: "minibar" }, h("div", { class: "minibar-fill" }))));
}

function paintSwatches(root) {
  for (const sw of root.querySelectorAll(".swatch[data-service]")) sw.style.background = serviceColour(sw.dataset.service);
}

function listPage(route) {
  const state = {
    route: route.query.get("route") || "",
    status: route.query.get("status") || "",
    min_ms: route.query.get("min_ms") || "",
  };
  const body = h("div", { class: "trace-list" });
  let page = null;
  const update = (change) => {
    Object.assign(state, change);
    history.replaceState(null, "", hashUrl(["traces"], state));
    page.refresh();
  };
  const routeSel = h("select", { id: "trace-route", onchange: (e) => update({ route: e.target.value }) },
    h("option", { value: "" }, "all routes"));
  const statusSel = h("select", { id: "trace-status", onchange: (e) => update({ status: e.target.value }) },
    [["", "any status"], ["error", "errors only"], ["ok", "ok only"]].map(([v, t]) =>
      h("option", { value: v, selected: v === state.status }, t)));
  const minInput = h("input", { id: "trace-min-ms", type: "number", min: 0, step: 1, value: state.min_ms,
    placeholder: "0", onchange: (e) => update({ min_ms: e.target.value }) });
  const el = h("div", { class: "page page-traces" }, h("section", { class: "panel" },
    h("div", { class: "card-head" }, h("h2", {}, "Recent traces"),
      h("label", { class: "filter" }, "Route ", routeSel),
      h("label", { class: "filter" }, "Status ", statusSel),
      h("label", { class: "filter" }, "Slower than ", minInput, " ms"),
      openByIdForm()),
    body));

  async function syncRoutes() {
    const routes = await getJSON("/api/routes");
    const want = ["", ...routes.map((r) => r.name)];
    const have = [...routeSel.options].map((o) => o.value);
    if (want.join("\n") !== have.join("\n")) {
      routeSel.replaceChildren(...want.map((n) => h("option", { value: n, selected: n === state.route },
        n || "all routes")));
    }
  }

  page = {
    el,
    live: true,
    async refresh() {
      const q = new URLSearchParams({ limit: "50" });
      for (const [k, v] of Object.entries(state)) if (v) q.set(k, v);
      const [data] = await Promise.all([getOptional(`/api/traces?${q}`), syncRoutes()]);
      const traces = data === null ? null : Array.isArray(data) ? data : data.traces || [];
      if (traces === null) {
        body.replaceChildren(empty("No traces yet.", h("p", { class: "muted" },
          "This gateway does not record traces yet. Once it does, every request's trace (its X-Trace-Id "
          + "response header) shows up here.")));
        return;
      }
      if (!traces.length) {
        body.replaceChildren(empty(Object.values(state).some(Boolean)
          ? "No traces match these filters." : "No traces yet: send some requests through the gateway."));
        return;
      }
      const maxMs = Math.max(...traces.map((t) => traceDuration(t) || 0), 0.001);
      const table = h("table", { class: "grid compact", id: "traces" },
        h("thead", {}, h("tr", {}, h("th", {}, "Trace"), h("th", {}, "When"), h("th", {}, "Route"),
          h("th", {}, "Root"), h("th", {}, "Services"), h("th", { class: "num" }, "Spans"), h("th", {}, "Status"),
          h("th", { class: "num" }, "Duration"))),
        h("tbody", {}, traces.map((t) => traceRow(t, maxMs))));
      // Bar widths through CSSOM (the CSP forbids style attributes).
      table.querySelectorAll("tbody tr").forEach((tr, i) => {
        tr.querySelector(".minibar-fill").style.width = `${(100 * (traceDuration(traces[i]) || 0)) / maxMs}%`;
      });
      paintSwatches(table);
      body.replaceChildren(table);
    },
  };
  return page;
}

// ------------------------------------------------------------------------------------------------ waterfall

/** Spans in tree order (depth-first, children by start time), each with its depth and shadow ancestry. */
export function treeOrder(spans) {
  const byId = new Map(spans.map((sp) => [sp.span_id, sp]));
  const children = new Map();
  const roots = [];
  for (const sp of spans) {
    if (sp.parent_span_id && byId.has(sp.parent_span_id)) {
      if (!children.has(sp.parent_span_id)) children.set(sp.parent_span_id, []);
      children.get(sp.parent_span_id).push(sp);
    } else {
      roots.push(sp);
    }
  }
  const byStart = (a, b) => ns(a.start_ns) - ns(b.start_ns);
  const out = [];
  const visit = (sp, depth, inShadow) => {
    const shadow = isShadow(sp);
    out.push({ span: sp, depth, shadow, inShadow: inShadow || shadow, orphan: depth === 0 && !!sp.parent_span_id });
    for (const child of (children.get(sp.span_id) || []).sort(byStart)) visit(child, depth + 1, inShadow || shadow);
  };
  for (const root of roots.sort(byStart)) visit(root, 0, false);
  return out;
}

function ticks(totalMs) {
  const raw = totalMs / 5;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = 0; t <= totalMs + 1e-9; t += step) out.push(t);
  return out;
}

function spanDetail(entry, t0) {
  const sp = entry.span;
  const attrs = attributesOf(sp);
  const status = statusOf(sp);
  const rows = [
    ["service", sp.service], ["kind", sp.kind], ["span id", sp.span_id], ["parent", sp.parent_span_id || "(root)"],
    ["starts at", `+${fmtMs((ns(sp.start_ns) - t0) / 1e6)}`], ["duration", fmtMs((ns(sp.end_ns) - ns(sp.start_ns)) / 1e6)],
    ["status", status.message ? `${status.code}: ${status.message}` : status.code],
  ];
  return h("section", { class: "panel span-detail", id: "span-detail" },
    h("div", { class: "card-head" }, h("h3", {}, sp.name),
      h("span", { class: "svc" }, h("span", { class: "swatch", dataset: { service: sp.service } }), sp.service),
      entry.shadow ? badge("shadow", "shadow") : null),
    h("table", { class: "grid compact kv" }, h("tbody", {},
      rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v ?? "–"))),
      Object.entries(attrs).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => h("tr", { class: "attr" },
        h("th", {}, h("code", {}, k)), h("td", {}, h("code", {}, typeof v === "string" ? v : JSON.stringify(v))))))));
}

/** The trace's shadow comparisons (links to them) and the services whose spans are still on their way. */
function traceNotes(trace) {
  const comparisons = trace.comparisons || [];
  const waiting = trace.awaiting || {};
  return h("div", { class: "trace-notes" },
    comparisons.length
      ? h("div", { id: "trace-comparisons" }, "Shadow comparison: ", comparisons.map((c, i) => [i ? ", " : "",
        link(`#${c.id}`, ["diffs", c.id], null, { class: "comparison-link" }), " ",
        badge(c.verdict, `verdict-${c.verdict}`)]))
      : null,
    waiting.text
      ? h("div", { id: "trace-awaiting", class: `notice ${waiting.state}`, dataset: { state: waiting.state } },
        waiting.text)
      : null);
}

function waterfall(trace, selected, onSelect) {
  const spans = trace.spans || [];
  const t0 = Math.min(...spans.map((sp) => ns(sp.start_ns)));
  const t1 = Math.max(...spans.map((sp) => ns(sp.end_ns || sp.start_ns)));
  const total = Math.max(t1 - t0, 1);
  const totalMs = total / 1e6;
  const order = treeOrder(spans);
  const services = [...new Set(spans.map((sp) => sp.service || "unknown"))];

  const axis = h("div", { class: "wf-axis" }, ticks(totalMs).map((t) => {
    const tick = h("span", { class: "wf-tick" }, fmtMs(t));
    tick.style.left = `${(100 * t) / totalMs}%`;
    return tick;
  }));
  const rows = order.map((entry) => {
    const sp = entry.span;
    const start = ns(sp.start_ns) - t0;
    const dur = Math.max(0, ns(sp.end_ns || sp.start_ns) - ns(sp.start_ns));
    const status = statusOf(sp);
    const bar = h("div", { class: `wf-bar${entry.shadow ? " shadow" : ""}${status.code === "ERROR" ? " error" : ""}` });
    bar.style.left = `${(100 * start) / total}%`;
    bar.style.width = `max(2px, ${(100 * dur) / total}%)`;
    bar.style.setProperty("--svc", serviceColour(sp.service));
    const label = h("span", { class: "wf-dur" }, fmtMs(dur / 1e6));
    label.style.left = `${(100 * (start + dur)) / total}%`;
    const name = h("div", { class: "wf-name" },
      h("span", { class: "swatch", dataset: { service: sp.service || "unknown" } }),
      h("span", { class: "wf-span-name" }, sp.name),
      h("span", { class: "muted" }, ` ${sp.service || ""}`),
      entry.shadow ? [" ", badge("shadow", "shadow")] : null,
      status.code === "ERROR" ? [" ", badge("error", "verdict-error")] : null);
    name.style.paddingLeft = `${6 + entry.depth * 14}px`;
    const row = h("div", {
      class: `wf-row${entry.inShadow ? " in-shadow" : ""}${sp.span_id === selected ? " selected" : ""}`,
      dataset: { span: sp.span_id, shadow: entry.shadow ? "true" : "false" },
      tabindex: 0, role: "button", onclick: () => onSelect(sp.span_id),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(sp.span_id); } },
    }, name, h("div", { class: "wf-track" }, bar, label));
    return row;
  });
  const chosen = order.find((e) => e.span.span_id === selected);
  const root = order[0] ? order[0].span : {};
  const el = h("div", {},
    h("section", { class: "panel" },
      h("div", { class: "card-head" },
        h("h2", {}, root.name || "trace"),
        h("code", { class: "muted trace-id-full", title: "trace id" }, trace.trace_id),
        h("span", {}, `${fmtInt(spans.length)} spans · ${fmtMs(totalMs)}`),
        h("span", { class: "legend-services" }, services.map((svc) => h("span", { class: "svc" },
          h("span", { class: "swatch", dataset: { service: svc } }), svc))),
        h("span", { class: "legend-shadow" }, h("span", { class: "wf-bar-sample shadow" }), "shadow call")),
      traceNotes(trace),
      h("div", { class: "waterfall", id: "waterfall" },
        h("div", { class: "wf-row wf-head" }, h("div", { class: "wf-name" }, "Span"), h("div", { class: "wf-track" }, axis)),
        rows)),
    chosen ? spanDetail(chosen, t0) : h("p", { class: "muted" }, "Click a span to see its attributes."));
  paintSwatches(el);
  return el;
}

function tracePage(route) {
  const id = String(route.parts[0]).trim().toLowerCase();
  const el = h("div", { class: "page page-trace" });
  let selected = null;
  let last = null;
  let spanCount = -1;
  let missing = "";   // the message shown while the trace is not there (kept so the id form is not redrawn)
  const notFound = (title, text) => {
    if (missing === title + text) return;
    missing = title + text;
    spanCount = -1;
    el.replaceChildren(h("p", {}, link("← recent traces", ["traces"])),
      h("section", { class: "panel", id: "trace-missing" }, empty(title, h("p", { class: "muted" }, text)),
        h("div", { class: "card-head" }, openByIdForm(id))));
  };
  const draw = () => {
    el.replaceChildren(h("p", {}, link("← recent traces", ["traces"])), waterfall(last, selected, (spanId) => {
      selected = spanId;
      draw();
    }));
  };
  return {
    el,
    live: true,
    async refresh() {
      if (!TRACE_ID.test(id)) {
        notFound(`"${id}" is not a trace id.`, "A trace id is 32 hex digits: the X-Trace-Id response header.");
        return;
      }
      let trace;
      try {
        trace = await getJSON(`/api/traces/${encodeURIComponent(id)}`);
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        if (err.status !== 404) {
          notFound(`Trace ${id} could not be read.`, err.message);
          return;
        }
        trace = null;
      }
      if (!trace || !(trace.spans || []).length) {
        notFound(`Trace ${id} not found.`, "The gateway has no trace with this id: the request was not sampled, "
          + "its spans are still on their way (this page keeps looking), or the trace store no longer keeps it "
          + "(it holds the latest traces only).");
        return;
      }
      missing = "";
      // Late spans (the shadow call ends after the client got its answer), a comparison recorded since, or the
      // services' spans arriving redraw the waterfall; else keep it (and the selected span).
      const seen = `${trace.spans.length}/${(trace.comparisons || []).length}/${(trace.awaiting || {}).state}`;
      if (seen === spanCount) return;
      spanCount = seen;
      last = trace;
      draw();
    },
  };
}

export function tracesPage(route) {
  return route.parts.length ? tracePage(route) : listPage(route);
}
