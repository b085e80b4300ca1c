// mqttgw status page: keeps the server-rendered page current by polling
// /status.json and /devices every few seconds; no libraries, no build step.
"use strict";
(function () {
  const every = 5000;
  const $ = (id) => document.getElementById(id);

  function ago(t) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s ago";
    return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m ago";
  }

  function cell(tr, text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "n";
    tr.appendChild(td);
  }

  function renderStatus(s) {
    const up = $("upstream");
    up.className = s.upstream.connected ? "up" : "down";
    $("upstream-state").textContent = s.upstream.connected ? "connected" : "not connected";
    $("upstream-since").textContent = ago(s.upstream.since);
    $("upstream-problem").textContent = s.upstream.problem || "";
    const body = $("listeners").tBodies[0];
    body.replaceChildren();
    for (const l of s.listeners) {
      const tr = document.createElement("tr");
      tr.dataset.listener = l.name;
      cell(tr, l.name); cell(tr, l.type); cell(tr, l.addr);
      cell(tr, l.uplinks, true); cell(tr, l.downlinks, true);
      cell(tr, l.active, true); cell(tr, l.asleep, true); cell(tr, l.lost, true);
      body.appendChild(tr);
    }
    renderChart(s.rates || []);
    renderFleet(s.fleet);
  }

  // The fleet section is there when the gateway has [cluster].
  function renderFleet(f) {
    const table = $("fleet");
    if (!table || !f) return;
    $("fleet-problem").textContent = f.error || "";
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const i of f.instances || []) {
      const tr = document.createElement("tr");
      tr.dataset.instance = i.id;
      tr.className = i.alive ? "alive" : "dead";
      cell(tr, i.id + (i.self ? " (this one)" : ""));
      cell(tr, i.alive ? "alive" : "not alive");
      cell(tr, i.devices, true);
      body.appendChild(tr);
    }
  }

  function renderChart(rates) {
    const w = 600, h = 120, n = 60;
    let max = 1;
    for (const r of rates) max = Math.max(max, r.uplinks, r.downlinks);
    const pts = (key) => rates.map((r, i) => {
      const x = ((n - rates.length + i) / (n - 1)) * w;
      const y = h - (r[key] / max) * (h - 4) - 2;
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    $("chart-up").setAttribute("points", pts("uplinks"));
    $("chart-down").setAttribute("points", pts("downlinks"));
    $("chart-max").textContent = rates.length ? "max " + max.toFixed(1) + "/s" : "no samples yet";
  }

  let devices = null;
  // A fleet's table has an owner column; its other instances' devices have
  // no address or last seen here.
  const fleet = "fleet" in $("devices").dataset;
  function renderDevices() {
    if (devices === null) return;
    const q = $("search").value.trim().toLowerCase();
    const body = $("devices").tBodies[0];
    body.replaceChildren();
    for (const d of devices) {
      if (q && !(d.device + " " + d.listener + " " + (d.addr || "") + " " + (d.class || "") + " " + (d.owner || "")).toLowerCase().includes(q)) continue;
      const tr = document.createElement("tr");
      tr.className = d.state;
      cell(tr, d.listener); cell(tr, d.device); cell(tr, d.protocol); cell(tr, d.class || "");
      cell(tr, d.addr || ""); cell(tr, d.state); cell(tr, d.last_seen ? ago(d.last_seen) : "");
      if (fleet) cell(tr, d.owner || "");
      body.appendChild(tr);
    }
    const more = $("more");
    if (more) more.remove();
  }

  async function poll() {
    try {
      const st = $("state").value;
      const [s, d] = await Promise.all([
        fetch("/status.json", { cache: "no-store" }).then((r) => r.json()),
        fetch("/devices" + (st ? "?state=" + encodeURIComponent(st) : ""), { cache: "no-store" }).then((r) => r.json()),
      ]);
      renderStatus(s);
      devices = d;
      renderDevices();
    } catch (e) {
      $("upstream-state").textContent = "gateway not reachable";
      $("upstream").className = "down";
    }
  }

  $("search").addEventListener("input", renderDevices);
  $("state").addEventListener("change", poll);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  poll();
  setInterval(poll, every);
})();
