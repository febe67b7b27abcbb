// The admin dashboard: renders the figures embedded in the page, then polls the live JSON every
// few seconds and the chart series every sample period. No inline script (CSP script-src 'self').
(function () {
  "use strict";
  const root = document.getElementById("vdi-dashboard");
  if (!root) return;
  const pollMs = 1000 * Number(root.dataset.pollSeconds || 5);
  const seriesMs = 1000 * Math.max(15, Number(root.dataset.sampleSeconds || 60));
  const COLORS = { blue: "#1f77b4", red: "#d62728", green: "#2ca02c", orange: "#ff7f0e" };

  // -- formatting ---------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child === null || child === undefined ? "" : child);
    return node;
  }
  const num = (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  function bytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  const rate = (v) => (v === null || v === undefined ? "–" : `${bytes(v)}/s`);
  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  }
  const ofAllowed = (placed, allowed, unit = "", scale = 1) =>
    allowed ? `${num(placed / scale, scale > 1 ? 1 : 0)} / ${num(allowed / scale, scale > 1 ? 1 : 0)}${unit}`
      + ` (${Math.round(100 * placed / allowed)} %)` : `${num(placed / scale, scale > 1 ? 1 : 0)}${unit} (size unknown)`;

  // -- the figures --------------------------------------------------------------------------
  function tile(name, value, label, warn) {
    return el("div", { class: "vdi-tile" + (warn ? " vdi-warn" : ""), "data-tile": name },
      el("span", { class: "value" }, String(value)), el("span", { class: "label" }, label));
  }

  function renderTiles(f) {
    const a = f.activity, c = f.celery, h = f.housekeeping;
    const waiting = Object.values(c.queues).reduce((sum, n) => sum + (n || 0), 0);
    const redisDown = Object.values(c.queues).some((n) => n === null);
    const sync = h.directory_sync;
    document.getElementById("tiles").replaceChildren(
      tile("desktops_in_use", a.desktops_in_use, "desktops in use"),
      tile("farm_sessions", a.farm_sessions, "shared sessions"),
      tile("consoles_open", a.consoles_open, "consoles open"),
      tile("workers_alive", c.workers_alive === null ? "?" : c.workers_alive,
        `workers alive (asked ${ago(c.workers_seen_at)})`, !c.workers_alive),
      tile("tasks_waiting", redisDown ? "?" : waiting, redisDown ? "tasks waiting (Redis does not answer)" : "tasks waiting",
        redisDown),
      tile("failed_tasks", `${c.failed_tasks_hour} / ${c.failed_tasks_day}`, "failed tasks (hour / day)",
        c.failed_tasks_hour > 0),
      tile("last_reconciliation", ago(h.last_reconciliation), "last reconciliation"),
      tile("directory_sync", sync ? `${sync.status}, ${ago(sync.at)}` : (h.directory_enabled ? "not yet" : "off"),
        "directory sync", sync && sync.status !== "succeeded" && sync.status !== "running"),
    );
  }

  function statesText(byState) {
    const parts = Object.entries(byState).sort().map(([state, n]) => `${state} ${n}`);
    return parts.length ? parts.join(", ") : "none";
  }

  function renderHosts(hosts) {
    const rows = hosts.map((h) => {
      const u = h.usage;
      const usageCells = !u ? ["–", "–", "–", "–"].map((t) => el("td", {}, t)) : u.error
        ? [el("td", { colspan: "4", class: "vdi-error" }, `not read: ${u.error}`)]
        : [el("td", { "data-field": "cpu" }, u.cpu_percent === null ? "–" : `${u.cpu_percent} %`),
           el("td", { "data-field": "memory_use" },
             u.memory_total_mib ? ofAllowed(u.memory_used_mib, u.memory_total_mib, " GiB", 1024) : "–"),
           el("td", { "data-field": "disk" }, `${rate(u.disk_read_bps)} / ${rate(u.disk_write_bps)}`),
           el("td", { "data-field": "net" }, `${rate(u.net_rx_bps)} / ${rate(u.net_tx_bps)}`)];
      const committed = `${bytes(h.storage_committed_bytes)} committed`;
      const storage = u && !u.error && u.storage_capacity_bytes
        ? `${committed}; ${bytes(u.storage_used_bytes)} of ${bytes(u.storage_capacity_bytes)} used`
          + ` (${bytes(u.storage_available_bytes)} free)`
        : committed;
      const session = h.kind === "session";
      return el("tr", { "data-host": h.name },
        el("th", {}, h.name),
        el("td", { "data-field": "status", class: h.status === "online" ? "" : "vdi-error", title: h.last_error },
          h.status),
        el("td", { "data-field": "vcpus" }, session ? `${num(h.sessions_running)} sessions`
          : ofAllowed(h.vcpus_placed, h.vcpus_allowed)),
        el("td", { "data-field": "memory" }, session ? "–"
          : ofAllowed(h.memory_placed_mib, h.memory_allowed_mib, " GiB", 1024)),
        el("td", { "data-field": "storage" }, session ? "–" : storage),
        ...usageCells,
        el("td", { "data-field": "desktops_by_state" }, statesText(h.desktops_by_state)));
    });
    document.querySelector("#hosts tbody").replaceChildren(...rows);
  }

  function renderPools(pools) {
    const rows = pools.map((p) => el("tr", { "data-pool": p.name },
      el("th", {}, p.display_name),
      el("td", {}, p.kind),
      el("td", { "data-field": "spares_ready" }, p.kind === "farm" ? "–" : `${p.spares_ready} / ${p.min_spares}`),
      el("td", { "data-field": "in_use" }, String(p.in_use)),
      el("td", { "data-field": "provisioning" }, String(p.provisioning)),
      el("td", { "data-field": "failing", class: p.failing ? "vdi-error" : "" }, String(p.failing)),
      el("td", { "data-field": "live" }, `${p.live} / ${p.max_desktops}`),
      el("td", { "data-field": "backoff", class: p.backoff_until ? "vdi-error" : "" },
        p.backoff_until ? `until ${new Date(p.backoff_until).toLocaleTimeString()} (${p.consecutive_failures} failures)`
          : "no"),
      el("td", {}, ago(p.last_reconciled_at))));
    document.querySelector("#pools tbody").replaceChildren(...rows);
  }

  function renderCelery(c) {
    document.querySelector("#queues tbody").replaceChildren(...Object.entries(c.queues).map(([name, n]) =>
      el("tr", { "data-queue": name }, el("td", {}, name), el("td", {}, n === null ? "?" : String(n)))));
    document.querySelector("#failures tbody").replaceChildren(...(c.failed_by_task.length ? c.failed_by_task.map((t) =>
      el("tr", {}, el("td", {}, t.task), el("td", {}, String(t.hour)), el("td", {}, String(t.day))))
      : [el("tr", {}, el("td", { colspan: "3" }, "no failed task in 24 hours"))]));
    const last = c.last_failure;
    document.getElementById("last-failure").textContent = last ? `Last failure: ${last.task}, ${ago(last.at)}: ${last.error}` : "";
  }

  function render(f) {
    renderTiles(f);
    renderHosts(f.hosts);
    renderPools(f.pools);
    renderCelery(f.celery);
    const at = document.getElementById("figures-at");
    at.textContent = new Date(f.at).toLocaleString();
    at.dateTime = f.at;
    root.dataset.updatedAt = f.at;
  }

  async function poll() {
    const state = document.getElementById("live-state");
    if (document.hidden) {  // a tab in the background asks for nothing
      setTimeout(poll, pollMs);
      return;
    }
    try {
      const response = await fetch(root.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.status === 403) {
        state.textContent = "stopped: you are no longer logged in as an administrator";
        state.classList.add("vdi-error");
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      state.textContent = `live: every ${pollMs / 1000} s`;
      state.classList.remove("vdi-error");
    } catch (error) {
      state.textContent = `not updating (${error.message}); trying again`;
      state.classList.add("vdi-error");
    }
    setTimeout(poll, pollMs);
  }

  // -- the charts ---------------------------------------------------------------------------
  const CHARTS = {
    sessions: { series: [["consoles open", "consoles_open", COLORS.blue], ["desktops in use", "desktops_in_use", COLORS.green]] },
    launches: { series: [["launches", "launches", COLORS.blue]] },
    launch_time: { series: [["p50", "launch_p50_s", COLORS.blue], ["p95", "launch_p95_s", COLORS.red]] },
    capacity: { series: [["vCPUs", "vcpu_percent", COLORS.blue], ["memory", "memory_percent", COLORS.orange]] },
  };
  const plots = {};
  let span = "24h";

  function percent(part, whole) {
    return part.map((p, i) => (whole[i] ? Math.round(1000 * p / whole[i]) / 10 : null));
  }

  function drawCharts(doc) {
    const s = doc.series;
    s.vcpu_percent = percent(s.vcpus_placed, s.vcpus_allowed);
    s.memory_percent = percent(s.memory_placed_mib, s.memory_allowed_mib);
    document.querySelector('[data-chart="launches"] figcaption').textContent =
      doc.resolution === "hour" ? "Launches per hour" : `Launches per ${Number(root.dataset.sampleSeconds)} s`;
    for (const [name, chart] of Object.entries(CHARTS)) {
      const figure = document.querySelector(`[data-chart="${name}"]`);
      const box = figure.querySelector(".plot");
      const data = [s.t, ...chart.series.map(([, key]) => s[key])];
      figure.dataset.points = String(s.t.length);
      if (!s.t.length) {
        if (plots[name]) { plots[name].destroy(); delete plots[name]; }
        box.replaceChildren(el("p", { class: "quiet vdi-empty" }, "No samples yet: the sampling task runs every "
          + `${Number(root.dataset.sampleSeconds)} s (celery beat).`));
        continue;
      }
      if (plots[name] && plots[name].vdiSpan === span) {
        plots[name].setData(data);
        continue;
      }
      if (plots[name]) plots[name].destroy();
      box.replaceChildren();
      const plot = new uPlot({
        width: Math.max(280, box.clientWidth), height: 200,
        scales: { x: { time: true, range: () => [doc.from, doc.to] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
        series: [{}, ...chart.series.map(([label, , stroke]) => ({ label, stroke, width: 2, spanGaps: false, points: { show: s.t.length < 60 } }))],
        axes: [{}, { size: 50 }],
        legend: { live: false },
      }, data, box);
      plot.vdiSpan = span;
      plots[name] = plot;
    }
    root.dataset.chartsDrawnAt = String(Date.now());
  }

  async function loadSeries() {
    try {
      const response = await fetch(`${root.dataset.seriesUrl}?span=${span}`, { credentials: "same-origin" });
      if (response.ok) drawCharts(await response.json());
    } catch (error) {
      // the live figures' poll reports a lost connection; the charts try again on their own timer
    }
  }

  function seriesLoop() {
    loadSeries().finally(() => setTimeout(seriesLoop, seriesMs));
  }

  for (const button of document.querySelectorAll(".vdi-range [data-span]")) {
    button.addEventListener("click", () => {
      span = button.dataset.span;
      for (const other of document.querySelectorAll(".vdi-range [data-span]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      loadSeries();
    });
  }
  window.addEventListener("resize", () => {
    for (const [name, plot] of Object.entries(plots)) {
      const box = document.querySelector(`[data-chart="${name}"] .plot`);
      plot.setSize({ width: Math.max(280, box.clientWidth), height: 200 });
    }
  });

  render(JSON.parse(document.getElementById("dashboard-figures").textContent));
  setTimeout(poll, pollMs);
  seriesLoop();
})();
