"""The cluster files: Ray cluster-launcher files (AWS GPUs, GCP TPU VMs) and the KubeRay
manifests. Nothing here launches a cluster; the files are checked against what their tools
check before launching: Ray's launcher schema and TPU node rules, and the KubeRay v1.7.0 CRD
schemas (tests/k8s/crds/, copied from ray-project/kuberay tag v1.7.0,
ray-operator/config/crd/bases/), made strict about unknown fields as `kubectl apply` with
server-side field validation is. Also: every node type / group sets the same Ray auth mode, and
the resources each file advertises hold the request `experiments/cluster/resources.py` makes for the
paper profiles, which the files quote.
"""

import copy
import functools
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from diffseg3d.experiments.cluster.resources import (
    check_cluster_fits,
    node_resources,
    trial_resources,
)
from diffseg3d.experiments.config.layering import load_profile
from diffseg3d.experiments.config.schema import validate_config
from ray._private.accelerators import tpu
from ray.autoscaler._private.util import prepare_config
from ray.autoscaler._private.util import validate_config as validate_launcher

REPO = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).resolve().parent / "crds"
LAUNCHERS = ("ray_cluster.yaml", "ray_cluster_gcp_tpu.yaml")
TOKEN_PATH = "/home/ubuntu/.ray/diffseg3d_token"
# vCPUs and GPUs of the AWS instance types ray_cluster.yaml uses (Ray detects them at start).
AWS_INSTANCES = {"p4de.24xlarge": {"CPU": 96.0, "GPU": 8.0}, "g6e.xlarge": {"CPU": 4.0, "GPU": 1.0}}
QUOTED_REQUEST = re.compile(r"\{'cpu': [^}]*\}")


def _request(profile: str) -> dict[str, float]:
    config = validate_config(load_profile(profile), source=profile).model_dump(mode="json")
    return trial_resources(config)


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def _load_all(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((REPO / name).read_text()) if doc]


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_rays_own_schema(name):
    # The same checks `ray up` runs before touching the cloud (unknown keys, types, min/max).
    validate_launcher(prepare_config(_load(name)))


def test_gcp_tpu_workers_are_single_host_slices_ray_accepts():
    cluster = _load("ray_cluster_gcp_tpu.yaml")
    tpu_types = {n: t for n, t in cluster["available_node_types"].items()
                 if "acceleratorType" in t["node_config"]}
    assert tpu_types
    for name, node_type in tpu_types.items():
        # Ray's own TPU rules (those of its GCP provider, which needs Google's client libraries):
        # a valid type, one host, and the declared count is the chips Ray detects on it.
        kind = node_type["node_config"]["acceleratorType"]
        assert tpu.TPUAcceleratorManager.is_valid_tpu_accelerator_type(kind), name
        chips = tpu.get_total_chips_from_accelerator_type(kind)
        assert chips == tpu.get_num_tpu_visible_chips_per_host(kind), f"{name}: multi-host"
        assert node_type["resources"]["TPU"] == chips, name
        assert node_type["node_config"]["runtimeVersion"], name
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and "acceleratorType" not in head["node_config"]
    assert sum(t["min_workers"] for t in tpu_types.values()) >= 1


def test_gcp_tpu_head_runs_mlflow_and_every_node_mounts_filestore():
    cluster = _load("ray_cluster_gcp_tpu.yaml")
    head = "\n".join(cluster["head_start_ray_commands"])
    assert "mlflow server" in head and "--host 0.0.0.0" in head
    assert "--artifacts-destination /mnt/shared/mlartifacts" in head
    init = "\n".join(cluster["initialization_commands"])
    assert "mount -t nfs" in init and "/share /mnt/shared" in init
    assert "jax[tpu]" in "\n".join(cluster["worker_setup_commands"])


