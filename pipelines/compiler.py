"""Compile every pipeline and component to YAML, deterministically.

Same source and options give byte-identical files, so CI can diff what it compiled with
what is committed and upload only real changes.
"""

from pathlib import Path

from kfp import compiler

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.catalog import catalog
from ctloop.pipelines.placement import GpuPlacement
from ctloop.pipelines.training import build_training_pipeline


def compile_all(
    output_dir: str | Path, image: str = DEFAULT_IMAGE, placement: GpuPlacement | None = None
) -> list[Path]:
    """Write `pipelines/training.yaml` and `components/<name>.yaml`; return the paths."""
    output_dir = Path(output_dir)
    (output_dir / "pipelines").mkdir(parents=True, exist_ok=True)
    (output_dir / "components").mkdir(parents=True, exist_ok=True)
    written = [output_dir / "pipelines" / "training.yaml"]
    compiler.Compiler().compile(build_training_pipeline(image, placement), str(written[0]))
    for name, component in sorted(catalog(image).items()):
        path = output_dir / "components" / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
