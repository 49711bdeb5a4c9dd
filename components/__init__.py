"""Step families of the ctloop pipelines: plain library modules plus thin KFP wrappers.

Nothing imported here may use kfp's authoring API: a running component imports these
modules with `_KFP_RUNTIME=true`, where `kfp.dsl.component` does not exist.
"""
