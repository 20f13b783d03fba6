// notifyd console: plain DOM, no framework. Every datum goes in as text (textContent), never as
// HTML. Reads and actions are calls of the daemon's own API, with the bearer token kept in this
// tab's sessionStorage when the API asks for one.
"use strict";

const TOKEN_KEY = "notifyd.token";
const REFRESH_MS = 5000;
const app = document.getElementById("app");
const statusLine = document.getElementById("status");
const signOut = document.getElementById("sign-out");

let tokenRequired = false;
let timer = null;
let view = null; // { route, refresh() }
const ui = { reveal: false, selected: new Set(), confirmAll: null };

// ---- DOM --------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function replace(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

// ---- API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.field = e.field;
  }
}

async function api(path, options = {}) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  const resp = await fetch(path, { method: options.method || "GET", headers, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn("The token was refused; sign in again.");
    throw new ApiError(401, body);
  }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

const post = (path) => api(path, { method: "POST" });

// ---- formatting -------------------------------------------------------------------------------

function ago(iso) {
  if (!iso) return "—";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return s >= 0 ? `${duration(s * 1000)} ago` : `in ${duration(-s * 1000)}`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(ms / 1000);
  if (s < 1) return `${ms} ms`;
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

// Recipients are masked unless revealed: enough to recognise, not to read off a screen.
function mask(to, reveal = ui.reveal) {
  if (reveal || !to) return to || "";
  const at = to.indexOf("@");
  if (at > 0) return `${to[0]}•••${to.slice(at)}`;
  if (to.length <= 6) return "•••";
  return `${to.slice(0, 3)}•••${to.slice(-2)}`;
}

function maskedText(text) {
  if (text === null || text === undefined || text === "") return h("span", { class: "muted" }, "—");
  return ui.reveal ? text : h("span", { class: "masked" }, "••••••");
}

function stateBadge(state) {
  return h("span", { class: `badge s-${state}` }, state);
}

// ---- routing ----------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const q = params && params.toString();
  location.hash = q ? `${path}?${q}` : path;
}

function markNav(name) {
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === name);
  }
}

async function render() {
  clearTimeout(timer);
  const { path, params } = route();
  if (tokenRequired && !sessionStorage.getItem(TOKEN_KEY)) return showSignIn();
  signOut.hidden = !tokenRequired;
  if (path === "/" || path === "/overview") view = overview();
  else if (path === "/notifications") view = notifications(params);
  else if (path.startsWith("/n/")) view = detail(decodeURIComponent(path.slice(3)));
  else if (path === "/dead") view = deadLetters(params);
  else { go("/"); return; }
  await refresh();
}

async function refresh() {
  clearTimeout(timer);
  const current = view;
  try {
    await current.refresh();
    statusLine.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
  } catch (e) {
    if (e.status === 401) return;
    statusLine.textContent = `Update failed: ${e.message}`;
  }
  if (view === current) timer = setTimeout(refresh, REFRESH_MS);
}

// ---- sign-in ----------------------------------------------------------------------------------

function showSignIn(message) {
  clearTimeout(timer);
  markNav(null);
  signOut.hidden = true;
  statusLine.textContent = "";
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off", required: true });
  const form = h("form", {
    onsubmit: (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      render();
    },
  },
  h("label", { for: "token" }, "API token", input),
  h("button", { type: "submit", class: "primary", id: "sign-in" }, "Sign in"));
  replace(app, h("div", { class: "panel signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "The same bearer token as the API (server.auth_token). It is kept in this tab only and sent as Authorization."),
    message ? h("div", { class: "error" }, message) : null,
    form));
  input.focus();
}

signOut.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
});

// ---- overview ---------------------------------------------------------------------------------

