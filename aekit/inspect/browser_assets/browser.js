// aekit unit browser: draws the page from data/summary.js and loads data/units_NNNN.js on demand.
// Every text of the data is set with textContent (never innerHTML), so contexts, labels and
// names show as text and run nothing.  The unit list draws only the rows in view.
(function () {
  "use strict";

  var ROW_HEIGHT = 26;
  var OVERSCAN = 10;
  var state = {
    summary: null,
    order: [],
    shards: {},
    pending: {},
    requested: {},
    selected: null,
    sortKey: "id",
    descending: false,
    filter: "all",
    search: "",
    firstRenderMs: null,
    firstFrameMs: null,
    renders: 0
  };

  // ------------------------------------------------------------------ helpers
  function el(tag, options) {
    var node = document.createElement(tag);
    options = options || {};
    if (options.cls) node.className = options.cls;
    if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
    if (options.id) node.id = options.id;
    if (options.title) node.title = String(options.title);
    if (options.data) {
      Object.keys(options.data).forEach(function (key) { node.setAttribute("data-" + key, String(options.data[key])); });
    }
    (options.children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "n/a";
    if (value === 0) return "0";
    var a = Math.abs(value);
    if (a >= 1e4 || a < 1e-3) return value.toExponential(digits === undefined ? 2 : digits);
    return value.toPrecision(digits === undefined ? 3 : digits);
  }

  function percent(value) {
    if (value === null || value === undefined) return "n/a";
    if (value === 0) return "0%";
    if (value < 1e-3) return (100 * value).toExponential(1) + "%";
    return (100 * value).toPrecision(3) + "%";
  }

  function pad4(n) { return ("000" + n).slice(-4); }

  function drawPicture(pic, zoom) {
    var canvas = el("canvas", { cls: "picture" });
    canvas.width = pic.w;
    canvas.height = pic.h;
    var size = Math.max(1, zoom || Math.max(1, Math.floor(84 / Math.max(pic.w, pic.h))));
    canvas.style.width = pic.w * size + "px";
    canvas.style.height = pic.h * size + "px";
    var bytes = atob(pic.data);
    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(pic.w, pic.h);
    for (var i = 0, n = pic.w * pic.h; i < n; i++) {
      var r, g, b;
      if (pic.c === 3) {
        r = bytes.charCodeAt(3 * i); g = bytes.charCodeAt(3 * i + 1); b = bytes.charCodeAt(3 * i + 2);
      } else {
        r = g = b = bytes.charCodeAt(i);
      }
      image.data[4 * i] = r; image.data[4 * i + 1] = g; image.data[4 * i + 2] = b; image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  function barChart(counts, width, height, colour) {
    var canvas = el("canvas", { cls: "chart" });
    canvas.width = width;
    canvas.height = height;
    var ctx = canvas.getContext("2d");
    var peak = Math.max.apply(null, counts.concat([1]));
    var w = width / Math.max(counts.length, 1);
    ctx.fillStyle = colour || "#3b6fb6";
    counts.forEach(function (c, i) {
      var h = c > 0 ? Math.max(1, (height - 2) * c / peak) : 0;
      ctx.fillRect(i * w, height - h, Math.max(1, w - 1), h);
    });
    return canvas;
  }

  // ------------------------------------------------------------------ data loading
  window.aekitData = function (kind, index, data) {
    if (kind === "summary") {
      state.summary = data;
      start();
    } else if (kind === "shard") {
      state.shards[index] = data;
      var waiting = state.pending[index] || [];
      delete state.pending[index];
      waiting.forEach(function (callback) { callback(data); });
    }
  };

  function loadShard(index, callback) {
    if (state.shards[index]) { callback(state.shards[index]); return; }
    (state.pending[index] = state.pending[index] || []).push(callback);
    if (state.requested[index]) return;
    state.requested[index] = true;
    var script = document.createElement("script");
    script.src = "data/units_" + pad4(index) + ".js";
    script.onerror = function () {
      var card = document.getElementById("card");
      card.textContent = "";
      card.appendChild(el("p", { cls: "load-error", text: "Could not load " + script.src + "." }));
    };
    document.body.appendChild(script);
  }

  // ------------------------------------------------------------------ overview
  function overview(s) {
    var box = el("section", { id: "overview" });
    box.appendChild(el("p", { cls: "model", children: [el("code", { text: s.model })] }));
    var facts = s.units + " units of layer '" + s.layer + "', " + s.n_rows + " rows of shape (" +
      s.input_shape.join(", ") + "); the diagnosis uses " + s.sample_rows + " evenly spaced rows.";
    box.appendChild(el("p", { text: facts }));

    var metrics = el("table", { id: "metrics" });
    Object.keys(s.metrics).forEach(function (key) {
      metrics.appendChild(el("tr", { children: [el("th", { text: key }), el("td", { text: fmt(s.metrics[key], 4) })] }));
    });
    var layers = el("table", { id: "layers" });
    layers.appendChild(el("tr", { children: ["layer", "form", "shape", "activation"].map(function (h) { return el("th", { text: h }); }) }));
    s.layers.forEach(function (row) {
      layers.appendChild(el("tr", { children: row.map(function (c) { return el("td", { text: c }); }) }));
    });

    var findings = el("div", { id: "findings" });
    if (!s.findings.length) findings.appendChild(el("p", { text: "The diagnosis found no problems." }));
    s.findings.forEach(function (f) {
      findings.appendChild(el("div", {
        cls: "finding " + f.severity,
        children: [el("b", { text: f.severity + " " }), el("code", { text: f.code }), ": " + f.message,
          el("br"), el("i", { text: "Remedy: " }), f.remedy]
      }));
    });

    var dead = 0, silent = 0, bins = new Array(30).fill(0);
    for (var u = 0; u < s.units; u++) {
      if (s.dead[u]) { dead++; continue; }
      var d = s.density[u];
      if (!d) { silent++; continue; }
      var b = Math.floor((Math.log10(d) + 6) * 5);
      bins[Math.min(29, Math.max(0, b))]++;
    }
    var hist = el("figure", { id: "density-histogram", children: [
      barChart(bins, 360, 90, "#2e7d32"),
      el("figcaption", { text: "Firing density of the live units (log scale, 1e-6 to 1): " + (s.units - dead) +
        " live, " + dead + " dead (constant output)" + (silent ? ", " + silent + " never non-zero" : "") + "." })
    ] });
    box.appendChild(el("div", { cls: "row", children: [
      el("div", { children: [el("h3", { text: "Metrics" }), metrics] }),
      el("div", { children: [el("h3", { text: "Units" }), hist] }),
      el("div", { children: [el("h3", { text: "Layers" }), layers] })
    ] }));
    box.appendChild(el("h3", { text: "Diagnosis" }));
    box.appendChild(findings);
    return box;
  }

  // ------------------------------------------------------------------ the unit list
  function computeOrder() {
    var s = state.summary, q = state.search.trim(), ids = [];
    var range = /^(\d+)\s*-\s*(\d+)$/.exec(q);
    for (var u = 0; u < s.units; u++) {
      if (state.filter === "dead" && !s.dead[u]) continue;
      if (state.filter === "alive" && s.dead[u]) continue;
      if (range) { if (u < +range[1] || u > +range[2]) continue; }
      else if (q && String(u).indexOf(q) !== 0) continue;
      ids.push(u);
    }
    var key = state.sortKey, sign = state.descending ? -1 : 1;
    if (key !== "id") {
      var column = s[key];
      ids.sort(function (a, b) {
        var va = column[a] === null ? -Infinity : column[a], vb = column[b] === null ? -Infinity : column[b];
        return va === vb ? a - b : sign * (va - vb);
      });
    } else if (sign < 0) {
      ids.reverse();
    }
    state.order = ids;
    document.getElementById("unit-count").textContent = ids.length + " of " + s.units + " units";
    document.getElementById("unit-spacer").style.height = ids.length * ROW_HEIGHT + "px";
    document.getElementById("unit-list").scrollTop = 0;
    renderRows();
  }

  function renderRows() {
    var s = state.summary, list = document.getElementById("unit-list"), spacer = document.getElementById("unit-spacer");
    var first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - OVERSCAN);
    var last = Math.min(state.order.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    spacer.textContent = "";
    state.renders++;
    var maxDensity = state.maxDensity;
    for (var i = first; i < last; i++) {
      var id = state.order[i];
      var bar = el("span", { cls: "bar" });
      bar.style.width = (maxDensity ? 100 * s.density[id] / maxDensity : 0) + "%";
      var row = el("div", {
        cls: "unit-row" + (s.dead[id] ? " dead" : "") + (id === state.selected ? " selected" : ""),
        data: { unit: id },
        title: "unit " + id,
        children: [
          el("span", { cls: "uid", text: "#" + id }),
          el("span", { cls: "density", children: [bar, el("span", { cls: "num", text: percent(s.density[id]) })] }),
          el("span", { cls: "max", text: fmt(s.max[id]) }),
          el("span", { cls: "badge", text: s.dead[id] ? "dead" : "" })
        ]
      });
      row.style.top = i * ROW_HEIGHT + "px";
      row.addEventListener("click", selectUnit.bind(null, id));
      spacer.appendChild(row);
    }
  }

  // ------------------------------------------------------------------ a unit's card
  function drawPanel(panel) {
    var box = el("div", { cls: "panel", children: [el("h3", { text: panel.title })] });
    if (panel.kind === "images") {
      var row = el("div", { cls: "pictures" });
      panel.images.forEach(function (pic, i) {
        row.appendChild(el("figure", { children: [drawPicture(pic), el("figcaption", { text: (panel.captions || [])[i] || "" })] }));
      });
      box.appendChild(row);
    } else if (panel.kind === "bars") {
      box.appendChild(bars(panel.names, panel.values));
    } else {
      box.appendChild(el("p", { text: panel.text }));
    }
    return box;
  }

  function bars(names, values) {
    var table = el("table", { cls: "bars" });
    var peak = 0;
    values.forEach(function (v) { if (v !== null && Math.abs(v) > peak) peak = Math.abs(v); });
    names.forEach(function (name, i) {
      var bar = el("span", { cls: "bar" + (values[i] < 0 ? " negative" : "") });
      bar.style.width = (peak ? 100 * Math.abs(values[i] || 0) / peak : 0) + "%";
      table.appendChild(el("tr", { children: [el("th", { text: name }), el("td", { cls: "barcell", children: [bar] }),
        el("td", { text: fmt(values[i]) })] }));
    });
    return table;
  }

  function topExamples(card) {
    var s = state.summary;
    var box = el("div", { cls: "panel", id: "top-examples", children: [el("h3", { text: "Top " + card.top.length + " inputs" })] });
    var holder = el("div", { cls: s.images ? "pictures" : "contexts" });
    card.top.forEach(function (t) {
      var caption = "row " + t.row + " · " + fmt(t.value) + (t.label !== undefined ? " · label " + t.label : "");
      if (s.images && t.image) {
        holder.appendChild(el("figure", { cls: "top-example", children: [drawPicture(t.image), el("figcaption", { text: caption })] }));
      } else {
        var line = el("div", { cls: "top-example" });
        line.appendChild(el("span", { cls: "act", text: fmt(t.value) }));
        if (Array.isArray(t.context)) {
          line.appendChild(el("span", { cls: "before", text: t.context[0] }));
          line.appendChild(el("mark", { cls: "token", text: t.context[1] }));
          line.appendChild(el("span", { cls: "after", text: t.context[2] }));
        } else if (t.context !== undefined) {
          line.appendChild(el("span", { cls: "text", text: t.context }));
        } else {
          line.appendChild(el("span", { cls: "text", text: "row " + t.row }));
        }
        if (t.label !== undefined) line.appendChild(el("span", { cls: "label", text: "label " + t.label }));
        line.title = caption;
        holder.appendChild(line);
      }
    });
    if (!card.top.length) holder.appendChild(el("p", { text: "No rows." }));
    box.appendChild(holder);
    return box;
  }

  function histogram(card) {
    var h = card.hist, box = el("div", { cls: "panel", id: "activation-histogram", children: [el("h3", { text: "Activations" })] });
    var sides = [["pos", "positive values, 0 to "], ["neg", "negative values, magnitudes 0 to "]];
    sides.forEach(function (pair) {
      var side = h[pair[0]];
      if (!side.counts.length) return;
      var shown = side.counts.length;
      var upper = side.top * shown / side.bins;
      box.appendChild(el("figure", { children: [barChart(side.counts, 360, 80),
        el("figcaption", { text: pair[1] + fmt(upper) + " (" + shown + " bins)" })] }));
    });
    box.appendChild(el("p", { text: "exactly zero on " + h.zeros + " of " + state.summary.n_rows + " rows" }));
    return box;
  }

  function drawCard(card) {
    var s = state.summary, id = card.id;
    var holder = document.getElementById("card");
    holder.textContent = "";
    holder.setAttribute("data-unit", String(id));
    holder.appendChild(el("h2", { children: ["Unit " + id + " ", el("span", { cls: "badge", text: s.dead[id] ? "dead" : "" })] }));
    holder.appendChild(el("p", { cls: "stats", text: "density " + percent(s.density[id]) + " · max " + fmt(s.max[id]) +
      " · mean " + fmt(s.mean[id]) }));
    var panels = el("div", { cls: "panels" });
    card.panels.forEach(function (panel) { panels.appendChild(drawPanel(panel)); });
    holder.appendChild(panels);
    holder.appendChild(topExamples(card));
    holder.appendChild(histogram(card));
    if (card.labels) {
      holder.appendChild(el("div", { cls: "panel", id: "labels", children: [
        el("h3", { text: "Mean activation per label" }), bars(card.labels.names, card.labels.means)] }));
    }
  }

  function selectUnit(id) {
    state.selected = id;
    renderRows();
    var shard = Math.floor(id / state.summary.shard);
    var holder = document.getElementById("card");
    holder.setAttribute("data-unit", "");
    loadShard(shard, function (cards) {
      if (state.selected !== id) return;
      drawCard(cards[id - shard * state.summary.shard]);
      if (window.history && window.history.replaceState) window.history.replaceState(null, "", "#unit=" + id);
    });
  }

  // ------------------------------------------------------------------ the page
  function controls() {
    var search = el("input", { id: "search" });
    search.type = "search";
    search.placeholder = "unit id, or 10-20";
    search.addEventListener("input", function () { state.search = search.value; computeOrder(); });
    var filter = el("select", { id: "filter", children: [["all", "all units"], ["alive", "live units"], ["dead", "dead units"]]
      .map(function (o) { var opt = el("option", { text: o[1] }); opt.value = o[0]; return opt; }) });
    filter.addEventListener("change", function () { state.filter = filter.value; computeOrder(); });
    var sort = el("select", { id: "sort", children: [["id", "by id"], ["density", "by density"], ["max", "by max activation"], ["mean", "by mean activation"]]
      .map(function (o) { var opt = el("option", { text: o[1] }); opt.value = o[0]; return opt; }) });
    var direction = el("button", { id: "direction", text: "ascending" });
    sort.addEventListener("change", function () {
      state.sortKey = sort.value;
      state.descending = sort.value !== "id";
      direction.textContent = state.descending ? "descending" : "ascending";
      computeOrder();
    });
    direction.addEventListener("click", function () {
      state.descending = !state.descending;
      direction.textContent = state.descending ? "descending" : "ascending";
      computeOrder();
    });
    return el("div", { id: "controls", children: [search, filter, sort, direction, el("span", { id: "unit-count" })] });
  }

  function start() {
    var s = state.summary, app = document.getElementById("app");
    document.title = s.title;
    app.textContent = "";
    app.appendChild(el("h1", { text: s.title }));
    app.appendChild(overview(s));
    var list = el("div", { id: "unit-list", children: [el("div", { id: "unit-spacer" })] });
    var header = el("div", { cls: "list-header", children: [el("span", { cls: "uid", text: "unit" }),
      el("span", { cls: "density", text: "density" }), el("span", { cls: "max", text: "max" })] });
    app.appendChild(el("div", { id: "browser", children: [
      el("div", { id: "units", children: [controls(), header, list] }),
      el("div", { id: "card", children: [el("p", { text: "Click a unit to see its card." })] })
    ] }));
    var ticking = false;
    list.addEventListener("scroll", function () {
      if (ticking) return;
      ticking = true;
      window.requestAnimationFrame(function () { ticking = false; renderRows(); });
    });
    state.maxDensity = 0;
    for (var u = 0; u < s.units; u++) if (s.density[u] > state.maxDensity) state.maxDensity = s.density[u];
    computeOrder();
    state.firstRenderMs = performance.now();
    document.body.setAttribute("data-ready", "1");
    // The first frame with the page drawn: after layout and paint.
    window.requestAnimationFrame(function () {
      window.setTimeout(function () { state.firstFrameMs = performance.now(); }, 0);
    });
    var wanted = /unit=(\d+)/.exec(window.location.hash);
    var first = wanted && +wanted[1] < s.units ? +wanted[1] : state.order[0];
    if (first !== undefined) window.setTimeout(function () { selectUnit(first); }, 0);
    // An address with #unit=N opens that unit's card, also when only the hash changes.
    window.addEventListener("hashchange", function () {
      var asked = /unit=(\d+)/.exec(window.location.hash);
      if (asked && +asked[1] < s.units && +asked[1] !== state.selected) selectUnit(+asked[1]);
    });
  }

  // What tests and benchmarks read.
  window.aekitPage = {
    state: state,
    select: function (id) { selectUnit(id); },
    order: function () { return state.order.slice(); },
    firstRenderMs: function () { return state.firstRenderMs; }
  };
})();
