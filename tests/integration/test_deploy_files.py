"""The deployment files in conf/: parsed and checked, verified by their own tools where
installed (systemd-analyze, nginx), and run: nginx in front of a real preforkd, and the
probe commands of the Kubernetes and Docker files against a real preforkd."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Start
from tests.integration.harness import ROOT, free_port, wait_for

CONF = ROOT / "conf"
PREFORKD = Path(sys.executable).parent / "preforkd"  # this checkout's console script


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = path.read_text().replace("\\\n", " ")  # a backslash continues the line
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def option(args: list[str], name: str) -> str:
    """The value of ``--name V`` or ``--name=V`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not set in {args}")


def seconds(text: str) -> float:
    """A systemd time span: 40, 40s, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * units[suffix]
    return total


def test_service_unit_keys() -> None:
    service = unit(CONF / "preforkd.service")["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["all"]  # MAINPID= from the new master after USR2
    assert service["KillMode"] == ["mixed"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["User"][0] not in ("root", "0")
    graceful = float(option(shlex.split(service["ExecStart"][0]), "--graceful-timeout"))
    assert seconds(service["TimeoutStopSec"][0]) > graceful
    assert seconds(service["WatchdogSec"][0]) > 0
    control = option(shlex.split(service["ExecStart"][0]), "--control-socket")
    assert control.startswith(f"/run/{service['RuntimeDirectory'][0]}/")
    socket_unit = unit(CONF / "preforkd.socket")
    assert socket_unit["Socket"]["ListenStream"]
    assert "preforkd.socket" in unit(CONF / "preforkd.service")["Unit"]["Requires"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    service = (CONF / "preforkd.service").read_text()
    assert "/srv/myapp/.venv/bin/preforkd" in service
    # verify checks that ExecStart's program exists: point it at this checkout's.
    (tmp_path / "preforkd.service").write_text(
        service.replace("/srv/myapp/.venv/bin/preforkd", str(PREFORKD))
    )
    shutil.copy(CONF / "preforkd.socket", tmp_path / "preforkd.socket")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "./preforkd.socket", "./preforkd.service"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # It exits 0 even for an unknown key or a bad value, but says so on stderr.
    assert done.returncode == 0 and done.stderr == "", done.stderr


def nginx_site(upstream_port: int, listen_port: int) -> str:
    text = (CONF / "nginx.conf").read_text()
    assert "server 127.0.0.1:8000;" in text and "listen 80;" in text
    text = text.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    return text.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")


def nginx_main(tmp_path: Path, site: str) -> Path:
    """A whole nginx configuration around the site file, runnable without root."""
    (tmp_path / "site.conf").write_text(site)
    temp = "".join(
        f"{kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = tmp_path / "nginx-main.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
        "worker_processes 1;\nevents { worker_connections 64; }\n"
        f"http {{\naccess_log off;\n{temp}include {tmp_path}/site.conf;\n}}\n"
    )
    return main


def nginx_command(tmp_path: Path, main: Path) -> list[str]:
    return ["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)]


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed")
def test_nginx_t(tmp_path: Path) -> None:
    main = nginx_main(tmp_path, nginx_site(8000, free_port()))
    done = subprocess.run(
        [*nginx_command(tmp_path, main), "-t"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed")
def test_through_nginx(start_server: Start, tmp_path: Path) -> None:
    server = start_server("probe:app")
    assert server.port is not None
    listen = free_port()
    main = nginx_main(tmp_path, nginx_site(server.port, listen))
    nginx = subprocess.Popen(
        nginx_command(tmp_path, main), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{listen}/environ",
            headers={"X-Forwarded-For": "203.0.113.7", "Host": "app.example"},
        )

        def answer() -> dict[str, object] | None:
            assert nginx.poll() is None, (tmp_path / "error.log").read_text()
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return json.loads(response.read())  # type: ignore[no-any-return]
            except OSError:
                return None

        environ = wait_for(answer, what="an answer through nginx")
        assert isinstance(environ, dict)
        # nginx appends the client's address; preforkd trusts 127.0.0.1 (nginx) and so
        # takes the rightmost untrusted entry as the client.
        assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 127.0.0.1"
        assert environ["REMOTE_ADDR"] == "203.0.113.7"
        assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
        assert environ["HTTP_HOST"] == "app.example"
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"  # proxy_http_version 1.1
        assert "HTTP_CONNECTION" not in environ  # no "Connection: close": keep-alive
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(15)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(5)


def kubernetes() -> dict[str, object]:
    documents = list(yaml.safe_load_all((CONF / "kubernetes.yaml").read_text()))
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert len(deployments) == 1
    return deployments[0]  # type: ignore[no-any-return]


def test_kubernetes_deployment() -> None:
    pod = kubernetes()["spec"]["template"]["spec"]  # type: ignore[index]
    (container,) = pod["containers"]
    graceful = float(option(container["args"], "--graceful-timeout"))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The grace period counts from the start of preStop, then covers the drain.
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + graceful
    assert pod["securityContext"]["runAsNonRoot"] is True
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["preforkd", "check"]
        timeout = float(option(command, "--timeout"))
        assert container[probe]["timeoutSeconds"] > timeout  # the probe exits on its own
    port = container["ports"][0]["containerPort"]
    assert f"--bind=0.0.0.0:{port}" in container["args"]


def dockerfile() -> dict[str, list[str]]:
    """Instructions (continuation lines joined): NAME -> arguments of each occurrence."""
    text = (CONF / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            found.setdefault(name.upper(), []).append(rest.strip())
    return found


def test_dockerfile() -> None:
    found = dockerfile()
    user = found["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    healthcheck = found["HEALTHCHECK"][-1]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["preforkd", "check"]
    assert "--graceful-timeout" in json.loads(found["ENTRYPOINT"][-1])


def test_probe_commands_run(start_server: Start) -> None:
    """The exact probe commands of conf/, against a real preforkd (port swapped)."""
    server = start_server("examples.hello:app")  # answers 200 on any path, /healthz too
    pod = kubernetes()["spec"]["template"]["spec"]  # type: ignore[index]
    commands = [pod["containers"][0][p]["exec"]["command"] for p in ("readinessProbe",
                                                                     "livenessProbe")]  # fmt: skip
    commands.append(json.loads(dockerfile()["HEALTHCHECK"][-1].split("CMD", 1)[1]))
    for command in commands:
        argv = [a.replace(":8000", f":{server.port}") for a in command[1:]]
        done = subprocess.run([str(PREFORKD), *argv], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)
