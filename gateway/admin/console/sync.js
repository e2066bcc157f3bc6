// The sync panel of the routes page: per route with `sync:`, the mirrored writes pending, the age of the oldest,
// delivered, dead letters (with a retry button), the share of read-after-write checks where both sides agreed,
// the error at the head of the queue, and the delivery lag. Everything comes from GET /api/sync.

import { post } from "./api.js";
import { confirmAction, toast } from "./dialogs.js";
import { badge, fmtInt, fmtPct, h } from "./dom.js";

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

function verifiedCell(verified) {
  const total = Object.values(verified || {}).reduce((a, b) => a + b, 0);
  if (!total) return h("td", { class: "num muted" }, "–");
  const agreed = (verified.match || 0) + (verified.ignored || 0);
  const rate = (100 * agreed) / total;
  const kind = rate >= 99 ? "good" : rate >= 90 ? "warn" : "bad";
  return h("td", { class: `num rate-${kind}`, title: JSON.stringify(verified) }, `${fmtPct(rate)} of ${fmtInt(total)}`);
}

async function retry(row) {
  const answer = await confirmAction({
    title: `Retry ${row.dead} dead letter(s) of ${row.route}?`,
    text: "They become pending again and are sent in their original order, with their original keys.",
    ok: "Retry",
    danger: false,
  });
  if (!answer) return;
  try {
    const res = await post(`/api/sync/${encodeURIComponent(row.route)}/retry`, {});
    toast(`${row.route}: ${res.retried} dead letter(s) sent again`, "ok");
  } catch (err) {
    toast(`retry ${row.route} failed: ${err.message}`, "error");
  }
  document.dispatchEvent(new Event("strangler:refresh"));
}

function syncRow(row) {
  const head = row.head || {};
  return h("tr", { dataset: { syncRoute: row.route } },
    h("td", { class: "name" }, h("strong", {}, row.route), row.sync ? null : h("div", { class: "muted" }, "sync off")),
    h("td", {}, row.effective_stage ? badge(row.effective_stage, `stage-${row.effective_stage}`) : "–"),
    h("td", { class: `num${row.pending ? " rate-warn" : ""}`, dataset: { pending: row.pending } }, fmtInt(row.pending)),
    h("td", { class: "num" }, fmtAge(row.oldest_pending_age_s)),
    h("td", { class: "num" }, fmtInt(row.delivered)),
    h("td", { class: `num${row.dead ? " rate-bad" : ""}` }, fmtInt(row.dead)),
    verifiedCell(row.verified),
    h("td", { class: "reason", title: head.error || "" }, head.error ? `${head.attempts} attempt(s): ${head.error}` : ""),
    h("td", { class: "actions" }, row.dead
      ? h("button", { type: "button", class: "small", onclick: () => retry(row) }, "Retry dead letters") : ""));
}

export function syncPanel(data) {
  if (!data || !data.routes || !data.routes.length) return null;
  const lag = data.lag || {};
  const lagText = lag.p50_s === null || lag.p50_s === undefined ? "no delivery yet"
    : `lag p50 ${fmtAge(lag.p50_s)}, p99 ${fmtAge(lag.p99_s)}`;
  return h("section", { class: "panel", id: "sync" },
    h("h2", {}, "Mirrored writes (sync)"),
    h("div", { class: "legend" }, `Writes one side completed, applied to the other side; ${lagText}.`),
    h("table", { class: "grid compact", id: "sync-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Route"), h("th", {}, "Stage"), h("th", { class: "num" }, "Pending"),
        h("th", { class: "num" }, "Oldest pending"), h("th", { class: "num" }, "Delivered"),
        h("th", { class: "num" }, "Dead"),
        h("th", { class: "num", title: "read-after-write checks where both sides agreed" }, "Verified"),
        h("th", {}, "Head of queue"), h("th", {}, ""))),
      h("tbody", {}, data.routes.map(syncRow))));
}
