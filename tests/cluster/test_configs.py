import json
import os
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"


def ray_schema():
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_launcher_configs_match_rays_schema(name):
    import jsonschema

    config = yaml.safe_load((CONFIGS / name).read_text())
    jsonschema.validate(config, ray_schema())
    assert config["head_node_type"] in config["available_node_types"]
    assert any("ray start --head" in c and "--dashboard-host=127.0.0.1" in c
               for c in config["head_start_ray_commands"])


def test_schema_rejects_a_broken_config():
    import jsonschema

    config = yaml.safe_load((CONFIGS / "aws-gpu.yaml").read_text())
    config["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, ray_schema())


def test_rayjob_names_a_blendprune_entrypoint():
    job = yaml.safe_load((CONFIGS / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("blendprune search ")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert "MLFLOW_TRACKING_URI" in env["env_vars"]
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == "1"


def test_runtime_env_is_valid_for_ray():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((CONFIGS / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)
    assert ".venv" in env["excludes"]
