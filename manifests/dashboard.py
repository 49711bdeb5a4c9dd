"""The Grafana dashboard of ctloop's predictors, built with grafana-foundation-sdk.

Writes `manifests/monitoring/dashboards/ctloop-predictor.json`, which the monitoring
kustomization ships as a ConfigMap labelled for Grafana's dashboard sidecar. The JSON is
committed so that `kubectl apply -k` needs no Python; tests/test_manifests.py checks that it is
exactly what this module builds. After changing a panel:

    .venv/bin/python manifests/dashboard.py          # rewrite the JSON
    .venv/bin/python manifests/dashboard.py --check  # exit 1 when the JSON is stale

The module lives beside the manifests, outside the `ctloop` package: it is a build step of a
manifest, and the package (and the images built from it) must not depend on the SDK. It is one
module, longer than most here, because its panels read top to bottom as the dashboard does.

Every query reads the predictor's series (serving/metrics.py) as the PodMonitor labels them
(job="ctloop-predictor") and counts as the alerts and canary analysis do: errors are every
outcome but "ok", latency is the histogram of successful requests, the score shift is the
binned Kolmogorov-Smirnov statistic against the same hour a day earlier.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import heatmap, stat, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARD_FILE = (
    Path(__file__).resolve().parent / "monitoring" / "dashboards" / "ctloop-predictor.json"
)
UID = "ctloop-predictor"

# The series of the dashboard's selection: the datasource, namespaces and models chosen above.
_DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
_SELECTION = 'job="ctloop-predictor", namespace=~"$namespace", model_name=~"$model_name"'
_RATE = "$__rate_interval"

LATENCY_P99_THRESHOLD_S = 0.2
ERROR_RATE_THRESHOLD = 0.01
SCORE_SHIFT_THRESHOLD = 0.1


_FAILED = 'outcome!="ok"'


def _requests(matcher: str = "") -> str:
    selection = f"{_SELECTION}, {matcher}" if matcher else _SELECTION
    return f"rate(ctloop_predictions_total{{{selection}}}[{_RATE}])"


def _latency_quantile(quantile: float, by: str) -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({by}le) "
        f"(rate(ctloop_prediction_latency_seconds_bucket{{{_SELECTION}}}[{_RATE}])))"
    )


def _error_rate(by: str) -> str:
    return f"sum by ({by}) ({_requests(_FAILED)}) / sum by ({by}) ({_requests()})"


def _score_cdf(offset: str) -> str:
    """Share of the last hour's scores at or below each bucket bound, per model."""
    window = f"[1h]{offset}"
    return (
        "sum by (namespace, model_name, le) "
        f"(increase(ctloop_prediction_score_bucket{{{_SELECTION}}}{window}))"
        " / ignoring (le) group_left sum by (namespace, model_name) "
        f"(increase(ctloop_prediction_score_count{{{_SELECTION}}}{window}))"
    )


SCORE_SHIFT = f"max by (namespace, model_name) (abs({_score_cdf('')} - {_score_cdf(' offset 1d')}))"
"""The binned KS statistic of CtloopPredictionScoreShift, without its minimum-rows guard."""


def _query(expr: str, legend: str, ref_id: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(_DATASOURCE)


def _thresholds(limit: float | None) -> dashboard_builders.ThresholdsConfig:
    steps = [dashboard_models.Threshold(value=None, color="green")]
    if limit is not None:
        steps.append(dashboard_models.Threshold(value=limit, color="red"))
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps(steps)
    )


def _timeseries(title: str, description: str, unit: str, limit: float | None = None):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(12)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .thresholds(_thresholds(limit))
    )
    if limit is not None:
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    return panel


