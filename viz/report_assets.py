"""The report page's inline style sheet and script (no file is fetched: both are written into the page).

``STYLE`` styles the header, figures, node table and contexts; ``SCRIPT`` sorts the node table by a
clicked column, links diagram nodes and table rows both ways, and toggles a figure between fit to
width and actual size.
"""

STYLE = """
:root { --blue: #2166ac; --red: #b2182b; --ink: #1f2328; --muted: #59636e; --line: #d8dee4; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: var(--ink); background: #fff; }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: #f6f8fa; }
h1 { margin: 0 0 8px; font-size: 22px; }
h2 { font-size: 17px; margin: 0 0 10px; }
main { padding: 8px 28px 40px; }
section { margin: 22px 0 30px; }
nav a { margin-right: 14px; color: var(--blue); text-decoration: none; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0 0 8px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
             font-size: 13px; word-break: break-word; }
.note { color: var(--muted); font-style: italic; }
.figure { border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow: auto;
          background: #fff; }
.figure.fit svg { max-width: 100%; height: auto; }
.diagram svg g.node:not(.decoration) { cursor: pointer; }
.diagram svg g.node.selected polygon { stroke: #f0a000; stroke-width: 3px; }
button { font: inherit; font-size: 12px; padding: 2px 10px; margin-bottom: 6px; cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { position: sticky; top: 0; background: #f6f8fa; cursor: pointer; user-select: none;
     white-space: nowrap; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
td.pos { color: var(--blue); }
td.neg { color: var(--red); }
tr.selected td { background: #fff3c4; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border: 1px solid #888;
          vertical-align: baseline; }
.table-wrap { max-height: 640px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
details.contexts { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
details.contexts summary { cursor: pointer; }
details.contexts summary code { font-size: 13px; }
.ctx { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
       margin: 6px 0; line-height: 1.9; }
.ctx .max { color: var(--muted); font-size: 11px; margin-right: 8px; }
.tok { white-space: pre; padding: 1px 0; border-radius: 2px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("node-table");
  if (table) {
    var body = table.tBodies[0];
    var heads = table.tHead.rows[0].cells;
    function sortBy(col, dir) {
      var numeric = heads[col].getAttribute("data-type") === "num";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        var c = numeric ? (parseFloat(x) - parseFloat(y)) : x.localeCompare(y, undefined, {numeric: true});
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
      heads[col].setAttribute("aria-sort", dir);
    }
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var now = th.getAttribute("aria-sort");
        var numeric = th.getAttribute("data-type") === "num";
        var dir = now ? (now === "descending" ? "ascending" : "descending")
                      : (numeric ? "descending" : "ascending");
        sortBy(col, dir);
      });
    });
  }
  var rowsById = {};
  if (table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      rowsById[r.getAttribute("data-node")] = r;
    });
  }
  var selected = [];
  function select(id) {
    selected.forEach(function (el) { el.classList.remove("selected"); });
    selected = [];
    var row = rowsById[id];
    if (row) { row.classList.add("selected"); selected.push(row); }
    var g = document.querySelector(".diagram svg") ? findNode(id) : null;
    if (g) { g.classList.add("selected"); selected.push(g); }
    return row;
  }
  function findNode(id) {
    var nodes = document.querySelectorAll(".diagram svg g.node:not(.decoration)");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute("id") === id) { return nodes[i]; }
    }
    return null;
  }
  document.querySelectorAll(".diagram svg g.node:not(.decoration)").forEach(function (g) {
    g.addEventListener("click", function () {
      var row = select(g.getAttribute("id"));
      if (row) { row.scrollIntoView({block: "center"}); }
    });
  });
  if (table) {
    table.tBodies[0].addEventListener("click", function (ev) {
      var tr = ev.target.closest("tr");
      if (tr && ev.target.tagName !== "A") { select(tr.getAttribute("data-node")); }
    });
  }
  document.querySelectorAll("button[data-toggle-fit]").forEach(function (b) {
    b.addEventListener("click", function () {
      var fig = document.getElementById(b.getAttribute("data-toggle-fit"));
      fig.classList.toggle("fit");
      b.textContent = fig.classList.contains("fit") ? "actual size" : "fit to width";
    });
  });
})();
"""
