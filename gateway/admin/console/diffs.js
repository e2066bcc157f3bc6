// The differences page (Diffy-style): per route the verdicts, the top differing fields with counts, the learned
// noise fields and recent samples; and one sample side by side, legacy against the new service, with the
// differing paths highlighted in headers and bodies.

import { getJSON, getOptional, post } from "./api.js";
import { confirmAction, toast } from "./dialogs.js";
import {
  badge, empty, fmtAgo, fmtDateTime, fmtInt, fmtMs, fmtPct, h, hashUrl, link, segment, widthPct,
} from "./dom.js";
import { renderJSON, renderText } from "./json.js";

const VERDICTS = ["mismatch", "error", "ignored", "match", "skipped"];
// The windows a report can cover (the gateway computes each; see gateway/admin/scope.py).
const SCOPES = [["", "everything stored"], ["reload", "this version of the route (since routes.yaml changed it)"],
  ["10m", "last 10 minutes"], ["1h", "last hour"]];

function verdictBar(entry) {
  const total = entry.compared || 0;
  if (!total) return h("div", { class: "stackbar" }, h("div", { class: "seg seg-none" }, "nothing compared yet"));
  return h("div", { class: "stackbar", title: `verdicts of the comparisons: ${entry.window}` },
    VERDICTS.filter((v) => entry.verdicts[v]).map((v) => segment(`verdict-${v}`, `${v} ${fmtPct(entry.rates[v])}`,
      (100 * entry.verdicts[v]) / total, `${v} ${fmtPct(entry.rates[v])} (${fmtInt(entry.verdicts[v])})`)));
}

function fieldsTable(entry) {
  const counted = entry.fields.filter((f) => f.count > 0);
  if (!counted.length) return empty(`No differing fields (${entry.window}).`);
  const max = Math.max(...counted.map((f) => f.count));
  return h("table", { class: "grid compact fields" },
    h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Kind"), h("th", { class: "num" }, "Differed"),
      h("th", { class: "num" }, "Of compared"), h("th", {}, ""))),
    h("tbody", {}, counted.map((f) => h("tr", { dataset: { field: f.field, ignoredByRule: f.ignored_by_rule ? "true" : "false" },
      class: f.ignored_by_rule ? "covered" : "" },
      h("td", {}, h("code", { class: "field" }, f.field), f.ignored_by_rule
        ? [" ", h("span", { class: "badge badge-ignored-rule", title: "an ignore rule in routes.yaml covers this "
          + "field now; these counts were taken before it" }, "ignored by rule now")] : null),
      h("td", { class: "muted" }, f.kind),
      h("td", { class: "num" }, fmtInt(f.count),
        h("div", { class: "minibar" }, widthPct(h("div", { class: "minibar-fill fill-bad" }), (100 * f.count) / max))),
      h("td", { class: "num", title: `of ${fmtInt(entry.compared)} compared, ${entry.window}` }, fmtPct(f.share)),
      h("td", {}, f.last_sample ? link("latest sample", ["diffs", f.last_sample]) : "")))));
}

function noiseTable(entry) {
  const ignored = entry.fields.filter((f) => f.count === 0 && f.ignored > 0);
  const rules = entry.ignore_rules || [];
  if (!entry.noise.length && !ignored.length && !rules.length) return empty("No ignore rules, no noise learned yet.");
  const seen = new Set([...entry.noise.map((n) => n.field), ...rules]);
  return h("table", { class: "grid compact noise" },
    h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", { class: "num", title: "share of legacy-vs-legacy "
      + "repeats where the field changed by itself" }, "Why ignored"), h("th", { class: "num" }, "Ignored"))),
    h("tbody", {},
      rules.map((rule) => h("tr", { dataset: { rule } },
        h("td", {}, h("code", { class: "field" }, rule)),
        h("td", { class: "num muted" }, "rule in routes.yaml"),
        h("td", { class: "num" }, fmtInt((entry.fields.find((f) => f.field === rule) || {}).ignored || 0)))),
      entry.noise.map((n) => h("tr", {},
        h("td", {}, h("code", { class: "field" }, n.field)),
        h("td", { class: "num" }, `learned: changed in ${fmtPct(n.rate, 0)} of ${fmtInt(entry.noise_samples)} repeats`),
        h("td", { class: "num" }, fmtInt((entry.fields.find((f) => f.field === n.field) || {}).ignored || 0)))),
      ignored.filter((f) => !seen.has(f.field)).map((f) => h("tr", {},
        h("td", {}, h("code", { class: "field" }, f.field)),
        h("td", { class: "num muted" }, "rule"),
        h("td", { class: "num" }, fmtInt(f.ignored))))));
}

