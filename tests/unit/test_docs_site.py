"""The offline docs site (built from stand-in tools, no browser) and each worker's own document at GET /docs/asyncapi."""

import json
import re
import stat
from html.parser import HTMLParser

import httpx
import pytest
import yaml
from faststream.kafka import TestKafkaBroker
from typer.testing import CliRunner

from fleet.docs import site as docs_site
from fleet.runtime.observe import http as worker_http
from fleet.cli import app as cli
from fleet.docs.site import (
    DOCUMENT_ELEMENT,
    RENDER_ELEMENT,
    DocsToolsMissing,
    build_site,
    component_assets,
    embed_json,
    inline_svg,
    page_html,
    remote_refs,
    site_app,
)
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import in_memory

SVG = '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n' \
      '<svg xmlns="http://www.w3.org/2000/svg"><text>orders.placed.v1</text></svg>\n'
DOCUMENT = {"asyncapi": "3.0.0", "info": {"title": "eventfleet", "version": "9.9.9", "description": "A </script> & <b>"},
            "channels": {"c": {"address": "orders.placed.v1", "messages": {"m": {"$ref": "#/components/messages/m"}}}},
            "components": {"messages": {"m": {"name": "OrderPlaced", "payload": {"type": "object"}}}}}


class _Urls(HTMLParser):
    """Every src and href of a page, and the text of its <script> elements."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture
def component(tmp_path):
    """A stand-in for docs/tools/node_modules/@asyncapi/react-component with the three files the site copies."""
    root = tmp_path / "react-component"
    (root / "browser" / "standalone").mkdir(parents=True)
    (root / "styles").mkdir()
    (root / "browser" / "standalone" / "index.js").write_text("var AsyncApiStandalone = {render: function () {}};\n")
    (root / "browser" / "standalone" / "index.js.LICENSE.txt").write_text("licenses\n")
    (root / "styles" / "default.min.css").write_text("body{margin:0}\n")
    (root / "package.json").write_text('{"version": "3.2.1"}')
    return root


@pytest.fixture
def fake_dot(tmp_path):
    path = tmp_path / "dot"
    path.write_text(f"#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n{SVG}EOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_the_page_fetches_nothing_outside_the_site_and_embeds_the_document_safely():
    page = page_html(DOCUMENT, SVG)
    parsed = _Urls()
    parsed.feed(page)
    assert sorted(parsed.urls) == sorted(["asyncapi.json", "assets/asyncapi-react-default.min.css",
                                          "assets/asyncapi-react-standalone.js", "fleet.svg"])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert "@import" not in page and "url(" not in page
    assert "</script> &" not in page  # the description is escaped inside the JSON
    embedded = page.split(f'<script id="{DOCUMENT_ELEMENT}" type="application/json">')[1].split("</script>")[0]
    assert json.loads(embedded) == DOCUMENT
    assert 'AsyncApiStandalone.render({ schema: schema, config: config }, target)' in page
    assert f'id="{RENDER_ELEMENT}"' in page
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page and "<text>orders.placed.v1</text>" in page
    assert page.index("Fleet graph") < page.index(f'id="{RENDER_ELEMENT}"')


def test_embedded_json_cannot_close_its_script_element():
    text = embed_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_only_references_inside_the_document_are_allowed():
    assert remote_refs(DOCUMENT) == []
    document = {"components": {"schemas": {"a": {"$ref": "https://example.com/s.json"}, "b": [{"$ref": "other.yaml#/x"}]}}}
    assert remote_refs(document) == ["#/components/schemas/a -> https://example.com/s.json",
                                     "#/components/schemas/b/0 -> other.yaml#/x"]


def test_missing_node_tools_name_make_docs_tools(tmp_path):
    with pytest.raises(DocsToolsMissing, match="make docs-tools"):
        component_assets(tmp_path / "nowhere")
    with pytest.raises(DocsToolsMissing, match="make docs-tools"):
        build_site(tmp_path / "site", DOCUMENT, component=tmp_path / "nowhere")
    assert not (tmp_path / "site").exists()  # checked before anything is written


def test_inline_svg_refuses_what_is_not_svg():
    with pytest.raises(ValueError):
        inline_svg("<html></html>")


def test_the_built_site_holds_the_page_its_assets_the_graph_and_the_document(tmp_path, component, fake_dot):
    index = build_site(tmp_path / "site", DOCUMENT, component=component, dot=fake_dot)
    site = index.parent
    assert (site / "assets" / "asyncapi-react-standalone.js").read_text() == (
        component / "browser" / "standalone" / "index.js").read_text()
    assert (site / "assets" / "asyncapi-react-default.min.css").read_text() == "body{margin:0}\n"
    assert (site / "assets" / "asyncapi-react-standalone.js.LICENSE.txt").exists()
    assert (site / "fleet.svg").read_text() == SVG
    assert json.loads((site / "asyncapi.json").read_text()) == DOCUMENT
    parsed = _Urls()
    parsed.feed(index.read_text())
    assert [url for url in parsed.urls if not (site / url).is_file()] == []  # every link resolves inside the site
    assert "@asyncapi/react-component 3.2.1" in index.read_text()


def test_a_document_with_remote_refs_is_refused(tmp_path, component, fake_dot):
    with pytest.raises(ValueError, match="outside itself"):
        build_site(tmp_path / "site", {"info": {}, "x": {"$ref": "https://example.com/a.json"}}, component=component,
                   dot=fake_dot)


async def test_the_static_server_serves_the_built_site(tmp_path, component, fake_dot):
    index = build_site(tmp_path / "site", DOCUMENT, component=component, dot=fake_dot)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site_app(index.parent)), base_url="http://site") as http:
        page, svg, js = await http.get("/"), await http.get("/fleet.svg"), await http.get("/assets/asyncapi-react-standalone.js")
    assert page.status_code == 200 and "Fleet graph" in page.text
    assert svg.status_code == 200 and js.status_code == 200


def test_fleet_docs_build_fails_naming_make_docs_tools_when_the_node_tools_are_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_site, "COMPONENT", tmp_path / "nowhere")
    result = CliRunner().invoke(cli, ["docs", "build", "--out", str(tmp_path / "site")])
    assert result.exit_code == 1
    assert "make docs-tools" in result.output


def _payments(tmp_path):
    return in_memory(create_payments, PaymentsSettings(store_url=f"sqlite:///{tmp_path / 'p'}.db", http_port=0))


async def test_a_worker_serves_its_own_document_made_once_on_first_request(tmp_path, monkeypatch):
    made = []
    real = worker_http._asyncapi_bodies

    def counting(service, app):
        made.append(service)
        return real(service, app)

    monkeypatch.setattr(worker_http, "_asyncapi_bodies", counting)
    app = _payments(tmp_path)
    async with TestKafkaBroker(app.broker):
        await app.start()
        try:
            assert made == []  # not when the worker starts
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.broker.worker_http.port}") as http:
                as_json = await http.get("/docs/asyncapi")
                as_yaml = await http.get("/docs/asyncapi", params={"format": "yaml"})
                by_accept = await http.get("/docs/asyncapi", headers={"Accept": "application/yaml"})
                unknown = await http.get("/docs/asyncapi", params={"format": "xml"})
        finally:
            await app.stop()
    assert made == ["payments"]  # once, however many requests
    assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/json")
    document = as_json.json()
    assert document["asyncapi"].startswith("3.") and "payments" in document["info"]["title"]
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"orders.placed.v1", "payments.authorized.v1", "payments.declined.v1"} <= addresses
    assert "shipments.scheduled.v1" not in addresses  # only what payments sends and receives
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == document == yaml.safe_load(by_accept.text)
    assert unknown.status_code == 400 and unknown.json()["reason"] == "unknown_format"


# Run in a process of its own: this test run has imported every service already.
_OWN_DOCUMENT = """
import asyncio, json, os, sys
from services.payments import PaymentsSettings, create_app
before = dict(os.environ)
app = create_app(PaymentsSettings(store_url="sqlite:///:memory:", http_port=0))
bodies = asyncio.run(app.broker.worker_http.asyncapi_document())
others = sorted(m for m in sys.modules if m.startswith("services.") and not m.startswith("services.payments"))
print(json.dumps({"document": json.loads(bodies["json"]), "others": others, "environ_changed": dict(os.environ) != before}))
"""


def test_a_worker_serves_its_own_document_without_any_other_services_code_or_touching_the_environment():
    import subprocess
    import sys

    from fleet.docs.asyncapi import service_document

    ran = subprocess.run([sys.executable, "-c", _OWN_DOCUMENT], capture_output=True, text=True, timeout=120, check=True)
    served = json.loads(ran.stdout.strip().splitlines()[-1])
    assert served["others"] == [], "the worker imported other services to make its document"
    assert served["environ_changed"] is False
    # The same document `fleet docs gen --service payments` writes, which knows every service.
    assert served["document"] == json.loads(json.dumps(service_document("payments")))
