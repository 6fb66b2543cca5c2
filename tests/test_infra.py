"""Every infra/ config is loaded and checked by the tool that reads it, so none can rot: the compose file by
docker-compose, the Kubernetes work-pool template by Prefect's own work-pool validation, the accelerate config by
accelerate, the DeepSpeed config by the HF Trainer's filling of its "auto" values, the automation by Prefect's
automation schema, and the launch scripts by running them without their settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SECRET_NAMES = ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY", "PREFECT_AUTH_STRING",
                "S3_SECRET_ACCESS_KEY", "OPENAI_API_KEY")


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose not found: run infra/system-deps.sh"
    return subprocess.run([docker_compose, "--env-file", str(env_file), "-f", str(INFRA / "compose.yaml"), *args],
                          capture_output=True, text=True, timeout=120, cwd=INFRA)


def filled_env(tmp_path: Path) -> Path:
    """infra/.env.example with every empty value filled in, as a user does."""
    lines = [f"{line}value-{n}" if line.endswith("=") else line
             for n, line in enumerate((INFRA / ".env.example").read_text().splitlines())]
    env = tmp_path / ".env"
    env.write_text("\n".join(lines) + "\n")
    return env


def test_the_compose_file_is_valid_and_needs_every_secret_from_the_environment(tmp_path: Path) -> None:
    done = compose(filled_env(tmp_path), "config")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == {"postgres", "minio", "buckets", "mlflow", "prefect-server", "prefect-worker"}
    # With the example's empty values, compose refuses to start and names what is missing.
    refused = compose(INFRA / ".env.example", "config")
    assert refused.returncode != 0 and "in infra/.env" in refused.stderr

    text = (INFRA / "compose.yaml").read_text()
    values = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= set(values), f"variables missing from infra/.env.example: {used - set(values)}"
    assert all(values[name] == "" for name in SECRET_NAMES), "a secret has a value in a file under git"
    for service in resolved["services"].values():
        for port in service.get("ports", []):
            host = port if isinstance(port, str) else port.get("host_ip", "")  # compose v1 / v2 spellings
            assert host.startswith("127.0.0.1"), f"published beyond loopback: {port}"
        command = service.get("command") or []
        scripts = [word for word in command if word.startswith("infra/bin/")]
        scripts += re.findall(r"infra/bin/[\w.-]+", " ".join(command))
        assert all((ROOT / script).is_file() for script in scripts), scripts
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            assert not source.startswith("/") or Path(source).exists(), f"bind-mounted file missing: {volume}"
    build = resolved["services"]["mlflow"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).is_file()


@pytest.mark.parametrize(("script", "needs"), [("mlflow-server.sh", "PGHOST"), ("prefect-server.sh", "PGHOST"),
                                              ("prefect-worker.sh", "PREFECT_API_URL")])
def test_each_launch_script_refuses_to_start_without_its_settings(script: str, needs: str) -> None:
    done = subprocess.run(["bash", str(INFRA / "bin" / script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and needs in done.stderr


def test_the_kubernetes_work_pool_template_passes_prefects_validation_and_renders_a_job() -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values, find_placeholders

    template = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())
    WorkPoolCreate(name="rearank-k8s", type="kubernetes", base_job_template=template)  # what the server checks
    jsonschema.Draft7Validator.check_schema(template["variables"])

    # The job configuration keeps every key of Prefect's own Kubernetes template (the worker reads them).
    import prefect.server.api

    bundled = Path(prefect.server.api.__file__).parent / "collections_data" / "views" / "aggregate-worker-metadata.json"
    default = json.loads(bundled.read_text())["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]
    assert set(default["job_configuration"]) <= set(template["job_configuration"])
    declared = set(template["variables"]["properties"])
    assert {p.name for p in find_placeholders(template["job_configuration"])} <= declared

    values = {name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec}
    values.update(gpus=8, env={"REARANK_PROFILE": "paper"}, command="prefect flow-run execute")
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    jsonschema.validate(values, template["variables"])
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "rearank:latest" and container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["envFrom"] == [{"secretRef": {"name": "rearank-secrets"}}]  # secrets by reference only
    assert pod["volumes"][0]["name"] == container["volumeMounts"][0]["name"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rearank-work"
    assert not any(word in json.dumps(template).upper() for word in ("PASSWORD=", "SECRET_ACCESS_KEY="))


def test_the_accelerate_config_names_a_deepspeed_config_the_trainer_fills_completely(tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    config = load_config_from_file(str(INFRA / "accelerate" / "multi_gpu.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED and config.num_processes == 8
    deepspeed_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
    assert deepspeed_file.is_file()

    # The Trainer's own "auto" filling (transformers' HfTrainerDeepSpeedConfig) on accelerate's parser: the deepspeed
    # package itself (CUDA) is not installed here, and only its presence check would need it.
    filling = type("TrainerFilling", (HfDeepSpeedConfig,),
                   {k: v for k, v in vars(HfTrainerDeepSpeedConfig).items() if k != "__init__"})
    ds = filling(str(deepspeed_file))
    ds._dtype, ds.mismatches = None, []
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, gradient_accumulation_steps=8,
                             bf16=True, use_cpu=True, max_grad_norm=1.0, report_to="none")
    ds.trainer_config_process(args)
    model = type("Model", (), {"config": type("Config", (), {"hidden_size": 3584})()})()  # Qwen2.5-7B's width
    ds.trainer_config_finalize(args, model, num_training_steps=100)
    assert ds.is_zero3() and '"auto"' not in json.dumps(ds.config), ds.config
    assert ds.config["gradient_accumulation_steps"] == 8 and ds.config["bf16"]["enabled"] is True


def test_the_zombie_run_automation_and_the_deployments_load() -> None:
    from prefect.events.schemas.automations import AutomationCore, Posture

    automation = AutomationCore.model_validate(yaml.safe_load(
        (INFRA / "prefect" / "crash-zombie-flow-runs.yaml").read_text()))
    assert automation.trigger.posture == Posture.Proactive
    assert automation.actions[0].type == "change-flow-run-state"

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    from flows.pipeline import pipeline

    for deployment in deployments:
        module, name = deployment["entrypoint"].split(":")
        assert (module, name) == ("flows.pipeline", "pipeline")
        assert set(deployment["parameters"]) <= set(pipeline.parameters.properties)
