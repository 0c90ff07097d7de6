"""Install wheels into a directory without pip (the image's base has only python3).

A wheel is a zip whose top level is what goes into site-packages (RECORD, entry points and
scripts are not needed here: dockgate is started by deploy/entrypoint.py). Used by the
Dockerfile's build stage: `python3 install_wheels.py WHEEL_DIR TARGET`.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def main() -> int:
    wheels, target = Path(sys.argv[1]), Path(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("*.whl"))
    if not found:
        print(f"install_wheels: no wheels in {wheels}", file=sys.stderr)
        return 1
    for wheel in found:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if ".." in Path(member).parts or member.startswith("/"):
                    print(f"install_wheels: {wheel.name}: unsafe path {member}", file=sys.stderr)
                    return 1
            archive.extractall(target)
        print(f"installed {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
