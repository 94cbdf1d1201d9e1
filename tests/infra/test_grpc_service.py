"""The gRPC service in Terraform and Cloud Build: Cloud Run v2, end-to-end HTTP/2, the read function's identity,
secrets, environment, VPC access, invokers and alerts, and an image built from the common package."""

from __future__ import annotations

import tomllib
from typing import Any

from .repo import ROOT, blocks, cloudbuild, parsed_terraform
from .test_terraform import environment_file, resource


def grpc_module() -> dict[str, Any]:
    for block in blocks(environment_file("main.tf"), "module"):
        if "grpc_service" in block:
            found: dict[str, Any] = block["grpc_service"]
            return found
    raise AssertionError("terraform/environments/prod/main.tf declares no module grpc_service")


def grpc_defaults() -> dict[str, Any]:
    for block in blocks(environment_file("variables.tf"), "variable"):
        if "grpc" in block:
            default: dict[str, Any] = block["grpc"]["default"]
            return default
    raise AssertionError('no variable "grpc"')


def test_the_service_is_cloud_run_v2_with_h2c_health_probes_and_the_functions_vpc_egress() -> None:
    service = resource("modules/grpc_service/main.tf", "google_cloud_run_v2_service", "this")
    template = service["template"][0]
    container = template["containers"][0]

    assert container["ports"][0] == {"name": "h2c", "container_port": "${var.port}"}
    assert template["vpc_access"][0] == {"connector": "${var.vpc_connector}", "egress": "PRIVATE_RANGES_ONLY"}
    assert template["service_account"] == "${var.service_account_email}"
    for probe in ("startup_probe", "liveness_probe"):
        assert container[probe][0]["grpc"][0]["service"] == "featurestore.v1.FeatureStore"
    assert "--address" in container["args"] and "0.0.0.0:${var.port}" in container["args"]
    secrets = [d["env"] for d in container.get("dynamic", []) if "env" in d]
    assert [b["for_each"] for b in secrets] == ["${var.environment}", "${var.secret_environment}"]


def test_the_service_shares_the_read_functions_identity_secrets_environment_and_invokers() -> None:
    module = grpc_module()
    defaults = grpc_defaults()
    like = "local.grpc_like"

    assert defaults["same_as"] == "read_features"
    assert module["service_account_email"] == "${module.function[var.grpc.same_as].service_account_email}"
    assert module["vpc_connector"] == "${module.network.connector_id}"
    for key, source in (("environment", "access_env"), ("secret_environment", "access_secret_env"),
                        ("invokers", "callers")):
        assert like in module[key] and source in module[key], key
    fn_module = next(b["function"] for b in blocks(environment_file("main.tf"), "module") if "function" in b)
    assert module["environment"].replace("local.grpc_like", "each.value") == fn_module["environment"]
    assert module["secret_environment"].replace("local.grpc_like", "each.value") == fn_module["secret_environment"]


def test_the_service_is_alerted_like_the_functions() -> None:
    monitoring = next(b["monitoring"] for b in blocks(environment_file("main.tf"), "module") if "monitoring" in b)

    assert "module.grpc_service.name" in monitoring["services"]
    assert "var.grpc.p95_target_ms" in monitoring["read_latency_p95_ms"]
    assert grpc_defaults()["p95_target_ms"] == 30


def test_cloud_build_builds_pushes_and_deploys_the_image() -> None:
    steps = {s["id"]: s for s in cloudbuild()["steps"]}
    dockerfile = ROOT / "shared" / "grpc.Dockerfile"

    assert steps["grpc-image"]["args"][:3] == ["build", "-f", "shared/grpc.Dockerfile"]
    assert steps["grpc-push"]["args"] == ["push", "${_GRPC_IMAGE}"]
    assert '-var="grpc_image=${_GRPC_IMAGE}"' in steps["plan"]["args"][-1]
    assert 'ENTRYPOINT ["fs-grpc"]' in dockerfile.read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fs-grpc"] == "feature_store.transports.grpc_server:main"
    assert "modules/grpc_service/main.tf" in parsed_terraform()
