# The component image: every ctloop pipeline step runs in it (components/image.py names it
# ghcr.io/ctloop/ctloop:<package version>; `ctloop compile --image` points pipelines at another).
# The same file builds the Feast variant, ghcr.io/ctloop/ctloop-feast:<package version>, for the
# steps that read features from a Feast repository: RUNTIME names the pinned set it installs.
# Build from the repository root, which is the `ctloop` package:
#   make images            (or: docker build -t ghcr.io/ctloop/ctloop:0.1.0 .
#                           and: docker build --build-arg RUNTIME=requirements-runtime-feast.txt
#                                  -t ghcr.io/ctloop/ctloop-feast:0.1.0 .)
# KFP and Vertex AI replace the entrypoint with the component's own command; nothing is
# installed when a step starts.

# The same exact Python release on Debian 12 as serving/Dockerfile, the Python minor that
# requirements.lock is compiled for. For a byte-for-byte reproducible build pin the digest too:
#   FROM python:3.11.13-slim-bookworm@sha256:<digest>
# RUNTIME: requirements-runtime.txt (pyproject's dependencies) or requirements-runtime-feast.txt
# (the same plus the `feast` extra, with the two pins Feast caps held back; its header says how).
ARG RUNTIME=requirements-runtime.txt

FROM python:3.11.13-slim-bookworm AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build ctloop's wheel with the lock's setuptools (no build isolation: nothing unpinned is
# fetched), from the files .dockerignore lets into the context. Both images build this same
# stage, whatever RUNTIME is, so they install the same wheel.
COPY requirements-runtime.txt /tmp/requirements-runtime.txt
RUN grep '^setuptools==' /tmp/requirements-runtime.txt > /tmp/build-requirements.txt \
    && pip install --no-deps -r /tmp/build-requirements.txt
WORKDIR /src
COPY pyproject.toml README.md __init__.py __main__.py ./
COPY components components
COPY pipelines pipelines
COPY serving serving
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11.13-slim-bookworm

# MLflow's request limits, as `ctloop` sets them for its commands (pipelines/cli.py): with
# MLflow's defaults (120 s a try, seven retries) a step waits a quarter of an hour on a tracking
# server that never answers.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_HTTP_REQUEST_TIMEOUT=30 \
    MLFLOW_HTTP_REQUEST_MAX_RETRIES=2

# The runtime closure of pyproject.toml's dependencies (plus the feast extra's, for the Feast
# image) at requirements.lock's versions, every distribution listed (so --no-deps); no test
# tools. Then ctloop itself, as a wheel (not editable), and pip check proves the set is complete.
ARG RUNTIME
COPY ${RUNTIME} /tmp/requirements-runtime.txt
RUN pip install --no-deps -r /tmp/requirements-runtime.txt \
    && rm /tmp/requirements-runtime.txt
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps --no-index /tmp/dist/ctloop-*.whl \
    && pip check \
    && rm -r /tmp/dist

# A numeric non-root user, so Kubernetes can check runAsNonRoot without a passwd lookup. The
# KFP launcher stages artifacts under /gcs, /minio and /s3 (kubeflow/pipelines#5673): those
# folders must exist and be writable by that user. HOME is writable for MLflow's and
# xgboost's caches.
RUN groupadd --system --gid 10001 ctloop \
    && useradd --system --uid 10001 --gid ctloop --create-home --home-dir /home/ctloop \
       --shell /usr/sbin/nologin ctloop \
    && mkdir /gcs /minio /s3 \
    && chown ctloop:ctloop /gcs /minio /s3
ENV HOME=/home/ctloop
WORKDIR /home/ctloop

# The commit the image was built from (`make images` passes it), recorded with every decision
# and registered version (components/lineage.py). Last, so a new commit rebuilds one layer.
ARG GIT_COMMIT=unknown
ENV CTLOOP_GIT_COMMIT=${GIT_COMMIT}
USER 10001:10001

ENTRYPOINT ["ctloop"]
CMD ["--help"]