function health(c) {
  if (c.breaker.state === "open") return ["sick", "bad", "breaker open"];
  if (c.breaker.state === "half_open") return ["sick", "warn", "probing"];
  if (c.held_until) return ["sick", "bad", `held: ${c.held_because || "paused"}`];
  if (c.queue.dead > 0 || sum(c.last_hour.failed.slice(-5)) > 0) return ["warn", "warn", "failures"];
  return ["", "ok", "healthy"];
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

function chart(hour) {
  const n = hour.delivered.length;
  const totals = hour.delivered.map((d, i) => d + hour.failed[i] + hour.retried[i]);
  const max = Math.max(1, ...totals);
  const W = 4, GAP = 1, H = 40;
  const s = svg("svg", { viewBox: `0 0 ${n * (W + GAP)} ${H}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `last hour: ${sum(hour.delivered)} delivered, ${sum(hour.failed)} failed, ${sum(hour.retried)} retried` });
  totals.forEach((t, i) => {
    const x = i * (W + GAP);
    if (t === 0) { s.append(svg("rect", { x, y: H - 1, width: W, height: 1, class: "bar-none" })); return; }
    let y = H;
    for (const [v, cls] of [[hour.delivered[i], "bar-d"], [hour.retried[i], "bar-r"], [hour.failed[i], "bar-f"]]) {
      if (!v) continue;
      const bh = Math.max(1, (v / max) * (H - 2));
      y -= bh;
      const r = svg("rect", { x, y, width: W, height: bh, class: cls });
      const title = svg("title", {});
      title.textContent = `${new Date(Date.parse(hour.start) + i * 60000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${hour.delivered[i]} delivered, ${hour.failed[i]} failed, ${hour.retried[i]} retried`;
      r.append(title);
      s.append(r);
    }
  });
  return h("div", { class: "chart" }, s,
    h("div", { class: "legend" },
      h("span", { class: "d" }, `${sum(hour.delivered)} delivered`),
      h("span", { class: "f" }, `${sum(hour.failed)} failed`),
      h("span", { class: "r" }, `${sum(hour.retried)} retried`),
      h("span", { class: "caption" }, "per minute, last hour")));
}

function card(c) {
  const [cls, tone, word] = health(c);
  const b = c.breaker;
  const breaker = b.state === "closed"
    ? `closed · ${Math.round(b.failure_ratio * 100)}% of ${b.calls_in_window} failed`
    : `${b.state.replace("_", " ")}${b.next_probe_in_ms !== null ? ` · next probe in ${duration(b.next_probe_in_ms)}` : ""}`;
  const rl = c.rate_limit;
  const rate = rl.per_second
    ? `${+rl.per_second.toFixed(2)}/s, burst ${rl.burst}${rl.tokens !== null ? ` · ${rl.tokens} ready` : ""}${rl.waits ? ` · ${rl.waits} waits` : ""}`
    : "none";
  const q = c.queue;
  return h("article", { class: `card ${cls}`, "data-channel": c.name },
    h("header", {},
      h("h3", {}, c.name),
      h("span", { class: "kind" }, c.kind),
      h("span", { class: `badge ${c.criticality === "critical" ? "info" : ""}` }, c.criticality),
      h("span", { class: `badge ${tone} health` }, word)),
    h("dl", {},
      h("dt", {}, "Breaker"), h("dd", {}, breaker),
      h("dt", {}, "Hold"), h("dd", {}, c.held_until ? `${c.held_because} until ${new Date(c.held_until).toLocaleTimeString()}` : "none"),
      h("dt", {}, "Rate limit"), h("dd", {}, rate),
      h("dt", {}, "In flight"), h("dd", {}, `${c.in_flight} / ${c.concurrency}`),
      h("dt", {}, "Queue"), h("dd", {},
        h("a", { href: `#/notifications?channel=${encodeURIComponent(c.name)}&state=queued` }, `${q.queued} queued`), " · ",
        `${q.sending} sending`, " · ",
        h("a", { href: `#/dead?channel=${encodeURIComponent(c.name)}` }, `${q.dead} dead`)),
      h("dt", {}, "Oldest due"), h("dd", {}, c.oldest_due_age_ms === null ? "nothing due" : `${duration(c.oldest_due_age_ms)} waiting`),
      c.failover.length ? [h("dt", {}, "Failover"), h("dd", {}, c.failover.join(" → "))] : null),
    c.last_error ? h("div", { class: "lasterr" },
      `Last error ${ago(c.last_error.at)}: ${c.last_error.class} ${c.last_error.code} — ${c.last_error.message}`) : null,
    chart(c.last_hour));
}

function overview() {
  markNav("overview");
  const cards = h("div", { class: "cards" });
  replace(app, h("h1", {}, "Channels"), cards);
  return {
    async refresh() {
      const { channels } = await api("/v1/channels");
      replace(cards, channels.length ? channels.map(card) : h("p", { class: "empty" }, "No channels configured."));
    },
  };
}

// ---- notifications ----------------------------------------------------------------------------

const FILTERS = [
  ["to", "Recipient (exact)", "text"],
  ["channel", "Channel", "text"],
  ["state", "State", ["", "queued", "sending", "delivered", "failed", "dead", "cancelled", "expired"]],
  ["priority", "Priority", ["", "high", "normal", "low"]],
  ["subject", "Subject contains", "text"],
  ["created_after", "Created after", "datetime-local"],
  ["created_before", "Created before", "datetime-local"],
  ["updated_after", "Updated after", "datetime-local"],
  ["updated_before", "Updated before", "datetime-local"],
  ["fallback_of", "Fallback of (id)", "text"],
];

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function revealToggle(onChange) {
  const box = h("input", { type: "checkbox", id: "reveal", checked: ui.reveal, onchange: () => { ui.reveal = box.checked; onChange(); } });
  return h("label", { class: "check", for: "reveal" }, box, "Show recipients and subjects");
}

function notifications(params) {
  markNav("notifications");
  const inputs = {};
  const fields = FILTERS.map(([name, label, type]) => {
    let input;
    if (Array.isArray(type)) {
      input = h("select", { name, id: `f-${name}` }, type.map((v) => h("option", { value: v }, v || "any")));
      input.value = params.get(name) || "";
    } else {
      input = h("input", { type, name, id: `f-${name}` });
      input.value = type === "datetime-local" ? toLocalInput(params.get(name)) : params.get(name) || "";
    }
    inputs[name] = input;
    return h("label", { for: `f-${name}` }, label, input);
  });
  const form = h("form", {
    class: "filters panel", id: "filters",
    onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const [name, , type] of FILTERS) {
        let v = inputs[name].value.trim();
        if (v && type === "datetime-local") v = new Date(v).toISOString();
        if (v) q.set(name, v);
      }
      go("/notifications", q);
    },
  }, fields, h("div", { class: "actions" },
    h("button", { type: "submit", class: "primary", id: "search" }, "Search"),
    h("button", { type: "button", onclick: () => go("/notifications") }, "Clear")));
  const results = h("div", { id: "results" });
  const pager = h("div", { class: "pager" });
  let page = null;
  const draw = () => {
    if (!page) return;
    const rows = page.notifications.map((n) => h("tr", { "data-id": n.id },
      h("td", {}, h("a", { href: `#/n/${encodeURIComponent(n.id)}`, class: "mono" }, n.id.slice(0, 13) + "…"),
        h("div", { class: "sub" }, ago(n.created_at))),
      h("td", {}, stateBadge(n.state), n.last_code ? h("div", { class: "sub" }, n.last_code) : null),
      h("td", {}, n.channel, n.fallback_of ? h("div", { class: "sub" }, "fallback") : null),
      h("td", { class: "recipient" }, mask(n.to)),
      h("td", { class: "hide-narrow" }, maskedText(n.subject)),
      h("td", { class: "num hide-narrow" }, n.attempts),
      h("td", { class: "hide-narrow" }, n.priority)));
    replace(results, h("div", { class: "table-wrap" }, rows.length
      ? h("table", {}, h("thead", {}, h("tr", {},
          h("th", {}, "Notification"), h("th", {}, "State"), h("th", {}, "Channel"), h("th", {}, "Recipient"),
          h("th", { class: "hide-narrow" }, "Subject"), h("th", { class: "num hide-narrow" }, "Tries"), h("th", { class: "hide-narrow" }, "Priority"))),
        h("tbody", {}, rows))
      : h("div", { class: "empty" }, page.next
        ? "No match among the rows searched so far (text, priority and update-time filters are checked a stretch at a time): look further with Older →."
        : "No notification matches.")));
    const cursor = params.get("cursor");
    replace(pager,
      cursor ? h("button", { type: "button", onclick: () => { const q = new URLSearchParams(params); q.delete("cursor"); go("/notifications", q); } }, "← Newest") : null,
      page.next ? h("button", { type: "button", id: "older", onclick: () => { const q = new URLSearchParams(params); q.set("cursor", page.next); go("/notifications", q); } }, "Older →") : null);
  };
  replace(app, h("h1", {}, "Notifications"), form,
    h("div", { class: "toolbar" }, revealToggle(draw)), results, pager);
  return {
    async refresh() {
      try {
        page = await api(`/v1/notifications?${params.toString()}`);
      } catch (e) {
        if (e.status === 422) {
          replace(results, h("div", { class: "error" }, `${e.field || "filter"}: ${e.message}`));
          return;
        }
        throw e;
      }
      draw();
    },
  };
}

