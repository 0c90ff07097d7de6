#!/usr/bin/env bash
# THE test command: installs what the tests need (apt + pip), then runs
# ruff check, ruff format --check, mypy and pytest. Extra arguments go to pytest.
#
#   scripts/test.sh                      # everything
#   scripts/test.sh -k cli -x            # a subset
#   DOCKGATE_TEST_DIRECT=1 scripts/test.sh tests/clients/test_cli_scenarios.py   # clients straight at dockerd
#
# Must be run as root (it installs Debian packages and starts a private dockerd).
set -uo pipefail

cd "$(dirname "$0")/.."

section() {
    printf '\n==================== %s ====================\n' "$*"
}

die() {
    echo "scripts/test.sh: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (installs packages, starts a private dockerd)"
fi

export DEBIAN_FRONTEND=noninteractive
export DOCKER_BUILDKIT=0
export DOCKER_CLI_HINTS=false
# Never let a developer's settings point the tests at some other daemon.
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

PYTHON=${PYTHON:-python3}

# ---------------------------------------------------------------------------------------------
section "system packages"

# Debian package -> why the tests need it
APT_PACKAGES=(
    docker.io        # dockerd (the real daemon the tests run privately), containerd, runc
    busybox-static   # /bin/busybox: the rootfs of the test image
    prometheus       # the real Prometheus: tests/clients/test_preset_prometheus.py (docker_sd_configs)
    debootstrap      # a Debian rootfs with python3: the base of the dockgate image under test
    docker-compose   # brings up deploy/compose.sidecar.yml in tests/deploy/test_compose.py
    iproute2         # ip netns + veth: the Swarm and compose tests' daemons get a network of their own
    python3-venv     # the README's quick start on Debian's own python3 (tests/deploy/test_readme_quickstart.py)
    systemd          # systemd-analyze verify (deploy/systemd units), systemd-socket-activate
    util-linux       # nsenter, script, umount
    gcc              # builds tests/support/unixget.c static: the HTTP client of the containers
    libc6-dev        #   that call dockgate's socket in tests/auth/test_peer_e2e.py
    tar
    ca-certificates
)

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# Run an apt-get command; if dpkg stops on a statoverride entry naming a group (or user) that does
# not exist on this machine image, create it and try again.
apt_retry() {
    local attempt out status name
    for attempt in 1 2 3 4 5 6; do
        out=$(apt-get "$@" 2>&1)
        status=$?
        printf '%s\n' "$out" | tail -n 25
        if [ "$status" -eq 0 ]; then
            return 0
        fi
        name=$(printf '%s\n' "$out" | sed -n "s/.*unknown system group '\([^']*\)' in statoverride file.*/\1/p" | head -n1)
        if [ -n "$name" ]; then
            echo "scripts/test.sh: creating missing system group '$name' (statoverride), retrying (attempt $attempt)"
            groupadd -r "$name" || true
            continue
        fi
        name=$(printf '%s\n' "$out" | sed -n "s/.*unknown system user '\([^']*\)' in statoverride file.*/\1/p" | head -n1)
        if [ -n "$name" ]; then
            echo "scripts/test.sh: creating missing system user '$name' (statoverride), retrying (attempt $attempt)"
            useradd -r -M -s /usr/sbin/nologin "$name" || true
            continue
        fi
        if printf '%s\n' "$out" | grep -q "dpkg was interrupted"; then
            dpkg --configure -a || true
            continue
        fi
        return "$status"
    done
    return 1
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt_retry update || die "apt-get update failed"
    apt_retry install -y "${missing[@]}" || die "apt-get install failed"
    # A package whose configure step failed earlier is left half-installed: finish it.
    apt_retry install -y -f || true
else
    echo "all present: ${APT_PACKAGES[*]}"
fi
command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
command -v docker >/dev/null || die "docker CLI not found after installing docker.io"
echo "docker CLI: $(command -v docker) ($(docker --version 2>/dev/null))"
echo "dockerd:    $(command -v dockerd) ($(dockerd --version 2>/dev/null))"

# ---------------------------------------------------------------------------------------------
section "python packages"
"$PYTHON" -m pip install --disable-pip-version-check -q -e '.[test]' || die "pip install failed"
"$PYTHON" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(dockgate|pytest|pytest-timeout|docker|pexpect|requests|mypy|ruff) ' || true

# ---------------------------------------------------------------------------------------------
failed=()

run_step() {
    local name=$1
    shift
    section "$name"
    echo "+ $*"
    if "$@"; then
        echo "--> $name: ok"
    else
        echo "--> $name: FAILED (exit $?)"
        failed+=("$name")
    fi
}

run_step "ruff check" "$PYTHON" -m ruff check .
run_step "ruff format --check" "$PYTHON" -m ruff format --check .
run_step "mypy" "$PYTHON" -m mypy
run_step "pytest" "$PYTHON" -m pytest "$@"

section "summary"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
