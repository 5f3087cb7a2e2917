"""environment.yml stays consistent with requirements.txt; torch and torchvision are the pinned matching pair."""
from __future__ import annotations

from importlib.metadata import requires, version
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _requirements(name: str) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return {Requirement(line).name.lower().replace("_", "-"): Requirement(line)
            for line in lines if line and not line.startswith("-")}


def test_environment_yml_takes_its_packages_from_requirements_txt():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_section == ["-r requirements.txt"]
    conda_names = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert conda_names == {"python", "pip"}, "packages listed in conda would shadow requirements.txt"


def test_requirements_name_every_dependency_the_mission_names():
    runtime = _requirements("requirements.txt")
    for name in ("gradio", "torch", "torchvision", "transformers", "open-clip-torch", "plotly", "umap-learn",
                 "jupyterlab", "safetensors"):
        assert name in runtime, name
    dev = _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    for name in ("pytest", "gradio-client", "playwright", "nbclient", "ruff"):
        assert name in dev, name


def test_torch_and_torchvision_are_an_installed_matching_pair():
    runtime = _requirements("requirements.txt")
    torch_pin = runtime["torch"].specifier
    vision_pin = runtime["torchvision"].specifier
    assert str(torch_pin).startswith("==") and str(vision_pin).startswith("==")
    installed_torch = version("torch").split("+")[0]
    assert installed_torch in torch_pin
    assert version("torchvision").split("+")[0] in vision_pin
    vision_needs = [Requirement(r) for r in requires("torchvision") if r.startswith("torch")]
    assert all(installed_torch in r.specifier for r in vision_needs if r.name == "torch")
    import torch
    import torchvision.ops  # the compiled ops load: the pair really matches
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