function latencyLine(entry) {
  const lat = entry.latency || {};
  const sides = [["legacy", lat.legacy], ["shadow", lat.shadow], ["extracted", lat.extracted]]
    .filter(([, v]) => v && v.requests);
  if (!sides.length) return null;
  return h("div", { class: "muted small" }, `Latency (${entry.latency_window || "last 5 min"}): `,
    sides.map(([name, v], i) => [i ? " · " : "", h("span", { class: `side-${name}` },
      `${name} p50 ${fmtMs(v.p50_ms)} p99 ${fmtMs(v.p99_ms)}`)]));
}

function skippedLine(entry) {
  const skipped = { ...(entry.skipped || {}) };
  const reasons = Object.entries(skipped);
  if (!reasons.length) return null;
  return h("div", { class: "muted small" }, "Not shadowed: ",
    reasons.map(([reason, n], i) => `${i ? ", " : ""}${reason} ${fmtInt(n)}`));
}

async function clearResults(entry) {
  const answer = await confirmAction({
    title: `Clear the results of ${entry.route}?`,
    text: `Every stored comparison of ${entry.route} and its counters are forgotten; its report starts again `
      + "from now. Learned noise is kept.",
    ok: "Clear results",
  });
  if (!answer) return;
  try {
    await post(`/api/routes/${encodeURIComponent(entry.route)}/clear`, {});
    toast(`${entry.route}: results cleared`, "ok");
  } catch (err) {
    toast(`clearing ${entry.route} failed: ${err.message}`, "error");
  }
  document.dispatchEvent(new Event("strangler:refresh"));
}

function routeCard(entry) {
  return h("section", { class: "panel route-card", dataset: { route: entry.route } },
    h("div", { class: "card-head" },
      h("h2", {}, entry.route), badge(entry.stage, `stage-${entry.stage}`),
      h("span", { class: "muted compared" }, `${fmtInt(entry.compared)} compared`),
      h("span", { class: "muted window" }, entry.window || ""),
      (entry.match || {}).compared
        ? h("span", { class: "match-figure", title: "match or ignored: equal for the migration" },
          `equal: ${entry.match.text}`) : null,
      h("span", { class: "right" },
        link("samples", ["diffs"], { route: entry.route, verdict: "mismatch" }), " ",
        h("button", { type: "button", class: "small clear-results", onclick: () => clearResults(entry) },
          "Clear results"))),
    verdictBar(entry),
    latencyLine(entry),
    skippedLine(entry),
    h("div", { class: "two-col" },
      h("div", {}, h("h3", {}, "Top differing fields"), fieldsTable(entry)),
      h("div", {}, h("h3", {}, "Noise and ignored fields"), noiseTable(entry))));
}

function sampleRow(sample) {
  const diffs = sample.differences || [];
  const shown = diffs.slice(0, 3).map((d) => d.path).join(", ") + (diffs.length > 3 ? ` +${diffs.length - 3}` : "");
  const open = hashUrl(["diffs", sample.id]);
  return h("tr", { class: "clickable", dataset: { sample: sample.id, verdict: sample.verdict },
    onclick: (event) => { if (event.target.tagName !== "A") location.hash = open; } },
  h("td", { class: "num" }, h("a", { href: open }, `#${sample.id}`)),
  h("td", { class: "muted nowrap", title: fmtDateTime(sample.at) }, fmtAgo(sample.at)),
  h("td", {}, sample.route),
  h("td", { class: "target" }, h("code", {}, `${sample.method} ${sample.path}`)),
  h("td", {}, badge(sample.verdict, `verdict-${sample.verdict}`), sample.replay ? " replay" : ""),
  h("td", { class: "num" }, `${sample.primary.status ?? "–"} · ${fmtMs(sample.primary.ms)}`),
  h("td", { class: "num" }, `${sample.shadow.status ?? "–"} · ${fmtMs(sample.shadow.ms)}`),
  h("td", { class: "diffpaths" }, sample.reason ? h("span", { class: "muted" }, sample.reason) : "",
    h("code", {}, shown)),
  h("td", {}, sample.trace_id ? link("trace", ["traces", sample.trace_id]) : ""));
}

