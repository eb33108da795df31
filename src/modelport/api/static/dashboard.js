/* modelport dashboard: plain JavaScript over the /v1 API, charts drawn with uPlot.
 *
 * Every figure comes from the same API any client uses; the session cookie authenticates
 * reads, and changes carry the X-Modelport-Dashboard header (the server accepts the cookie
 * for a change only beside it). Text from the server is set as text, never as HTML.
 * window.modelport.charts holds the uPlot objects by chart id (tests read them).
 */
"use strict";

(function () {
  const app = document.getElementById("app");
  const state = { who: null, charts: {}, window: "1h", segments: {} };
  window.modelport = state;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
  const WINDOWS = ["15m", "1h", "6h", "24h", "7d"];

  // -- helpers ------------------------------------------------------------------------------

  async function api(path, options) {
    const opts = Object.assign({ method: "GET", credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (opts.method !== "GET") {
      opts.headers["X-Modelport-Dashboard"] = "1";
      if (opts.body !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(opts.body);
      }
    }
    let response;
    try {
      response = await fetch(path, opts);
    } catch (err) {
      return { ok: false, status: 0, data: null, error: String(err) };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    const error = data && data.error ? data.error.message : response.statusText;
    return { ok: response.ok, status: response.status, data: data, error: error };
  }

  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") {
      if (!isFinite(value)) return String(value);
      if (Number.isInteger(value)) return String(value);
      return value.toPrecision(digits || 4);
    }
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function short(text, n) {
    if (!text) return "–";
    text = String(text);
    return text.length > n ? text.slice(0, n) + "…" : text;
  }

  function table(headers, rows, attrs) {
    return el(
      "table",
      attrs || {},
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", r.attrs || {}, ...r.cells.map((c) => el("td", {}, c))))),
    );
  }

  function section(id, title, ...children) {
    return el("section", { id: id, class: "card" }, el("h2", { text: title }), ...children);
  }

  function noData(text) {
    return el("p", { class: "muted no-data", text: text || "No data." });
  }

  const epoch = (iso) => Date.parse(iso) / 1000;
  const enc = encodeURIComponent;

  // -- charts -------------------------------------------------------------------------------

  function chart(id, series, data, opts) {
    const holder = el("div", { class: "chart", id: id });
    const counted = data.slice(1).map((ys) => ys.filter((y) => y !== null && y !== undefined).length);
    holder.dataset.series = String(series.length);
    holder.dataset.points = String(counted.reduce((a, b) => a + b, 0));
    holder.dataset.x = String(data[0].length);
    requestAnimationFrame(() => {
      const width = Math.max(320, holder.clientWidth || 600);
      const options = Object.assign(
        {
          width: width,
          height: 220,
          series: [{}].concat(series),
          axes: [{}, { size: 60 }],
          legend: { live: false },
        },
        opts || {},
      );
      if (state.charts[id]) state.charts[id].destroy();
      state.charts[id] = new uPlot(options, data, holder);
      holder.dataset.drawn = "1";
    });
    return holder;
  }

  function line(label, i, extra) {
    return Object.assign(
      { label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false },
      extra || {},
    );
  }

  // -- pages --------------------------------------------------------------------------------

  async function modelsPage() {
    const out = await api("/v1/models");
    const body = [el("h1", { text: "Models" })];
    if (!out.ok) body.push(el("p", { class: "error", text: out.error }));
    else if (!out.data.length) body.push(noData("No models yet."));
    else {
      body.push(
        table(
          ["Model", "Task", "Latest version", "Aliases", "Created", "Description"],
          out.data.map((m) => ({
            attrs: { class: "model-row", "data-model": m.name },
            cells: [
              el("a", { href: "#/models/" + enc(m.name), text: m.name }),
              m.task,
              fmt(m.latest_version),
              Object.entries(m.aliases).map(([a, v]) => a + " → v" + v).join(", ") || "–",
              m.created,
              m.description || "",
            ],
          })),
          { id: "models" },
        ),
      );
    }
    app.replaceChildren(...body);
  }

  async function modelPage(name) {
    const base = "/v1/models/" + enc(name);
    const segment = state.segments[name] || "";
    const win = "window=" + enc(state.window) + (segment ? "&segment=" + enc(segment) : "");
    const [model, versions, history, traffic, experiment, timeline, perf, drift, recent, fit, segs] =
      await Promise.all([
        api(base),
        api(base + "/versions"),
        api(base + "/aliases/history"),
        api(base + "/traffic"),
        api(base + "/experiment"),
        api(base + "/timeline?" + win + "&buckets=60"),
        api(base + "/performance?" + win + "&buckets=24"),
        api(base + "/drift?" + win),
        api(base + "/recent?limit=25"),
        api(base + "/fit?points=100"),
        api(base + "/segments"),
      ]);
    if (!model.ok) {
      app.replaceChildren(el("p", { class: "error", text: model.error }), el("a", { href: "#/", text: "All models" }));
      return;
    }
    const m = model.data;
    const picker = el(
      "select",
      { id: "window", on: { change: (e) => { state.window = e.target.value; render(); } } },
      ...WINDOWS.map((w) => el("option", { value: w, selected: w === state.window, text: w })),
    );
    // A segmented model: its figures for one segment, or for all of them.
    const known = segs.ok && segs.data.field ? segs.data.segments.map((x) => x.segment) : [];
    const segmentPicker = known.length
      ? [
          el("label", { for: "segment", text: " Segment (" + segs.data.field + ") " }),
          el(
            "select",
            { id: "segment", on: { change: (e) => { state.segments[name] = e.target.value; render(); } } },
            el("option", { value: "", selected: !segment, text: "all" }),
            ...known.map((v) => el("option", { value: v, selected: v === segment, text: v })),
          ),
        ]
      : [];
    app.replaceChildren(
      el("p", {}, el("a", { href: "#/", text: "← All models" })),
      el("h1", { id: "model-name", text: m.name }),
      el(
        "p",
        { class: "muted" },
        m.task + " · created " + m.created + " by " + m.created_by + (m.description ? " · " + m.description : ""),
      ),
      el("p", { class: "toolbar" }, el("label", { for: "window", text: "Window " }), picker,
        ...segmentPicker,
        el("button", { type: "button", id: "refresh", on: { click: render } }, "Refresh")),
      el("p", { id: "status", class: "status", role: "status" }),
      aliasesSection(name, m, versions.data || [], history),
      versionsSection(versions),
      trafficSection(traffic, experiment),
      timelineSection(timeline),
      performanceSection(perf),
      fitSection(fit),
      driftSection(drift),
      recentSection(recent),
    );
  }

  function aliasesSection(name, m, versions, history) {
    const admin = state.who && state.who.admin;
    const rows = Object.entries(m.aliases).map(([alias, version]) => ({
      attrs: { "data-alias": alias },
      cells: [
        alias,
        el("span", { class: "alias-version", text: "v" + version }),
        admin
          ? el(
              "button",
              {
                type: "button",
                class: "admin-only rollback",
                "data-alias": alias,
                on: { click: () => change("POST", "/v1/models/" + enc(name) + "/aliases/" + enc(alias) + "/rollback", { reason: "rolled back from the dashboard" }) },
              },
              "Roll back",
            )
          : "",
      ],
    }));
    const parts = [rows.length ? table(["Alias", "Version", ""], rows, { id: "aliases" }) : noData("No aliases.")];
    if (admin && versions.length) {
      const aliasInput = el("input", { id: "promote-alias", value: "production", size: "12" });
      const versionSelect = el("select", { id: "promote-version" },
        ...versions.map((v) => el("option", { value: String(v.version), text: "v" + v.version })));
      parts.push(
        el("form", { class: "admin-only promote", id: "promote-form", on: { submit: (e) => {
          e.preventDefault();
          change("PUT", "/v1/models/" + enc(name) + "/aliases/" + enc(aliasInput.value),
            { version: Number(versionSelect.value), reason: "promoted from the dashboard" });
        } } },
        "Point alias ", aliasInput, " at ", versionSelect, " ", el("button", { type: "submit" }, "Promote")),
      );
    }
    parts.push(el("h3", { text: "History" }));
    if (!history.ok || !history.data.length) parts.push(noData("No alias moves yet."));
    else parts.push(table(
      ["When", "Alias", "From", "To", "Kind", "By", "Reason"],
      history.data.map((h) => ({ cells: [h.at, h.alias, fmt(h.from_version), fmt(h.to_version), h.kind, h.actor, h.reason] })),
      { id: "alias-history" },
    ));
    return section("aliases-section", "Aliases", ...parts);
  }

  async function change(method, path, body) {
    const status = document.getElementById("status");
    const out = await api(path, { method: method, body: body });
    if (!out.ok) {
      status.className = "status error";
      status.textContent = "Refused (" + out.status + "): " + out.error;
      return;
    }
    await render();
    const after = document.getElementById("status");
    after.className = "status ok";
    after.textContent = out.data.alias + " now points at v" + out.data.version;
  }

  function versionsSection(versions) {
    if (!versions.ok) return section("versions-section", "Versions", noData(versions.error));
    if (!versions.data.length) return section("versions-section", "Versions", noData("No versions yet."));
    const rows = versions.data.slice().reverse().map((v) => {
      const lin = v.lineage || {};
      const libs = Object.entries(lin.libraries || {}).map(([k, x]) => k + " " + x).join(", ");
      const params = lin.hyperparameters || lin.params || {};
      return {
        attrs: { "data-version": String(v.version) },
        cells: [
          "v" + v.version + (v.aliases.length ? " (" + v.aliases.join(", ") + ")" : ""),
          v.created,
          lin.created_by || "–",
          v.flavor,
          el("span", { class: "clip", title: libs, text: libs || "–" }),
          short(lin.code_commit, 12),
          el("span", { title: lin.train_data_sha256 || "", text: short(lin.train_data_sha256, 12) }),
          el("span", { class: "clip", title: JSON.stringify(params), text: JSON.stringify(params) }),
          short(JSON.stringify(lin.metrics || {}), 60),
          fmt(lin.parent_version),
        ],
      };
    });
    return section(
      "versions-section",
      "Versions and lineage",
      table(["Version", "Created", "Creator", "Flavor", "Libraries", "Commit", "Training data", "Parameters", "Metrics", "Parent"], rows, { id: "versions" }),
    );
  }

  function trafficSection(traffic, experiment) {
    if (!traffic.ok) return section("traffic-section", "Traffic", noData(traffic.error));
    const policy = traffic.data.traffic;
    const parts = [el("p", {}, "Policy ", el("strong", { id: "policy", text: policy.policy }), " · revision " + traffic.data.revision)];
    parts.push(el("pre", { class: "policy", text: JSON.stringify(policy, null, 2) }));
    if (experiment.ok && experiment.data.arms.length) {
      const e = experiment.data;
      parts.push(table(
        ["Arm", "Requests", "Share", "Rows", "Failures", "Feedback", e.metric, "Interval", "vs control"],
        e.arms.map((a) => ({
          attrs: { "data-arm": a.arm },
          cells: [
            a.arm, fmt(a.requests), a.share === null ? "–" : (100 * a.share).toFixed(1) + " %", fmt(a.rows), fmt(a.failures),
            fmt(a.feedback), fmt(a.value), a.ci ? fmt(a.ci.low) + " – " + fmt(a.ci.high) : "–",
            a.vs_control ? fmt(a.vs_control.difference) + " (p " + fmt(a.vs_control.p_value, 2) + ")" : "–",
          ],
        })),
        { id: "arms" },
      ));
    } else parts.push(noData("No traffic in this experiment yet."));
    return section("traffic-section", "Traffic", ...parts);
  }

  function timelineSection(timeline) {
    if (!timeline.ok) return section("timeline-section", "Requests and latency", noData(timeline.error));
    const t = timeline.data;
    if (!t.versions.length) return section("timeline-section", "Requests and latency", noData("No requests in the last " + state.window + "."));
    const xs = t.versions[0].series.map((p) => epoch(p.start));
    const rate = [xs], rateSeries = [];
    const lat = [xs], latSeries = [];
    t.versions.forEach((v, i) => {
      rate.push(v.series.map((p) => p.requests / t.bucket_seconds));
      rateSeries.push(line("v" + v.version + " req/s", i));
      lat.push(v.series.map((p) => (p.latency_ms ? p.latency_ms.p50 : null)));
      latSeries.push(line("v" + v.version + " p50 ms", i));
      lat.push(v.series.map((p) => (p.latency_ms ? p.latency_ms.p95 : null)));
      latSeries.push(line("v" + v.version + " p95 ms", i, { dash: [6, 4] }));
    });
    const pointsOn = { points: { show: true, size: 5 } };
    rateSeries.forEach((s) => Object.assign(s, pointsOn));
    latSeries.forEach((s) => Object.assign(s, pointsOn));
    const totals = t.versions.map((v) => "v" + v.version + ": " + v.requests + " requests, " + v.rows + " rows, " + v.errors + " errors").join(" · ");
    const lp = t.latency_percentiles;
    return section(
      "timeline-section",
      "Requests and latency",
      el("p", { class: "muted", text: totals }),
      el("h3", { text: "Request rate (requests per second)" }),
      chart("chart-requests", rateSeries, rate),
      el("h3", { text: "Latency (ms): p50 solid, p95 dashed" }),
      chart("chart-latency", latSeries, lat),
      el("p", { class: "muted small", text: "Percentiles over " + lp.sampled + " of " + lp.requests + " requests (" + (lp.complete ? "all" : "the newest") + ")." }),
    );
  }

  function performanceSection(perf) {
    const title = "Live metric from feedback";
    if (!perf.ok) return section("performance-section", title, noData(perf.status === 404 ? "No performance figures available." : perf.error));
    const p = perf.data;
    const metric = p.task === "regression" ? "rmse" : "accuracy";
    const versions = (p.versions || []).filter((v) => (v.series || []).length);
    if (!versions.length) return section("performance-section", title, noData("No labelled predictions in the last " + state.window + "."));
    const xs = versions[0].series.map((s) => epoch(s.start));
    const data = [xs], series = [];
    versions.forEach((v, i) => {
      data.push(v.series.map((s) => (s.metrics && s.metrics[metric] !== undefined && s.labelled ? s.metrics[metric] : null)));
      series.push(line("v" + v.version + " " + metric, i, { points: { show: true, size: 6 } }));
    });
    const rows = versions.map((v) => ({
      cells: ["v" + v.version, fmt(v.predictions), fmt(v.labelled), v.coverage === null || v.coverage === undefined ? "–" : (100 * v.coverage).toFixed(1) + " %",
        v.label_delay_seconds ? fmt(v.label_delay_seconds.median) + " s" : "–",
        Object.entries(v.metrics || {}).map(([k, x]) => k + " " + fmt(x)).join(", ")],
    }));
    return section(
      "performance-section",
      title,
      el("h3", { text: metric + " per version over time" }),
      chart("chart-metric", series, data),
      table(["Version", "Predictions", "Labelled", "Coverage", "Label delay (median)", "Metrics"], rows, { id: "performance" }),
    );
  }

  function fitSection(fit) {
    const title = "Labelled points and the production model's line";
    if (fit.status === 409 || fit.status === 404) return section("fit-section", title, noData("Not a one-input regression: " + (fit.error || "")));
    if (!fit.ok) return section("fit-section", title, noData(fit.error));
    const f = fit.data;
    if (!f.points.length) return section("fit-section", title, noData("No labelled points yet."));
    // One x axis for both series: the points' x values and the grid's, merged in order.
    const merged = f.points.map((p) => [p.x, p.y, null]).concat(f.line.map((p) => [p.x, null, p.y]));
    merged.sort((a, b) => a[0] - b[0]);
    const data = [merged.map((r) => r[0]), merged.map((r) => r[1]), merged.map((r) => r[2])];
    const series = [
      { label: "labelled (" + f.points.length + ")", stroke: "#dc2626", fill: "#dc2626", width: 0, paths: () => null, points: { show: true, space: 0, size: 6, stroke: "#dc2626", fill: "#dc2626" } },
      line("v" + f.version + " prediction", 0, { spanGaps: true, points: { show: false } }),
    ];
    const holder = chart("chart-fit", series, data, { scales: { x: { time: false } }, axes: [{ label: f.field }, { size: 60 }] });
    holder.dataset.fitPoints = String(f.points.length);
    holder.dataset.fitLine = String(f.line.length);
    return section("fit-section", title,
      el("p", { class: "muted", text: "The last " + f.points.length + " labelled points; the line is v" + f.version + (f.alias ? " (" + f.alias + ")" : "") + " on a grid over their range." }),
      holder);
  }

  function driftSection(drift) {
    const title = "Drift per field";
    if (!drift.ok) return section("drift-section", title, noData(drift.status === 404 ? "No drift figures available." : drift.error));
    const rows = [];
    for (const v of drift.data.versions || []) {
      if (!v.fields || !v.fields.length) {
        rows.push({ cells: ["v" + v.version, "–", "–", "–", "–", "–", v.reason || "no reference"] });
        continue;
      }
      for (const f of v.fields) {
        const test = f.ks_pvalue !== undefined && f.ks_pvalue !== null ? "KS " + fmt(f.ks_statistic) + " (p " + fmt(f.ks_pvalue, 2) + ")"
          : f.chi2_pvalue !== undefined && f.chi2_pvalue !== null ? "χ² " + fmt(f.chi2) + " (p " + fmt(f.chi2_pvalue, 2) + ")" : "–";
        rows.push({
          attrs: { class: f.drifted ? "drifted" : "", "data-field": f.field },
          cells: ["v" + v.version, f.field, f.kind, fmt(f.psi), test, f.drifted ? "drifted" : "ok", (f.reasons || []).join("; ")],
        });
      }
    }
    if (!rows.length) return section("drift-section", title, noData("No rows in the last " + state.window + "."));
    return section("drift-section", title, table(["Version", "Field", "Kind", "PSI", "Test", "", "Reasons"], rows, { id: "drift" }));
  }

  function recentSection(recent) {
    const title = "Recent predictions";
    if (!recent.ok) return section("recent-section", title, noData(recent.error));
    const items = recent.data.predictions;
    if (!items.length) return section("recent-section", title, noData("No predictions yet."));
    return section("recent-section", title, table(
      ["Time", "Version", "Consumer", "Inputs", "Prediction", "Label", "Reward", ""],
      items.map((p) => {
        const fb = p.feedback || {};
        const mark = fb.correct === true ? "✓" : fb.correct === false ? "✗" : fb.error !== null && fb.error !== undefined ? "error " + fmt(fb.error) : "";
        return {
          attrs: { "data-prediction": p.id },
          cells: [p.time, "v" + p.version + (p.shadow ? " (shadow)" : ""), p.consumer, short(JSON.stringify(p.inputs), 70), fmt(p.outputs.prediction), fmt(fb.label), fmt(fb.reward), mark],
        };
      }),
      { id: "recent" },
    ));
  }

  // -- routing --------------------------------------------------------------------------------

  async function render() {
    if (state.who === null) {
      const who = await api("/v1/whoami");
      if (!who.ok) {
        window.location.assign("/login");
        return;
      }
      state.who = who.data;
      document.body.dataset.admin = state.who.admin ? "1" : "0";
    }
    const hash = window.location.hash || "#/";
    const match = /^#\/models\/(.+)$/.exec(hash);
    document.body.dataset.ready = "0";
    if (match) await modelPage(decodeURIComponent(match[1]));
    else await modelsPage();
    requestAnimationFrame(() => requestAnimationFrame(() => { document.body.dataset.ready = "1"; }));
  }

  window.addEventListener("hashchange", render);
  render();
})();
