"""The Jinja2 environment that turns templates into pages, with the stylesheet inlined.

Autoescaping is on for every template: any text handed to a template is escaped, so a model
name or a dataset path cannot inject markup. The one thing marked safe is our own stylesheet
(inside `<style>`, where escaping would break `>` selectors); chart data URIs need no marking,
as base64 has no character that escaping changes. Templates load from the package
(`PackageLoader`), so an installed copy finds them as package data.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from serving.web.format import fmt_interval, fmt_metric, fmt_money, fmt_num, fmt_pct

STYLESHEET = "static/style.css"


@functools.cache
def stylesheet() -> Markup:
    """The CSS file's text, to inline in a `<style>` element so that a page is one file.

    Marked safe deliberately: it is our own file, and `<style>` content is not HTML (escaping
    would turn `.tabs > input` into `.tabs &gt; input`). A `</` would end the element early,
    so it is refused.
    """
    css = resources.files("serving.web").joinpath(STYLESHEET).read_text(encoding="utf-8")
    if "</" in css:
        raise ValueError(f"serving/web/{STYLESHEET} contains '</', which would end <style>")
    return Markup(css)


@functools.cache
def environment() -> Environment:
    """The shared environment: package templates, autoescape on, undefined names are errors
    (a misspelt field fails the render instead of printing nothing)."""
    env = Environment(
        loader=PackageLoader("serving.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=fmt_money, pct=fmt_pct, num=fmt_num, interval=fmt_interval, metric=fmt_metric
    )
    env.globals["stylesheet"] = stylesheet
    return env


def render(template: str, /, **context: Any) -> str:
    """Render the template at `template` (a path under `templates/`) with `context`."""
    return environment().get_template(template).render(**context)
