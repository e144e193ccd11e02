"""deploy/: the scrape config parses, the dashboard queries metrics the server really exports,
the systemd unit restarts on failure and waits for /ready, the (untested) Dockerfile is sane."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.test_app import CHAT, _wait_status, factory
from warmlm.config import ServerConfig
from warmlm.server.app import create_app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC = re.compile(r"warmlm:[a-zA-Z0-9_:]+")


def exported_names() -> set[str]:
    """Sample names of a real scrape after some traffic (so labelled series exist)."""
    app = create_app(ServerConfig(model="fake", ctx=1024), service_factory=factory())
    with TestClient(app) as client:
        _wait_status(client, "ready")
        client.post("/v1/chat/completions", json=CHAT)
        text = client.get("/metrics").text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        if p.get("type") != "row":
            out.append(p)
        out.extend(all_panels(p.get("panels", [])))
    return out


def test_prometheus_config() -> None:
    text = (DEPLOY / "prometheus.yml").read_text()
    assert "127.0.0.1:8000" in text and "/metrics" in text
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is optional
        return
    config = yaml.safe_load(text)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "warmlm" and job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]


def test_dashboard_queries_exported_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    (ds_input,) = dash["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "${" + ds_input["name"] + "}" in json.dumps(variables["datasource"]["current"])
    exported = exported_names()
    panels = all_panels(dash["panels"])
    assert len(panels) >= 6 and len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    for wanted in ("time_to_first_token", "inter_token", "generation_tokens", "waiting", "kv_"):
        assert any(wanted in name for name in used), wanted
    assert any("histogram_quantile" in t["expr"] for p in panels for t in p["targets"])


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "warmlm.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, val = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(val)
    return settings


def test_systemd_unit() -> None:
    unit = unit_settings()
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.ExecStart"][0].endswith("warmlm serve")
    (post,) = unit["Service.ExecStartPost"]
    assert "curl" in post and "/ready" in post and "timeout" in post
    assert "$" not in post  # systemd would expand it
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_dockerfile_and_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert lines[[ln.startswith("FROM") for ln in lines].index(True)] == "FROM python:3.11-slim"
    text = "\n".join(lines)
    assert "build-essential" in text and 'pip install ".[models]"' in text
    assert "EXPOSE 8000" in text
    assert "CMD curl -fsS http://127.0.0.1:8000/ready || exit 1" in text
    assert 'CMD ["warmlm", "serve", "--host", "0.0.0.0"]' in text
    drain = re.search(r"WARMLM_DRAIN_TIMEOUT=([0-9.]+)", text)
    assert drain is not None and float(drain.group(1)) < 10  # docker stop's grace before SIGKILL
    monkeypatch.setenv("WARMLM_DRAIN_TIMEOUT", drain.group(1))
    assert ServerConfig.from_env().drain_timeout == float(drain.group(1))
    readme = (DEPLOY / "README.md").read_text()
    assert "untested" in readme.lower() and "no Docker engine" in readme
