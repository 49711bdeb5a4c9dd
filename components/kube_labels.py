"""Kubernetes label and object-name rules, checked before anything reaches the API server.

The same team / project / cost-center labels go on every pipeline pod (`ctloop compile
--label`) and on the InferenceService (the deploy step's `labels`); a label the API server
would refuse must fail where it is given, naming the key, not when a pod or the service is
created. The same holds for the names of objects a step is told to use (a Secret, a service
account). Each check raises the caller's own error class, as `json_parameter` does.
"""

import re
from collections.abc import Mapping

LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""A DNS-1123 subdomain: what names a Secret or a ServiceAccount."""
LABEL_PREFIX = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
)


def check_labels(labels: Mapping[str, str], error: type[ValueError]) -> dict[str, str]:
    """`labels` if Kubernetes accepts each key and value, else `error` naming the first that
    it refuses and the rule."""
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (
            not name
            or not LABEL_NAME.fullmatch(name)
            or (prefix and not LABEL_PREFIX.fullmatch(prefix))
            or len(prefix) > 253
        ):
            raise error(
                f"label key {key!r}: expected [prefix/]name, the name at most 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        if not isinstance(value, str) or not LABEL_NAME.fullmatch(value):
            raise error(
                f"label {key}={value!r}: a value is a text of at most 63 letters, digits, '-', "
                "'_' or '.', starting and ending with a letter or digit (or empty)"
            )
    return dict(labels)


def check_object_name(name: str, what: str, error: type[ValueError]) -> str:
    """`name` if it can name a Kubernetes object (a DNS-1123 subdomain), else `error` saying
    `what` it was meant to name and the rule."""
    if len(name) > 253 or not OBJECT_NAME.fullmatch(name):
        raise error(
            f"{what} {name!r} is not a Kubernetes object name (a DNS-1123 subdomain: "
            "lower-case letters, digits, '-' and '.', at most 253)"
        )
    return name
