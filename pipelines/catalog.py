"""The component catalog: every ctloop component, by name, and rebinding them to an image.

`ctloop compile` writes one YAML per entry; the pipelines take their components from here
so that `--image` reaches every task.
"""

from __future__ import annotations

import copy

from kfp.dsl.base_component import BaseComponent

from ctloop.components.batch_scoring.component import score_dataset
from ctloop.components.canary.component import (
    analyze_canary,
    promote_version,
    resolve_control_variant,
    roll_back_variants,
    roll_back_version,
)
from ctloop.components.data.component import (
    load_dataset,
    resolve_window,
    split_dataset,
    validate_dataset,
)
from ctloop.components.deploy.component import deploy_model
from ctloop.components.drift.component import monitor_drift
from ctloop.components.evaluate.component import evaluate_model
from ctloop.components.experiment.component import analyze_ab
from ctloop.components.features.component import materialize_features
from ctloop.components.gate.component import quality_gate
from ctloop.components.image import DEFAULT_IMAGE
from ctloop.components.notify.component import notify_run_end
from ctloop.components.registry.component import (
    record_rejection,
    register_model,
    write_model_card,
)
from ctloop.components.retrain.component import (
    keep_champion,
    prepare_retraining_data,
    route_retraining,
    start_retraining_run,
    summarize_retraining,
)
from ctloop.components.shadow.component import analyze_shadow
from ctloop.components.train.component import train_model
from ctloop.components.trainjob.component import train_model_distributed

COMPONENTS: dict[str, BaseComponent] = {
    component.name.replace("-", "_"): component
    for component in (
        load_dataset,
        materialize_features,
        validate_dataset,
        split_dataset,
        train_model,
        train_model_distributed,
        evaluate_model,
        quality_gate,
        register_model,
        write_model_card,
        record_rejection,
        deploy_model,
        analyze_canary,
        analyze_shadow,
        promote_version,
        roll_back_version,
        resolve_control_variant,
        analyze_ab,
        roll_back_variants,
        resolve_window,
        score_dataset,
        monitor_drift,
        route_retraining,
        prepare_retraining_data,
        start_retraining_run,
        summarize_retraining,
        keep_champion,
        notify_run_end,
    )
}


def with_image(component: BaseComponent, image: str) -> BaseComponent:
    """A copy of `component` that runs in `image` (the original is left untouched)."""
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        raise ValueError(f"image {image!r} must be pinned to a tag or digest, not latest")
    bound = copy.deepcopy(component)
    bound.component_spec.implementation.container.image = image
    # An input that names the image of other pods (the TrainJob's workers) follows it too.
    for spec in (bound.component_spec.inputs or {}).values():
        if spec.default == DEFAULT_IMAGE:
            spec.default = image
    return bound


FEAST_STEPS = ("load_dataset", "materialize_features")
"""The components that use Feast when given a feature repository: they run in the Feast image
(`ctloop compile --feast-image`), since Feast's pins cannot join the main image's."""


def catalog(image: str, feast_image: str = "") -> dict[str, BaseComponent]:
    """Every component, bound to `image`; `FEAST_STEPS` to `feast_image` when one is given."""
    return {
        name: with_image(component, feast_image if feast_image and name in FEAST_STEPS else image)
        for name, component in COMPONENTS.items()
    }
