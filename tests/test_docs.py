"""The documentation stays true: every hook is documented, and every example runs."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

import essencekit
from essencekit import hookspecs, plugins
from essencekit.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def _sections() -> dict[str, str]:
    text = (DOCS / "plugins.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    return {part.split("\n", 1)[0].strip(): part for part in parts[1:]}


def _example(section: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "each hook section has exactly one runnable example"
    return blocks[0]


def _load_example(hook: str) -> types.ModuleType:
    module = types.ModuleType(f"docs_example_{hook}")
    exec(compile(_example(_sections()[hook]), f"docs/plugins.md#{hook}", "exec"), module.__dict__)
    return module


def test_every_hook_has_a_docstring_and_a_docs_section():
    assert HOOKS == ["register_aligners", "register_backends", "register_clip_models", "register_commands", "register_weights"]
    sections = _sections()
    for hook in HOOKS:
        assert getattr(hookspecs, hook).__doc__.strip(), f"{hook} has no docstring"
        assert hook in sections, f"docs/plugins.md has no '## {hook}' section"
        assert f"def {hook}(" in _example(sections[hook]), f"the {hook} example does not implement it"


@pytest.mark.parametrize(
    "hook, registry, name",
    [
        ("register_backends", "backends", "cpu-1"),
        ("register_clip_models", "clip_models", "ViT-B/16"),
        ("register_weights", "weights", "clip-vit-b-16"),
        ("register_aligners", "aligners", "centred"),
    ],
)
def test_registry_examples_run(hook, registry, name, register_plugin):
    register_plugin(_load_example(hook), f"example-{hook}")
    assert name in plugins.registered(registry)
    assert plugins.owner_of(registry, name) == f"example-{hook}"
    assert not plugins.load_errors()


def test_backend_example_is_selectable(register_plugin, monkeypatch):
    import torch

    # the example pins torch to one thread; keep the rest of the suite at full speed
    monkeypatch.setenv("CPU1_THREADS", str(torch.get_num_threads()))
    register_plugin(_load_example("register_backends"), "example")
    backend = essencekit.select_backend("cpu-1")
    assert backend.prepare(torch.nn.Linear(2, 2)).weight.device.type == "cpu"


def test_aligner_example_detects_a_face(register_plugin):
    from PIL import Image

    register_plugin(_load_example("register_aligners"), "example")
    faces = plugins.registered("aligners")["centred"].detect(Image.new("RGB", (100, 200)))
    assert faces[0].eye_left == (38.0, 94.0)


def test_command_example_runs(register_plugin, capsys):
    register_plugin(_load_example("register_commands"), "example")
    with pytest.raises(SystemExit) as exit_:
        main(["backends-available"])
    assert exit_.value.code == 0
    assert "cpu" in capsys.readouterr().out.split()


# --------------------------------------------------------------------------- task-oriented pages

GUIDES = ("guide.md", "variants.md", "essence-format.md", "plugin-guide.md", "scaling.md", "encoder.md")


def _blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def test_essence_format_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = _blocks("essence-format.md", "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/essence-format.md", "exec"), {})
    assert capsys.readouterr().out.split("\n")[0] == "0.75"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npy", "mine.pt", "mine.safetensors"]


def test_plugin_guide_test_passes_on_the_example_plugin(monkeypatch):
    (code,) = [block for block in _blocks("plugin-guide.md", "python") if "def test_" in block]
    monkeypatch.syspath_prepend(str(DOCS / "example-plugin"))
    monkeypatch.setenv("ESSENCEKIT_LOAD_PLUGINS", "")
    namespace: dict = {}
    exec(compile(code, "docs/plugin-guide.md", "exec"), namespace)
    plugins.reset()
    namespace["test_registers_the_variant_and_its_weights"]()


def test_the_example_plugin_is_light_and_its_config_is_open_clips(monkeypatch):
    """The example plugin gives its model configuration as data (so that loading it, which every
    command does, imports no torch); the data must be open_clip's own configuration."""
    import subprocess
    import sys

    import open_clip

    monkeypatch.syspath_prepend(str(DOCS / "example-plugin"))
    import essencekit_vit_b_16

    variants = []
    essencekit_vit_b_16.register_clip_models(variants.append)
    assert variants[0].open_clip_config == open_clip.get_model_config("ViT-B-16-quickgelu")
    probe = "import sys, essencekit_vit_b_16; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=DOCS / "example-plugin", capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_guide_commands_use_real_commands_and_options():
    """Every `essencekit CMD --option` in the guides' shell blocks exists."""
    import shlex

    import typer

    from essencekit.cli import build_app

    commands = typer.main.get_command(build_app()).commands
    checked = 0
    for page in GUIDES:
        for block in _blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].split("|", 1)[0]
                words = shlex.split(line)
                if "essencekit" not in words:
                    continue
                name, *args = words[words.index("essencekit") + 1:]
                assert name in commands, f"docs/{page}: no command `essencekit {name}`"
                command = commands[name]
                if hasattr(command, "commands"):  # a group (`essencekit cache list`): its subcommand's options
                    sub, *args = args
                    assert sub in command.commands, f"docs/{page}: no command `essencekit {name} {sub}`"
                    command, name = command.commands[sub], f"{name} {sub}"
                known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
                for arg in args:
                    if arg.startswith("-") and not re.fullmatch(r"-[\d.,]+", arg):
                        assert arg.split("=", 1)[0] in known, f"docs/{page}: `essencekit {name}` has no {arg}"
                checked += 1
    assert checked >= 20
