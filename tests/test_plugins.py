"""The plugin system: built-ins, entry-point discovery, filtering, failures, registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import essencekit
from essencekit import plugins
from essencekit.backends import Backend
from essencekit.cli import main
from essencekit.weights import WeightArtifact

ROOT = Path(__file__).resolve().parent.parent


class _ToyBackend(Backend):
    name = "toy"
    description = "a test backend"
    priority = -1

    def availability(self):
        return False, "toys are not real hardware"

    @property
    def device(self):
        return torch.device("cpu")


def _artifact(name="toy-weights", **kw):
    defaults = dict(
        kind="latents", filename="toy.npy", urls=("http://127.0.0.1:9/toy.npy",), sha256="0" * 64,
        size=10, license="none published", description="toy",
    )
    defaults.update(kw)
    return WeightArtifact(name=name, **defaults)


def _make_distribution(site: Path, module_source: str, entry_name: str = "toy", module: str = "essencekit_toy") -> None:
    """Install a plugin the way pip would leave it: a module and a dist-info with entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))
    dist = site / f"{module}-0.1.dist-info"  # underscores: importlib parses the name from it
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[essencekit]\n{entry_name} = {module}\n")


TOY_PLUGIN = """
    import essencekit
    import typer

    @essencekit.hookimpl
    def register_weights(register):
        register(essencekit.WeightArtifact(
            name="toy-weights", kind="latents", filename="toy.npy",
            urls=("https://example.org/toy.npy",), sha256=None, size=None,
            license="none published", description="a toy artifact"))

    @essencekit.hookimpl
    def register_commands(app):
        @app.command()
        def toy():
            "Say hello from the toy plugin."
            typer.echo("hello from toy")
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_builtins_load_through_the_hooks():
    info = {p.name: p for p in plugins.plugins_info()}
    assert {"essencekit_builtins.backends", "essencekit_builtins.clip_models", "essencekit_builtins.weights"} <= set(info)
    assert all(info[name].builtin for name in plugins.BUILTIN_PLUGINS)
    assert "register_backends" in info["essencekit_builtins.backends"].hooks
    assert plugins.owner_of("backends", "cpu") == "essencekit_builtins.backends"


def test_entry_point_plugin_is_discovered_and_adds_a_command(site, capsys):
    _make_distribution(site, TOY_PLUGIN)
    plugins.reset()
    assert "toy-weights" in plugins.registered("weights")
    toy = next(p for p in plugins.plugins_info() if p.name == "toy")
    assert not toy.builtin and toy.distribution == "essencekit-toy 0.1"
    assert toy.hooks == ["register_commands", "register_weights"]
    with pytest.raises(SystemExit) as exit_:
        main(["toy"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == "hello from toy\n"


def test_load_plugins_variable_restricts_third_party_but_not_builtins(site, monkeypatch):
    _make_distribution(site, TOY_PLUGIN)
    monkeypatch.setenv("ESSENCEKIT_LOAD_PLUGINS", "")
    plugins.reset()
    names = {p.name for p in plugins.plugins_info()}
    assert "toy" not in names and set(plugins.BUILTIN_PLUGINS) <= names
    monkeypatch.setenv("ESSENCEKIT_LOAD_PLUGINS", "other, toy")
    plugins.reset()
    assert "toy" in {p.name for p in plugins.plugins_info()}
    monkeypatch.setenv("ESSENCEKIT_LOAD_PLUGINS", "other")
    plugins.reset()
    assert "toy" not in {p.name for p in plugins.plugins_info()}


def test_a_plugin_that_fails_to_import_is_reported_and_the_cli_still_works(site, capsys):
    _make_distribution(site, "raise ImportError('needs libfoo')\n", entry_name="broken", module="essencekit_broken")
    plugins.reset()
    errors = plugins.load_errors()
    assert [(e.plugin, e.message) for e in errors] == [("broken", "failed to load: ImportError: needs libfoo")]
    with pytest.raises(SystemExit) as exit_:
        main(["plugins", "--json"])
    assert exit_.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert {"plugin": "broken", "message": "failed to load: ImportError: needs libfoo"} in report["errors"]


def test_hook_errors_duplicates_and_wrong_types_are_reported_not_raised(register_plugin):
    class Broken:
        @essencekit.hookimpl
        def register_backends(self, register):
            raise RuntimeError("boom")

    class Duplicate:
        @essencekit.hookimpl
        def register_backends(self, register):
            register(_ToyBackend())
            duplicate_cpu = _ToyBackend()
            duplicate_cpu.name = "cpu"
            register(duplicate_cpu)

    class WrongType:
        @essencekit.hookimpl
        def register_weights(self, register):
            register({"name": "not-an-artifact"})

    register_plugin(Broken(), "broken")
    register_plugin(Duplicate(), "duplicate")
    register_plugin(WrongType(), "wrong-type")
    backends = plugins.registered("backends")
    assert isinstance(backends["cpu"], Backend) and backends["cpu"].name == "cpu"
    assert plugins.owner_of("backends", "cpu") == "essencekit_builtins.backends"
    assert plugins.owner_of("backends", "toy") == "duplicate"
    plugins.registered("weights")
    messages = {e.plugin: e.message for e in plugins.load_errors()}
    assert messages["broken"] == "register_backends failed: RuntimeError: boom"
    assert "'cpu' is already registered by essencekit_builtins.backends" in messages["duplicate"]
    assert "expects WeightArtifact objects, got dict" in messages["wrong-type"]


def test_hooks_are_called_through_pluggy_matching_the_arguments_each_implementation_names(register_plugin):
    """docs/plugin-guide.md promises that an implementation naming fewer arguments than the
    hook keeps working (as when a hook gains one); a hook that raises is reported, alone."""
    calls = []

    class NoArgument:
        @essencekit.hookimpl
        def register_backends(self):
            calls.append("no-argument")

    class OnlyRegister:
        @essencekit.hookimpl
        def register_backends(self, register):
            calls.append("only-register")
            register(_ToyBackend())

    class Raises:
        @essencekit.hookimpl
        def register_backends(self, register):
            calls.append("raises")
            raise KeyError("x")

    register_plugin(Raises(), "raises")
    register_plugin(NoArgument(), "no-argument")
    register_plugin(OnlyRegister(), "only-register")
    through_pluggy = []
    plugins.plugin_manager().add_hookcall_monitoring(
        lambda hook, impls, kwargs: through_pluggy.append((hook, [i.plugin_name for i in impls])), lambda *a: None)
    assert "toy" in plugins.registered("backends") and "cpu" in plugins.registered("backends")
    assert calls == ["raises", "no-argument", "only-register"]  # in load order, each once
    # one pluggy call per plugin: pluggy's call of all of them would stop at the first error
    assert through_pluggy == [("register_backends", [name]) for name in (
        "essencekit_builtins.backends", "raises", "no-argument", "only-register")]
    assert {e.plugin: e.message for e in plugins.load_errors()} == {"raises": "register_backends failed: KeyError: 'x'"}


def test_a_third_party_backend_is_selectable_and_explains_unavailability(register_plugin):
    class Toy:
        @essencekit.hookimpl
        def register_backends(self, register):
            register(_ToyBackend())

    register_plugin(Toy(), "toy")
    with pytest.raises(essencekit.EssencekitError, match="toys are not real hardware"):
        essencekit.select_backend("toy")


def test_weight_artifacts_validate_their_fields():
    with pytest.raises(essencekit.EssencekitError, match="sha256 must be 64 lower-case hex"):
        _artifact(sha256="abc")
    with pytest.raises(essencekit.EssencekitError, match="not an http"):
        _artifact(urls=("ftp://example.org/x",))
    with pytest.raises(essencekit.EssencekitError, match="kind must be one of"):
        _artifact(kind="video")
    with pytest.raises(essencekit.EssencekitError, match="plain file name"):
        _artifact(filename="../escape.pt")
    assert _artifact(sha256=None).pinned is False


def test_plugins_command_lists_everything_as_json(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plugins", "--json"])
    assert exit_.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"plugins", "backends", "clip_models", "weights", "aligners", "errors"}
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["cpu"] == {
        "name": "cpu", "plugin": "essencekit_builtins.backends", "priority": 0, "description": "the CPU, float32",
        "max_batch": 1, "channels_last": False, "fast_grouped_conv": True,
    }
    # listed, not probed: whether a backend works here takes torch (and CUDA) to find out,
    # which is `essencekit doctor`'s job (tests/test_doctor.py)
    assert backends["cuda"]["priority"] == 30 and "available" not in backends["cuda"]


def test_the_installed_console_script_lists_an_entry_point_plugin(site):
    """End to end: a separate process, discovering the plugin through real entry points."""
    _make_distribution(site, TOY_PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("ESSENCEKIT_LOAD_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "essencekit", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "toy" in [p["name"] for p in report["plugins"]]
    assert "toy-weights" in [w["name"] for w in report["weights"]]


def test_the_worked_example_plugin_installs_through_its_entry_point(site):
    """docs/example-plugin, made discoverable exactly as its pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")
    example = ROOT / "docs" / "example-plugin"
    project = tomllib.loads((example / "pyproject.toml").read_text())["project"]
    (entry_name, module), = project["entry-points"]["essencekit"].items()
    source = (example / f"{module}.py").read_text()
    _make_distribution(site, source, entry_name=entry_name, module=module)
    plugins.reset()
    assert not plugins.load_errors()
    assert plugins.owner_of("clip_models", "ViT-B/16") == entry_name
    artifact = plugins.registered("weights")["clip-vit-b-16"]
    assert artifact.sha256 in artifact.urls[0] and artifact.kind == "clip"
    variant = plugins.registered("clip_models")["ViT-B/16"]
    assert variant.weights == artifact.name and variant.open_clip_config["quick_gelu"] is True
