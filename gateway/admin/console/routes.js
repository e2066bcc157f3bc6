// The routes page: the migration at a glance, every route with its stage, pin, shadow match rate, error rates and
// latency of both sides over the last window, a traffic sparkline, and the rollback / resume buttons.

import { post, getJSON, getOptional } from "./api.js";
import { confirmAction, toast } from "./dialogs.js";
import { roomsPanel } from "./rooms.js";
import { badge, empty, fmtAgo, fmtDateTime, fmtInt, fmtMs, fmtPct, h, link, s, segment, widthPct } from "./dom.js";
import { syncPanel } from "./sync.js";

const STAGES = ["legacy", "shadow", "canary", "extracted"];
const WINDOW_S = 60;

/** The side that stands for "the new service" in a route's stats: its live traffic, or else its shadow copies. */
function newSide(route) {
  const st = route.stats || {};
  if (route.effective_stage === "shadow" || (!(st.extracted || {}).requests && (st.shadow || {}).requests)) {
    return { label: "shadow", stats: st.shadow || {} };
  }
  return { label: "new", stats: st.extracted || {} };
}

function progress(routes) {
  const declared = routes.filter((r) => r.name !== "fallback" || r.line !== null);
  const byStage = Object.fromEntries(STAGES.map((st) => [st, 0]));
  for (const r of declared) byStage[r.effective_stage] = (byStage[r.effective_stage] || 0) + 1;
  let legacyReq = 0;
  let newReq = 0;
  for (const r of routes) {
    legacyReq += ((r.stats || {}).legacy || {}).requests || 0;
    newReq += ((r.stats || {}).extracted || {}).requests || 0;
  }
  const total = legacyReq + newReq;
  const traffic = total ? (100 * newReq) / total : 0;
  const moved = declared.filter((r) => r.effective_stage !== "legacy").length;

  const stageBar = h("div", { class: "stackbar", title: "routes by effective stage" },
    STAGES.filter((st) => byStage[st]).map((st) =>
      segment(`stage-${st}`, `${st} ${byStage[st]}`, (100 * byStage[st]) / declared.length,
        `${st}: ${byStage[st]} of ${declared.length} routes`)));
  const trafficBar = h("div", { class: "stackbar", title: `requests in the last ${WINDOW_S} s` },
    total ? [
      segment("stage-extracted", newReq ? `extracted ${fmtPct(traffic)}` : "", traffic,
        `extracted ${fmtPct(traffic)} (${fmtInt(newReq)} requests)`),
      segment("stage-legacy", `legacy ${fmtPct(100 - traffic)}`, 100 - traffic,
        `legacy ${fmtPct(100 - traffic)} (${fmtInt(legacyReq)} requests)`),
    ] : h("div", { class: "seg seg-none" }, "no traffic in the last minute"));

  return h("section", { class: "progress", id: "progress" },
    h("div", { class: "kpi" },
      h("div", { class: "kpi-value" }, `${moved} / ${declared.length}`),
      h("div", { class: "kpi-label" }, "routes past legacy")),
    h("div", { class: "kpi" },
      h("div", { class: "kpi-value", id: "traffic-share" }, fmtPct(traffic)),
      h("div", { class: "kpi-label" }, `of requests served by extracted services (${WINDOW_S} s)`)),
    h("div", { class: "bars" },
      h("div", { class: "bar-label" }, "Routes by effective stage"), stageBar,
      h("div", { class: "bar-label" }, `Traffic, last ${WINDOW_S} s: ${fmtInt(total)} requests`), trafficBar));
}

