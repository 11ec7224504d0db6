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
  // -- close names: Python's difflib.get_close_matches (Ratcliff-Obershelp ratio, n = 3, cutoff 0.6), case-folded
  function matchedChars(a, b) {  // difflib.SequenceMatcher(None, a, b): the total size of its matching blocks
    var b2j = {}, j;
    for (j = 0; j < b.length; j++) { if (!Object.prototype.hasOwnProperty.call(b2j, b[j])) b2j[b[j]] = []; b2j[b[j]].push(j); }
    function longest(alo, ahi, blo, bhi) {  // the earliest longest block (difflib's find_longest_match, no junk)
      var besti = alo, bestj = blo, bestsize = 0, j2len = {};
      for (var i = alo; i < ahi; i++) {
        var next = {}, js = Object.prototype.hasOwnProperty.call(b2j, a[i]) ? b2j[a[i]] : [];
        for (var t = 0; t < js.length; t++) {
          var jj = js[t];
          if (jj < blo) continue;
          if (jj >= bhi) break;
          var k = (j2len[jj - 1] || 0) + 1;
          next[jj] = k;
          if (k > bestsize) { besti = i - k + 1; bestj = jj - k + 1; bestsize = k; }
        }
        j2len = next;
      }
      return [besti, bestj, bestsize];
    }
    var total = 0, queue = [[0, a.length, 0, b.length]];
    while (queue.length) {
      var q = queue.pop(), m = longest(q[0], q[1], q[2], q[3]);
      if (!m[2]) continue;
      total += m[2];
      if (q[0] < m[0] && q[2] < m[1]) queue.push([q[0], m[0], q[2], m[1]]);
      if (m[0] + m[2] < q[1] && m[1] + m[2] < q[3]) queue.push([m[0] + m[2], q[1], m[1] + m[2], q[3]]);
    }
    return total;
  }
  function closeNames(word, names) {
    var w = word.toLowerCase(), scored = [];
    names.forEach(function (name) {
      var x = name.toLowerCase(), t = x.length + w.length;
      var score = t ? 2.0 * matchedChars(x, w) / t : 1.0;
      if (score >= 0.6) scored.push([score, x, name]);
    });
    scored.sort(function (p, q) { return p[0] !== q[0] ? q[0] - p[0] : (p[1] < q[1] ? 1 : p[1] > q[1] ? -1 : 0); });
    return scored.slice(0, 3).map(function (p) { return p[2]; });
  }
  // "X is not among ...": the note beside a gene field, with the close names as buttons that pick them
  function unknownGene(note, word, names, onPick) {
    if (!note) return;
    var close = closeNames(word, names);
    note.replaceChildren(el("span", { class: "warn", text: "“" + word + "” is not among this task's " + names.length + " genes. " }));
    if (!close.length) { note.append("No name is close to it."); return; }
    note.append("Close names: ");
    close.forEach(function (name) {
      var b = el("button", { type: "button", class: "suggestion", text: name });
      b.addEventListener("click", function () { onPick(name); });
      note.append(b, " ");
    });
  }
  function datalist(input, list, values, current, onPick) {
    list.replaceChildren.apply(list, values.map(function (v) { return el("option", { value: v }); }));
    input.value = current;
    var note = document.getElementById("gene-note");
    function pick(v) { input.value = v; if (note) note.replaceChildren(); onPick(v); }
    function commit() {
      var v = input.value.trim();
      if (values.indexOf(input.value) >= 0) pick(input.value);
      else if (v) unknownGene(note, v, values, pick);
    }
    input.addEventListener("input", function () { if (values.indexOf(input.value) >= 0) pick(input.value); });
    input.addEventListener("change", commit);
    input.addEventListener("keydown", function (ev) { if (ev.key === "Enter") commit(); });
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
    var heatEmpty = document.getElementById("heatmap-empty-" + sec.id);
    if (!view) {
      table.replaceChildren();
      empty.classList.remove("hidden");
      window.Plotly.purge(heat);
      heat.classList.add("hidden");
      heatEmpty.textContent = "No result sets of " + reducer + " under " + protocolLabel(state.protocol) +
        ": nothing to draw. Choose another reducer or protocol above.";
      heatEmpty.classList.remove("hidden");
      return;
    }
    empty.classList.add("hidden");
    heat.classList.remove("hidden");
    heatEmpty.classList.add("hidden");
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
    heat.style.width = "";  // the card's width first, to measure the room
    plot(heat, [{ type: "heatmap", z: z, x: view.tasks.map(plotSafe), y: view.rows.map(function (r) { return plotSafe(r.encoder); }),
                  colorscale: "Viridis", colorbar: { title: { text: "PCC" } }, texttemplate: "%{z:.3f}",
                  hovertemplate: "%{y} · %{x}: %{z:.4f}<extra></extra>" }],
         { title: { text: plotSafe(reducer + " · " + protocolLabel(state.protocol) + " · " + state.mode + " PCC") },
           // sized to content: a cell per encoder x task, not one cell stretched over the page
           width: fitWidth(heat, 220 + 7 * longestName(view.rows.map(function (r) { return r.encoder; })) + 110 * view.tasks.length),
           height: 150 + 40 * view.rows.length, yaxis: { automargin: true, autorange: "reversed" },
           xaxis: { automargin: true } });
    heat.style.width = heat._fullLayout ? heat._fullLayout.width + "px" : "";
  }

  function longestName(names) { return names.reduce(function (m, n) { return Math.max(m, String(n).length); }, 0); }
  function fitWidth(div, want) {  // at most the card's width
    var room = div.parentNode && div.parentNode.clientWidth ? div.parentNode.clientWidth - 30 : want;
    return Math.max(320, Math.min(want, room));
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
    var worst = 1;
    traces.forEach(function (t) { t.y.forEach(function (v) { if (v > worst) worst = v; }); });
    plot(chart, traces, { title: { text: "Mean rank (1 = best) under each protocol" }, height: 190 + 45 * worst,
                          width: fitWidth(chart, 700 + 6 * longestName(traces.map(function (t) { return t.name; }))),
                          yaxis: { autorange: false, range: [worst + 0.5, 0.5], title: { text: "mean rank" }, dtick: 1 },
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
    function render() {
      renderGenes(encSelect.value, search.value);
      renderRanking(encSelect.value);
      renderAlpha(encSelect.value);
    }
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
    var raw = (query || "").trim(), q = raw.toLowerCase();
    var rows = document.querySelectorAll("#gene-table tbody tr");
    var shown = 0, names = [];
    Array.prototype.forEach.call(rows, function (tr) {
      var name = tr.cells[0].textContent;
      names.push(name);
      var hit = !q || name.toLowerCase().indexOf(q) >= 0;
      tr.classList.toggle("hidden", !hit);
      if (hit) shown += 1;
    });
    document.getElementById("gene-count").textContent = shown + " of " + rows.length + " genes";
    var note = document.getElementById("gene-note");
    note.replaceChildren();
    if (q && !shown) {
      unknownGene(note, raw, names, function (name) {
        var search = document.getElementById("gene-search");
        search.value = name;
        filterGenes(name);
      });
    }
  }

  // -- task page: rankings with the evidence between neighbours ----------------------------------------------
  function rankTable(rk, what) {
    var table = el("table", { class: "ranking" });
    var head = el("tr");
    ["rank", what, "PCC (mean ± std over folds)", "per fold", "vs the next below: Δ mean [95% CI]", "p (Holm)", "told apart?"]
      .forEach(function (h) { head.append(el("th", { scope: "col", text: h })); });
    var body = el("tbody");
    rk.rows.forEach(function (r) {
      var n = r.next;
      var rank = el("td", { class: "num rank" + (r.tied ? " tied" : ""), text: r.rank === null ? "—" : r.rank,
                            title: r.tied ? "cannot be told apart from a neighbour: they share this rank range" : null });
      var delta = "—", p = "—", verdict = el("td", { class: "verdict", text: rk.rows.length < 2 ? "only entry" : "" });
      if (n) {
        delta = signed(n.mean_diff) + " [" + fmt(n.ci[0]) + ", " + fmt(n.ci[1]) + "]";
        p = n.p_holm === null ? "—" : n.p_holm.toPrecision(2);
        verdict.textContent = n.apart ? "yes, from " + n.vs : "not significant: " + n.reason;
        verdict.className = "verdict " + (n.apart ? "apart" : "not-apart");
        verdict.title = n.n + " (fold, gene) pairs; Wilcoxon p = " + (n.p === null ? "—" : n.p.toPrecision(2)) +
          ", Holm-adjusted " + p + "; mean difference per fold: " + n.fold_diffs.map(signed).join(", ");
      }
      var tr = el("tr", { class: r.tied ? "tied" : null }, rank, el("td", { class: "name", text: r.name }),
                  el("td", { class: "num", text: fmt(r.mean) + " ± " + fmt(r.std) }),
                  el("td", { class: "num", text: r.folds.map(function (v) { return fmt(v); }).join(", ") }),
                  el("td", { class: "num", text: delta }), el("td", { class: "num", text: p }), verdict);
      body.append(tr);
    });
    table.append(el("thead", {}, head), body);
    return el("div", { class: "table-wrap" }, table);
  }
  function renderRanking(encoder) {
    var encRoot = document.getElementById("rank-encoders"), redRoot = document.getElementById("rank-reducers");
    var view = get(DATA.rankings, state.protocol, state.mode);
    encRoot.replaceChildren(); redRoot.replaceChildren();
    if (!view) { encRoot.append(el("p", { class: "empty", text: "No result sets under this protocol." })); return; }
    DATA.reducers.forEach(function (red) {
      var rk = view.encoders[red];
      if (!rk) return;
      encRoot.append(el("h4", { text: red }), rankTable(rk, "encoder"));
    });
    var rr = view.reducers[encoder];
    if (rr) redRoot.append(el("h4", { text: encoder }), rankTable(rr, "reducer"));
    else redRoot.append(el("p", { class: "empty", text: "No result sets of " + encoder + " under this protocol." }));
  }

  // -- task page: alpha-sensitivity curves -------------------------------------------------------------------
  function renderAlpha(encoder) {
    var div = document.getElementById("alpha-chart");
    if (!div || !DATA.sweeps.length) return;
    var many = DATA.sweeps.length > 8;  // then the chosen encoder's curves are drawn, the others one click away
    var protocols = {};
    DATA.sweeps.forEach(function (c) { protocols[c.protocol] = true; });
    var several = Object.keys(protocols).length > 1;
    var traces = [];
    DATA.sweeps.forEach(function (c, i) {
      var name = c.encoder + " · " + c.reducer + (several ? " · " + protocolLabel(c.protocol) : "");
      var colour = PALETTE[i % PALETTE.length], group = "curve" + i;
      var visible = !many || c.encoder === encoder ? true : "legendonly";
      function onCurve(alpha) {
        for (var k = 0; k < c.alphas.length; k++) if (Math.abs(c.alphas[k] - alpha) <= 1e-9 * alpha) return c.pcc[k];
        return null;
      }
      traces.push({ type: "scatter", mode: "lines+markers", x: c.alphas, y: c.pcc, name: plotSafe(name), legendgroup: group,
                    visible: visible, line: { color: colour, width: 2 }, marker: { color: colour, size: 4 },
                    hovertemplate: "α %{x:.2g}: %{y:.4f}<extra>" + plotSafe(name) + "</extra>" });
      traces.push({ type: "scatter", mode: "lines", x: [c.alphas[0], c.alphas[c.alphas.length - 1]],
                    y: [c.peak.pcc - c.plateau, c.peak.pcc - c.plateau], legendgroup: group, showlegend: false,
                    visible: visible, line: { color: colour, width: 1, dash: "dot" }, hoverinfo: "skip" });
      if (c.hest.pcc !== null) {
        traces.push({ type: "scatter", mode: "markers", x: [c.hest.alpha], y: [c.hest.pcc], legendgroup: group,
                      showlegend: false, visible: visible, name: "HEST α",
                      marker: { symbol: "diamond", size: 13, color: colour, line: { width: 1.5, color: "#000" } },
                      hovertemplate: "HEST α %{x:.2g}: %{y:.4f} (" + (c.on_plateau ? "on" : "off") +
                        " the plateau)<extra>" + plotSafe(name) + "</extra>" });
      }
      if (c.cv.length) {
        traces.push({ type: "scatter", mode: "markers", x: c.cv.map(function (f) { return f.alpha; }),
                      y: c.cv.map(function (f) { var v = onCurve(f.alpha); return v === null ? f.pcc : v; }),
                      text: c.cv.map(function (f) { return "fold " + f.fold; }), legendgroup: group, showlegend: false,
                      visible: visible, name: "CV α",
                      marker: { symbol: "star", size: 14, color: colour, line: { width: 1, color: "#000" } },
                      hovertemplate: "CV α %{x:.2g} (%{text}): %{y:.4f}<extra>" + plotSafe(name) + "</extra>" });
      }
    });
    plot(div, traces, { title: { text: "Mean test PCC against ridge α · ◆ HEST α · ★ cross-validated choice · dotted: peak − " + DATA.sweeps[0].plateau },
                        height: 440, xaxis: { type: "log", title: { text: "ridge α (log scale)" }, exponentformat: "power" },
                        yaxis: { title: { text: "mean test PCC (folds, genes)" } },
                        legend: { orientation: "h", x: 0, y: -0.22 }, margin: { l: 60, r: 20, t: 50, b: 110 } });
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
    var gene = DATA.first_gene || 0, ticket = 0;
    datalist(geneInput, document.getElementById("gene-list"), DATA.genes, DATA.genes[gene], function (g) {
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
    var gene = genes.indexOf(DATA.first_gene) >= 0 ? DATA.first_gene : (genes[0] || "");
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
