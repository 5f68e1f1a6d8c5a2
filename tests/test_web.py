"""The shared HTML toolkit (serving/web): escaping, the inlined stylesheet, the macros, the
package data an installed copy needs, and the dependency rule (serving never imports training).

The report's own tests (tests/test_report.py) render whole pages; these pin the toolkit's
promises that a page-level test would not notice breaking.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from glob import glob
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import ChoiceLoader, FileSystemLoader

from serving.web.components import Chart, Section, Tile, table
from serving.web.render import environment, render, stylesheet
from training.report import _model_card_section

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "serving" / "web"


def test_text_is_escaped_everywhere_a_card_puts_it(tmp_path):
    hostile = "<script>alert(1)</script>"
    card = {
        "name": hostile,
        "version": '1" onload="x',
        "metrics": {hostile: 0.5, "group": {hostile: 1}},
        "model_source": f"baseline {hostile}",
        "note": hostile,
        "images": {hostile: str(tmp_path / f"{hostile}.png")},
    }
    text = _model_card_section(card)
    assert "<script" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 8  # every place it shows
    assert 'onload="x' not in text


def test_the_stylesheet_is_inlined_verbatim():
    css = (WEB / "static" / "style.css").read_text(encoding="utf-8")
    assert ".tabs > input" in css  # a child selector: escaping it would break the tabs
    page = render("base.html")
    assert f"<style>\n{css}</style>" in page
    assert stylesheet() == css


def test_macros_draw_tables_charts_and_tiles():
    frame = pd.DataFrame(
        {
            "segment": ["smb", "mid"],
            "mrr": [1234.5, 7.0],
            "ratio": [0.123, np.nan],
            "day": pd.to_datetime(["2024-01-02", "2024-03-04"]),
        }
    )
    macros = environment().get_template("macros.html").module
    shown = str(macros.table(table(frame, {"mrr": lambda v: f"{v:,.0f}"}, caption="T")))
    assert "<caption>T</caption>" in shown and "<details>" not in shown
    assert '<td class="num">1,234</td>' in shown  # the column's formatter, right-aligned
    assert "<td>smb</td>" in shown and "<td>2024-01-02</td>" in shown  # text; dates as days
    assert '<td class="num">0.12</td>' in shown and '<td class="num">–</td>' in shown
    folded = str(macros.table(table(frame, caption="T", collapsed=True)))
    assert folded.startswith("<details><summary>T (table)</summary>")
    assert str(macros.table(table(frame.iloc[:0], caption="T"))) == '<p class="note">No rows.</p>'
    assert str(macros.figure(Chart(None, "a < b"))) == '<p class="note">No data for: a &lt; b.</p>'
    img = str(macros.figure(Chart("data:image/png;base64,AB+/=", "x")))
    assert img == '<figure><img src="data:image/png;base64,AB+/=" alt="x"></figure>'
    assert "<small>" not in str(macros.tile(Tile("a", "1")))


def test_a_section_is_one_template_and_one_entry(tmp_path):
    """What a new report section takes: the page draws whatever `Section`s it is given."""
    (tmp_path / "extra.html").write_text("<p>{{ section.data.words }}</p>\n", encoding="utf-8")
    base = environment()
    env = base.overlay(loader=ChoiceLoader([FileSystemLoader(tmp_path), base.loader]))
    page = env.get_template("report/page.html").render(
        period="p",
        dataset_path="d",
        sections=[Section("extra", "Extra", "extra.html", {"words": "a & b"})],
    )
    assert '<nav><a href="#extra">Extra</a></nav>' in page
    assert '<section id="extra"><h2>Extra</h2>\n<p>a &amp; b</p></section>' in page


def test_package_data_covers_every_template_and_stylesheet():
    """An installed copy has only the files `package-data` names: a template it misses would
    fail the report at render time, not at install time."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["serving.web"]
    files = [
        p.relative_to(WEB).as_posix()
        for folder in ("templates", "static")
        for p in (WEB / folder).rglob("*")
        if p.is_file()
    ]
    assert any(f.startswith("templates/report/") for f in files)
    # setuptools expands the patterns as recursive globs (a `*` never crosses a `/`)
    covered = {f for pattern in patterns for f in glob(pattern, root_dir=WEB, recursive=True)}
    assert not set(files) - covered


def test_serving_web_never_imports_training():
    code = (
        "import sys, serving.web.render, serving.web.charts, serving.web.components;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'training');"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-1000:]


def test_number_formats_are_filters_for_the_pages():
    template = environment().from_string("{{ a|money }} {{ b|pct }} {{ c|num }} {{ d|metric }}")
    assert template.render(a=12345.6, b=0.1234, c=3, d=float("nan")) == "12,346 12.3% 3 –"
