// The fleet page: the gateways sharing this store (address, version, config generation and digest, last
// heartbeat), with the flags the gateway computed (drift: a different routes.yaml; stale: no heartbeat), and
// the store's health. The shell's top bar also shows a store outage on every page (storeBanner).

import { getJSON } from "./api.js";
import { badge, empty, fmtAgo, h } from "./dom.js";

/** One line for the top bar while the shared store is unreachable, or null. */
export function storeBanner(fleet) {
  const store = (fleet || {}).store || {};
  if (store.up !== false) return null;
  return h("span", { class: "reload-error", id: "store-outage" },
    `store unreachable ${fmtAgo(store.since)}: serving on the last known state, `
    + `${store.buffered || 0} write(s) buffered, ${store.dropped || 0} dropped`);
}

function row(m) {
  const flags = [];
  if (m.drift) flags.push(badge("drift", "pinned"));
  if (m.stale) flags.push(badge("stale", "stage-canary"));
  if (m.self) flags.push(badge("this one", "stage-legacy"));
  return h("tr", { "data-instance": m.id },
    h("td", {}, m.id), h("td", {}, m.address || ""), h("td", {}, m.version || ""),
    h("td", {}, String(m.generation ?? "")), h("td", { title: m.digest || "" }, (m.digest || "").slice(0, 12)),
    h("td", {}, fmtAgo(m.started)), h("td", {}, `${Number(m.age_s || 0).toFixed(1)} s ago`), h("td", {}, flags));
}

export function fleetPage() {
  const el = h("section", { class: "fleet" });
  async function refresh() {
    const view = await getJSON("/api/fleet");
    const store = view.store || {};
    const head = h("p", {}, `Store: ${store.kind || "?"} ${store.url || ""} — `,
      store.up === false ? badge("unreachable", "pinned") : badge("reachable", "stage-extracted"));
    const notes = [];
    if (view.drift) {
      notes.push(h("p", { class: "reload-error", id: "fleet-drift" },
        "Instances serve different routes.yaml contents: the flagged ones differ from the rest."));
    }
    if (view.stale) notes.push(h("p", { class: "muted" }, `${view.stale} instance(s) stopped reporting.`));
    const table = view.instances.length ? h("table", { id: "fleet-table" },
      h("thead", {}, h("tr", {}, ...["instance", "address", "version", "generation", "digest", "started",
        "last seen", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, view.instances.map(row))) : empty("No instance has reported yet.");
    el.replaceChildren(h("h1", {}, "Fleet"), head, ...notes, table);
  }
  return { el, refresh, live: true };
}
