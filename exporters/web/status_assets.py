"""The status page's static parts: its style sheet, its sorting script, and the response headers whose
Content-Security-Policy admits exactly those two by hash (exporters.web.status renders the page around them).
"""

from __future__ import annotations

import base64
import hashlib

# The containers table's header background and its bottom rule. Nothing else on the page has these colours: the
# screenshot test (tests/helpers/screenshot.py) finds the table's rows between the two by them.
TABLE_MARK = "#d5e2f5"
TABLE_RULE = "#8eaad6"

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 24px 24px;color:#1d232b;
background:#fff}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:22px 0 8px}
a{color:#0b57c2}
.problems{background:#fde8e8;border:2px solid #c62828;color:#7f1010;padding:10px 14px;margin:12px 0}
.problems ul{margin:4px 0 0;padding-left:20px}
.notice{background:#fff6dc;border:1px solid #d9a400;padding:8px 14px;margin:12px 0}
dl.host{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 16px;margin:0}
dl.host dt{color:#5b6675}dl.host dd{margin:0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;white-space:nowrap;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.image{max-width:26em;overflow:hidden;text-overflow:ellipsis}
td.error{white-space:normal;color:#7f1010}td.wrap{white-space:normal;overflow-wrap:anywhere}
thead th{font-weight:600}
thead th a{color:inherit;text-decoration:none}
th[aria-sort=ascending] a::after{content:" \\25B2"}th[aria-sort=descending] a::after{content:" \\25BC"}
table.containers thead th{background:MARK}table.containers{border-bottom:3px solid RULE}
table.containers tbody tr:nth-child(even),table.routes tbody tr:nth-child(even){background:#f6f7f9}
table.routes thead th{background:#eceef1}
.state-failed{color:#b71c1c;font-weight:600}.state-retrying,.state-stalled{color:#a15c00;font-weight:600}
.state-running{color:#1b6e2a}
.muted{color:#5b6675}
.empty{padding:14px;border:1px dashed #9aa5b4;color:#3d4652}
""".replace("MARK", TABLE_MARK).replace("RULE", TABLE_RULE)

SCRIPT = """
document.querySelectorAll("table.sortable thead a[data-sort]").forEach(function (link) {
  link.addEventListener("click", function (event) {
    event.preventDefault();
    var th = link.closest("th"), table = link.closest("table"), body = table.tBodies[0];
    var key = link.dataset.sort, col = th.cellIndex, now = th.getAttribute("aria-sort");
    var desc = now ? now === "ascending" : key !== "name";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var a = x.cells[col].dataset.v, b = y.cells[col].dataset.v;
      if (a === undefined || b === undefined) return (a === undefined) - (b === undefined);
      var c = key === "name" ? (a < b ? -1 : a > b ? 1 : 0) : a - b;
      return desc ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    var url = new URL(location.href);
    url.searchParams.set("sort", key);
    url.searchParams.set("order", desc ? "desc" : "asc");
    history.replaceState(null, "", url);
  });
});
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
