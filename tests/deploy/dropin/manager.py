"""What a Portainer-style manager does on its endpoint `-H tcp://HOST:PORT`: read every section,
create and start a container, and try an exec (which the proxy's variables do not open).
Prints one JSON line: each call's status (and the created container's ID)."""

import http.client
import json
import socket
import sys
import time


def main() -> None:
    endpoint = sys.argv[sys.argv.index("-H") + 1].removeprefix("tcp://")
    host, _, port = endpoint.partition(":")

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")

    for _ in range(60):  # the proxy may start after the manager
        try:
            call("GET", "/_ping")
            break
        except (OSError, ValueError):
            time.sleep(0.5)
    # Its own image (the one image here certain to have `sleep`), as the daemon names it.
    image = call("GET", f"/v1.41/containers/{socket.gethostname()}/json")[1]["Image"]
    out: dict[str, object] = {}
    for name, path in (
        ("info", "/v1.41/info"),
        ("containers", "/v1.41/containers/json?all=1"),
        ("images", "/v1.41/images/json"),
        ("networks", "/v1.41/networks"),
        ("volumes", "/v1.41/volumes"),
    ):
        out[name] = call("GET", path)[0]
    body = {
        "Image": image,
        "Entrypoint": ["sleep"],
        "Cmd": ["300"],
        "Labels": {"made-by": "manager"},
    }
    status, created = call("POST", "/v1.41/containers/create?name=dgdrop-made", body)
    out["create"] = status
    if status == 201 and isinstance(created, dict):
        out["id"] = created["Id"]
        out["start"] = call("POST", f"/v1.41/containers/{created['Id']}/start")[0]
        out["exec"] = call("POST", f"/v1.41/containers/{created['Id']}/exec", {"Cmd": ["id"]})[0]
    print(json.dumps(out), flush=True)


main()
