// The console shell: hash routing between pages, the reload status in the top bar, and live refresh.
//
// A page is an object {el, refresh(), live}: the shell mounts `el`, calls refresh() at once and then every
// POLL_MS while the tab is visible (never two at a time), so data updates in place without reloading the page.
// Pages keep their own controls (filters, the selected span) across refreshes and write their state into the
// hash with history.replaceState, so a URL can be shared and the back button still works between pages.

import { getJSON } from "./api.js";
import { fmtAgo, fmtDateTime, h } from "./dom.js";
import { diffsPage } from "./diffs.js";
import { fleetPage, storeBanner } from "./fleet.js";
import { routesPage } from "./routes.js";
import { tracesPage } from "./traces.js";

const POLL_MS = 2000;
const PAGES = { routes: routesPage, diffs: diffsPage, traces: tracesPage, fleet: fleetPage };

let current = null;      // the mounted page
let timer = 0;
let busy = false;
let paused = false;

/** "#/diffs/12?route=reviews" -> {page: "diffs", parts: ["12"], query: URLSearchParams} */
export function parseHash(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  const page = PAGES[parts[0]] ? parts[0] : "routes";
  return { page, parts: parts.slice(1), query: new URLSearchParams(qs || "") };
}

function navigate() {
  const route = parseHash(location.hash);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === route.page);
  }
  current = PAGES[route.page](route);
  document.getElementById("page").replaceChildren(current.el);
  tick(true);
}

async function refreshReloadStatus() {
  const box = document.getElementById("reload-status");
  const [cfg, fleet] = await Promise.all([getJSON("/api/config"), getJSON("/api/fleet")]);
  const last = cfg.last_reload || {};
  const parts = [
    h("span", { class: "gen", title: `digest ${cfg.digest || ""}` }, `generation ${cfg.generation}`),
    h("span", { class: "muted", title: cfg.path }, ` loaded ${fmtAgo(cfg.loaded_at)}`),
  ];
  if (last.ok === false) {
    parts.push(h("span", { class: "reload-error", title: `${fmtDateTime(last.at)}` },
      `last reload failed ${fmtAgo(last.at)}: ${last.error || "unknown error"} (still serving generation `
      + `${cfg.generation})`));
  }
  const outage = storeBanner(fleet);
  if (outage) parts.push(outage);
  box.replaceChildren(...parts);
  box.classList.toggle("failed", last.ok === false);
}

function setLive(state, text) {
  document.getElementById("live-dot").className = `dot dot-${state}`;
  document.getElementById("live-text").textContent = text;
}

async function tick(force) {
  clearTimeout(timer);
  if (!force && (paused || document.hidden)) {
    setLive("paused", paused ? "paused" : "paused (tab hidden)");
    return;
  }
  if (busy) {
    schedule();
    return;
  }
  busy = true;
  const page = current;
  try {
    await Promise.all([refreshReloadStatus(), page.refresh()]);
    setLive("ok", `live · ${new Date().toLocaleTimeString("en-GB", { hour12: false })}`);
  } catch (err) {
    setLive("error", `gateway unreachable: ${err.message}`);
  } finally {
    busy = false;
    schedule();
  }
}

function schedule() {
  clearTimeout(timer);
  if (paused || document.hidden || !current || !current.live) {
    if (paused || document.hidden) setLive("paused", paused ? "paused" : "paused (tab hidden)");
    return;
  }
  timer = setTimeout(() => tick(false), POLL_MS);
}

window.addEventListener("hashchange", navigate);
// A page asks for an immediate refresh (after an action) with this event, so pages need not import the shell.
document.addEventListener("strangler:refresh", () => tick(true));
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) tick(false);
  else schedule();
});
document.getElementById("live-toggle").addEventListener("click", (event) => {
  paused = !paused;
  event.currentTarget.textContent = paused ? "Resume" : "Pause";
  if (!paused) tick(false);
  else schedule();
});
navigate();
