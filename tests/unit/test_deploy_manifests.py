"""Issue #5, deployment: the Kubernetes manifests, docker-compose.yml, the Dockerfile and the systemd unit.

- every Kubernetes manifest validates (strict: unknown fields are errors) against the Kubernetes JSON
  schemas bundled with ``kubernetes-validate`` (offline); the ServiceMonitor, a CRD whose schema is not
  bundled, is checked structurally;
- the DaemonSet has what the issue asks for (ServiceAccount, read-only hostPaths under /rootfs, a
  writable state dir, requests/limits, readOnlyRootFilesystem, tolerations for every node, scrape
  annotations, the routes' ConfigMap) and agrees with the Service, the ServiceMonitor and the example
  kubernetes_sd scrape job;
- the agent itself accepts every command line and config file shipped here (``lookout check-config``);
- docker-compose.yml wires Lookout (host at /rootfs, --host-root /rootfs), Prometheus, Grafana and
  Elasticsearch together, with pinned images and bind mounts that exist; ``docker compose config``
  (or ``docker-compose config``) when available; the compose Prometheus config passes ``promtool``;
- the Dockerfile: pinned base (version and digest), ``lookout run --host-root /rootfs``; it is built
  where the engine can get the base image (not on this CI: no registry is reachable);
- the systemd unit: ``systemd-analyze verify`` where available, and its hardening.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_queries import PROMETHEUS_DIR, REPO_ROOT
from tests.helpers.deps import unavailable

K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
UNIT_FILE = REPO_ROOT / "deploy" / "systemd" / "lookout.service"
PINNED_IMAGE = re.compile(r"^[\w.\-/]+:(v?\d+\.\d+\.\d+[\w.\-]*)(@sha256:[0-9a-f]{64})?$")


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        unavailable("PyYAML is not installed (pip install pyyaml; it belongs in the [test] extras)")
    return yaml


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml_module().safe_load_all(path.read_text()) if d]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> document, for every manifest under deploy/kubernetes/ (subfolders included)."""
    out = {}
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in load_all(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def check_config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lookout check-config ARGS --state-dir <tmp>`` (a flag wins over the config file's state-dir)."""
    argv = [sys.executable, "-m", "agent", "check-config", *args, "--state-dir", str(tmp_path / "state")]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


# --- Kubernetes -------------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install kubernetes-validate; it bundles the "
                    "Kubernetes JSON schemas and works offline; it belongs in the [test] extras)")
    version = kubernetes_validate.latest_version()
    checked = []
    for (kind, name), doc in manifests().items():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no bundled schema (checked in test_servicemonitor)
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} does not validate against Kubernetes {version} (strict): "
                        f"{getattr(exc, 'message', str(exc)).splitlines()[0]}", pytrace=False)
        checked.append(kind)
    assert sorted(checked) == ["ConfigMap", "DaemonSet", "Namespace", "Service", "ServiceAccount"], checked


def test_kubernetes_validate_rejects_a_bad_manifest() -> None:
    """The validation above has teeth: an unknown field and a wrong type are errors."""
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed")
    ds = manifests()[("DaemonSet", "lookout")]
    bad = {**ds, "spec": {**ds["spec"], "replicas": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_daemonset_has_what_the_issue_asks_for() -> None:
    m = manifests()
    ds = m[("DaemonSet", "lookout")]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    namespace = ds["metadata"]["namespace"]
    assert m[("Namespace", namespace)]
    assert m[("ServiceAccount", pod["serviceAccountName"])]["metadata"]["namespace"] == namespace

    args = container["args"]
    assert args[args.index("--host-root") + 1] == "/rootfs"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {mt["name"]: mt for mt in container["volumeMounts"]}
    host_mounts = {}
    for name, vol in volumes.items():
        if "hostPath" in vol:
            host_mounts[vol["hostPath"]["path"]] = mounts[name]
    for path in ("/sys/fs/cgroup", "/proc", "/var/lib/docker/containers", "/var/log/pods",
                 "/var/lib/containerd/io.containerd.metadata.v1.bolt", "/var/lib/containers/storage"):
        mount = host_mounts[path]
        assert mount.get("readOnly") is True, f"{path} must be mounted read-only"
        assert mount["mountPath"] == "/rootfs" + path, f"{path} must appear under --host-root /rootfs"
    for path, mount in host_mounts.items():
        if path != "/var/lib/lookout":
            assert mount.get("readOnly") is True, f"{path} must be mounted read-only"
    state = host_mounts["/var/lib/lookout"]
    assert not state.get("readOnly") and state["mountPath"] == "/var/lib/lookout"

    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged")
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint to run on every node"
    assert pod["automountServiceAccountToken"] is False

    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": 9338, "protocol": "TCP"}
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9338"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    config = volumes["config"]["configMap"]["name"]
    assert "lookout.toml" in m[("ConfigMap", config)]["data"]
    assert f"{mounts['config']['mountPath']}/lookout.toml" == args[args.index("--config") + 1]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_headless_service_selects_the_daemonset() -> None:
    m = manifests()
    ds = m[("DaemonSet", "lookout")]
    svc = m[("Service", "lookout")]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "metrics" and port["port"] == 9338
    assert svc["metadata"]["namespace"] == ds["metadata"]["namespace"]


def test_servicemonitor() -> None:
    m = manifests()
    sm = m[("ServiceMonitor", "lookout")]
    svc = m[("Service", "lookout")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True, "keep the container metrics' own namespace/pod/container labels"
    assert set(sm["spec"]) <= {"jobLabel", "selector", "namespaceSelector", "endpoints"}
    assert set(endpoint) <= {"port", "path", "interval", "honorLabels", "relabelings"}
    # the job must be named lookout* for the agent alerts (up{job=~"lookout.*"})
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]].startswith("lookout")


def test_kubernetes_sd_example_finds_the_daemonset() -> None:
    yaml = yaml_module()
    ds = manifests()[("DaemonSet", "lookout")]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j)
    sd = job["kubernetes_sd_configs"][0]
    assert ds["metadata"]["namespace"] in sd["namespaces"]["names"]
    key, _, value = sd["selectors"][0]["label"].partition("=")
    assert ds["spec"]["template"]["metadata"]["labels"][key] == value
    keep_port = next(r for r in job["relabel_configs"]
                     if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"])
    assert keep_port["regex"] == ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]


