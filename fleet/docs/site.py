"""The offline docs site of `fleet docs build` and `serve`: the fleet graph, the event versions, the AsyncAPI document.

The document is rendered offline by @asyncapi/react-component's standalone bundle, from the JSON in the page."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "COMPONENT",
    "SITE",
    "DocsToolsMissing",
    "build_site",
    "component_assets",
    "embed_json",
    "inline_svg",
    "page_html",
    "remote_refs",
    "serve_site",
    "site_app",
    "versions_html",
]

ROOT = Path(".")  # the checkout: commands run from its top folder
SITE = ROOT / "docs" / "site"
COMPONENT = ROOT / "docs" / "tools" / "node_modules" / "@asyncapi" / "react-component"
BUNDLE = Path("browser/standalone/index.js")  # the standalone bundle, parser included: `AsyncApiStandalone.render`
BUNDLE_LICENSE = Path("browser/standalone/index.js.LICENSE.txt")
STYLES = Path("styles/default.min.css")
ASSETS = "assets"  # the site's folder of copied files
DOCUMENT_ELEMENT = "asyncapi-document"  # <script type="application/json"> holding the document
RENDER_ELEMENT = "asyncapi-rendered"  # the element the React component renders into


class DocsToolsMissing(RuntimeError):
    """The docs' Node tools (the React component's bundle and styles) are not installed."""


def component_assets(component: Path = COMPONENT) -> dict[str, Path]:
    """The files of @asyncapi/react-component the site copies; raises DocsToolsMissing naming `make docs-tools`."""
    files = {"bundle": component / BUNDLE, "license": component / BUNDLE_LICENSE, "styles": component / STYLES}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise DocsToolsMissing(
            "the docs' Node tools are missing (" + ", ".join(missing) + "): run `make docs-tools` "
            "(npm ci into docs/tools/node_modules, @asyncapi/react-component pinned by docs/tools/package-lock.json)"
        )
    return files


def component_version(component: Path = COMPONENT) -> str:
    try:
        return str(json.loads((component / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def remote_refs(document: Any, where: str = "#") -> list[str]:
    """Every `$ref` of the document that does not point inside it (`#/...`), as `location -> ref`: the site must not
    need the network, so the build refuses these."""
    found = []
    for path, ref in _refs(document, where):
        if not ref.startswith("#"):
            found.append(f"{path} -> {ref}")
    return found


def _refs(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path, value
            else:
                yield from _refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, f"{path}/{index}")


def embed_json(document: Any) -> str:
    """JSON safe inside a <script> element: no `</script>`, no `<!--`, no `&` for the HTML parser to read."""
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def inline_svg(svg: str) -> str:
    """An SVG file's text without its XML declaration, DOCTYPE and comments before the root, for inlining in HTML."""
    start = svg.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document")
    return svg[start:]