// ---- one notification -------------------------------------------------------------------------

function fact(label, value) {
  return h("div", {}, h("span", {}, label), h("strong", {}, value === null || value === undefined || value === "" ? "—" : value));
}

function outcomeClass(outcome) {
  if (outcome === "delivered") return "o-delivered";
  if (["invalid_recipient", "permanent", "channel_fault"].includes(outcome)) return "o-bad";
  return "o-warn";
}

function detail(id) {
  markNav("notifications");
  let revealed = false;
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const message = h("div", {});
  replace(app, h("p", {}, h("a", { href: "#/notifications" }, "← Notifications")), message, box);
  const act = async (path, done) => {
    try {
      await post(path);
      replace(message, h("div", { class: "notice" }, done));
    } catch (e) {
      replace(message, h("div", { class: "error" }, e.message));
    }
    refresh();
  };
  return {
    async refresh() {
      let n;
      try {
        n = await api(`/v1/notifications/${encodeURIComponent(id)}`);
      } catch (e) {
        if (e.status === 404) { replace(box, h("div", { class: "error" }, `No notification ${id}.`)); return; }
        throw e;
      }
      const [content, fallbacks] = await Promise.all([
        api(`/v1/notifications/${encodeURIComponent(id)}/content`),
        api(`/v1/notifications?fallback_of=${encodeURIComponent(id)}&limit=20`),
      ]);
      const to = mask(n.to, revealed);
      const actions = [];
      if (n.state === "queued") actions.push(h("button", { type: "button", class: "danger", id: "cancel", onclick: () => act(`/v1/notifications/${encodeURIComponent(id)}/cancel`, "Cancelled.") }, "Cancel"));
      if (n.state === "dead") actions.push(h("button", { type: "button", class: "primary", id: "retry", onclick: () => act(`/v1/dead-letters/${encodeURIComponent(id)}/retry`, "Queued again with a fresh attempt budget.") }, "Retry"));
      const channels = [...new Set(n.attempt_log.map((a) => a.channel).filter(Boolean))];
      // Attempts, receipts and the delivery rules' decisions, in the order they happened.
      const at = (iso) => { const t = Date.parse(iso); return isNaN(t) ? Infinity : t; };
      const attempts = n.attempt_log.map((a) => [at(a.at), h("li", { class: outcomeClass(a.outcome) },
        h("div", {}, h("strong", {}, `Attempt ${a.attempt}`), ` on ${a.channel || n.channel} · `, h("span", { class: `badge ${a.outcome === "delivered" ? "ok" : "warn"}` }, a.outcome),
          " → ", h("span", { class: "badge" }, a.decision), ` · ${a.latency_ms} ms`),
        h("div", { class: "when" }, when(a.at)),
        a.code || a.error ? h("div", { class: "err" }, [a.code, a.error].filter(Boolean).join(": ")) : null,
        a.provider_id ? h("div", { class: "sub mono" }, `provider id ${a.provider_id}`) : null)]);
      const receipts = n.receipts.map((r) => [at(r.at), h("li", { class: r.status === "delivered" ? "o-delivered" : r.status === "failed" ? "o-bad" : "" },
        h("strong", {}, `Receipt: ${r.status}`), ` (${r.provider_status}${r.error_code ? `, ${r.error_code}` : ""})`,
        h("div", { class: "when" }, when(r.at)))]);
      const events = n.events.map((e) => [at(e.at), h("li", { class: "o-rule", "data-rule": e.rule },
        h("strong", {}, `Rule: ${e.rule.replaceAll("_", " ")}`), h("div", {}, e.detail),
        h("div", { class: "when" }, when(e.at)))]);
      const steps = [...attempts, ...receipts, ...events].sort((x, y) => x[0] - y[0]).map(([, li]) => li);
      replace(box,
        h("div", { class: "detail-head" }, h("h1", { class: "mono" }, n.id), stateBadge(n.state), ...actions),
        h("div", { class: "panel" }, h("div", { class: "facts" },
          fact("Channel", n.channel),
          fact("Recipient", h("span", {}, h("span", { id: "recipient" }, to), " ",
            h("button", { type: "button", class: "link", id: "reveal-recipient", onclick: () => { revealed = !revealed; refresh(); } }, revealed ? "hide" : "reveal"))),
          fact("Priority", n.priority),
          fact("Attempts", n.attempts),
          fact("Created", when(n.created_at)),
          fact(n.state === "queued" ? "Next attempt" : "Expires", n.state === "queued" ? `${when(n.next_attempt_at)} (${ago(n.next_attempt_at)})` : when(n.expires_at)),
          fact("Provider id", n.provider_id),
          fact("Last error", n.last_error ? `${n.last_error.code}: ${n.last_error.message || ""}` : null),
          n.duplicates ? fact("Duplicates merged", h("span", { id: "duplicates" }, n.duplicates)) : null,
          n.digest_id ? fact("Sent in digest", h("a", { class: "mono", href: `#/n/${encodeURIComponent(n.digest_id)}` }, n.digest_id.slice(0, 13) + "…")) : null,
          n.source ? fact("Source", n.source.format || "ingest") : null)),
        h("div", { class: "grid2" },
          h("section", {},
            h("h2", {}, "Timeline"),
            h("div", { class: "panel" },
              h("ol", { class: "timeline", id: "timeline" },
                h("li", {}, h("strong", {}, "Accepted"), h("div", { class: "when" }, when(n.created_at))),
                steps,
                ["delivered", "failed", "dead", "cancelled", "expired"].includes(n.state)
                  ? h("li", { class: n.state === "delivered" ? "o-delivered" : "o-bad" }, h("strong", {}, `Now ${n.state}`)) : null)),
            h("h2", {}, "Links"),
            h("div", { class: "panel" },
              n.fallback_of ? h("p", {}, "Fallback of ", h("a", { class: "mono", href: `#/n/${encodeURIComponent(n.fallback_of)}` }, n.fallback_of)) : null,
              channels.length > 1 ? h("p", {}, `Failed over: ${channels.join(" → ")}`) : null,
              fallbacks.notifications.length
                ? h("p", {}, "Fallbacks queued: ", fallbacks.notifications.map((f) => [h("a", { class: "mono", href: `#/n/${encodeURIComponent(f.id)}` }, `${f.channel} ${f.id.slice(0, 13)}…`), " "]))
                : null,
              n.fallback.length ? h("p", { class: "muted" }, `Fallback routes: ${n.fallback.map((f) => f.channel).join(", ")}`) : null,
              !n.fallback_of && channels.length <= 1 && !fallbacks.notifications.length && !n.fallback.length ? h("p", { class: "muted" }, "No fallback or failover.") : null)),
          h("section", {},
            h("h2", {}, "Content"),
            h("div", { class: "panel", id: "content" },
              content.subject ? [h("label", {}, "Subject"), h("pre", { class: "content" }, content.subject)] : null,
              content.body ? [h("label", {}, "Body"), h("pre", { class: "content" }, content.body)] : null,
              content.html ? [h("label", {}, "HTML (source)"), h("pre", { class: "content" }, content.html)] : null,
              content.data !== null && content.data !== undefined ? [h("label", {}, "Data"), h("pre", { class: "content" }, JSON.stringify(content.data, null, 2))] : null))));
    },
  };
}