def _launcher_auth(cluster: dict) -> list[tuple[str, str | None, str | None]]:
    """(command, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) for every `ray start` of every node type."""
    out = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in cluster[key]:
            if "ray start" not in command:
                continue
            mode = re.search(r"RAY_AUTH_MODE=(\S+)", command)
            path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", command)
            out.append((key, mode and mode.group(1), path and path.group(1)))
    return out


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_starts_every_node_with_token_auth(name):
    cluster = _load(name)
    auth = _launcher_auth(cluster)
    assert {key for key, _, _ in auth} == {"head_start_ray_commands", "worker_start_ray_commands"}
    assert {(mode, path) for _, mode, path in auth} == {("token", TOKEN_PATH)}, auth
    # Node types cannot override the start commands (each would need its own auth settings).
    for node_type in cluster["available_node_types"].values():
        assert not {"head_start_ray_commands", "worker_start_ray_commands"} & set(node_type)
    # Shells on the head (the Tune driver) use the same mode and token.
    setup = "\n".join(cluster["setup_commands"])
    assert "export RAY_AUTH_MODE=token" in setup
    assert f"export RAY_AUTH_TOKEN_PATH={TOKEN_PATH}" in setup
    # The token file reaches every node: copied by file_mounts or fetched from a secret.
    mounted = TOKEN_PATH in cluster["file_mounts"]
    fetched = any(f"> {TOKEN_PATH}" in c and "secrets" in c
                  for c in cluster["initialization_commands"])
    assert mounted or fetched
    assert "disabled" not in (REPO / name).read_text()


def test_launcher_nodes_hold_the_paper_requests_they_quote():
    aws, gcp = _load("ray_cluster.yaml"), _load("ray_cluster_gcp_tpu.yaml")
    aws_nodes = [
        {"Alive": True, "Resources": {**AWS_INSTANCES[t["node_config"]["InstanceType"]],
                                      **t["resources"]}}
        for n, t in aws["available_node_types"].items() if n != aws["head_node_type"]
    ]
    gcp_nodes = [{"Alive": True, "Resources": t["resources"]}
                 for t in gcp["available_node_types"].values()]
    paper, paper_tpu = _request("paper"), _request("paper_tpu")
    check_cluster_fits({"paper": paper}, aws_nodes, {})
    check_cluster_fits({"paper_tpu": paper_tpu}, gcp_nodes, {})
    # The v4-8 host's chips are exactly one paper_tpu trial: it uses every chip of its host.
    assert gcp["available_node_types"]["tpu_v4_8"]["resources"]["TPU"] == paper_tpu["TPU"]
    assert repr(paper) in (REPO / "ray_cluster.yaml").read_text()
    assert repr(paper_tpu) in (REPO / "ray_cluster_gcp_tpu.yaml").read_text()


# ---------------------------------------------------------------------------------------------
# KubeRay manifests