/** Requests per second over the last minute: legacy and the new side as two lines on one scale. */
function sparkline(route) {
  const series = route.series || {};
  const W = 90;
  const H = 24;
  const lines = [
    ["legacy", series.legacy || []],
    ["extracted", series.extracted || []],
    ["shadow", series.shadow || []],
  ].filter(([, data]) => data.some((v) => v > 0));
  const max = Math.max(1, ...lines.flatMap(([, data]) => data));
  const svg = s("svg", { class: "spark", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.append(s("title", {}, `requests per second, last ${WINDOW_S} s (peak ${max}/s): `
    + (lines.map(([name]) => name).join(", ") || "none")));
  for (const [name, data] of lines) {
    const step = data.length > 1 ? W / (data.length - 1) : W;
    const points = data.map((v, i) => `${(i * step).toFixed(1)},${(H - 1 - (v / max) * (H - 3)).toFixed(1)}`);
    svg.append(s("polyline", { class: `spark-${name}`, points: points.join(" ") }));
  }
  if (!lines.length) svg.append(s("line", { class: "spark-none", x1: 0, y1: H - 1, x2: W, y2: H - 1 }));
  return svg;
}

/** Requests served on the route (by either side) over the last window. */
function requests(route) {
  const st = route.stats || {};
  return ((st.legacy || {}).requests || 0) + ((st.extracted || {}).requests || 0);
}

function stageCell(route) {
  const cell = h("td", { class: "stage-cell" });
  if (route.stage === route.effective_stage) {
    cell.append(badge(route.stage, `stage-${route.stage}`));
  } else {
    cell.append(badge(route.effective_stage, `stage-${route.effective_stage}`), " ",
      h("span", { class: "muted configured", title: "configured in routes.yaml" }, `configured ${route.stage}`));
  }
  return cell;
}

function pinCell(route) {
  const pin = route.rolled_back;
  if (!pin) return h("td", { class: "muted" }, "–");
  return h("td", { class: "pin" },
    h("div", {}, badge("rolled back", "pinned"), " ", h("span", {}, `by ${pin.actor}`)),
    h("div", { class: "muted", title: fmtDateTime(pin.at) }, fmtAgo(pin.at)),
    pin.reason ? h("div", { class: "reason", title: pin.reason }, pin.reason) : null);
}

function pair(legacy, fresh, fmt, worse) {
  const bad = worse && legacy !== null && legacy !== undefined && fresh !== null && fresh !== undefined
    && worse(legacy, fresh);
  return h("td", { class: "num pair" },
    h("div", { class: "side-legacy", title: "legacy" }, fmt(legacy)),
    h("div", { class: `side-new${bad ? " worse" : ""}`, title: "new side" }, fmt(fresh)));
}

function weightCell(route) {
  if (route.weight === null || route.weight === undefined) return h("td", { class: "num muted" }, "–");
  const cell = h("td", { class: "num" }, `${Number(route.weight).toFixed(0)}%`);
  const bar = h("div", { class: "minibar" }, widthPct(h("div", { class: "minibar-fill" }), route.weight));
  cell.append(bar);
  return cell;
}

function matchCell(route) {
  // The gateway's figure, with its denominator and window: never recomputed here.
  const figure = route.shadow_match || {};
  if (figure.rate === null || figure.rate === undefined) {
    return h("td", { class: "num muted", title: figure.text || "" }, "–");
  }
  const rate = figure.rate;
  const kind = rate >= 99 ? "good" : rate >= 90 ? "warn" : "bad";
  return h("td", { class: `num rate-${kind}`, title: figure.text },
    link(fmtPct(rate), ["diffs"], { route: route.name }, { title: `${figure.text}: open the differences` }),
    h("div", { class: "muted small denominator" }, `of ${fmtInt(figure.compared)}`));
}

async function rollback(route) {
  const answer = await confirmAction({
    title: `Roll back ${route.name}?`,
    text: `Every request on ${route.name} will be served by ${route.legacy} (the monolith) from now on, `
      + `whatever its stage in routes.yaml, until you resume it. The pin survives restarts.`,
    ok: "Roll back",
    reason: true,
  });
  if (!answer) return;
  await act(route, "rollback", { reason: answer.reason || "rolled back from the console", actor: "console" },
    `${route.name} rolled back: served by ${route.legacy}`);
}

async function resume(route) {
  const answer = await confirmAction({
    title: `Resume ${route.name}?`,
    text: `${route.name} goes back to its configured stage (${route.stage}).`,
    ok: "Resume",
    reason: true,
    danger: false,
  });
  if (!answer) return;
  await act(route, "resume", { reason: answer.reason, actor: "console" },
    `${route.name} resumed: stage ${route.stage}`);
}

async function act(route, verb, body, done) {
  try {
    await post(`/api/routes/${encodeURIComponent(route.name)}/${verb}`, body);
    toast(done, "ok");
  } catch (err) {
    toast(`${verb} ${route.name} failed: ${err.message}`, "error");
  }
  document.dispatchEvent(new Event("strangler:refresh"));
}

function actionsCell(route) {
  const cell = h("td", { class: "actions" });
  if (route.name === "fallback" && route.line === null) return cell;
  if (route.rolled_back) {
    cell.append(h("button", { type: "button", class: "small", onclick: () => resume(route) }, "Resume"));
  } else {
    const pointless = route.stage === "legacy";
    cell.append(h("button", {
      type: "button", class: "small danger", disabled: pointless,
      title: pointless ? "already served by legacy" : `pin ${route.name} to legacy now`,
      onclick: () => rollback(route),
    }, "Roll back"));
  }
  return cell;
}

function row(route) {
  const side = newSide(route);
  const st = route.stats || {};
  const legacy = st.legacy || {};
  return h("tr", { dataset: { route: route.name }, class: route.rolled_back ? "pinned-row" : "" },
    h("td", { class: "name" }, h("strong", {}, route.name),
      route.line ? h("div", { class: "muted" }, `routes.yaml:${route.line}`) : null),
    h("td", { class: "match" }, h("code", {}, route.match)),
    stageCell(route),
    h("td", {}, route.to ? route.to : h("span", { class: "muted" }, route.legacy)),
    weightCell(route),
    pinCell(route),
    h("td", { class: "traffic" }, sparkline(route),
      h("div", { class: "muted", dataset: { requests: requests(route) } }, `${(requests(route) / WINDOW_S).toFixed(1)}/s`)),
    matchCell(route),
    pair(legacy.error_rate, side.stats.requests ? side.stats.error_rate : null, (v) => fmtPct(v, 2),
      (a, b) => b > a + 1),
    pair(legacy.p50_ms, side.stats.p50_ms, fmtMs, (a, b) => b > 2 * a),
    pair(legacy.p99_ms, side.stats.p99_ms, fmtMs, (a, b) => b > 2 * a),
    actionsCell(route));
}

function table(routes) {
  return h("table", { class: "grid routes", id: "routes-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Route"), h("th", {}, "Match"), h("th", {}, "Stage"), h("th", {}, "Backend"),
      h("th", { class: "num", title: "share of requests sent to the extracted backend" }, "Weight"),
      h("th", {}, "Rollback pin"),
      h("th", { title: `requests per second, last ${WINDOW_S} s` }, "Traffic"),
      h("th", { class: "num", title: "shadow comparisons whose answers were equal for the migration (match or "
        + "differed only in ignored fields), of those compared in the last 60 s" }, "Shadow match (60 s)"),
      h("th", { class: "num", title: "legacy (top) vs new side (bottom)" }, "Errors"),
      h("th", { class: "num", title: "legacy (top) vs new side (bottom)" }, "p50"),
      h("th", { class: "num", title: "legacy (top) vs new side (bottom)" }, "p99"),
      h("th", {}, ""))),
    h("tbody", {}, routes.map(row)));
}

