// The waiting rooms panel on the routes page: per route with an `admission:` block, how many wait, how fast they
// are let in and how long the queued ones waited. The figures come from /api/routes (`admission`), computed by
// the gateway; nothing is recomputed here.

import { badge, fmtInt, h, widthPct } from "./dom.js";

function seconds(v) {
  return v === null || v === undefined ? "–" : `${Number(v).toFixed(v < 10 ? 1 : 0)} s`;
}

function roomRow(route) {
  const a = route.admission;
  const fill = a.queue_limit ? (100 * a.waiting) / a.queue_limit : 0;
  return h("tr", { dataset: { room: route.name } },
    h("td", { class: "name" }, h("strong", {}, route.name)),
    h("td", {}, a.paused ? badge("paused", "pinned") : a.rate_text),
    h("td", { class: "num" },
      h("div", { class: "room-waiting" }, fmtInt(a.waiting)),
      h("div", { class: "minibar", title: `${fmtInt(a.waiting)} of at most ${fmtInt(a.queue_limit)}` },
        widthPct(h("div", { class: "minibar-fill" }), Math.max(fill, a.waiting ? 1 : 0)))),
    h("td", { class: "num" }, `${a.admitted_per_s}/s`),
    h("td", { class: "num" }, seconds(a.wait_p50_s)),
    h("td", { class: "num" }, seconds(a.wait_p99_s)),
    h("td", { class: "num muted" }, fmtInt(a.lost)),
    h("td", { class: a.store === "ok" ? "muted" : "bad" }, a.store));
}

export function roomsPanel(routes) {
  const rooms = routes.filter((r) => r.admission);
  if (!rooms.length) return null;
  return h("section", { class: "panel", id: "rooms" },
    h("h2", {}, "Waiting rooms"),
    h("table", { class: "grid compact" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Route"), h("th", {}, "Rate"), h("th", { class: "num" }, "Waiting"),
        h("th", { class: "num", title: "visitors let in per second, last 10 s" }, "Let in"),
        h("th", { class: "num", title: "wait of visitors let in from the line, last minute" }, "Wait p50"),
        h("th", { class: "num" }, "Wait p99"),
        h("th", { class: "num", title: "lost their place by not coming back in time" }, "Lost"),
        h("th", {}, "Store"))),
      h("tbody", {}, rooms.map(roomRow))));
}