def _strict(schema: dict) -> dict:
    """The CRD's OpenAPI schema with unknown fields rejected (the API server prunes them
    silently, `kubectl apply --validate=strict` refuses them), except where the CRD keeps them."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


@functools.cache
def _crd_schema(kind: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-2 MB
    crd = yaml.load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(version["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        for doc in _load_all(f"k8s/{path.name}"):
            docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_manifest_is_valid_against_the_kuberay_crd(manifests, kind):
    doc = manifests[kind]
    assert doc["apiVersion"] == "ray.io/v1"
    jsonschema.validate(doc, _crd_schema(kind), cls=jsonschema.Draft7Validator)


def test_the_strict_crd_schema_catches_a_misspelt_field(manifests):
    bad = copy.deepcopy(manifests["RayCluster"])
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(bad, _crd_schema("RayCluster"), cls=jsonschema.Draft7Validator)


def _groups(cluster: dict) -> dict[str, dict]:
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"],
            **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def test_every_group_uses_token_auth_from_the_secret(manifests):
    cluster = manifests["RayCluster"]
    options = cluster["spec"]["authOptions"]
    assert options["mode"] == "token"
    secret = options["secretName"]
    for name, group in _groups(cluster).items():
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            if container["name"] == "mlflow":
                continue  # not a Ray process
            assert env["RAY_AUTH_MODE"]["value"] == "token", name
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret, "key": "auth_token"}, name
    # The RayJob runs on that cluster (and KubeRay gives its submitter the same token).
    assert manifests["RayJob"]["spec"]["clusterSelector"] == {
        "ray.io/cluster": cluster["metadata"]["name"]
    }


def _advertised(group: dict) -> dict[str, float]:
    """What KubeRay tells Ray a pod of this group has: CPUs from the container limit (or
    rayStartParams num-cpus), GPUs from nvidia.com/gpu, TPU chips from google.com/tpu."""
    limits = _ray_container(group)["resources"]["limits"]
    params = group.get("rayStartParams") or {}
    out = {"CPU": float(params.get("num-cpus", limits.get("cpu", 0)))}
    for key, name in (("nvidia.com/gpu", "GPU"), ("google.com/tpu", "TPU")):
        if key in limits:
            out[name] = float(limits[key])
    return out


def test_groups_hold_the_paper_requests_they_quote(manifests):
    groups = _groups(manifests["RayCluster"])
    paper, paper_tpu = _request("paper"), _request("paper_tpu")
    assert _advertised(groups["head"])["CPU"] == 0  # no trials on the head
    check_cluster_fits({"paper": paper}, [{"Resources": _advertised(groups["gpu"])}], {})
    check_cluster_fits({"paper_tpu": paper_tpu}, [{"Resources": _advertised(groups["tpu"])}], {})
    assert node_resources(paper_tpu)["TPU"] == _advertised(groups["tpu"])["TPU"]  # whole host
    assert "TPU" not in _advertised(groups["gpu"]) and "GPU" not in _advertised(groups["tpu"])
    # GKE: the topology is one host whose chips are the ones the pod asks for.
    tpu_group = groups["tpu"]
    selector = tpu_group["template"]["spec"]["nodeSelector"]
    assert selector["cloud.google.com/gke-tpu-accelerator"].startswith("tpu-")
    chips = tpu.get_num_chips_from_topology(selector["cloud.google.com/gke-tpu-topology"])
    assert chips == _advertised(tpu_group)["TPU"] and tpu_group["numOfHosts"] == 1
    limits = _ray_container(tpu_group)["resources"]
    assert limits["limits"]["google.com/tpu"] == limits["requests"]["google.com/tpu"]
    for kind, text in (("RayCluster", "raycluster.yaml"), ("RayJob", "rayjob.yaml")):
        quoted = set(QUOTED_REQUEST.findall((REPO / "k8s" / text).read_text()))
        assert quoted == {repr(paper), repr(paper_tpu)}, (kind, quoted)


def test_shared_volume_is_read_write_many_on_every_pod(manifests):
    claim = manifests["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, group in _groups(manifests["RayCluster"]).items():
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in _ray_container(group)["volumeMounts"]}
        assert mounts["shared"] == "/mnt/shared", name
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == (
            claim["metadata"]["name"]
        ), name


def test_head_runs_mlflow_and_the_job_runs_the_paper_ablations(manifests):
    head = manifests["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]
    mlflow = next(c for c in head["containers"] if c["name"] == "mlflow")
    command = " ".join(mlflow["args"])
    assert "mlflow server" in command and "--host 0.0.0.0 --port 5000" in command
    assert "--artifacts-destination /mnt/shared/mlartifacts" in command
    ray_head = _ray_container(manifests["RayCluster"]["spec"]["headGroupSpec"])
    assert 5000 in {p["containerPort"] for p in ray_head["ports"]}  # on the head Service
    env = {e["name"]: e.get("value") for e in ray_head["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://diffseg3d-head-svc:5000"
    entrypoint = manifests["RayJob"]["spec"]["entrypoint"]
    assert "make ablations PROFILE=paper " in entrypoint and "OUT=/mnt/shared/" in entrypoint