function historyList(events) {
  if (!events || !events.length) return null;
  return h("section", { class: "panel" },
    h("h2", {}, "Recent events"),
    h("table", { class: "grid compact", id: "history" },
      h("tbody", {}, events.map((e) => h("tr", {},
        h("td", { class: "muted nowrap", title: fmtDateTime(e.at) }, fmtAgo(e.at)),
        h("td", {}, badge(e.kind, `event-${e.kind}`)),
        h("td", {}, e.route || ""),
        h("td", { class: "muted" }, e.actor),
        h("td", { class: "event-text" }, e.text || e.reason || ""))))));
}

export function routesPage() {
  const el = h("div", { class: "page page-routes" });
  return {
    el,
    live: true,
    async refresh() {
      const [routes, events, sync] = await Promise.all([getJSON("/api/routes"), getOptional("/api/history?limit=10"),
        getOptional("/api/sync")]);
      if (!routes.length) {
        el.replaceChildren(empty("No routes in routes.yaml yet."));
        return;
      }
      el.replaceChildren(
        progress(routes),
        h("section", { class: "panel" },
          h("div", { class: "legend" }, "Errors and latency: ", h("span", { class: "side-legacy" }, "legacy"),
            " above ", h("span", { class: "side-new" }, "new side"),
            " (the extracted backend, or its shadow copies while in shadow), last minute."),
          table(routes)),
        roomsPanel(routes) || "",
        syncPanel(sync) || "",
        historyList(events) || "");
    },
  };
}
