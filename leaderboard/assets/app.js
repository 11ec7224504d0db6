/* stbench leaderboard: renders the page's embedded JSON (sorting, switches, search, plotly charts).
 * No network, no framework. Every name from the data is untrusted: it only ever reaches the DOM through
 * textContent, and plotly (which reads a few HTML tags in its labels) only through plotSafe(). */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("stbench-data").textContent);
  var PLOT_CONFIG = { displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                      modeBarButtonsToRemove: ["sendDataToCloud"] };
  var PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000"];

  // -- helpers -------------------------------------------------------------------------------------------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (a[k] === null || a[k] === undefined) return;
      if (k === "text") node.textContent = String(a[k]);
      else if (k === "class") node.className = a[k];
      else node.setAttribute(k, String(a[k]));
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "—" : x.toFixed(digits === undefined ? 4 : digits); }
  function signed(x) { return x === null || x === undefined ? "—" : (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(4); }
  function plotSafe(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function recall(key) { try { return window.sessionStorage.getItem("stbench-" + key); } catch (e) { return null; } }
  function remember(key, value) { try { window.sessionStorage.setItem("stbench-" + key, value); } catch (e) { /* private mode */ } }
  function get(obj) {
    for (var i = 1; i < arguments.length; i++) {
      if (obj === null || obj === undefined) return undefined;
      obj = Object.prototype.hasOwnProperty.call(obj, arguments[i]) ? obj[arguments[i]] : undefined;
    }
    return obj;
  }
  function protocolLabel(fp) {
    var p = DATA.protocols.filter(function (q) { return q.fingerprint === fp; })[0];
    return p ? p.label : fp;
  }
  function plot(div, traces, layout) {
    var base = { margin: { l: 60, r: 20, t: 40, b: 60 }, font: { family: "system-ui, sans-serif", size: 12 },
                 paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" };
    window.Plotly.react(div, traces, Object.assign(base, layout || {}), PLOT_CONFIG);
  }

  // -- sortable tables -----------------------------------------------------------------------------------
  // A cell's data-sort holds its numeric value ("" = missing, always last); text columns sort by text.
  function sortTable(table, index, dir) {
    var body = table.tBodies[0];
    if (!body) return;
    var th = table.tHead.rows[0].cells[index];
    var numeric = th.getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[index];
      if (!cell) return null;
      var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
      if (numeric) { var v = parseFloat(raw); return isNaN(v) ? null : v; }
      return raw.toLowerCase();
    }
    rows.sort(function (a, b) {
      var ka = key(a), kb = key(b);
      if (ka === null && kb === null) return 0;
      if (ka === null) return 1;
      if (kb === null) return -1;
      var c = ka < kb ? -1 : ka > kb ? 1 : 0;
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c, i) {
      c.setAttribute("aria-sort", i === index ? (dir === "asc" ? "ascending" : "descending") : "none");
    });
    table.setAttribute("data-sort-col", index);
    table.setAttribute("data-sort-dir", dir);
  }
  function makeSortable(table) {
    if (table.getAttribute("data-sortable") === "1") return;
    table.setAttribute("data-sortable", "1");
    table.addEventListener("click", function (ev) {
      var th = ev.target.closest("th");
      if (!th || !table.tHead || !table.tHead.contains(th)) return;
      var index = th.cellIndex;
      var current = table.getAttribute("data-sort-col") === String(index) ? table.getAttribute("data-sort-dir") : null;
      var first = th.getAttribute("data-first") || (th.getAttribute("data-type") === "num" ? "desc" : "asc");
      sortTable(table, index, current ? (current === "asc" ? "desc" : "asc") : first);
    });
  }
  // columns: [{label, type: "num"|"text", first, title}]; rows: [[cell, ...]], a cell = {text|node, sort, cls, title}
  function fillTable(table, columns, rows) {
    var keepCol = table.getAttribute("data-sort-col"), keepDir = table.getAttribute("data-sort-dir");
    var head = el("tr");
    columns.forEach(function (c) {
      head.append(el("th", { "data-type": c.type || "text", "data-first": c.first, title: c.title || "Sort by " + c.label,
                             scope: "col", text: c.label }));
    });
    var body = el("tbody");
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (cell) {
        var td = el("td", { "data-sort": cell.sort === null || cell.sort === undefined ? (cell.num ? "" : null) : cell.sort,
                            class: cell.cls, title: cell.title });
        if (cell.node) td.append(cell.node); else td.textContent = cell.text === undefined ? "" : String(cell.text);
        tr.append(td);
      });
      body.append(tr);
    });
    table.replaceChildren(el("thead", {}, head), body);
    makeSortable(table);
    if (keepCol !== null && Number(keepCol) < columns.length) sortTable(table, Number(keepCol), keepDir);
  }
  function num(x, text) { return { text: text === undefined ? fmt(x) : text, sort: x === null ? "" : x, num: true, cls: "num" }; }

  // -- shared controls -----------------------------------------------------------------------------------
  function switchGroup(container, values, labels, current, onChange) {
    container.replaceChildren();
    values.forEach(function (v, i) {
      var b = el("button", { type: "button", "data-value": v, "aria-pressed": v === current ? "true" : "false",
                             text: labels ? labels[i] : v });
      b.addEventListener("click", function () {
        Array.prototype.forEach.call(container.children, function (o) { o.setAttribute("aria-pressed", o === b ? "true" : "false"); });
        onChange(v);
      });
      container.append(b);
    });
  }
  function staticSwitch(container, current, onChange) {  // buttons written by the page, values in data-value
    Array.prototype.forEach.call(container.querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", b.getAttribute("data-value") === current ? "true" : "false");
      b.addEventListener("click", function () {
        Array.prototype.forEach.call(container.querySelectorAll("button"), function (o) {
          o.setAttribute("aria-pressed", o === b ? "true" : "false");
        });
        onChange(b.getAttribute("data-value"));
      });
    });
  }
  var state = { protocol: null, mode: "pooled" };
  function initProtocolControls(onChange) {
    var select = document.getElementById("protocol");
    if (select) {
      var values = Array.prototype.map.call(select.options, function (o) { return o.value; });
      var saved = recall("protocol");
      state.protocol = values.indexOf(saved) >= 0 ? saved : (values.indexOf(DATA.default_protocol) >= 0 ? DATA.default_protocol : values[0]);
      select.value = state.protocol;
      select.addEventListener("change", function () { state.protocol = select.value; remember("protocol", select.value); markCard(); onChange(); });
    }
    var modes = document.getElementById("mode");
    if (modes) {
      var savedMode = recall("mode");
      state.mode = savedMode === "per-sample" ? "per-sample" : "pooled";
      staticSwitch(modes, state.mode, function (m) { state.mode = m; remember("mode", m); onChange(); });
    }
    markCard();
  }
  function markCard() {
    Array.prototype.forEach.call(document.querySelectorAll("#protocol-card tr[data-protocol]"), function (tr) {
      tr.classList.toggle("current", tr.getAttribute("data-protocol") === state.protocol);
    });
  }
  function datalist(input, list, values, current, onPick) {
    list.replaceChildren.apply(list, values.map(function (v) { return el("option", { value: v }); }));
    input.value = current;
    input.addEventListener("input", function () { if (values.indexOf(input.value) >= 0) onPick(input.value); });
    input.addEventListener("change", function () { if (values.indexOf(input.value) >= 0) onPick(input.value); });
  }

  // -- index -----------------------------------------------------------------------------------------------
  function initIndex() {
    var renders = [];
    initProtocolControls(function () { renders.forEach(function (f) { f(); }); });
    DATA.sections.forEach(function (sec) {
      var root = document.getElementById("section-" + sec.id);
      var reducer = sec.reducers.indexOf(DATA.default_reducer) >= 0 ? DATA.default_reducer : sec.reducers[0];
      var sw = root.querySelector(".reducer-switch");
      switchGroup(sw, sec.reducers, null, reducer, function (r) { reducer = r; render(); });
      var cmp = root.querySelector("select.comparison");
      sec.sensitivity.forEach(function (c, i) {
        cmp.append(el("option", { value: String(i), text: c.from.label + " → " + c.to.label }));
      });
      cmp.addEventListener("change", function () { renderSensitivity(root, sec, Number(cmp.value)); });
      function render() {
        renderMain(root, sec, reducer);
        renderGain(root, sec);
      }
      renderSensitivity(root, sec, 0);
      renders.push(render);
      render();
    });
  }

  function renderMain(root, sec, reducer) {
    var table = root.querySelector(".main-table");
    var empty = root.querySelector("#main-" + sec.id + " .empty");
    var view = get(sec.main, state.protocol, state.mode, reducer);
    var heat = document.getElementById("heatmap-" + sec.id);
    if (!view) {
      table.replaceChildren();
      empty.classList.remove("hidden");
      window.Plotly.purge(heat);
      return;
    }
    empty.classList.add("hidden");
    var columns = [{ label: "rank", type: "num", first: "asc" }, { label: "encoder" }];
    view.tasks.forEach(function (t) { columns.push({ label: t, type: "num", title: "Sort by " + t + " (mean PCC)" }); });
    columns.push({ label: "avg over tasks", type: "num" });
    var rows = view.rows.map(function (r) {
      var cells = [num(r.rank, r.rank === null ? "—" : String(r.rank)), { text: r.encoder, cls: "name" }];
      view.tasks.forEach(function (t) {
        var c = r.cells[t];
        if (!c) { cells.push({ text: "—", sort: "", num: true, cls: "num missing" }); return; }
        var node = el("span", {}, fmt(c.mean) + " ± " + fmt(c.std));
        if (c.variant) node.append(el("sup", { class: "variant", title: "no default-options run; shown: " + c.variant, text: "†" }));
        cells.push({ node: node, sort: c.mean === null ? "" : c.mean, num: true, cls: "num",
                     title: "run " + c.run_id + ", " + c.folds + " folds" });
      });
      cells.push(num(r.avg, r.complete ? fmt(r.avg) : fmt(r.avg) + " (" + r.n_tasks + "/" + view.tasks.length + ")"));
      return cells;
    });
    fillTable(table, columns, rows);
    var z = view.rows.map(function (r) { return view.tasks.map(function (t) { var c = r.cells[t]; return c ? c.mean : null; }); });
    plot(heat, [{ type: "heatmap", z: z, x: view.tasks.map(plotSafe), y: view.rows.map(function (r) { return plotSafe(r.encoder); }),
                  colorscale: "Viridis", colorbar: { title: { text: "PCC" } }, texttemplate: "%{z:.3f}",
                  hovertemplate: "%{y} · %{x}: %{z:.4f}<extra></extra>" }],
         { title: { text: plotSafe(reducer + " · " + protocolLabel(state.protocol) + " · " + state.mode + " PCC") },
           height: Math.max(260, 60 + 34 * view.rows.length), yaxis: { automargin: true, autorange: "reversed" },
           xaxis: { automargin: true } });
  }

  function renderGain(root, sec) {
    var table = root.querySelector(".gain-table");
    var rows = get(sec.gain, state.protocol, state.mode) || [];
    var reducers = sec.reducers;
    var columns = [{ label: "task" }, { label: "encoder" }];
    reducers.forEach(function (r) { columns.push({ label: r, type: "num" }); });
    reducers.forEach(function (r) { if (r !== "pca") columns.push({ label: "Δ " + r + " vs PCA", type: "num" }); });
    fillTable(table, columns, rows.map(function (row) {
      var cells = [{ text: row.task }, { text: row.encoder, cls: "name" }];
      reducers.forEach(function (r) { cells.push(num(row.values[r])); });
      reducers.forEach(function (r) {
        if (r === "pca") return;
        var g = row.gain[r];
        cells.push({ text: signed(g), sort: g === null ? "" : g, num: true,
                     cls: "num " + (g === null ? "" : g > 0 ? "up" : g < 0 ? "down" : "") });
      });
      return cells;
    }));
  }

  function renderSensitivity(root, sec, index) {
    var empty = root.querySelector("#sensitivity-" + sec.id + " .empty");
    var chart = document.getElementById("slope-" + sec.id);
    var c = sec.sensitivity[index];
    var tr = root.querySelector(".sens-reducers"), te = root.querySelector(".sens-encoders");
    if (!c) {
      empty.classList.remove("hidden");
      tr.replaceChildren(); te.replaceChildren();
      return;
    }
    empty.classList.add("hidden");
    function moveCell(m) {
      return { text: m === 0 ? "=" : (m > 0 ? "▲ " : "▼ ") + Math.abs(m), sort: m, num: true,
               cls: "num " + (m > 0 ? "up" : m < 0 ? "down" : "") };
    }
    var cols = function (what) {
      return [{ label: "task" }, { label: what === "reducer" ? "encoder" : "reducer" }, { label: what },
              { label: "PCC · " + c.from.label, type: "num" }, { label: "rank · " + c.from.label, type: "num", first: "asc" },
              { label: "PCC · " + c.to.label, type: "num" }, { label: "rank · " + c.to.label, type: "num", first: "asc" },
              { label: "move", type: "num" }];
    };
    fillTable(tr, cols("reducer"), c.reducer_rows.map(function (r) {
      return [{ text: r.task }, { text: r.encoder, cls: "name" }, { text: r.reducer, cls: "name" }, num(r.a),
              num(r.rank_a, String(r.rank_a)), num(r.b), num(r.rank_b, String(r.rank_b)), moveCell(r.move)];
    }));
    showIf(tr, c.reducer_rows.length, "needs at least two reducers under both protocols");
    showIf(te, c.encoder_rows.length, "needs at least two encoders under both protocols");
    fillTable(te, cols("encoder"), c.encoder_rows.map(function (r) {
      return [{ text: r.task }, { text: r.reducer, cls: "name" }, { text: r.encoder, cls: "name" }, num(r.a),
              num(r.rank_a, String(r.rank_a)), num(r.b), num(r.rank_b, String(r.rank_b)), moveCell(r.move)];
    }));
    var traces = [];
    function lines(rows, key, dash) {
      var acc = {};
      rows.forEach(function (r) {
        var k = r[key];
        acc[k] = acc[k] || { a: 0, b: 0, n: 0 };
        acc[k].a += r.rank_a; acc[k].b += r.rank_b; acc[k].n += 1;
      });
      Object.keys(acc).sort().forEach(function (k, i) {
        var v = acc[k];
        traces.push({ type: "scatter", mode: "lines+markers", x: [plotSafe(c.from.label), plotSafe(c.to.label)],
                      y: [v.a / v.n, v.b / v.n], name: plotSafe(key + ": " + k), line: { dash: dash, color: PALETTE[(traces.length) % PALETTE.length] },
                      hovertemplate: plotSafe(k) + ": mean rank %{y:.2f}<extra></extra>" });
      });
    }
    lines(c.reducer_rows, "reducer", "solid");
    lines(c.encoder_rows, "encoder", "dot");
    plot(chart, traces, { title: { text: "Mean rank (1 = best) under each protocol" }, height: 360,
                          yaxis: { autorange: "reversed", title: { text: "mean rank" }, dtick: 1 },
                          xaxis: { automargin: true }, margin: { l: 60, r: 20, t: 40, b: 60 } });
  }

  function showIf(table, n, reason) {  // an empty ranking table: a line saying why instead of bare headers
    var wrap = table.parentNode, note = wrap.nextElementSibling;
    if (!note || !note.classList.contains("why-empty")) {
      note = el("p", { class: "empty why-empty" });
      wrap.parentNode.insertBefore(note, wrap.nextSibling);
    }
    wrap.classList.toggle("hidden", !n);
    note.classList.toggle("hidden", !!n);
    note.textContent = n ? "" : "No rows: " + reason + ".";
  }

  // -- task page ------------------------------------------------------------------------------------------
  function initTask() {
    var encSelect = document.getElementById("encoder");
    DATA.encoders.forEach(function (e) { encSelect.append(el("option", { value: e, text: e })); });
    var savedEnc = recall("encoder");
    if (DATA.encoders.indexOf(savedEnc) >= 0) encSelect.value = savedEnc;
    var search = document.getElementById("gene-search");
    function render() { renderGenes(encSelect.value, search.value); }
    encSelect.addEventListener("change", function () { remember("encoder", encSelect.value); render(); });
    search.addEventListener("input", function () { filterGenes(search.value); });
    initProtocolControls(render);
    render();
    renderRuns();
  }

  function renderGenes(encoder, query) {
    var byReducer = get(DATA.genes, state.protocol, state.mode, encoder) || {};
    var reducers = DATA.reducers.filter(function (r) { return byReducer[r]; });
    var genes = {};
    reducers.forEach(function (r) { Object.keys(byReducer[r]).forEach(function (g) { genes[g] = true; }); });
    var ref = reducers.indexOf("pca") >= 0 ? "pca" : reducers[0];
    var names = Object.keys(genes).sort(function (a, b) {
      var va = ref ? byReducer[ref][a] : null, vb = ref ? byReducer[ref][b] : null;
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return vb - va;
    });
    var columns = [{ label: "gene" }];
    reducers.forEach(function (r) { columns.push({ label: r, type: "num" }); });
    fillTable(document.getElementById("gene-table"), columns, names.map(function (g) {
      var cells = [{ text: g, cls: "name" }];
      reducers.forEach(function (r) { var v = byReducer[r][g]; cells.push(num(v === undefined ? null : v)); });
      return cells;
    }));
    filterGenes(query);
    var traces = reducers.map(function (r, i) {
      return { type: "scatter", mode: "markers+lines", name: plotSafe(r), x: names.map(plotSafe),
               y: names.map(function (g) { var v = byReducer[r][g]; return v === undefined ? null : v; }),
               marker: { color: PALETTE[i % PALETTE.length], size: 7 }, line: { width: 1 },
               hovertemplate: "%{x}: %{y:.4f}<extra>" + plotSafe(r) + "</extra>" };
    });
    plot(document.getElementById("gene-chart"), traces, {
      title: { y: 0.97, yanchor: "top", text: plotSafe(encoder + " · " + protocolLabel(state.protocol) + " · " + state.mode + " PCC per gene" +
                              (ref ? " (sorted by " + ref + ")" : "")) },
      height: 440, margin: { l: 60, r: 20, t: 80, b: 60 },
      xaxis: { tickangle: -60, automargin: true, type: "category" }, yaxis: { title: { text: "PCC" }, zeroline: true },
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" } });
  }

  function filterGenes(query) {
    var q = (query || "").trim().toLowerCase();
    var rows = document.querySelectorAll("#gene-table tbody tr");
    var shown = 0;
    Array.prototype.forEach.call(rows, function (tr) {
      var hit = !q || tr.cells[0].textContent.toLowerCase().indexOf(q) >= 0;
      tr.classList.toggle("hidden", !hit);
      if (hit) shown += 1;
    });
    document.getElementById("gene-count").textContent = shown + " of " + rows.length + " genes";
  }

  function renderRuns() {
    var columns = [{ label: "encoder" }, { label: "reducer" }, { label: "variant" }, { label: "main" }, { label: "protocol" },
                   { label: "pooled PCC", type: "num" }, { label: "per-sample PCC", type: "num" },
                   { label: "pooled per fold" }, { label: "alpha per fold" }, { label: "run" }, { label: "finished" }];
    fillTable(document.getElementById("runs-table"), columns, DATA.runs.map(function (r) {
      var p = r.scores.pooled, s = r.scores["per-sample"];
      return [{ text: r.encoder, cls: "name" }, { text: r.reducer, cls: "name" },
              { text: r.variant || "defaults", cls: "name", title: r.options },
              { text: r.shown ? "main" : "" }, { text: protocolLabel(r.protocol_fingerprint) },
              num(p.mean, fmt(p.mean) + " ± " + fmt(p.std)), num(s.mean, fmt(s.mean) + " ± " + fmt(s.std)),
              { text: p.folds.map(function (v) { return fmt(v); }).join(", ") },
              { text: r.alphas.map(function (a) { return a === null ? "—" : a.toPrecision(3); }).join(", ") },
              { text: r.run_id, cls: "mono" }, { text: r.finished_at || "" }];
    }));
  }

  // -- spatial maps ----------------------------------------------------------------------------------------
  // The page's data holds the lists (samples, genes, runs, per-sample PCC); the spot values of one sample and
  // gene are a slice file (assets/slices.js), loaded when chosen.
  function spotPanel(container, title, x, y, values, extra) {
    var div = el("div", { class: "panel" });
    container.append(div);
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; } });
    plot(div, [Object.assign({ type: "scatter", mode: "markers", x: x, y: y,
                               marker: { color: values, colorscale: "Viridis", size: 6, showscale: true,
                                         cmin: lo <= hi ? lo : 0, cmax: lo <= hi ? hi : 1,
                                         colorbar: { thickness: 10 } },
                               hovertemplate: "%{marker.color:.3f}<extra></extra>" }, extra || {})],
         { title: { text: plotSafe(title), font: { size: 13 } }, height: 340, margin: { l: 30, r: 10, t: 40, b: 30 },
           xaxis: { visible: false }, yaxis: { visible: false, autorange: "reversed", scaleanchor: "x" }, showlegend: false });
  }
  function initSpatial() {
    var sampleSelect = document.getElementById("sample");
    var geneInput = document.getElementById("gene");
    var status = document.getElementById("slice-status");
    var csvLink = document.getElementById("csv-link");
    var gene = 0, ticket = 0;
    datalist(geneInput, document.getElementById("gene-list"), DATA.genes, DATA.genes[0], function (g) {
      gene = DATA.genes.indexOf(g); render();
    });
    sampleSelect.addEventListener("change", function () {
      var s = DATA.samples[Number(sampleSelect.value || 0)];
      if (csvLink && s.csv) { csvLink.setAttribute("href", s.csv); csvLink.textContent = s.id; }
      render();
    });
    function render() {
      var i = Number(sampleSelect.value || 0), g = gene, mine = ++ticket;
      var s = DATA.samples[i];
      var base = DATA.folder + "/" + s.dir + "/", key = base + DATA.gene_files[g];
      if (!window.stbenchLoaded(key) || !window.stbenchLoaded(base + "spots")) {
        status.textContent = "loading " + DATA.genes[g] + " · " + s.id + " …";
      }
      window.stbenchLoad([base + "spots", key], function (spots, values) {
        if (mine !== ticket) return;  // another sample or gene was chosen meanwhile
        status.textContent = "";
        draw(s, i, g, spots, values, key);
      }, function (missing) {
        if (mine !== ticket) return;
        status.textContent = "could not load data/" + missing + ".js: rebuild the site (bench leaderboard build)";
      });
    }
    function draw(s, i, g, spots, values, key) {
      var maps = document.getElementById("maps");
      Array.prototype.forEach.call(maps.querySelectorAll(".panel"), function (p) { window.Plotly.purge(p); });
      maps.replaceChildren();
      var x = window.stbenchDecode.f32(spots.x), y = window.stbenchDecode.f32(spots.y), name = DATA.genes[g];
      spotPanel(maps, "measured · " + name + " · " + s.id, x, y, window.stbenchDecode.u16(values.m, s.n_shown));
      DATA.runs.forEach(function (r, j) {
        if (r.protocol !== state.protocol || !values.p[j]) return;
        var pcc = get(DATA.pcc, j, i, g);
        spotPanel(maps, "predicted · " + r.reducer + (r.variant ? "†" : "") + " · PCC " + fmt(pcc === undefined ? null : pcc, 3),
                  x, y, window.stbenchDecode.u16(values.p[j], s.n_shown));
      });
      maps.setAttribute("data-drawn", key);
    }
    initProtocolControls(render);
    render();
  }

  // -- embedding view ------------------------------------------------------------------------------------
  function initEmbeddings() {
    var colour = "cluster", layout = "projection";
    var genes = Object.keys(DATA.genes || {});
    var gene = genes[0] || "";
    var geneInput = document.getElementById("gene");
    datalist(geneInput, document.getElementById("gene-list"), genes, gene, function (g) { gene = g; colour = "gene"; syncColour(); render(); });
    var colourSwitch = document.getElementById("colour");
    if (!genes.length) {
      var gb = colourSwitch.querySelector('button[data-value="gene"]');
      gb.disabled = true;
      gb.title = "no measured expression stored for these spots (spot predictions)";
      geneInput.disabled = true;
    }
    function syncColour() {
      Array.prototype.forEach.call(colourSwitch.querySelectorAll("button"), function (b) {
        b.setAttribute("aria-pressed", b.getAttribute("data-value") === colour ? "true" : "false");
      });
    }
    staticSwitch(colourSwitch, colour, function (v) { colour = v; render(); });
    staticSwitch(document.getElementById("layout"), layout, function (v) { layout = v; render(); });
    function render() {
      var root = document.getElementById("embeddings");
      Array.prototype.forEach.call(root.querySelectorAll(".panel"), function (p) { window.Plotly.purge(p); });
      root.replaceChildren();
      DATA.reps.forEach(function (rep) {
        var div = el("div", { class: "panel" });
        root.append(div);
        var x = layout === "tissue" ? DATA.spot_x : rep.x, y = layout === "tissue" ? DATA.spot_y : rep.y;
        var traces;
        if (colour === "gene" && gene) {
          var v = DATA.genes[gene];
          traces = [{ type: "scatter", mode: "markers", x: x, y: y, text: DATA.spot_sample.map(plotSafe),
                      marker: { color: v, colorscale: "Viridis", size: 5, showscale: true, colorbar: { thickness: 10 } },
                      hovertemplate: "%{text}: %{marker.color:.3f}<extra></extra>" }];
        } else {
          traces = [];
          for (var k = 0; k < DATA.k; k++) {
            var idx = [];
            rep.cluster.forEach(function (c, i) { if (c === k) idx.push(i); });
            traces.push({ type: "scatter", mode: "markers", name: "cluster " + (k + 1),
                          x: idx.map(function (i) { return x[i]; }), y: idx.map(function (i) { return y[i]; }),
                          marker: { color: PALETTE[k % PALETTE.length], size: 5 },
                          hovertemplate: "cluster " + (k + 1) + "<extra></extra>" });
          }
        }
        var title = rep.label + (colour === "gene" && gene ? " · " + gene : " · k-means");
        plot(div, traces, { title: { text: plotSafe(title), font: { size: 13 } }, height: 380,
                            margin: { l: 30, r: 10, t: 40, b: 30 }, showlegend: colour !== "gene",
                            legend: { orientation: "h", y: -0.05 },
                            xaxis: { visible: false }, yaxis: { visible: false, autorange: layout === "tissue" ? "reversed" : true,
                                                                scaleanchor: layout === "tissue" ? "x" : undefined } });
      });
    }
    render();
  }

  // -- start -----------------------------------------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (t) { if (t.tHead) makeSortable(t); });
  var page = document.body.getAttribute("data-page");
  if (page === "index") initIndex();
  else if (page === "task") initTask();
  else if (page === "spatial") initSpatial();
  else if (page === "embeddings") initEmbeddings();
  document.body.setAttribute("data-ready", "1");
})();
