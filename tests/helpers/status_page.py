"""The status page (``/``) read back into what tests compare: the HTML the server sent, or the DOM Chromium rendered
(``--dump-dom``). Standard library only (``html.parser``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    containers: list[list[str]] = field(default_factory=list)  # table.containers: the cells' text, row by row
    links: list[str] = field(default_factory=list)  # each container row's name link
    sort_values: list[dict[int, str]] = field(default_factory=list)  # each row's data-v by column
    routes: list[list[str]] = field(default_factory=list)  # table.routes
    problems: list[str] = field(default_factory=list)  # the banner's lines
    empty: list[str] = field(default_factory=list)  # the empty-state notes (p.empty), by section id
    headers: dict[str, str] = field(default_factory=dict)  # sort key -> the containers header link's href
    aria_sort: dict[str, str] = field(default_factory=dict)  # sort key -> aria-sort of its header
    scripts: list[str] = field(default_factory=list)  # the text of every <script>
    meta_refresh: str | None = None
    h1: str = ""

    @property
    def names(self) -> list[str]:
        return [row[0] for row in self.containers]

    def column(self, index: int) -> list[str]:
        return [row[index] for row in self.containers]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.section = ""
        self.table = ""
        self.part = ""  # thead / tbody
        self.row: list[str] | None = None
        self.values: dict[int, str] = {}
        self.text: list[str] | None = None  # collecting a cell's, an item's or a note's text
        self.where = ""  # what the collected text is for
        self.header_aria = ""
        self.in_problems = False
        self.script: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "section":
            self.section = a.get("id", "")
        elif tag == "table":
            self.table = next((c for c in ("containers", "routes") if c in classes), "other")
        elif tag in ("thead", "tbody"):
            self.part = tag
        elif tag == "tr" and self.part == "tbody":
            self.row, self.values = [], {}
        elif tag == "td" and self.row is not None:
            if "data-v" in a:
                self.values[len(self.row)] = a["data-v"]
            self.text, self.where = [], "cell"
        elif tag == "th" and self.table == "containers":
            self.header_aria = a.get("aria-sort", "")
        elif tag == "a" and self.table == "containers":
            if self.part == "thead" and "data-sort" in a:
                self.page.headers[a["data-sort"]] = a.get("href", "")
                if self.header_aria:
                    self.page.aria_sort[a["data-sort"]] = self.header_aria
            elif self.row is not None and not self.row:
                self.page.links.append(a.get("href", ""))
        elif tag == "div" and "problems" in classes:
            self.in_problems = True
        elif tag == "li" and self.in_problems:
            self.text, self.where = [], "problem"
        elif tag == "p" and "empty" in classes:
            self.text, self.where = [], "empty"
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.page.meta_refresh = a.get("content", "")
        elif tag == "script":
            self.script = []
        elif tag == "h1":
            self.text, self.where = [], "h1"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self.script is not None:
            self.page.scripts.append("".join(self.script))
            self.script = None
        elif tag == "td" and self.row is not None and self.text is not None:
            self.row.append(" ".join("".join(self.text).split()))
            self.text = None
        elif tag == "tr" and self.row is not None:
            if self.table == "containers":
                self.page.containers.append(self.row)
                self.page.sort_values.append(self.values)
            elif self.table == "routes":
                self.page.routes.append(self.row)
            self.row = None
        elif tag in ("li", "p", "h1") and self.text is not None and self.where in ("problem", "empty", "h1"):
            text = " ".join("".join(self.text).split())
            if self.where == "problem":
                self.page.problems.append(text)
            elif self.where == "empty":
                self.page.empty.append(f"{self.section}: {text}")
            else:
                self.page.h1 = text
            self.text = None
        elif tag == "div":
            self.in_problems = False
        elif tag == "table":
            self.table, self.part = "", ""

    def handle_data(self, data: str) -> None:
        if self.script is not None:
            self.script.append(data)
        elif self.text is not None:
            self.text.append(data)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page
