"""docs/reference.md, generated from the docstrings KFP compiles.

The pipeline parameters and the component catalog are written from the same docstrings
that become descriptions in the Kubeflow UI, so the reference cannot drift from what a user
sees there; a test fails when the committed file is out of date (`make docs` rewrites it).
The README keeps the user guide and links here, so the two never hold the same table twice.
"""

from pathlib import Path

import docstring_parser
from kfp.dsl.base_component import BaseComponent

from ctloop.pipelines.catalog import COMPONENTS
from ctloop.pipelines.experiment import build_experiment_pipeline
from ctloop.pipelines.monitoring import build_monitoring_pipeline
from ctloop.pipelines.training import build_training_pipeline

HEADER = """# ctloop reference

<!-- Generated from the pipelines' and components' docstrings by `make docs`; do not edit. -->

What the Kubeflow UI shows for each pipeline parameter and component input and output, from
the same docstrings. The user guide is the [README](../README.md).

- [Training pipeline parameters](#training-pipeline-parameters)
- [Monitoring pipeline parameters](#monitoring-pipeline-parameters)
- [A/B analysis pipeline parameters](#ab-analysis-pipeline-parameters)
- [Component catalog](#component-catalog)
"""


def _type_name(kfp_type: str) -> str:
    return kfp_type.split("@")[0].removeprefix("system.")


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _default(value) -> str:
    return "" if value is None else f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _component_section(name: str, component: BaseComponent) -> list[str]:
    spec = component.component_spec
    documented = docstring_parser.parse(component.python_func.__doc__ or "")
    described = {p.arg_name: p.description for p in documented.params}
    summary = _one_line(documented.short_description)
    lines = [f"### `{name}`", "", summary, ""]
    if documented.long_description:
        lines += [_one_line(documented.long_description), ""]
    lines += ["| | name | type | default | description |", "| --- | --- | --- | --- | --- |"]
    for key, spec_input in (spec.inputs or {}).items():
        default = _default(spec_input.default) if spec_input.optional else "required"
        lines.append(
            f"| in | `{key}` | {_type_name(spec_input.type)} | {default} | "
            f"{_one_line(described.get(key))} |"
        )
    for key, spec_output in (spec.outputs or {}).items():
        lines.append(
            f"| out | `{key}` | {_type_name(spec_output.type)} | | "
            f"{_one_line(described.get(key) or spec_output.description)} |"
        )
    return lines + [""]


def _pipeline_section(title: str, pipeline: BaseComponent) -> list[str]:
    lines = [
        f"## {title} pipeline parameters",
        "",
        "| parameter | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for key, spec_input in pipeline.component_spec.inputs.items():
        lines.append(
            f"| `{key}` | {_type_name(spec_input.type)} | {_default(spec_input.default)} | "
            f"{_one_line(spec_input.description)} |"
        )
    return lines + [""]


def reference_markdown() -> str:
    """The whole of docs/reference.md: pipeline parameters and component catalog."""
    lines = [HEADER]
    lines += _pipeline_section("Training", build_training_pipeline())
    lines += _pipeline_section("Monitoring", build_monitoring_pipeline())
    lines += _pipeline_section("A/B analysis", build_experiment_pipeline())
    lines += ["## Component catalog", ""]
    for name, component in COMPONENTS.items():
        lines += _component_section(name, component)
    return "\n".join(lines)


def write_reference(path: str | Path) -> bool:
    """Write the reference to `path`; return whether anything changed."""
    path = Path(path)
    text = reference_markdown()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True