RENDER_CONFIG = {
    "show": {
        "sidebar": True,
        "info": True,
        "servers": True,
        "operations": True,
        "messages": True,
        "schemas": True,
        "errors": True,
    },
    "sidebar": {"showOperations": "byDefault"},
    "expand": {"messageExamples": False},
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/asyncapi-react-default.min.css">
<style>
  body {{ margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #0f172a; }}
  header.fleet, section.fleet-graph {{ padding: 1rem 2rem; border-bottom: 1px solid #e2e8f0; }}
  header.fleet h1 {{ margin: 0 0 .25rem 0; font-size: 1.5rem; }}
  header.fleet p, section.fleet-graph p {{ margin: .25rem 0; color: #475569; font-size: .9rem; }}
  section.fleet-graph h2 {{ font-size: 1.2rem; margin: 0 0 .5rem 0; }}
  section.fleet-graph .graph {{ overflow-x: auto; }}
  section.fleet-graph svg {{ max-width: 100%; height: auto; }}
  section.fleet-versions {{ padding: 1rem 2rem; border-bottom: 1px solid #e2e8f0; }}
  section.fleet-versions h2 {{ font-size: 1.2rem; margin: 0 0 .5rem 0; }}
  section.fleet-versions li {{ margin: .35rem 0; font-size: .9rem; }}
  section.fleet-versions .deprecated {{ color: #b91c1c; font-weight: 600; }}
  #{render} .fleet-loading {{ padding: 2rem; color: #64748b; }}
</style>
</head>
<body>
<header class="fleet">
  <h1>{title}</h1>
  <p>Generated by <code>fleet docs build</code> from the code; renders offline ({component}).
     Also here: <a href="asyncapi.json">asyncapi.json</a>, <a href="fleet.svg">fleet.svg</a>.</p>
</header>
<section class="fleet-graph" id="fleet-graph">
  <h2>Fleet graph</h2>
  <p>Upstream signers and fleet workers publish to registry topics; each topic feeds its consumer groups.
     Dashed red edges: records a consumer refuses go to the topic's dead-letter topic (<code>&lt;topic&gt;.dlq</code>).
     Dashed purple edges: an upcaster turns an older version's records into the newer one.</p>
  <div class="graph">
{svg}
  </div>
</section>
{versions}<main>
  <div id="{render}"><p class="fleet-loading">Rendering the AsyncAPI document (needs JavaScript)&hellip;</p></div>
</main>
<script id="{document_id}" type="application/json">{document}</script>
<script src="{assets}/asyncapi-react-standalone.js"></script>
<script>
(function () {{
  var target = document.getElementById("{render}");
  var schema = JSON.parse(document.getElementById("{document_id}").textContent);
  var config = {config};
  if (typeof AsyncApiStandalone === "undefined") {{
    target.textContent = "The AsyncAPI renderer ({assets}/asyncapi-react-standalone.js) did not load.";
    return;
  }}
  AsyncApiStandalone.render({{ schema: schema, config: config }}, target);
}})();
</script>
</body>
</html>
"""  # noqa: E501 (the page as served: a template line is a line of the HTML)


def _text(markdown: str) -> str:
    """A description's text as HTML: escaped, its `code` spans kept."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(markdown))


def versions_html(document: dict) -> str:
    """The section on the events with several versions, from the document's `x-eventfleet-lifecycle` marks (no JSON
    needed to read it): each current version, the versions it supersedes with their state (deprecated, closed,
    retired), and the upcasters between them with what each does. Empty when every event has one version."""
    events = [
        channel
        for channel in (document.get("channels") or {}).values()
        if channel.get("x-eventfleet-kind") == "event" and channel.get("x-eventfleet-lifecycle")
    ]
    states = {channel["address"]: channel["x-eventfleet-lifecycle"] for channel in events}
    items = []
    for address, entry in sorted(states.items()):
        if entry.get("state") != "current":
            continue
        older = []
        for name in entry.get("supersedes", ()):
            was = states.get(name, {})
            state = was.get("state", "superseded")
            since = was.get("retiredOn") or was.get("closedOn")
            shown = (
                "retired"
                if state == "retired"
                else "deprecated" + (", closed for writing" if state == "closed" else "")
            )
            older.append(
                f'<code>{html.escape(name)}</code> <span class="deprecated">{shown}</span>'
                + (f" since {html.escape(since)}" if since else "")
            )
        steps = "".join(
            f"<li>upcaster <code>{html.escape(step['name'])}</code> (<code>{html.escape(step['from'])}</code> → "
            f"<code>{html.escape(step['to'])}</code>): {_text(step.get('description', ''))}</li>"
            for step in entry.get("upcasters", ())
        )
        items.append(
            f"<li><code>{html.escape(address)}</code> is current; it supersedes {', '.join(older) or 'nothing'}."
            + (f"<ul>{steps}</ul>" if steps else "")
            + "</li>"
        )
    if not items:
        return ""
    return (
        '<section class="fleet-versions" id="fleet-versions">\n  <h2>Event versions</h2>\n'
        "  <p>A handler declared on the current version also reads the older ones, each record upcast by a registered "
        "pure function, until the older version is retired (<code>fleet contracts retire</code>).</p>\n"
        f"  <ul>{''.join(items)}</ul>\n</section>\n"
    )


def page_html(document: dict, svg: str, *, component: str = "@asyncapi/react-component") -> str:
    """The site's index.html: the fleet graph (inline SVG) and the event versions above the document rendered by the
    standalone bundle from the JSON embedded in the page. Every URL in it is relative to the site; nothing is fetched
    from elsewhere."""
    info = document.get("info", {})
    title = f"{info.get('title', 'AsyncAPI')} {info.get('version', '')}".strip()
    return _PAGE.format(
        title=html.escape(title),
        component=html.escape(component),
        assets=ASSETS,
        svg=inline_svg(svg),
        versions=versions_html(document),
        render=RENDER_ELEMENT,
        document_id=DOCUMENT_ELEMENT,
        document=embed_json(document),
        config=embed_json(RENDER_CONFIG),
    )


def build_site(
    out: Path = SITE, document: dict | None = None, *, component: Path | None = None, dot: str = "dot"
) -> Path:
    """Writes the site to `out` (index.html, fleet.svg, asyncapi.json, assets/) and returns index.html's path.
    Needs `make docs-tools` (the component's bundle) and `make debian-tools` (graphviz); checks both before writing."""
    from fleet.docs.graph import fleet_dot, render_svg

    component = COMPONENT if component is None else Path(component)
    assets = component_assets(component)
    if document is None:
        from fleet.docs.asyncapi import fleet_document

        document = fleet_document()
    remote = remote_refs(document)
    if remote:
        raise ValueError(
            "the document has $refs outside itself, which an offline site cannot follow: " + "; ".join(remote)
        )
    svg = render_svg(fleet_dot(), dot=dot)
    out = Path(out)
    (out / ASSETS).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(assets["bundle"], out / ASSETS / "asyncapi-react-standalone.js")
    shutil.copyfile(assets["license"], out / ASSETS / "asyncapi-react-standalone.js.LICENSE.txt")
    shutil.copyfile(assets["styles"], out / ASSETS / "asyncapi-react-default.min.css")
    (out / "fleet.svg").write_text(svg)
    (out / "asyncapi.json").write_text(json.dumps(document, ensure_ascii=False, sort_keys=True, indent=2) + "\n")
    index = out / "index.html"
    index.write_text(page_html(document, svg, component=f"@asyncapi/react-component {component_version(component)}"))
    return index


def site_app(site: Path = SITE):
    """A plain static-file ASGI app of the built site (index.html at /)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", app=StaticFiles(directory=str(site), html=True), name="site")])


def serve_site(site: Path = SITE, *, port: int = 8100, host: str = "127.0.0.1") -> None:
    """Serves the built site as plain static files on host:port until Ctrl-C (uvicorn handles the signal)."""
    import uvicorn

    uvicorn.run(site_app(site), host=host, port=port, log_level="info")
