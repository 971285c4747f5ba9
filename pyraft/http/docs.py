"""``/docs``: a readable HTML page rendered from the OpenAPI document, with no scripts and no CDN.

Swagger UI would need assets from the network; operators of a metadata quorum
often have none, so the page is plain HTML generated on the server.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
.op { margin: 1.5rem 0; padding: 0.5rem 1rem; border-left: 4px solid #8ab; background: #f7f9fa; }
.method { font-weight: bold; font-family: monospace; margin-right: 0.5rem; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #eef; padding: 0.5rem; overflow-x: auto; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.6rem; text-align: left; vertical-align: top; }
"""


def render_docs(document: dict[str, Any]) -> str:
    info = document["info"]
    sections: dict[str, list[str]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            sections.setdefault(op["tags"][0], []).append(_operation(path, method, op))
    body = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in sections.items())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info['title'])}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(info['title'])} {escape(info['version'])}</h1>"
        f"<p>{escape(info['description'])}</p>"
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
        f"{body}</body></html>"
    )


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f"<div class='op'><h3><span class='method'>{method.upper()}</span><code>{escape(path)}</code></h3>",
        f"<p>{escape(op['summary'])}</p>",
    ]
    if "description" in op:
        parts.append(f"<p>{escape(op['description'])}</p>")
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
            for p in op["parameters"]
        )
        parts.append(f"<table><tr><th>parameter</th><th>in</th><th></th></tr>{rows}</table>")
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        parts.append(f"<p>Body:</p><pre>{escape(json.dumps(schema, indent=2))}</pre>")
    rows = "".join(
        f"<tr><td>{escape(code)}</td><td>{escape(reply['description'])}</td></tr>"
        for code, reply in op["responses"].items()
    )
    parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{rows}</table></div>")
    return "".join(parts)
