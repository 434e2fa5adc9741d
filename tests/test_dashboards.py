"""Grafana dashboards, their provisioning and the Telegraf config (dashboards/, docs/dashboards.md).

There is no Grafana or Telegraf here, so their files are checked statically. Every panel,
annotation and template-variable query, though, runs against a real InfluxDB 1.6.7 loaded with a
recorded run of the short-demo recipe (the real control service, its real MQTT payloads, the
recorder's own point converter), after substituting Grafana's macros and variables the way Grafana
does, and sent the way the provisioned data source sends it (HTTP method, database, auth header).
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from recorder.points import SKIP, TELEMETRY_TAGS, timestamp_us
from tests.recorded_run import SHORT_DEMO, RecordedRun, influxdb1_load, record_run
from tests.servers import InfluxDB1, VictoriaMetrics
from tests.service_kit import ROOT

GRAFANA = ROOT / "dashboards/grafana"
BOARDS = GRAFANA / "dashboards"
DATASOURCE_FILE = GRAFANA / "provisioning/datasources/hypoxia-influxdb.yaml"
PROVIDER_FILE = GRAFANA / "provisioning/dashboards/hypoxia.yaml"
ENV_FILE = GRAFANA / "hypoxia.env"
TELEGRAF = ROOT / "dashboards/telegraf/hypoxia.conf"
DOCS = ROOT / "docs/dashboards.md"

# Every panel, query and variable names the data source through the dashboard variable
# DS_HYPOXIA_INFLUXDB (type datasource): file provisioning resolves it to its default, the
# provisioned data source; a UI import asks for the `__inputs` entry of the same name and writes
# the chosen uid over every "${DS_HYPOXIA_INFLUXDB}".
DS_INPUT = "DS_HYPOXIA_INFLUXDB"
DS = {"type": "influxdb", "uid": "${" + DS_INPUT + "}"}
PROVISIONED_DS = {"type": "influxdb", "uid": "hypoxia-influxdb", "name": "Hypoxia InfluxDB"}
UIDS = {
    "fleet-overview.json": "hypoxia-fleet",
    "reactor-run.json": "hypoxia-reactor-run",
    "harvests.json": "hypoxia-harvests",
}
SCHEMA_VERSION = 42  # the last version of Grafana's classic (v1) dashboard JSON model
INTERVAL = "10s"
FLEET_NOW_S = 600  # the fleet overview is evaluated as if "now" were 10 min into the run

# Columns that stay empty for the short demo, with the reason.
EMPTY_ALLOWED = {
    ("hypoxia-fleet", "Temperature: measured vs set point", "set point"),
    ("hypoxia-reactor-run", "Temperature against set point", "set point"),
    # the recorded run's site has no [reactors.culture]: pericellular_o2_pct is null throughout
    ("hypoxia-reactor-run", "O2 against set point and in-spec band", "O2 at the cells (est.)"),
}  # the short demo does not control temperature: temp_sp_c is null in every message

REGEX_SPECIALS = re.compile(r"([\\^$*+?.()|\[\]{}/])")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


# ------------------------------------------------------------------------------- file helpers


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file, by uid."""
    boards = [json.loads(path.read_text()) for path in sorted(BOARDS.glob("*.json"))]
    return {board["uid"]: board for board in boards}


def panels_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, rows and the panels inside collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


@dataclass(frozen=True)
class Query:
    """One InfluxQL query of a dashboard: a panel target, an annotation or a variable."""

    board: str
    kind: str  # "panel" | "annotation" | "variable"
    name: str  # panel title, annotation name or variable name
    text: str
    spec: dict[str, Any]  # the panel, annotation or variable


def queries_of(board: dict[str, Any]) -> list[Query]:
    """Every query of a dashboard."""
    uid = board["uid"]
    out = [
        Query(uid, "panel", panel["title"], target["query"], panel)
        for panel in panels_of(board)
        for target in panel.get("targets", [])
    ]
    out += [
        Query(uid, "annotation", ann["name"], ann["target"]["query"], ann)
        for ann in board["annotations"]["list"]
    ]
    out += [Query(uid, "variable", var["name"], var["query"], var) for var in variables_of(board)]
    return out


def variables_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's query variables (InfluxQL); the data-source variable is not one."""
    return [v for v in board["templating"]["list"] if v["type"] != "datasource"]


def env_defaults() -> dict[str, str]:
    """hypoxia.env: the defaults handed to Grafana's environment."""
    out: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def expand_env(value: str, env: dict[str, str]) -> str:
    """Grafana's provisioning interpolation (Go ``os.ExpandEnv``): ``$VAR`` / ``${VAR}``, unset
    variables become empty."""
    return VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def datasource() -> dict[str, Any]:
    """The provisioned data source."""
    doc = yaml.safe_load(DATASOURCE_FILE.read_text())
    (source,) = doc["datasources"]
    return dict(source)


def telegraf_conf() -> dict[str, Any]:
    """The Telegraf config as TOML (Telegraf substitutes ``${…}`` inside the strings)."""
    return tomllib.loads(TELEGRAF.read_text())


# ----------------------------------------------------------------------- Grafana interpolation


def regex_escape(value: str) -> str:
    """Grafana's regex escaping of a variable value inside an InfluxQL ``/…/`` regex."""
    return REGEX_SPECIALS.sub(r"\\\1", value)


