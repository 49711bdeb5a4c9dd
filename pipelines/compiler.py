"""Compile every pipeline and component to YAML, deterministically.

Same source and options give byte-identical files, so the YAML is an output of the source,
compiled by CI on every change rather than committed beside it.

Two targets:
- `kfp` (`compile_all`, `ctloop compile`): Kubeflow Pipelines on Kubernetes, into
  `<output>/pipelines/{training,monitoring,ab-analysis}.yaml` and
  `<output>/components/<name>.yaml`;
- `vertex` (`compile_vertex`, `ctloop compile --target vertex`): the training pipeline for
  Vertex AI Pipelines, its train step a Vertex AI CustomJob, into `<output>/vertex/training.yaml`.
  The folder is apart from `pipelines/`, which `ctloop upload` publishes to a KFP endpoint.

Every executor of a Kubeflow pipeline gets the image and the compile options in its
environment (`CTLOOP_IMAGE`, `CTLOOP_COMPILE_OPTIONS`, `with_compile_env`), so a registered
version records what it was built in and how (`ctloop.components.lineage`). The options are
JSON with sorted keys: the same options give the same bytes.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.components.lineage import COMPILE_OPTIONS_ENV, IMAGE_ENV
from ctloop.pipelines.catalog import catalog
from ctloop.pipelines.experiment import build_experiment_pipeline
from ctloop.pipelines.monitoring import build_monitoring_pipeline
from ctloop.pipelines.placement import GpuPlacement, VertexPlacement, label_every_pod
from ctloop.pipelines.run_end import with_run_end_word
from ctloop.pipelines.training import build_training_pipeline


def compile_all(
    output_dir: str | Path,
    image: str = DEFAULT_IMAGE,
    placement: GpuPlacement | None = None,
    pod_labels: Mapping[str, str] | None = None,
    webhook_secret: str = "",
    feast_image: str = "",
) -> list[Path]:
    """Write `pipelines/{training,monitoring,ab-analysis}.yaml` and `components/<name>.yaml`;
    return the paths, the training pipeline first. `pod_labels` go on every pipeline pod and,
    as the default of the pipelines' `resource_labels`, on the InferenceService they deploy.

    Each pipeline runs inside an exit handler that posts a word to a webhook when the run ends,
    succeeded or failed (`run_end.with_run_end_word`): the run's `webhook_url` parameter, else
    the `url` key of the Kubernetes Secret `webhook_secret` names ("": none). The steps that
    may use Feast (`catalog.FEAST_STEPS`) run in `feast_image` when one is given."""
    output_dir = Path(output_dir)
    (output_dir / "pipelines").mkdir(parents=True, exist_ok=True)
    (output_dir / "components").mkdir(parents=True, exist_ok=True)
    # Sorted: KFP's header lists a dict default (resource_labels) in its protobuf map's order,
    # which can follow insertion order, so `--label b=2 --label a=1` gave other bytes than
    # `--label a=1 --label b=2`.
    pod_labels = dict(sorted(pod_labels.items())) if pod_labels else None
    options = compile_options(
        "kfp", image, placement or GpuPlacement(), pod_labels or {}, feast_image
    )
    notify = catalog(image)["notify_run_end"]
    written = []
    for name, body in (
        (
            "training",
            build_training_pipeline(
                image, placement, resource_labels=pod_labels, feast_image=feast_image
            ),
        ),
        (
            "monitoring",
            build_monitoring_pipeline(
                image, placement, resource_labels=pod_labels, feast_image=feast_image
            ),
        ),
        ("ab-analysis", build_experiment_pipeline(image)),
    ):
        path = output_dir / "pipelines" / f"{name}.yaml"
        pipeline = with_run_end_word(body, notify, webhook_secret=webhook_secret)
        labelled = label_every_pod(pipeline, pod_labels or {})
        compiler.Compiler().compile(with_compile_env(labelled, image, options), str(path))
        written.append(path)
    for name, component in sorted(catalog(image, feast_image).items()):
        path = output_dir / "components" / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written


def compile_options(
    target: str,
    image: str,
    placement: GpuPlacement,
    pod_labels: Mapping[str, str],
    feast_image: str = "",
) -> str:
    """What a compile was given, as the JSON text `CTLOOP_COMPILE_OPTIONS` carries: target,
    image (and the Feast steps' image, when another), the train step's placement (accelerator,
    nodes, tolerations, spot, retries) and the pod labels."""
    options = {
        "target": target,
        "image": image,
        **({"feast_image": feast_image} if feast_image else {}),
        "placement": asdict(placement),
        "labels": dict(pod_labels),
    }
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def with_compile_env(pipeline: GraphComponent, image: str, options: str) -> GraphComponent:
    """`pipeline` with `CTLOOP_IMAGE` and `CTLOOP_COMPILE_OPTIONS` in the environment of every
    container executor, nested pipelines' included (the IR keeps all executors in one place);
    a value already there under either name is replaced."""
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    ours = {IMAGE_ENV: image, COMPILE_OPTIONS_ENV: options}
    for name in sorted(executors):
        if "container" not in executors[name]:  # an importer: no container of ours
            continue
        container = executors[name]["container"]
        present = container["env"] if "env" in container else []
        kept = [dict(variable) for variable in present if variable["name"] not in ours]
        container["env"] = kept + [{"name": key, "value": value} for key, value in ours.items()]
    return pipeline


def compile_vertex(
    output_dir: str | Path,
    image: str = DEFAULT_IMAGE,
    placement: VertexPlacement | None = None,
    feast_image: str = "",
) -> list[Path]:
    """Write `vertex/training.yaml`: the training pipeline with its train step a Vertex AI
    CustomJob on `placement`'s machine, every other task as for Kubeflow (the load step in
    `feast_image`, when given); return the path.

    Vertex AI has no Kubeflow Trainer, so the pipeline is built without the TrainJob branch
    and declares none of the parameters only that branch read (`trainer`, `trainjob_*`): a
    Vertex run given one is refused when it is submitted, before anything runs (the Vertex AI
    SDK: "The pipeline parameter trainer is not found in the pipeline job input
    definitions."), instead of loading and splitting the data for a step that cannot create
    a TrainJob there.

    Nor is the pipeline wrapped in `compile_all`'s exit handler: its webhook Secret is a
    Kubernetes one, and Vertex AI sends run notifications of its own (google-cloud-pipeline-
    components' `VertexNotificationEmailOp`).
    """
    from google.protobuf import json_format

    path = Path(output_dir) / "vertex" / "training.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_training_pipeline(
        image, placement or VertexPlacement(), trainjob=False, feast_image=feast_image
    )
    root = pipeline.pipeline_spec.root
    read: set[str] = set()
    pending = [json_format.MessageToDict(root.dag)]
    while pending:  # every task input, nested ones included, that names a pipeline parameter
        node = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict) and "componentInputParameter" in node:
            read.add(node["componentInputParameter"])
        pending.extend(child for child in children if isinstance(child, dict | list))
    for name in sorted(set(root.input_definitions.parameters) - read):
        del root.input_definitions.parameters[name]
    compiler.Compiler().compile(pipeline, str(path))
    return [path]
