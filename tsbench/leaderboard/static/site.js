// tsbench leaderboard: turns each <div class="tsb-table" data-source="ID"> into a Tabulator table
// whose rows come from <script type="application/json" id="ID">. Every cell is rendered as text
// (Tabulator's plaintext formatter escapes; links are built with textContent), so no value from a
// run is ever parsed as HTML here.
(function () {
  "use strict";
  var SAFE_HREF = /^[A-Za-z0-9._\/-]+(#[A-Za-z0-9._-]*)?$/;

  function textLink(cell, params) {
    var data = cell.getRow().getData();
    var href = data[params.hrefField];
    var text = cell.getValue();
    if (typeof href !== "string" || !SAFE_HREF.test(href)) {
      return document.createTextNode(text == null ? "" : String(text));
    }
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text == null ? "" : String(text);
    return a;
  }

  function percent(cell) {
    var v = cell.getValue();
    return typeof v === "number" && isFinite(v) ? (100 * v).toFixed(1) : "-";
  }

  function number(cell) {
    var v = cell.getValue();
    if (typeof v !== "number" || !isFinite(v)) return "-";
    if (Math.abs(v) >= 1e5) return v.toExponential(2);
    return String(Math.round(v * 100) / 100);
  }

  function column(spec) {
    var col = {title: spec.title, field: spec.field, headerTooltip: spec.tip || spec.title};
    if (spec.kind === "link") {
      col.formatter = textLink;
      col.formatterParams = {hrefField: spec.href};
      col.headerFilter = "input";
    } else if (spec.kind === "percent") {
      col.formatter = percent;
      col.sorter = "number";
      col.sorterParams = {alignEmptyValues: "bottom"};
      col.hozAlign = "right";
    } else if (spec.kind === "number") {
      col.formatter = number;
      col.sorter = "number";
      col.sorterParams = {alignEmptyValues: "bottom"};
      col.hozAlign = "right";
    } else {
      col.formatter = "plaintext";
      col.sorter = "string";
      col.headerFilter = "input";
    }
    return col;
  }

  function build(el) {
    var source = document.getElementById(el.getAttribute("data-source"));
    if (!source) return;
    var payload = JSON.parse(source.textContent);
    var options = {
      data: payload.rows,
      columns: payload.columns.map(column),
      layout: "fitDataTable",
      index: "_row",
      initialSort: payload.sort ? [{column: payload.sort, dir: payload.dir || "asc"}] : [],
    };
    if (payload.page_size) {
      options.pagination = true;
      options.paginationSize = payload.page_size;
    }
    el.tabulator = new Tabulator(el, options);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof Tabulator === "undefined") return;
    var tables = document.querySelectorAll("div.tsb-table[data-source]");
    for (var i = 0; i < tables.length; i++) build(tables[i]);
  });
})();