def interpolate(
    text: str, values: dict[str, str], time_from_ms: int, time_to_ms: int, interval: str = INTERVAL
) -> str:
    """Substitute ``$timeFilter``, ``$__interval`` and template variables as Grafana does.

    ``values`` maps a variable to one value; ``.*`` stands for "All" (the variables' ``allValue``)
    and is used verbatim, other values are regex-escaped (every use here is inside ``/^…$/``).
    """
    text = text.replace("$timeFilter", f"time >= {time_from_ms}ms and time <= {time_to_ms}ms")
    text = text.replace("$__interval", interval)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            msg = f"undefined variable ${name} in {text!r}"
            raise KeyError(msg)
        raw = values[name]
        return raw if raw == ".*" else regex_escape(raw)

    out = VARIABLE.sub(value, text)
    assert not VARIABLE.search(out), out
    return out


def select_columns(query: str) -> list[str]:
    """The column names a SELECT returns after ``time``: each item's ``AS`` alias, or the quoted
    field or tag it selects (the dashboards alias every expression)."""
    match = re.match(r"SELECT (.+?) FROM ", query)
    assert match, query
    items, depth, current = [], 0, ""
    for char in match.group(1):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    names = []
    for item in items:
        named = re.search(r' AS "([^"]+)"$', item) or re.fullmatch(r'"([^"]+)"', item)
        assert named, f"alias the expression {item!r} in {query!r}"
        names.append(named.group(1))
    return names


def group_by_tags(query: str) -> list[str]:
    """Tag keys of the GROUP BY clause."""
    match = re.search(r"GROUP BY (.+?)(?: fill\(|$| ORDER| LIMIT)", query)
    return re.findall(r'"(\w+)"', match.group(1)) if match else []


# ---------------------------------------------------------------------- the live InfluxDB fixture


@dataclass
class Live:
    """InfluxDB 1.6.7 with the recorded run, queried as the provisioned data source does."""

    url: str
    database: str
    method: str
    headers: dict[str, str]
    run: RecordedRun

    def query(self, text: str) -> dict[str, Any]:
        """One InfluxQL statement -> its result (``epoch=ms`` as Grafana asks)."""
        params = {"db": self.database, "epoch": "ms"}
        body = None
        if self.method == "POST":
            body = urllib.parse.urlencode({"q": text}).encode()
        else:
            params["q"] = text
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.url}/query?{urllib.parse.urlencode(params)}",
            data=body,
            method=self.method,
            headers={**self.headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            (result,) = json.loads(resp.read())["results"]
        assert "error" not in result, f"{text}\n-> {result['error']}"
        return dict(result)

    def values(self) -> dict[str, str]:
        """The template variables for the recorded run."""
        return {"site": self.run.site, "reactor": self.run.reactor, "run_id": self.run.run_id}

    def time_range(self, board: str) -> tuple[int, int]:
        """The dashboard time range used in the tests (ms)."""
        if board == "hypoxia-fleet":
            return self.run.start_ms, self.run.start_ms + FLEET_NOW_S * 1000
        return self.run.start_ms - 60_000, self.run.end_ms + 60_000

    def run_query(self, q: Query, values: dict[str, str] | None = None) -> dict[str, Any]:
        """A dashboard query with its macros and variables substituted."""
        start, end = self.time_range(q.board)
        return self.query(interpolate(q.text, values or self.values(), start, end))

    def panel_rows(self, board: str, title: str) -> list[dict[str, Any]]:
        """The rows a panel's query returns."""
        return rows(self.run_query(panel_query(board, title)))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """The short-demo recipe run to completion by the real service (~800 cycles)."""
    tmp = tmp_path_factory.mktemp("run")
    return asyncio.run(record_run(tmp, SHORT_DEMO.read_text()))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, recorded: RecordedRun) -> Iterator[Live]:
    """InfluxDB 1.6.7 loaded with the recorded run through the recorder's point converter."""
    if not InfluxDB1.available():
        pytest.skip("needs influxd (scripts/test installs it)")
    env = env_defaults()
    source = datasource()
    database = expand_env(source["jsonData"]["dbName"], env)
    headers = {
        expand_env(source["jsonData"]["httpHeaderName1"], env): expand_env(
            source["secureJsonData"]["httpHeaderValue1"], env
        )
    }
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        influxdb1_load(server.url, database, recorded)
        yield Live(server.url, database, source["jsonData"]["httpMode"], headers, recorded)
    finally:
        server.stop()


