"""Reading compiled pipeline YAML the way the compile tests check it."""

from pathlib import Path

import yaml


def pipeline_spec(path: Path) -> dict:
    """A compiled pipeline's spec, with the platform spec (second YAML document) under
    `platforms`."""
    spec, *platform = yaml.safe_load_all(path.read_text())
    return {**spec, **(platform[0] if platform else {})}


def tasks_under_condition(spec: dict) -> dict[str, str]:
    """Map each task to the conditions guarding it, outermost first, joined by " | "."""
    guarded = {}

    def walk(dag: dict, conditions: list[str]) -> None:
        for name, task in dag.get("tasks", {}).items():
            condition = task.get("triggerPolicy", {}).get("condition")
            inner = conditions + [condition] if condition else conditions
            if inner:
                guarded[name] = " | ".join(inner)
            component = spec["components"][task["componentRef"]["name"]]
            walk(component.get("dag", {}), inner)

    walk(spec["root"]["dag"], [])
    return guarded


def waits_for(spec: dict) -> dict[str, set[str]]:
    """Map each task to the tasks it waits for: its own `dependentTasks` and those of every
    branch (or nested pipeline) holding it, where KFP puts a dependency on a branch."""
    waiting = {}

    def walk(dag: dict, inherited: set[str]) -> None:
        for name, task in dag.get("tasks", {}).items():
            upstream = inherited | set(task.get("dependentTasks", []))
            waiting[name] = upstream
            component = spec["components"][task["componentRef"]["name"]]
            walk(component.get("dag", {}), upstream)

    walk(spec["root"]["dag"], set())
    return waiting


def task_inputs(spec: dict, parameter: str) -> dict[str, dict]:
    """Each task (nested pipelines' included) taking `parameter` -> where its value comes from."""
    return {
        name: task["inputs"]["parameters"][parameter]
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if parameter in task.get("inputs", {}).get("parameters", {})
    }


def body_of(spec: dict) -> dict:
    """The spec as if the pipeline's body were its root: `ctloop compile` runs each pipeline
    inside an exit handler (pipelines/run_end.py), whose one task is the body pipeline."""
    body = spec["components"][f"comp-{spec['pipelineInfo']['name']}"]
    return {**spec, "root": body}
