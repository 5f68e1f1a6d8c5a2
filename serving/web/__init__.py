"""The HTML toolkit shared by the analytics report and the CSM web pages.

Jinja2 templates (`templates/`: a base layout, macros for tables, tiles, charts and key-value
lists, one template per report section), one stylesheet (`static/style.css`), matplotlib charts
as data URIs (`charts`), the text formats of numbers (`format`), the small view objects the
macros draw (`components`) and the autoescaping environment that renders them (`render`).

It lives in `serving/` because the web pages are served from there and `serving/` never imports
`training/`; the report (`training/report.py`) gathers its data and renders through this package.
"""