def test_agent_accepts_the_daemonset_command_line_and_configmap(tmp_path: Path) -> None:
    m = manifests()
    ds = m[("DaemonSet", "lookout")]
    args = list(ds["spec"]["template"]["spec"]["containers"][0]["args"])
    config = tmp_path / "lookout.toml"
    config.write_text(m[("ConfigMap", "lookout")]["data"]["lookout.toml"])
    args[args.index("--config") + 1] = str(config)
    proc = check_config(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "host root /rootfs, 1 route(s)" in proc.stdout


# --- docker compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml_module().safe_load(COMPOSE_FILE.read_text())


def test_compose_services_are_wired_together(tmp_path: Path) -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"lookout", "prometheus", "grafana", "elasticsearch"}
    for name, svc in services.items():
        assert PINNED_IMAGE.match(svc["image"]), f"{name}: image {svc['image']!r} is not pinned to a version"
        assert svc.get("restart") == "unless-stopped", name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name}: bind mount source {source} does not exist"
            elif not source.startswith("/"):
                assert source in doc["volumes"], f"{name}: named volume {source} is not declared"

    lookout = services["lookout"]
    cmd = lookout["command"]
    assert cmd[cmd.index("--host-root") + 1] == "/rootfs"
    assert "/:/rootfs:ro" in lookout["volumes"]
    assert lookout["read_only"] is True and lookout["build"] == "."
    assert any(v.endswith(":/var/lib/lookout") for v in lookout["volumes"])
    assert "9338:9338" in lookout["ports"]
    route = cmd[cmd.index("--route") + 1]
    assert route.startswith("elasticsearch+http://elasticsearch:9200/")
    proc = check_config(tmp_path, *cmd)
    assert proc.returncode == 0, proc.stderr

    prom = services["prometheus"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":") for v in prom["volumes"])
    assert mounts["./deploy/compose/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./dashboards/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    prom_config = yaml_module().safe_load((REPO_ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = [t for j in prom_config["scrape_configs"] if j["job_name"] == "lookout"
               for sc in j["static_configs"] for t in sc["targets"]]
    assert targets == ["lookout:9338"]

    grafana = services["grafana"]
    gmounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert gmounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    assert gmounts["/etc/grafana/provisioning/dashboards"] == "./dashboards/provisioning/dashboards"
    provider = yaml_module().safe_load((REPO_ROOT / "dashboards/provisioning/dashboards/lookout.yaml").read_text())
    assert gmounts[provider["providers"][0]["options"]["path"]] == "./dashboards/grafana"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO_ROOT / "dashboards/grafana" / Path(home).name).is_file()
    datasource = yaml_module().safe_load((REPO_ROOT / "dashboards/provisioning/datasources/lookout.yaml")
                                         .read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in prom["ports"]
    assert datasource["jsonData"]["timeInterval"] == prom_config["global"]["scrape_interval"]

    es = services["elasticsearch"]
    assert es["environment"]["discovery.type"] == "single-node" and "9200:9200" in es["ports"]
    assert lookout["depends_on"]["elasticsearch"]["condition"] == "service_healthy" and es["healthcheck"]


def test_compose_prometheus_config(promtool: str, tmp_path: Path) -> None:
    """As mounted in the container: prometheus.yml with alerts.yml beside it."""
    shutil.copy(REPO_ROOT / "deploy/compose/prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in proc.stdout + proc.stderr


def test_docker_compose_config() -> None:
    """The Compose implementation's own validation, where one is installed."""
    candidates = []
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    if not candidates:
        pytest.skip("neither `docker compose` (the Compose plugin) nor `docker-compose` is installed "
                    "(Debian: apt-get install docker-compose); the file is checked structurally above")
    for cli in candidates:
        proc = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{' '.join(cli)} config: {proc.stderr}"


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile() -> tuple[str, list[tuple[str, str]]]:
    """(the base image, [(INSTRUCTION, arguments)]) with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    instructions = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
    base = next(a for i, a in instructions if i == "ARG" and a.startswith("PYTHON_IMAGE=")).split("=", 1)[1]
    return base, instructions


def test_dockerfile_is_slim_pinned_and_runs_lookout_with_host_root(tmp_path: Path) -> None:
    import json

    base, instructions = dockerfile()
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    froms = [a for i, a in instructions if i == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"], froms
    entrypoint = json.loads(next(a for i, a in instructions if i == "ENTRYPOINT"))
    cmd = json.loads(next(a for i, a in instructions if i == "CMD"))
    assert entrypoint == ["lookout", "run"]
    assert cmd[cmd.index("--host-root") + 1] == "/rootfs"
    assert ("EXPOSE", "9338") in instructions and ("VOLUME", "/var/lib/lookout") in instructions
    health = next(a for i, a in instructions if i == "HEALTHCHECK")
    assert "/readyz" in health and "/healthz" not in health  # Docker's one health is readiness (Dockerfile)
    for i, a in instructions:
        if i == "COPY" and "--from" not in a:
            for source in a.split()[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file"
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    for package in ("agent/", "collectors/", "exporters/", "pyproject.toml"):
        assert f"!{package}" in ignore, f".dockerignore must let {package} into the build context"
    proc = check_config(tmp_path, *cmd)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.docker
def test_dockerfile_builds(docker_engine: Any, tmp_path: Path) -> None:
    """Builds the image and runs ``lookout --version`` in it, where the engine has or can pull the base."""
    from tests.helpers import docker as docker_helper

    base, _ = dockerfile()
    if docker_helper.docker("image", "inspect", base, check=False).returncode != 0:
        pull = docker_helper.docker("pull", base, check=False, timeout=300)
        if pull.returncode != 0:
            pytest.skip(f"docker build needs the base image {base}, which this engine does not have and cannot "
                        f"pull (no container registry is reachable from this machine or its CI): "
                        f"{(pull.stderr or pull.stdout).strip().splitlines()[-1]}")
    tag = f"lookout-test-build:{tmp_path.name}".lower()
    try:
        build = subprocess.run(["docker", "build", "-t", tag, "."], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=900, env={**__import__("os").environ, "DOCKER_BUILDKIT": "1"})
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        run = docker_helper.docker("run", "--rm", "--label", "lookout.test=1", "--entrypoint", "lookout", tag,
                                   "--version", check=False)
        assert run.returncode == 0 and run.stdout.startswith("lookout "), run.stdout + run.stderr
    finally:
        docker_helper.docker("image", "rm", "-f", tag, check=False)


# --- systemd ----------------------------------------------------------------------------------------


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in UNIT_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        else:
            key, _, value = line.partition("=")
            sections[current].setdefault(key, []).append(value)
    return sections


def test_systemd_unit(tmp_path: Path) -> None:
    u = unit()
    service = u["Service"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[:2] == ["/usr/local/bin/lookout", "run"]
    assert service["StateDirectory"] == ["lookout"], "systemd creates /var/lib/lookout, the default --state-dir"
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/lookout"
    for key, value in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("ProtectHome", "yes"),
                       ("Restart", "always"), ("Type", "exec")):
        assert service[key] == [value], key
    assert service["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_SYS_PTRACE"]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]
    # the config file shipped for it is one the agent accepts, with the unit's own flags
    config = argv[argv.index("--config") + 1]
    assert config == "/etc/lookout/lookout.toml"
    proc = check_config(tmp_path, *argv[2:argv.index("--state-dir")], "--config",
                        str(REPO_ROOT / "deploy/systemd/lookout.toml"))
    assert proc.returncode == 0, proc.stderr
    # file:// routes in the example config write below the unit's LogsDirectory (the rest is read-only)
    import tomllib

    routes = tomllib.loads((REPO_ROOT / "deploy/systemd/lookout.toml").read_text())["route"]
    for route in routes:
        if route.startswith("file://"):
            assert route.startswith(f"file:///var/log/{service['LogsDirectory'][0]}/"), route


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd); the unit is checked "
                    "structurally in test_systemd_unit")
    lookout = shutil.which("lookout") or sys.executable
    text = UNIT_FILE.read_text().replace("/usr/local/bin/lookout", str(Path(lookout).resolve()))
    (tmp_path / "lookout.service").write_text(text)  # verify wants ExecStart's binary to exist
    proc = subprocess.run([analyze, "verify", str(tmp_path / "lookout.service")], capture_output=True, text=True,
                          timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "lookout.service" in ln]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr
