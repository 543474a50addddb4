"""Plugin loading and the registries the hooks fill.

Built-in plugins (``essencekit_builtins.*``) are registered first, always, with the same
``hookimpl`` marker third-party plugins use. Third-party plugins come from the ``essencekit``
entry-point group; ``ESSENCEKIT_LOAD_PLUGINS`` (comma-separated entry-point names, empty for
none) restricts which of them load. A plugin that fails to import or whose hook raises is
recorded in :func:`load_errors` and skipped: it never breaks the command line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .errors import first_line

ENTRY_POINT_GROUP = "essencekit"
ENV_LOAD_PLUGINS = "ESSENCEKIT_LOAD_PLUGINS"

BUILTIN_PLUGINS = (
    "essencekit_builtins.backends",
    "essencekit_builtins.clip_models",
    "essencekit_builtins.weights",
    "essencekit_builtins.aligners",
)

# registry name -> (hook name, what the registered object must be, as "module:Class")
_REGISTRIES = {
    "backends": ("register_backends", "essencekit.backends:Backend"),
    "clip_models": ("register_clip_models", "essencekit.clip_variant:ClipVariant"),
    "weights": ("register_weights", "essencekit.weights:WeightArtifact"),
    "aligners": ("register_aligners", "essencekit.aligners:Aligner"),
}


@dataclass
class PluginError:
    """A plugin that could not be loaded, or a hook of it that failed."""

    plugin: str
    message: str


@dataclass
class _State:
    manager: pluggy.PluginManager | None = None
    order: list[str] = field(default_factory=list)
    builtin: set[str] = field(default_factory=set)
    distributions: dict[str, str] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    registries: dict[str, dict] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)


_state = _State()


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every plugin loaded on first use."""
    if _state.manager is None:
        _load()
    return _state.manager


def _load() -> None:
    manager = pluggy.PluginManager("essencekit")
    manager.add_hookspecs(hookspecs)
    _state.manager = manager
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        _state.order.append(module_name)
        _state.builtin.add(module_name)

    allowed = os.environ.get(ENV_LOAD_PLUGINS)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed_names is not None and entry_point.name not in allowed_names:
            continue
        if entry_point.name in _state.order or manager.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except Exception as error:  # a broken plugin must not take the CLI down
            _state.errors.append(PluginError(entry_point.name, f"failed to load: {first_line(error, typed=True)}"))
            continue
        _state.order.append(entry_point.name)
        dist = getattr(entry_point, "dist", None)
        if dist is not None:
            _state.distributions[entry_point.name] = f"{dist.metadata['Name']} {dist.version}"


def _expected_type(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _hookimpls_in_load_order(hook_name: str):
    manager = plugin_manager()
    position = {name: i for i, name in enumerate(_state.order)}
    impls = getattr(manager.hook, hook_name).get_hookimpls()
    return sorted(impls, key=lambda impl: position.get(impl.plugin_name, len(position)))


def _call_each(hook_name: str, arguments) -> None:
    """Call ``hook_name`` through pluggy once per plugin implementing it, in load order, with
    ``arguments(plugin_name)`` (a dict of the hook's arguments).

    One call per plugin, because pluggy's call of all of them stops at the first exception: a
    plugin whose hook raises is recorded in :func:`load_errors` and the others still run.
    Through pluggy, because it passes each implementation only the arguments it names: one
    written before the hook gained an argument keeps working.
    """
    manager = plugin_manager()
    impls = _hookimpls_in_load_order(hook_name)
    for impl in impls:
        others = [other.plugin for other in impls if other is not impl]
        call = manager.subset_hook_caller(hook_name, remove_plugins=others)
        try:
            call(**arguments(impl.plugin_name))
        except Exception as error:  # a broken plugin must not take the CLI down
            _state.errors.append(PluginError(impl.plugin_name, f"{hook_name} failed: {first_line(error, typed=True)}"))


def registered(registry: str) -> dict:
    """Every object registered in ``registry`` (``backends``, ``clip_models``, ``weights`` or
    ``aligners``), by name, in plugin load order. The first plugin to register a name keeps it;
    a later one is reported as an error."""
    # keyed by the plugin set, so a plugin registered later (tests, embedding apps) is seen
    key = (registry, tuple(sorted(name for name, _ in plugin_manager().list_name_plugin())))
    if key in _state.registries:
        return _state.registries[key]
    hook_name, type_spec = _REGISTRIES[registry]
    expected = _expected_type(type_spec)
    items: dict = {}

    def arguments(plugin_name: str) -> dict:
        def register(obj):
            if not isinstance(obj, expected):
                raise TypeError(f"{hook_name} expects {expected.__name__} objects, got {type(obj).__name__}")
            name = getattr(obj, "name", "")
            if not name:
                raise ValueError(f"a {expected.__name__} registered by {plugin_name} has no name")
            if name in items:
                owner = _state.owners[(registry, name)]
                _state.errors.append(PluginError(plugin_name, f"{registry} name {name!r} is already registered by {owner}; ignored"))
                return
            items[name] = obj
            _state.owners[(registry, name)] = plugin_name

        return {"register": register}

    _call_each(hook_name, arguments)
    _state.registries[key] = items
    return items


def register_plugin(plugin, name: str) -> None:
    """Register a plugin object (a module or instance with hookimpls) from Python, e.g. in an
    application that embeds essencekit or in tests; it ranks after the plugins loaded so far."""
    plugin_manager().register(plugin, name=name)
    _state.order.append(name)


def owner_of(registry: str, name: str) -> str:
    """The plugin that registered ``name`` in ``registry``."""
    registered(registry)
    return _state.owners[(registry, name)]


def add_commands(app) -> None:
    """Let every plugin add its subcommands to the Typer ``app``."""
    _call_each("register_commands", lambda plugin_name: {"app": app})


def load_errors() -> list[PluginError]:
    """Problems met while loading plugins or calling their hooks."""
    plugin_manager()
    return list(_state.errors)


@dataclass
class PluginInfo:
    name: str
    hooks: list[str]
    builtin: bool
    distribution: str | None


def plugins_info() -> list[PluginInfo]:
    """Every loaded plugin with the hooks it implements, built-ins first."""
    manager = plugin_manager()
    info = []
    for name in _state.order:
        plugin = manager.get_plugin(name)
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
        info.append(PluginInfo(name, hooks, name in _state.builtin, _state.distributions.get(name)))
    return info


def reset() -> None:
    """Forget every loaded plugin and registry, so the next use reloads (for tests)."""
    global _state
    _state = _State()
    # entry points are cached by importlib.metadata per sys.path; a test that adds a
    # distribution to sys.path needs a fresh view
    sys.path_importer_cache.clear()