def _variables() -> list:
    datasource = (
        dashboard_builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    )
    namespace = (
        dashboard_builders.QueryVariable("namespace")
        .label("Namespace")
        .datasource(_DATASOURCE)
        .query('label_values(ctloop_predictions_total{job="ctloop-predictor"}, namespace)')
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    model_name = (
        dashboard_builders.QueryVariable("model_name")
        .label("Model (InferenceService)")
        .datasource(_DATASOURCE)
        .query(
            'label_values(ctloop_predictions_total{job="ctloop-predictor", '
            'namespace=~"$namespace"}, model_name)'
        )
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [datasource, namespace, model_name]


def _service_panels() -> list:
    up = (
        stat.Panel()
        .title("Predictor pods up")
        .description("Scraped predictor pods answering /metrics (CtloopPredictorDown, -Missing).")
        .datasource(_DATASOURCE)
        .with_target(
            _query('sum(up{job="ctloop-predictor", namespace=~"$namespace"})', "pods up", "A")
        )
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(8)
        .span(4)
    )
    throughput = (
        _timeseries(
            "Throughput",
            "Prediction requests per second by outcome, and rows scored per second.",
            "reqps",
        )
        .span(8)
        .with_target(
            _query(
                f"sum by (outcome) ({_requests()})",
                "requests {{outcome}}",
                "A",
            )
        )
        .with_target(
            _query(
                f"sum(rate(ctloop_rows_scored_total{{{_SELECTION}}}[{_RATE}]))",
                "rows scored",
                "B",
            )
        )
    )
    latency = (
        _timeseries(
            "Latency p50 / p99",
            "Time to decode, check and score one successful request "
            "(ctloop_prediction_latency_seconds); the dashed line is the p99 alert's 200 ms.",
            "s",
            LATENCY_P99_THRESHOLD_S,
        )
        .with_target(_query(_latency_quantile(0.5, ""), "p50", "A"))
        .with_target(_query(_latency_quantile(0.99, ""), "p99", "B"))
    )
    errors = _timeseries(
        "Error rate",
        'Share of requests whose outcome is not "ok" (invalid: HTTP 400, error: HTTP 500), '
        "as the alert and canary analysis count it; the dashed line is the alert's 1 %.",
        "percentunit",
        ERROR_RATE_THRESHOLD,
    ).with_target(
        _query(
            f"sum by (outcome) ({_requests(_FAILED)}) / scalar(sum({_requests()}))",
            "{{outcome}}",
            "A",
        )
    )
    return [up, throughput, latency, errors]


def _score_panels() -> list:
    distribution = (
        heatmap.Panel()
        .title("Score distribution")
        .description(
            "Scores returned per bucket of ctloop_prediction_score (bounds 0.05 ... 1.0) over "
            "time: a band that moves is a prediction shift."
        )
        .datasource(_DATASOURCE)
        .with_target(
            _query(
                f"sum by (le) (increase(ctloop_prediction_score_bucket{{{_SELECTION}}}[{_RATE}]))",
                "{{le}}",
                "A",
            ).format(PromQueryFormat.HEATMAP)
        )
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .y_axis(heatmap.YAxisConfig().unit("short").axis_label("score"))
        .height(9)
        .span(12)
    )
    shift = (
        _timeseries(
            "Score shift (KS against the same hour yesterday)",
            "Binned Kolmogorov-Smirnov statistic between the last hour's scores and the same "
            "hour a day earlier, per model (CtloopPredictionScoreShift fires over 0.1 for 15 "
            "minutes when both hours scored at least 1000 rows).",
            "none",
            SCORE_SHIFT_THRESHOLD,
        )
        .height(9)
        .with_target(_query(SCORE_SHIFT, "{{namespace}}/{{model_name}}", "A"))
    )
    return [distribution, shift]


def _version_panels() -> list:
    by = "namespace, model_name, model_version"
    legend = "{{model_name}} v{{model_version}}"
    share = _timeseries(
        "Traffic share by model_version",
        "Share of each model's requests served by each version: during a canary, the "
        "canary's percent and the primary's rest.",
        "percentunit",
    ).with_target(
        _query(
            f"sum by ({by}) ({_requests()}) / ignoring (model_version) group_left "
            f"sum by (namespace, model_name) ({_requests()})",
            legend,
            "A",
        )
    )
    p99 = _timeseries(
        "p99 latency by model_version",
        "Canary against primary: the figure canary analysis compares (latency_p99_ms).",
        "s",
        LATENCY_P99_THRESHOLD_S,
    ).with_target(_query(_latency_quantile(0.99, f"{by}, "), legend, "A"))
    errors = _timeseries(
        "Error rate by model_version",
        "Canary against primary: the figure canary analysis compares (error_rate).",
        "percentunit",
        ERROR_RATE_THRESHOLD,
    ).with_target(_query(_error_rate(by), legend, "A"))
    mean_score = _timeseries(
        "Mean score by model_version",
        "Average score each version returns on the traffic it gets.",
        "none",
    ).with_target(
        _query(
            f"sum by ({by}) (rate(ctloop_prediction_score_sum{{{_SELECTION}}}[{_RATE}]))"
            f" / sum by ({by}) (rate(ctloop_prediction_score_count{{{_SELECTION}}}[{_RATE}]))",
            legend,
            "A",
        )
    )
    return [share, p99, errors, mean_score]


def build_dashboard() -> dashboard_builders.Dashboard:
    """The dashboard: service health, scores, and canary against primary by model version."""
    dashboard = (
        dashboard_builders.Dashboard("ctloop predictors")
        .uid(UID)
        .description(
            "ctloop's KServe predictors: latency, throughput, errors, the score distribution "
            "and its shift, and each model version side by side during a canary."
        )
        .tags(["ctloop", "kserve", "xgboost"])
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .variables(_variables())
    )
    rows = [
        ("Service", _service_panels()),
        ("Scores", _score_panels()),
        ("Canary and primary, by model_version", _version_panels()),
    ]
    panel_id = 0
    for title, panels in rows:
        panel_id += 1
        dashboard = dashboard.with_row(dashboard_builders.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            dashboard = dashboard.with_panel(panel.id(panel_id))
    return dashboard


def render() -> str:
    """The dashboard JSON as committed: keys sorted, two-space indent, newline at the end."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build_dashboard().build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON is not up to date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_FILE.read_text() if DASHBOARD_FILE.is_file() else ""
        if current != text:
            print(f"{DASHBOARD_FILE} is stale: run python manifests/dashboard.py", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_FILE.write_text(text)
    print(f"wrote {DASHBOARD_FILE} ({len(json.loads(text)['panels'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
