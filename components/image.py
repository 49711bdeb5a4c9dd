"""The one image every ctloop component runs in.

The tag is the package version, never `:latest`: a compiled pipeline names exactly the
code it was compiled from. `ctloop compile --image` overrides it (e.g. a registry mirror).
"""

from ctloop import __version__

IMAGE_REPOSITORY = "ghcr.io/ctloop/ctloop"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
