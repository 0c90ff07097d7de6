# dockgate's image: a small Python base, dockgate and its dependencies installed from wheels,
# run as an unprivileged user in the Docker socket's group (deploy/entrypoint.py).
#
#   python3 -m pip wheel . -w wheels/            # dockgate and its dependencies, for the base's Python
#   docker build --build-arg BASE=debian:bookworm-slim -t dockgate .
#   docker run -d --read-only -v /var/run/docker.sock:/var/run/docker.sock \
#       -v /etc/dockgate:/etc/dockgate:ro -e DOCKGATE_HTPASSWD=/etc/dockgate/htpasswd ... \
#       -p 2375:2375 dockgate
#   (a Swarm service on the managers: deploy/stack.yml; beside Traefik: deploy/compose.sidecar.yml)
#
# BASE needs python3 (3.11 for the wheels above) and nothing else; no compiler, no pip.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
COPY deploy/install_wheels.py /build/install_wheels.py
COPY wheels/ /build/wheels/
RUN python3 /build/install_wheels.py /build/wheels /opt/dockgate/lib && mkdir -p /build/run/dockgate

FROM ${BASE}
COPY --from=build /opt/dockgate /opt/dockgate
COPY deploy/entrypoint.py /opt/dockgate/entrypoint.py
# Where a unix listener goes (the sidecar's shared volume): the unprivileged user's, and a named
# volume mounted here starts with this ownership. COPY rather than RUN: BASE needs no shell.
COPY --from=build --chown=65532:65532 /build/run/ /run/
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCKGATE_LISTEN=tcp://0.0.0.0:2375 \
    DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:9375
EXPOSE 2375
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9375/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["python3", "/opt/dockgate/entrypoint.py"]
CMD ["serve"]