function select(id, label, options, value, onchange) {
  const el = h("select", { id, onchange: (e) => onchange(e.target.value) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return h("label", { class: "filter" }, `${label} `, el);
}

function listPage(route) {
  const state = { route: route.query.get("route") || "", verdict: route.query.get("verdict") || "",
    since: route.query.get("since") || "" };
  const cards = h("div", { class: "cards" });
  const samples = h("div", { class: "samples" });
  const routeOptions = [["", "all routes"]];
  const routeSelect = select("filter-route", "Route", routeOptions, state.route, (v) => update({ route: v }));
  const verdictSelect = select("filter-verdict", "Verdict",
    [["", "any verdict"], ...VERDICTS.map((v) => [v, v])], state.verdict, (v) => update({ verdict: v }));
  const sinceSelect = select("filter-since", "Results", SCOPES, state.since, (v) => update({ since: v }));
  const samplesScope = h("span", { class: "muted small", id: "samples-scope" });
  const el = h("div", { class: "page page-diffs" }, h("div", { class: "card-head scope-bar" }, sinceSelect), cards,
    h("section", { class: "panel" },
      h("div", { class: "card-head" }, h("h2", {}, "Recent samples"), routeSelect, verdictSelect, samplesScope),
      samples));

  let page = null;
  function update(change) {
    Object.assign(state, change);
    history.replaceState(null, "", hashUrl(["diffs"], state));
    page.refresh();
  }

  function syncRouteOptions(names) {
    const sel = routeSelect.querySelector("select");
    const have = [...sel.options].map((o) => o.value);
    const want = ["", ...names];
    if (have.join("\n") === want.join("\n")) return;
    sel.replaceChildren(...want.map((n) => h("option", { value: n, selected: n === state.route }, n || "all routes")));
  }

  page = {
    el,
    live: true,
    async refresh() {
      const q = new URLSearchParams({ limit: "50" });
      if (state.route) q.set("route", state.route);
      if (state.verdict) q.set("verdict", state.verdict);
      // "This version of the route" is per route: the samples list follows it once a route is chosen.
      if (state.since && (state.since !== "reload" || state.route)) q.set("since", state.since);
      samplesScope.textContent = state.since === "reload" && !state.route
        ? "all stored samples: choose a route to see only its current version's" : "";
      const rq = new URLSearchParams();
      if (state.since) rq.set("since", state.since);
      const [report, rows] = await Promise.all([getJSON(`/api/report?${rq}`), getJSON(`/api/diffs?${q}`)]);
      const entries = report.routes.filter((r) => r.compared || Object.keys(r.skipped || {}).length
        || r.stage === "shadow" || r.noise.length);
      syncRouteOptions(report.routes.map((r) => r.route));
      const shown = entries.filter((r) => !state.route || r.route === state.route);
      cards.replaceChildren(...(shown.length ? shown.map(routeCard)
        : [empty("No route is being shadowed yet: put a route in stage shadow in routes.yaml and send it traffic.")]));
      samples.replaceChildren(rows.length
        ? h("table", { class: "grid compact", id: "samples" },
          h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Id"), h("th", {}, "When"), h("th", {}, "Route"),
            h("th", {}, "Request"), h("th", {}, "Verdict"), h("th", { class: "num" }, "Legacy"),
            h("th", { class: "num" }, "New"), h("th", {}, "Differences"), h("th", {}, ""))),
          h("tbody", {}, rows.map(sampleRow)))
        : empty("No samples match these filters."));
    },
  };
  return page;
}

// ------------------------------------------------------------------------------------------------ one sample

function marksFor(sample) {
  const marks = new Map();
  for (const d of sample.ignored || []) marks.set(d.path, "hl-ignored");
  for (const d of sample.differences || []) marks.set(d.path, "hl-diff");
  // A difference of the whole body (different bytes, different length) marks all of it.
  if (marks.has("body")) marks.set("$", marks.get("body"));
  return marks;
}

function headersTable(headers, marks) {
  if (!headers || !headers.length) return h("p", { class: "muted" }, "no headers recorded");
  return h("table", { class: "grid compact headers" }, h("tbody", {}, headers.map(([name, value]) => {
    const mark = marks.get(`header:${String(name).toLowerCase()}`) || "";
    return h("tr", { class: mark, dataset: { path: `header:${String(name).toLowerCase()}` } },
      h("th", {}, name), h("td", {}, value));
  })));
}

function bodyView(body, marks) {
  if (!body || (body.text === null && !body.base64)) return h("p", { class: "muted" }, "no body");
  if (body.text === null || body.text === undefined) {
    return h("p", { class: "muted" }, `binary body, ${fmtInt(body.size)} bytes`);
  }
  try {
    return renderJSON(JSON.parse(body.text), marks);
  } catch {
    return renderText(body.text, marks);
  }
}

