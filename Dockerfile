# dockgate's image. The one command, from a checkout of the repository:
#
#   docker build -t dockgate .
#
# then, for instance (docs/image.md says more; the published image: ghcr.io/dockgate/dockgate):
#
#   docker run -d --read-only -v /var/run/docker.sock:/var/run/docker.sock \
#       -v /etc/dockgate:/etc/dockgate:ro -e DOCKGATE_HTPASSWD=/etc/dockgate/htpasswd ... \
#       -p 2375:2375 dockgate
#   (a Swarm service on the managers: deploy/stack.yml; beside Traefik: deploy/compose.sidecar.yml)
#
# The build stage installs dockgate and its dependencies with pip into a virtual environment,
# /opt/dockgate, from PyPI (wheels, dockgate's own built here from the source); the final stage
# is the same BASE with that environment and nothing of the build. It starts as root only to
# read the Docker socket's group, then runs dockgate as uid/gid 65532 (deploy/entrypoint.py).
#
# Build arguments:
#   BASE    any image with python3 >= 3.11 and its venv module (default: the official slim one)
#   WHEELS  offline case only: a directory of the build context holding dockgate's wheel and its
#           dependencies' (`python3 -m pip wheel . -w .wheels` on a machine with the base's
#           Python), for a build that cannot reach PyPI: --build-arg WHEELS=.wheels
ARG BASE=python:3.12-slim-bookworm

FROM ${BASE} AS build
ARG WHEELS=
# The context is the repository less what .dockerignore leaves out (git, tests, caches).
COPY . /build/src
# `pip uninstall pip setuptools`: the venv's installer is not needed to run dockgate.
RUN python3 -m venv /opt/dockgate \
    && if [ -n "$WHEELS" ]; then \
        /opt/dockgate/bin/pip install --no-cache-dir --no-index --find-links "/build/src/$WHEELS" dockgate; \
    else \
        /opt/dockgate/bin/pip install --no-cache-dir /build/src; \
    fi \
    && /opt/dockgate/bin/pip uninstall --yes --quiet pip setuptools \
    && mkdir -p /build/run/dockgate

FROM ${BASE}
COPY --from=build /opt/dockgate /opt/dockgate
COPY deploy/entrypoint.py /opt/dockgate/entrypoint.py
# Where a unix listener goes (the sidecar's shared volume): the unprivileged user's, and a named
# volume mounted here starts with this ownership.
COPY --from=build --chown=65532:65532 /build/run/ /run/
# The venv first on PATH: `python3` (entrypoint, healthcheck, `--entrypoint python3`) is the
# one that sees dockgate.
ENV PATH=/opt/dockgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCKGATE_LISTEN=tcp://0.0.0.0:2375 \
    DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:9375
EXPOSE 2375
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9375/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["python3", "/opt/dockgate/entrypoint.py"]
CMD ["serve"]