// ---- dead letters -----------------------------------------------------------------------------

function deadLetters(params) {
  markNav("dead");
  const channel = params.get("channel") || "";
  const select = h("select", { id: "dead-channel", onchange: () => { ui.selected.clear(); ui.confirmAll = null; go("/dead", new URLSearchParams(select.value ? { channel: select.value } : {})); } });
  const message = h("div", {});
  const bar = h("div", { class: "toolbar" });
  const list = h("div", {});
  let items = [];
  let deadCount = 0;
  const replayIds = async (ids) => {
    let ok = 0;
    const failed = [];
    for (const id of ids) {
      try { await post(`/v1/dead-letters/${encodeURIComponent(id)}/retry`); ok += 1; } catch (e) { failed.push(`${id}: ${e.message}`); }
      ui.selected.delete(id);
    }
    replace(message, h("div", { class: failed.length ? "error" : "notice" }, `Replayed ${ok}.`, failed.length ? ` Not replayed: ${failed.join("; ")}` : ""));
    refresh();
  };
  const draw = () => {
    const selected = items.filter((d) => ui.selected.has(d.id)).map((d) => d.id);
    replace(bar,
      h("label", { class: "check", for: "dead-channel" }, "Channel", select),
      revealToggle(draw),
      h("span", { class: "grow" }),
      h("button", { type: "button", id: "replay-selected", disabled: selected.length === 0, onclick: () => replayIds(selected) }, `Replay selected (${selected.length})`),
      channel ? h("button", { type: "button", class: "primary", id: "replay-all", disabled: deadCount === 0, onclick: () => { ui.confirmAll = channel; draw(); } }, `Replay all of ${channel}…`) : null);
    const confirm = ui.confirmAll === channel && channel
      ? h("div", { class: "confirm", id: "confirm" },
          `Put all ${deadCount} dead letter${deadCount === 1 ? "" : "s"} of ${channel} back in the queue, each with a fresh attempt budget?`,
          h("button", { type: "button", class: "primary", id: "confirm-replay", onclick: async () => {
            ui.confirmAll = null;
            try {
              const r = await post(`/v1/channels/${encodeURIComponent(channel)}/dead-letters/replay`);
              replace(message, h("div", { class: "notice" }, `Replayed ${r.replayed} of ${channel}.`));
            } catch (e) { replace(message, h("div", { class: "error" }, e.message)); }
            ui.selected.clear();
            refresh();
          } }, `Replay ${deadCount}`),
          h("button", { type: "button", onclick: () => { ui.confirmAll = null; draw(); } }, "Cancel"))
      : null;
    const all = h("input", { type: "checkbox", "aria-label": "select all", checked: items.length > 0 && selected.length === items.length,
      onchange: () => { for (const d of items) { if (all.checked) ui.selected.add(d.id); else ui.selected.delete(d.id); } draw(); } });
    const rows = items.map((d) => {
      const box = h("input", { type: "checkbox", "aria-label": `select ${d.id}`, checked: ui.selected.has(d.id),
        onchange: () => { if (box.checked) ui.selected.add(d.id); else ui.selected.delete(d.id); draw(); } });
      return h("tr", { "data-id": d.id },
        h("td", {}, box),
        h("td", {}, h("a", { class: "mono", href: `#/n/${encodeURIComponent(d.id)}` }, d.id.slice(0, 13) + "…"), h("div", { class: "sub" }, `died ${ago(d.died_at)}`)),
        h("td", {}, d.channel),
        h("td", { class: "recipient" }, mask(d.to)),
        h("td", { class: "num hide-narrow" }, d.attempts),
        h("td", { class: "hide-narrow" }, d.last_error && d.last_error.code ? `${d.last_error.code}: ${d.last_error.message || ""}` : "—"),
        h("td", {}, h("button", { type: "button", class: "link replay-one", onclick: () => replayIds([d.id]) }, "Replay")));
    });
    replace(list, confirm, h("div", { class: "table-wrap" }, rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, all), h("th", {}, "Notification"), h("th", {}, "Channel"), h("th", {}, "Recipient"),
          h("th", { class: "num hide-narrow" }, "Tries"), h("th", { class: "hide-narrow" }, "Last error"), h("th", {}, ""))), h("tbody", {}, rows))
      : h("div", { class: "empty" }, channel ? `No dead letters on ${channel}.` : "No dead letters.")));
  };
  replace(app, h("h1", {}, "Dead letters"), message, bar, list);
  return {
    async refresh() {
      const q = new URLSearchParams({ limit: "500" });
      if (channel) q.set("channel", channel);
      const [{ channels }, { dead_letters }] = await Promise.all([api("/v1/channels"), api(`/v1/dead-letters?${q}`)]);
      replace(select, h("option", { value: "" }, "all channels"),
        channels.map((c) => h("option", { value: c.name }, `${c.name} (${c.queue.dead})`)));
      select.value = channel;
      const mine = channels.find((c) => c.name === channel);
      deadCount = mine ? mine.queue.dead : dead_letters.length;
      items = dead_letters;
      const present = new Set(items.map((d) => d.id));
      for (const id of [...ui.selected]) if (!present.has(id)) ui.selected.delete(id);
      draw();
    },
  };
}

// ---- start ------------------------------------------------------------------------------------

window.addEventListener("hashchange", render);

(async () => {
  try {
    const resp = await fetch("session", { cache: "no-store" });
    tokenRequired = (await resp.json()).token_required === true;
  } catch (_) {
    tokenRequired = true;
  }
  render();
})();