function sidePane(title, side, marks, statusDiffers) {
  return h("div", { class: "side-pane" },
    h("div", { class: "pane-head" },
      h("h3", {}, title),
      h("span", { class: "muted" }, side.backend || ""),
      h("span", { class: `status${statusDiffers ? " hl-diff" : ""}`, dataset: { path: "status" } },
        `HTTP ${side.status ?? "–"}`),
      h("span", { class: "muted" }, fmtMs(side.ms)),
      side.truncated ? badge("truncated", "warn") : null),
    h("h4", {}, "Headers"), headersTable(side.headers, marks),
    h("h4", {}, `Body${side.body && side.body.size ? ` (${fmtInt(side.body.size)} bytes)` : ""}`),
    bodyView(side.body, marks));
}

function showValue(v) {
  if (v === undefined) return "–";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function scrollToPath(root, path) {
  for (const line of root.querySelectorAll(".side-pane [data-path]")) {
    if (line.dataset.path === path) {
      line.scrollIntoView({ block: "center" });
      line.classList.add("flash");
      setTimeout(() => line.classList.remove("flash"), 1200);
    }
  }
}

/** Scroll each body pane (not the window) so the first line of `path` is in view. */
function centerInPanes(root, path) {
  for (const code of root.querySelectorAll(".side-pane .code")) {
    const line = [...code.querySelectorAll("[data-path]")].find((l) => l.dataset.path === path);
    if (line) code.scrollTop = Math.max(0, line.offsetTop - code.offsetTop - code.clientHeight / 3);
  }
}

function differencesTable(sample, root) {
  const all = [...(sample.differences || []).map((d) => ({ ...d, counted: true })),
    ...(sample.ignored || []).map((d) => ({ ...d, counted: false }))];
  if (!all.length) return h("p", { class: "muted" }, "The two answers are the same.");
  return h("table", { class: "grid compact", id: "differences" },
    h("thead", {}, h("tr", {}, h("th", {}, "Path"), h("th", {}, "Kind"), h("th", {}, "Legacy"), h("th", {}, "New"),
      h("th", {}, ""))),
    h("tbody", {}, all.map((d) => h("tr", { class: d.counted ? "" : "muted" },
      h("td", {}, h("a", { href: "#", class: "path-link", onclick: (e) => { e.preventDefault(); scrollToPath(root, d.path); } },
        h("code", {}, d.path))),
      h("td", {}, d.kind),
      h("td", { class: "value" }, d.kind === "extra" ? h("span", { class: "muted absent" }, "(absent)")
        : h("code", {}, showValue(d.legacy))),
      h("td", { class: "value" }, d.kind === "missing" ? h("span", { class: "muted absent" }, "(absent)")
        : h("code", {}, showValue(d.shadow))),
      h("td", { class: "muted" }, d.counted ? "" : "ignored")))));
}

function samplePage(route) {
  const id = route.parts[0];
  const el = h("div", { class: "page page-sample" });
  let loaded = false;
  return {
    el,
    // A stored comparison never changes: load it once.
    get live() { return !loaded; },
    async refresh() {
      if (loaded) return;
      const sample = await getOptional(`/api/diffs/${encodeURIComponent(id)}`);
      loaded = true;
      if (!sample) {
        el.replaceChildren(h("p", {}, link("← all differences", ["diffs"])),
          empty(`No comparison #${id}: samples are kept within the store's bounds, older ones are gone.`));
        return;
      }
      const marks = marksFor(sample);
      const statusDiffers = (sample.differences || []).some((d) => d.path === "status");
      const req = sample.request || {};
      el.replaceChildren(
        h("p", {}, link("← differences of this route", ["diffs"], { route: sample.route })),
        h("section", { class: "panel" },
          h("div", { class: "card-head" },
            h("h2", {}, `Comparison #${sample.id}`), badge(sample.verdict, `verdict-${sample.verdict}`),
            h("code", { class: "target" }, `${sample.method} ${sample.path}`),
            h("span", { class: "muted" }, `route ${sample.route}`),
            h("span", { class: "muted", title: fmtDateTime(sample.at) }, fmtDateTime(sample.at)),
            sample.trace_id
              ? link("Open trace", ["traces", sample.trace_id], null, { class: "button right", id: "trace-link" })
              : h("span", { class: "muted right", id: "trace-link-none" }, "no trace recorded for this request")),
          sample.reason ? h("p", { class: "muted" }, sample.reason) : null,
          differencesTable(sample, el),
          h("details", { class: "request" }, h("summary", {}, "Request as sent to both"),
            headersTable(req.headers, new Map()), bodyView(req.body, new Map()))),
        h("div", { class: "side-by-side" },
          sidePane("Legacy", sample.primary, marks, statusDiffers),
          sidePane("New", sample.shadow, marks, statusDiffers)));
      const first = (sample.differences || [])[0];
      if (first) centerInPanes(el, first.path);
    },
  };
}

export function diffsPage(route) {
  return route.parts.length ? samplePage(route) : listPage(route);
}