def series(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's series."""
    return list(result.get("series", []))


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of every series as a dict, the series' tags included."""
    return [
        {**s.get("tags", {}), **dict(zip(s["columns"], values, strict=True))}
        for s in series(result)
        for values in s["values"]
    ]


def panel_query(board: str, title: str) -> Query:
    """The (single) query of a panel."""
    (found,) = [q for q in queries_of(dashboards()[board]) if q.kind == "panel" and q.name == title]
    return found


# ============================================================================ structural checks


def test_datasource_provisioning_is_influxql_with_fixed_uid_and_env_settings() -> None:
    doc = yaml.safe_load(DATASOURCE_FILE.read_text())
    assert doc["apiVersion"] == 1
    source = datasource()
    assert source["uid"] == PROVISIONED_DS["uid"]
    assert source["name"] == PROVISIONED_DS["name"]
    assert source["type"] == DS["type"]
    assert source["access"] == "proxy"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["httpMode"] in {"GET", "POST"}
    assert source["database"] == source["jsonData"]["dbName"]
    env = env_defaults()
    used = {m.group(1) or m.group(2) for m in VARIABLE.finditer(DATASOURCE_FILE.read_text())}
    assert used <= set(env), f"variables without a default in {ENV_FILE.name}: {used - set(env)}"
    assert {"HYPOXIA_INFLUXDB_URL", "HYPOXIA_INFLUXDB_DATABASE"} <= used
    assert re.fullmatch(r"https?://[\w.-]+(:\d+)?", expand_env(source["url"], env))
    assert expand_env(source["jsonData"]["dbName"], env) == "hypoxia"


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    doc = yaml.safe_load(PROVIDER_FILE.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["name"]
    assert provider["folder"]
    assert provider["allowUiUpdates"] is False  # git stays the source of truth
    path = provider["options"]["path"]
    assert path.startswith("/")
    # the deployment docs mount dashboards/grafana/dashboards exactly there
    assert f"dashboards/grafana/dashboards:{path}" in DOCS.read_text()
    assert sorted(p.name for p in BOARDS.glob("*.json")) == sorted(UIDS)


def test_dashboards_are_structurally_valid() -> None:
    seen_uids: set[str] = set()
    for path in sorted(BOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"] == UIDS[path.name], "dashboard uids are stable: links use them"
        assert board["uid"] not in seen_uids
        seen_uids.add(board["uid"])
        assert board["id"] is None
        assert board["schemaVersion"] == SCHEMA_VERSION
        assert "hypoxia" in board["tags"]
        panels = panels_of(board)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            where = f"{path.name}: {panel['title']!r}"
            assert panel["datasource"] == DS, where
            grid = panel["gridPos"]
            assert grid["x"] >= 0, where
            assert grid["x"] + grid["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel["targets"], where
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"] == DS, where
                assert target["rawQuery"] is True, where
                assert target["resultFormat"] in {"time_series", "table"}, where
                assert target["query"].startswith("SELECT "), where
                assert "$timeFilter" in target["query"], where
        for ann in board["annotations"]["list"]:
            assert ann["datasource"] == DS
            assert ann["target"]["datasource"] == DS
            assert ann["target"]["rawQuery"] is True
            assert "$timeFilter" in ann["target"]["query"]
        assert_no_overlap(path.name, [p for p in panels if p in board["panels"]])
    assert seen_uids == set(UIDS.values())


def assert_no_overlap(name: str, panels: list[dict[str, Any]]) -> None:
    """No two top-level panels share a grid cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{name}: {panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def test_dashboards_ask_for_their_data_source_on_import_and_default_to_the_provisioned_one() -> (
    None
):
    """``__inputs`` for a UI import; a data-source variable whose default is the provisioned one."""
    for uid, board in dashboards().items():
        (ds_input,) = board["__inputs"]
        assert ds_input["name"] == DS_INPUT, uid
        assert ds_input["type"] == "datasource", uid
        assert ds_input["pluginId"] == "influxdb", uid
        assert ds_input["label"], uid
        requires = {(r["type"], r["id"]) for r in board["__requires"]}
        assert ("datasource", "influxdb") in requires, uid
        kinds = {p["type"] for p in panels_of(board) if p["type"] != "row"}
        assert {("panel", kind) for kind in kinds} <= requires, uid
        first = board["templating"]["list"][0]
        assert first["name"] == DS_INPUT, uid
        assert first["type"] == "datasource", uid
        assert first["query"] == PROVISIONED_DS["type"], uid
        assert first["current"]["value"] == PROVISIONED_DS["uid"], uid
        assert first["current"]["text"] == PROVISIONED_DS["name"], uid
        assert not first["regex"] or re.search(first["regex"].strip("/"), PROVISIONED_DS["name"])
        assert [v["type"] for v in board["templating"]["list"]].count("datasource") == 1, uid
        # no data-source reference escapes the variable: every one is the placeholder
        text = json.dumps(board)
        assert PROVISIONED_DS["uid"] not in text.replace(json.dumps(first["current"]), ""), uid
        uids = set(re.findall(r'"datasource": \{"type": "influxdb", "uid": "([^"]+)"\}', text))
        assert uids == {DS["uid"]}, uid


def test_template_variables_are_defined_used_and_show_tag_values() -> None:
    for uid, board in dashboards().items():
        defined = {v["name"]: v for v in variables_of(board)}
        assert {"site", "reactor"} <= set(defined), uid
        for var in defined.values():
            assert var["type"] == "query"
            assert var["datasource"] == DS
            assert var["query"].startswith('SHOW TAG VALUES FROM "telemetry" WITH KEY = ')
            assert var["definition"] == var["query"]
            if var["includeAll"]:
                assert var["allValue"] == ".*"
        used = {
            m.group(1) or m.group(2) for q in queries_of(board) for m in VARIABLE.finditer(q.text)
        } - {"timeFilter", "__interval"}
        assert used == set(defined), f"{uid}: used {used}, defined {set(defined)}"
        # a variable may only depend on variables defined before it
        order = list(defined)
        for i, var in enumerate(variables_of(board)):
            deps = {m.group(1) or m.group(2) for m in VARIABLE.finditer(var["query"])}
            assert deps <= set(order[:i]), f"{uid}: {var['name']} depends on {deps}"


def test_links_point_at_provisioned_dashboards() -> None:
    boards = dashboards()
    text = "".join(path.read_text() for path in BOARDS.glob("*.json"))
    targets = set(re.findall(r"/d/([\w-]+)", text))
    assert targets, "the fleet overview links each reactor to its run"
    assert targets <= set(boards)


def test_docs_describe_every_dashboard() -> None:
    docs = DOCS.read_text()
    for uid, board in dashboards().items():
        assert uid in docs
        assert board["title"] in docs


# ================================================================ queries against real InfluxDB


def test_recorded_run_has_what_the_dashboards_show(recorded: RecordedRun) -> None:
    assert recorded.status == "complete"
    kinds = [m["kind"] for m in recorded.of_kind("event")]
    assert kinds.count("harvest_due") == 2
    assert kinds.count("harvest_done") == 2
    assert "alarm" in kinds
    telemetry = recorded.of_kind("telemetry")
    assert len(telemetry) > 600
    assert all(m["temp_sp_c"] is None for m in telemetry)  # why EMPTY_ALLOWED holds
    assert all(m["pericellular_o2_pct"] is None for m in telemetry)


def test_every_query_runs_and_returns_the_columns_its_panel_expects(live: Live) -> None:
    checked = 0
    for uid, board in dashboards().items():
        for q in queries_of(board):
            result = live.run_query(q)
            assert series(result), f"{uid} {q.kind} {q.name!r}: no series\n{q.text}"
            expected = (
                ["key", "value"] if q.kind == "variable" else ["time", *select_columns(q.text)]
            )
            for s in series(result):
                assert s["columns"] == expected, f"{uid} {q.name!r}: {s['columns']}"
                assert set(group_by_tags(q.text)) <= set(s.get("tags", {})), q.name
            for column in expected[1:]:
                filled = any(r.get(column) is not None for r in rows(result))
                assert filled or (uid, q.name, column) in EMPTY_ALLOWED, (
                    f"{uid} {q.name!r}: column {column!r} is empty"
                )
            checked += 1
    assert checked >= 30


def test_all_and_multi_values_select_the_same_data(live: Live) -> None:
    """'All' (allValue ``.*``) and a two-value selection ``(a|b)`` work in every regex."""
    for uid, board in dashboards().items():
        alls = {v["name"] for v in variables_of(board) if v["includeAll"]}
        if not alls:
            continue
        for q in queries_of(board):
            if q.kind == "variable":
                continue
            one = live.run_query(q)
            every = live.run_query(q, {**live.values(), **dict.fromkeys(alls, ".*")})
            assert rows(every) == rows(one), f"{uid} {q.name!r}"
    # Grafana's multi-value form: (value|other) with each value regex-escaped
    q = panel_query("hypoxia-harvests", "Harvests")
    start, end = live.time_range(q.board)
    text = interpolate(q.text, live.values(), start, end).replace(
        "/^ws1$/", f"/^({regex_escape('ws1')}|{regex_escape('ws.9')})$/"
    )
    assert len(rows(live.query(text))) == 2


def test_template_variables_list_the_recorded_site_reactor_and_run(live: Live) -> None:
    run = live.run
    for uid, board in dashboards().items():
        for var in variables_of(board):
            q = Query(uid, "variable", var["name"], var["query"], var)
            got = {r["value"] for r in rows(live.run_query(q))}
            assert got == {live.values()[var["name"]]}, f"{uid} ${var['name']}: {got}"
    # the chained filters apply: no reactor of another site
    reactor = next(v for v in variables_of(dashboards()["hypoxia-fleet"]) if v["name"] == "reactor")
    q = Query("hypoxia-fleet", "variable", "reactor", reactor["query"], reactor)
    assert not series(live.run_query(q, {"site": "elsewhere"}))
    assert run.run_id.startswith(f"{run.reactor}-")


def test_harvest_annotations_mark_both_harvests_due_and_done(live: Live) -> None:
    board = dashboards()["hypoxia-reactor-run"]
    (ann,) = [a for a in board["annotations"]["list"] if a["name"] == "Harvests"]
    q = Query(board["uid"], "annotation", ann["name"], ann["target"]["query"], ann)
    result = live.run_query(q)
    target = ann["target"]
    columns = set(series(result)[0]["columns"])
    wanted = {target["titleColumn"], target["textColumn"], *target["tagsColumn"].split(",")}
    assert wanted <= columns
    marks = {(r["subject"], r["kind"]) for r in rows(result)}
    assert marks == {
        (name, kind) for name in ("CM-2min", "CM-5min") for kind in ("harvest_due", "harvest_done")
    }
    assert all(json.loads(r[target["textColumn"]]) for r in rows(result))


def test_harvest_table_has_one_row_per_harvest_with_conditioning_and_volume(live: Live) -> None:
    result = live.run_query(panel_query("hypoxia-harvests", "Harvests"))
    table = {r["harvest"]: r for r in rows(result)}
    assert set(table) == {"CM-2min", "CM-5min"}
    assert table["CM-2min"]["exposure_s"] == pytest.approx(120.0)
    assert table["CM-5min"]["exposure_s"] == pytest.approx(300.0)
    for row in table.values():
        assert row["done"] == 1
        assert row["o2_mean_pct"] == pytest.approx(5.0, abs=0.3)
        assert 0.0 <= row["in_band_frac"] <= 1.0
        assert row["excursions"] >= 0
        assert row["run_id"] == live.run.run_id
    assert table["CM-2min"]["volume_ml"] == pytest.approx(12.5)  # confirmed with its volume
    log = live.panel_rows("hypoxia-harvests", "Harvest log")
    assert len(log) == 4  # due and done of each
    bars = live.panel_rows("hypoxia-harvests", "Excursions per harvest")
    assert {r["harvest"] for r in bars} == {"CM-2min", "CM-5min"}


def test_alarm_table_lists_every_transition_of_the_run(live: Live) -> None:
    result = live.panel_rows("hypoxia-reactor-run", "Alarm transitions")
    sent = [m for m in live.run.of_kind("event") if m["kind"] == "alarm"]
    assert len(result) == len(sent) >= 2
    assert [r["to"] for r in result] == [m["detail"]["to"] for m in reversed(sent)]  # newest first
    assert {r["alarm"] for r in result} == {"harvest_due"}


def test_reactor_run_panels_show_band_phases_and_exposure(live: Live) -> None:
    o2 = live.panel_rows("hypoxia-reactor-run", "O2 against set point and in-spec band")
    banded = [r for r in o2 if r["set point"] is not None]
    assert banded
    assert all(r["band low"] < r["set point"] < r["band high"] for r in banded)
    assert banded[-1]["O2"] == pytest.approx(5.0, abs=0.3)  # the demo holds 5 % O2
    phases = live.panel_rows("hypoxia-reactor-run", "Phase")
    assert {r["phase"] for r in phases} >= {"hypoxic hold", "release"}
    assert "running" in {r["state"] for r in phases}
    exposure = live.panel_rows("hypoxia-reactor-run", "Exposure clock")
    assert max(r["in-spec exposure"] for r in exposure) >= 300.0  # both harvests' exposure
    flows = live.panel_rows("hypoxia-reactor-run", "Gas flows (mass-flow controllers)")
    assert max(r["N2"] for r in flows) > 0  # the purge down from air


def test_fleet_overview_shows_current_values_mid_run(live: Live) -> None:
    o2 = live.panel_rows("hypoxia-fleet", "O2: measured vs set point")
    (ws1,) = o2
    assert ws1["reactor"] == live.run.reactor
    assert ws1["set point"] == pytest.approx(5.0)
    assert ws1["measured"] == pytest.approx(5.0, abs=0.3)
    (phase,) = live.panel_rows("hypoxia-fleet", "Phase")
    assert (phase["phase"], phase["state"], phase["run_id"]) == (
        "hypoxic hold",
        "running",
        live.run.run_id,
    )
    (last,) = live.panel_rows("hypoxia-fleet", "Last telemetry")
    now_ms = live.run.start_ms + FLEET_NOW_S * 1000
    assert now_ms - 2000 <= last["time"] <= now_ms  # the time of the last message (1 Hz)
    (exposure,) = live.panel_rows("hypoxia-fleet", "In-spec exposure")
    assert 0 < exposure["exposure"] < FLEET_NOW_S


def test_victoriametrics_names_match_the_docs(tmp_path: Path, recorded: RecordedRun) -> None:
    """VictoriaMetrics serves no InfluxQL; the docs' PromQL names (``telemetry_o2_pct``) hold."""
    if not VictoriaMetrics.available():
        pytest.skip("needs victoria-metrics (scripts/test installs it)")
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    try:
        params = urllib.parse.urlencode({"bucket": "hypoxia", "precision": "us"})
        body = "\n".join(recorded.lines()).encode()
        request = urllib.request.Request(f"{vm.url}/api/v2/write?{params}", data=body)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass
        vm.flush()
        promql = f'telemetry_o2_pct{{site="{recorded.site}",reactor="{recorded.reactor}"}}'
        assert promql in DOCS.read_text()
        at = (recorded.start_ms + FLEET_NOW_S * 1000) / 1000
        query = urllib.parse.urlencode({"query": promql, "time": at})
        with urllib.request.urlopen(f"{vm.url}/api/v1/query?{query}", timeout=10) as resp:  # noqa: S310
            data = json.loads(resp.read())["data"]["result"]
        (sample,) = data
        assert sample["metric"]["run_id"] == recorded.run_id
        assert float(sample["value"][1]) == pytest.approx(5.0, abs=0.3)
        # its /query endpoint only fakes SHOW DATABASES (for Telegraf): no InfluxQL data
        q = panel_query("hypoxia-fleet", "O2: measured vs set point")
        values = {"site": recorded.site, "reactor": recorded.reactor}
        influxql = interpolate(q.text, values, recorded.start_ms, recorded.end_ms)
        params = urllib.parse.urlencode({"db": "hypoxia", "q": influxql})
        with urllib.request.urlopen(f"{vm.url}/query?{params}", timeout=10) as resp:  # noqa: S310
            (result,) = json.loads(resp.read())["results"]
        assert all(s["name"] != "telemetry" for s in series(result)), result
    finally:
        vm.stop()


# ================================================================================== Telegraf


def test_telegraf_consumes_telemetry_with_qos1_persistent_session_and_topic_tags() -> None:
    conf = telegraf_conf()
    assert conf["agent"]["omit_hostname"] is True  # a host tag would make a different series
    (mqtt,) = conf["inputs"]["mqtt_consumer"]
    assert mqtt["topics"] == ["hypoxia/v1/+/+/telemetry"]
    assert mqtt["qos"] == 1
    assert mqtt["persistent_session"] is True
    assert mqtt["client_id"]  # persistent sessions need a fixed client id
    assert mqtt["topic_tag"] == ""
    assert mqtt["data_format"] == "xpath_json"
    (parsing,) = mqtt["topic_parsing"]
    assert parsing["topic"] == mqtt["topics"][0]
    topic, tags = parsing["topic"].split("/"), parsing["tags"].split("/")
    assert len(tags) == len(topic)
    assert {tags[i] for i, level in enumerate(topic) if level == "+"} == {"site", "reactor"}
    assert {t for t in tags if t != "_"} == {"site", "reactor"}


def test_telegraf_writes_the_recorders_telemetry_schema(recorded: RecordedRun) -> None:
    """Same measurement, tags, field names and types and timestamp rule as recorder/points.py,
    checked against every key of the recorded telemetry messages."""
    (mqtt,) = telegraf_conf()["inputs"]["mqtt_consumer"]
    (xpath,) = mqtt["xpath"]
    assert xpath["metric_name"] == "'telemetry'"
    topic_tags = {t for t in mqtt["topic_parsing"][0]["tags"].split("/") if t != "_"}
    assert topic_tags | set(xpath["tags"]) == set(TELEMETRY_TAGS)
    assert all(xpath["tags"][tag] == tag for tag in xpath["tags"])
    messages = recorded.of_kind("telemetry")
    keys = {k for m in messages for k in m} - SKIP
    strings = {k for k in keys if k.endswith("_quality") or k == "phase_state"}
    integers = {"seq", "pump_on"}
    numbers = keys - strings - integers
    assert all(
        m[k] is None or (isinstance(m[k], int | float) and not isinstance(m[k], bool))
        for m in messages
        for k in numbers
    )
    assert xpath["fields"] == {k: f"number({k})" for k in numbers}
    assert xpath["fields_int"] == {"seq": "seq", "pump_on": "number(pump_on = 'true')"}
    for name in ("'phase_state'", "'_quality'", "string-length(.) > 0"):
        assert name in xpath["field_selection"]
    assert {k[-8:] for k in strings if k != "phase_state"} == {"_quality"}
    # ts_ms * 1000 + seq mod 1000 µs, the recorder's rule (recorder.points.timestamp_us)
    assert xpath["timestamp"] == "ts_ms * 1000 + (seq mod 1000)"
    assert xpath["timestamp_format"] == "unix_us"
    assert all(timestamp_us(m) == m["ts_ms"] * 1000 + m["seq"] % 1000 for m in messages)


def test_telegraf_outputs_write_where_grafana_reads() -> None:
    conf = telegraf_conf()
    (out,) = conf["outputs"]["influxdb"]
    database = env_defaults()["HYPOXIA_INFLUXDB_DATABASE"]
    assert out["database"] == f"${{HYPOXIA_INFLUXDB_DATABASE:-{database}}}"
    assert out["namepass"] == ["telemetry"]
    # the commented InfluxDB 2 / 3 output parses once uncommented
    text = TELEGRAF.read_text()
    block = text[text.index("# [[outputs.influxdb_v2]]") :]
    v2 = tomllib.loads("\n".join(line.removeprefix("# ") for line in block.splitlines()))
    (out2,) = v2["outputs"]["influxdb_v2"]
    assert {"urls", "token", "organization", "bucket"} <= set(out2)
    assert out2["bucket"] == out["database"]


def test_telegraf_environment_defaults_expand_to_a_working_config() -> None:
    """Telegraf's ``${VAR:-default}`` expansion with nothing set gives loopback defaults."""
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", TELEGRAF.read_text())
    text = re.sub(r"\$\{\w+\}", "", text)
    conf = tomllib.loads(text)
    (mqtt,) = conf["inputs"]["mqtt_consumer"]
    assert mqtt["servers"] == ["tcp://127.0.0.1:1883"]
    assert mqtt["client_id"] == "hypoxia-telegraf"
    assert conf["outputs"]["influxdb"][0]["urls"] == ["http://127.0.0.1:8086"]
    assert conf["outputs"]["influxdb"][0]["database"] == "hypoxia"


# ------------------------------------------------------------------------------- alert rules

ALERTS_FILE = GRAFANA / "provisioning/alerting/hypoxia-alerts.yaml"
ALERT_UIDS = {
    "hypoxia-harvest-due",
    "hypoxia-harvest-overdue",
    "hypoxia-alarm-high",
    "hypoxia-instrument-lost",
}
# Grafana's file-provisioning format for alert rules, from its documentation ("Provision alerting
# resources > Use configuration files to provision", grafana.com/docs/grafana/latest/alerting/
# set-up/provision-alerting-resources/file-provisioning/, "Import alert rules"): the documented
# keys of a rule group, a rule and a query, their types, and the allowed states.
ALERT_TOP_KEYS = {"apiVersion", "groups", "deleteRules"}
ALERT_GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}
ALERT_RULE_REQUIRED = {"uid", "title", "condition", "data"}
ALERT_RULE_KEYS = ALERT_RULE_REQUIRED | {
    "noDataState",
    "execErrState",
    "for",
    "keep_firing_for",
    "annotations",
    "labels",
    "isPaused",
    "notification_settings",
    "missing_series_evals_to_resolve",
}
ALERT_QUERY_KEYS = {"refId", "datasourceUid", "queryType", "relativeTimeRange", "model"}
NO_DATA_STATES = {"NoData", "Alerting", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Error", "Alerting", "OK", "KeepLast"}
EXPRESSION_TYPES = {"math", "reduce", "resample", "classic_conditions", "threshold", "sql"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
ALERT_UID = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of the provisioned alert-rule groups."""
    doc = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def check_alert_provisioning(doc: dict[str, Any]) -> list[str]:
    """Problems of one alert-rule provisioning file against Grafana's documented format."""
    problems: list[str] = []
    if doc.get("apiVersion") != 1:
        problems.append("apiVersion must be 1")
    problems += [f"unknown key {k}" for k in set(doc) - ALERT_TOP_KEYS]
    uids: set[str] = set()
    for group in doc.get("groups", []):
        where = f"group {group.get('name')!r}"
        problems += [f"{where}: unknown key {k}" for k in set(group) - ALERT_GROUP_KEYS]
        problems += [f"{where}: missing {k}" for k in {"name", "folder", "rules"} - set(group)]
        if not isinstance(group.get("orgId", 1), int):
            problems.append(f"{where}: orgId must be an integer")
        if not DURATION.match(str(group.get("interval", "1m"))):
            problems.append(f"{where}: interval {group.get('interval')!r} is not a duration")
        titles: set[str] = set()
        for rule in group.get("rules", []):
            at = f"{where}: rule {rule.get('uid')!r}"
            if not ALERT_UID.match(str(rule.get("uid", ""))) or rule.get("uid") in uids:
                problems.append(f"{at}: uid must be unique, 1-40 of [a-zA-Z0-9-_]")
            if rule.get("title") in titles:
                problems.append(f"{at}: title must be unique in its group")
            uids.add(str(rule.get("uid")))
            titles.add(str(rule.get("title")))
            problems += check_alert_rule(at, rule)
    return problems


def check_alert_rule(at: str, rule: dict[str, Any]) -> list[str]:
    """Problems of one rule: keys, states, durations, labels, and its queries."""
    problems = [f"{at}: unknown key {k}" for k in set(rule) - ALERT_RULE_KEYS]
    problems += [f"{at}: missing {k}" for k in ALERT_RULE_REQUIRED - set(rule)]
    if rule.get("noDataState", "NoData") not in NO_DATA_STATES:
        problems.append(f"{at}: noDataState {rule.get('noDataState')!r}")
    if rule.get("execErrState", "Error") not in EXEC_ERR_STATES:
        problems.append(f"{at}: execErrState {rule.get('execErrState')!r}")
    if not DURATION.match(str(rule.get("for", "0s"))):
        problems.append(f"{at}: for {rule.get('for')!r} is not a duration")
    for key in ("annotations", "labels"):
        values = rule.get(key, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            problems.append(f"{at}: {key} must map strings to strings")
    refs: list[str] = []
    for query in rule.get("data", []):
        problems += check_alert_query(f"{at}: {query.get('refId')}", query, refs)
        refs.append(str(query.get("refId")))
    if rule.get("condition") not in refs:
        problems.append(f"{at}: condition {rule.get('condition')!r} is no refId")
    return problems


def check_alert_query(at: str, query: dict[str, Any], earlier: list[str]) -> list[str]:
    """Problems of one query or expression of a rule (``earlier``: the refIds before it)."""
    ref = query.get("refId")
    problems = [f"{at}: unknown key {k}" for k in set(query) - ALERT_QUERY_KEYS]
    if not ref or ref in earlier:
        problems.append(f"{at}: refId missing or repeated")
    span = query.get("relativeTimeRange", {"from": 0, "to": 0})
    if not (isinstance(span.get("from"), int) and isinstance(span.get("to"), int)):
        problems.append(f"{at}: relativeTimeRange from/to are seconds")
    elif span["from"] < span["to"]:
        problems.append(f"{at}: relativeTimeRange from < to")
    model = query.get("model", {})
    if model.get("refId", ref) != ref:
        problems.append(f"{at}: model.refId differs")
    if query.get("datasourceUid") == "__expr__":
        if model.get("type") not in EXPRESSION_TYPES:
            problems.append(f"{at}: expression type {model.get('type')!r}")
        source = model.get("expression")
        if model.get("type") in {"reduce", "threshold", "resample"} and source not in earlier:
            problems.append(f"{at}: expression {source!r} is no earlier refId")
    elif not query.get("datasourceUid"):
        problems.append(f"{at}: datasourceUid missing")
    return problems


def test_alert_rules_load_with_grafanas_provisioning_format() -> None:
    """The alert rules pass the structural check, and the check catches broken files."""
    doc = yaml.safe_load(ALERTS_FILE.read_text())
    assert check_alert_provisioning(doc) == []
    assert {rule["uid"] for rule in alert_rules()} == ALERT_UIDS
    for rule in alert_rules():
        (query,) = [q for q in rule["data"] if q["datasourceUid"] != "__expr__"]
        assert query["datasourceUid"] == PROVISIONED_DS["uid"], rule["uid"]
        assert query["model"]["rawQuery"] is True
        assert "$timeFilter" in query["model"]["query"]
        assert rule["labels"]["severity"] in {"medium", "high"}
        assert rule["annotations"]["summary"]
    # the check is not vacuous
    broken = yaml.safe_load(ALERTS_FILE.read_text())
    rule = broken["groups"][0]["rules"][0]
    rule["noDataState"] = "Pending"
    rule["condition"] = "Z"
    rule["datasource_uid"] = "x"
    rule["data"][1]["model"]["expression"] = "Q"
    assert len(check_alert_provisioning(broken)) == 4


def evaluate_rule(live: Live, rule: dict[str, Any], now_ms: int) -> dict[tuple[str, str], float]:
    """Evaluate an alert rule at ``now_ms`` as Grafana does: query A over its relative time range,
    reduce each series to its last value (B), keep those above the threshold (C).

    Returns:
        The firing instances: (site, reactor) -> the reduced value.
    """
    data = {q["refId"]: q for q in rule["data"]}
    query = data["A"]
    span = query["relativeTimeRange"]
    text = query["model"]["query"].replace(
        "$timeFilter",
        f"time >= {now_ms - span['from'] * 1000}ms and time <= {now_ms - span['to'] * 1000}ms",
    )
    assert data["B"]["model"] == {**data["B"]["model"], "type": "reduce", "reducer": "last"}
    (condition,) = data["C"]["model"]["conditions"]
    assert condition["evaluator"] == {"type": "gt", "params": [0]}
    firing: dict[tuple[str, str], float] = {}
    for one in series(live.query(text)):
        assert one["columns"] == ["time", "active"], one
        last = float(one["values"][-1][1])
        if last > 0:
            firing[one["tags"]["site"], one["tags"]["reactor"]] = last
    return firing


def rule_by_uid(uid: str) -> dict[str, Any]:
    """One provisioned alert rule."""
    (rule,) = [r for r in alert_rules() if r["uid"] == uid]
    return rule


def event_at(run: RecordedRun, kind: str, alarm: str, to: str, nth: int = 0) -> int:
    """Source time (ms) of the nth alarm (or event) transition of the recorded run."""
    times = [
        int(m["ts_ms"])
        for m in run.of_kind("event")
        if m["kind"] == kind
        and (kind != "alarm" or (m["detail"]["alarm"] == alarm and m["detail"]["to"] == to))
    ]
    return times[nth]


SYNTHETIC_ALARMS = {"harvest_overdue", "o2_sensor", "co2_sensor", "temp_sensor"}


def alarm_message(
    template: dict[str, Any], at_ms: int, seq: int, alarm: str, **detail: str
) -> dict[str, Any]:
    """An ``alarm`` event as the controller publishes it, at ``at_ms``."""
    message = {**template, "ts_ms": at_ms, "seq": seq, "detail": {"alarm": alarm, **detail}}
    message["t_s"] = float(template["t_s"]) + (at_ms - int(template["ts_ms"])) / 1000
    return message


@pytest.fixture(scope="module")
def alarms_live(live: Live) -> Live:
    """The recorded run with its sensor and overdue alarm transitions replaced by known ones (the
    run's own sensor alarms depend on timing), in a database of its own, through the recorder's
    converter. Times from the first harvest-due alarm T: harvest_overdue (high) T+2 s to T+4 s;
    o2_sensor (high) and co2_sensor (medium) T+10 s to T+12 s; co2_sensor alone T+20 s to T+22 s.
    """
    run = live.run
    kept = [
        (k, m)
        for k, m in run.messages
        if not (k == "event" and m["kind"] == "alarm" and m["detail"]["alarm"] in SYNTHETIC_ALARMS)
    ]
    template = next(m for k, m in kept if k == "event" and m["kind"] == "alarm")
    t0 = event_at(run, "alarm", "harvest_due", "active_unacknowledged")
    seq = max(int(m["seq"]) for _, m in run.messages)
    plan = [
        (2, 4, "harvest_overdue", "high"),
        (10, 12, "o2_sensor", "high"),
        (10, 12, "co2_sensor", "medium"),
        (20, 22, "co2_sensor", "medium"),
    ]
    extra = []
    for on_s, off_s, alarm, priority in plan:
        for at_s, old, new in (
            (on_s, "normal", "active_unacknowledged"),
            (off_s, "active_unacknowledged", "returned_unacknowledged"),
        ):
            seq += 1
            message = alarm_message(
                template, t0 + at_s * 1000, seq, alarm, priority=priority, to=new, message=alarm
            )
            message["detail"]["from"] = old
            extra.append(("event", message))
    synthetic = RecordedRun(kept + extra, run.site, run.reactor, run.run_id, run.status)
    database = "hypoxia_alarms"
    influxdb1_load(live.url, database, synthetic)
    return Live(live.url, database, live.method, live.headers, synthetic)


def test_the_harvest_due_rule_fires_while_a_harvest_is_due_in_the_recorded_run(live: Live) -> None:
    """Both harvests of the recorded run: due until done, and quiet before, between and after."""
    run = live.run
    key = (run.site, run.reactor)
    due = rule_by_uid("hypoxia-harvest-due")
    first_due = event_at(run, "alarm", "harvest_due", "active_unacknowledged")
    first_done = event_at(run, "alarm", "harvest_due", "returned_unacknowledged")
    second_due = event_at(run, "alarm", "harvest_due", "active_unacknowledged", 1)
    second_done = event_at(run, "alarm", "harvest_due", "returned_unacknowledged", 1)
    assert evaluate_rule(live, due, first_due - 1000) == {}
    assert evaluate_rule(live, due, first_due + 500) == {key: 1.0}
    assert evaluate_rule(live, due, first_done + 500) == {}
    assert evaluate_rule(live, due, second_due + 500) == {key: 1.0}
    assert evaluate_rule(live, due, second_done + 500) == {}
    assert evaluate_rule(live, due, run.end_ms + 60_000) == {}


def test_overdue_high_priority_and_instrument_lost_rules_fire_on_their_alarms(
    alarms_live: Live,
) -> None:
    """Each rule fires exactly while its alarms are active, one instance per site and reactor."""
    run = alarms_live.run
    key = (run.site, run.reactor)
    t0 = event_at(run, "alarm", "harvest_due", "active_unacknowledged")
    overdue = rule_by_uid("hypoxia-harvest-overdue")
    high = rule_by_uid("hypoxia-alarm-high")
    lost = rule_by_uid("hypoxia-instrument-lost")
    expected = {  # seconds after T -> (overdue, high, lost)
        -1.0: ({}, {}, {}),
        2.5: ({key: 1.0}, {key: 1.0}, {}),  # harvest_due (medium) is active too: not counted
        4.5: ({}, {}, {}),
        10.5: ({}, {key: 1.0}, {key: 2.0}),  # o2_sensor (high) and co2_sensor (medium)
        12.5: ({}, {}, {}),
        20.5: ({}, {}, {key: 1.0}),  # co2_sensor (medium) alone
        22.5: ({}, {}, {}),
    }
    for after_s, (want_overdue, want_high, want_lost) in expected.items():
        at = t0 + round(after_s * 1000)
        assert evaluate_rule(alarms_live, overdue, at) == want_overdue, after_s
        assert evaluate_rule(alarms_live, high, at) == want_high, after_s
        assert evaluate_rule(alarms_live, lost, at) == want_lost, after_s
    for rule in (overdue, high, lost):
        assert evaluate_rule(alarms_live, rule, run.end_ms + 60_000) == {}
