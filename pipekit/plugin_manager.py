"""Build the pluggy manager lazily, load plugins from entry points, and call observers safely.

Built-in plugins (``pipekit_plugins.*``) are ordinary entry points of the ``pipekit``
distribution; the core never imports them. Settings:

* ``PIPEKIT_DISABLE_PLUGINS=a,b`` — entry-point names never loaded (a core plugin cannot be
  disabled: that is an error, not a silent gap);
* ``PIPEKIT_PLUGINS=a,b`` — when set, only these third-party plugins load (built-ins always do);
* ``PIPEKIT_TRACE_PLUGINS=1`` — log every hook call at DEBUG.

Hooks are called one implementation at a time (so an error names its plugin, and one failing
observer does not silence the others); pluggy's wrapper implementations (``wrapper=True`` /
``hookwrapper=True``) cannot take part in such calls and are refused at registration.

What plugins register through the registration hooks (serializers, executors) is kept in
:class:`Registry` objects owned here: each is gathered on first use and emptied whenever the
set of plugins changes, so the modules that use them never reach back into this one.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PipekitError, PluginError

log = logging.getLogger("pipekit.plugins")

GROUP = "pipekit"
CORE_DIST = "pipekit"
#: Entry points of the core distribution that cannot be disabled.
ESSENTIAL = frozenset({"serializers", "local_executors"})

_lock = threading.Lock()
_default: pluggy.PluginManager | None = None


@attrs.frozen
class PluginInfo:
    """What ``pipekit plugins`` lists."""

    name: str
    dist: str
    version: str
    module: str
    hooks: tuple[str, ...]


class PipekitPluginManager(pluggy.PluginManager):
    """A plugin manager that remembers which distribution each plugin came from, refuses
    wrapper implementations, and empties the registries whenever its plugins change.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.dists: dict[str, metadata.Distribution | None] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            wrappers = sorted(caller.name
                              for caller in self.get_hookcallers(plugin) or ()
                              for impl in caller.get_hookimpls()
                              if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper))
            if wrappers:
                self.unregister(plugin)
                raise PluginError(f"plugin {registered!r} implements {wrappers[0]} as a "
                                  "wrapper, which pipekit does not support: drop "
                                  "wrapper=True/hookwrapper=True", plugin=registered)
        _reset_registries()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        _reset_registries()
        return removed


def _split(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def third_party_plugins() -> list[str]:
    """The entry-point names of installed plugins that are not pipekit's own (none are
    imported to say so).
    """
    return [ep.name for ep in metadata.entry_points(group=GROUP)
            if (ep.dist.name if ep.dist is not None else "") != CORE_DIST]


def make_plugin_manager(blocked: Iterable[str] = (), only: Iterable[str] | None = None,
                        dists: Iterable[str] | None = None) -> pluggy.PluginManager:
    """A new manager with pipekit's specs and the plugins that entry points provide.

    :param blocked: entry-point names not to load.
    :param only: when given, the third-party entry-point names allowed to load.
    :param dists: when given, load entry points of these distributions only (tests use
        ``{"pipekit"}`` so installed third-party plugins do not leak in).
    :raises PluginError: a core plugin is blocked, or a plugin fails to import.
    """
    blocked = set(blocked)
    if blocked & ESSENTIAL:
        raise PluginError(
            f"plugin {sorted(blocked & ESSENTIAL)[0]!r} is part of pipekit's core and cannot "
            "be disabled; remove it from PIPEKIT_DISABLE_PLUGINS",
            plugin=sorted(blocked & ESSENTIAL)[0],
        )
    allowed_dists = set(dists) if dists is not None else None
    only = set(only) if only is not None else None
    pm = PipekitPluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    found = False
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else ""
        if allowed_dists is not None and dist not in allowed_dists:
            continue
        if only is not None and dist != CORE_DIST and ep.name not in only:
            continue
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} from {dist or '?'} failed to import: {exc}",
                              plugin=ep.name) from exc
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:  # e.g. a hookimpl argument the spec lacks
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise PluginError(f"plugin {ep.name!r} from {dist or '?'} is invalid: {detail}",
                              plugin=ep.name) from exc
        pm.dists[ep.name] = ep.dist
        found = found or dist == CORE_DIST
    if not found and allowed_dists != set():
        raise PluginError(
            "pipekit's built-in plugins are not registered: install pipekit with "
            "`pip install -e .` (or `pip install pipekit`) so its entry points exist"
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc), plugin=getattr(exc.plugin, "__name__", None)) from exc
    if os.environ.get("PIPEKIT_TRACE_PLUGINS"):
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built on first use from the environment's settings."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = make_plugin_manager(
                    blocked=_split(os.environ.get("PIPEKIT_DISABLE_PLUGINS")),
                    only=_split(os.environ["PIPEKIT_PLUGINS"])
                    if "PIPEKIT_PLUGINS" in os.environ else None,
                )
    return _default


def set_plugin_manager(pm: pluggy.PluginManager | None) -> None:
    """Replace (or, with ``None``, forget) the process-wide manager; registries rebuild."""
    global _default
    with _lock:
        _default = pm
    _reset_registries()


def _impls(hook_name: str) -> list[Any]:
    """The implementations of a hook in pluggy's call order (last registered first)."""
    return list(reversed(getattr(get_plugin_manager().hook, hook_name).get_hookimpls()))


def _call(impl: Any, hook_name: str, kwargs: dict[str, Any]) -> Any:
    # Called one by one (not through pm.hook) so each error is attributed to its plugin;
    # PIPEKIT_TRACE_PLUGINS still sees every call through this debug line.
    log.debug("hook %s -> plugin %r", hook_name, impl.plugin_name)
    return impl.function(**{k: kwargs[k] for k in impl.argnames})


def notify(hook_name: str, **kwargs: Any) -> None:
    """Call an observer hook; a plugin's exception is logged, never raised."""
    for impl in _impls(hook_name):
        try:
            _call(impl, hook_name, kwargs)
        except Exception:
            log.exception("plugin %r failed in %s; continuing", impl.plugin_name, hook_name)


def call_each(hook_name: str, before: Callable[[str], None] | None = None,
              **kwargs: Any) -> list[Any]:
    """Call a registration or decision hook; a plugin's exception becomes a
    :class:`PluginError` naming the plugin (a ``PipekitError`` it raised passes through).

    :param before: called with each plugin's name before its implementation runs (lets a
        ``register`` callback know who is registering).
    """
    results = []
    for impl in _impls(hook_name):
        if before is not None:
            before(impl.plugin_name)
        results.append(_decide(impl, hook_name, kwargs))
    return results


def _decide(impl: Any, hook_name: str, kwargs: dict[str, Any]) -> Any:
    try:
        return _call(impl, hook_name, kwargs)
    except PipekitError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                          f"{type(exc).__name__}: {exc}", plugin=impl.plugin_name) from exc


def call_first(hook_name: str, **kwargs: Any) -> Any:
    """Call a ``firstresult`` decision hook: the first non-``None`` result (errors as in
    :func:`call_each`), or ``None``.
    """
    for impl in _impls(hook_name):
        result = _decide(impl, hook_name, kwargs)
        if result is not None:
            return result
    return None


def lazy(load: Callable[[], Any]) -> Any:
    """A hook argument read only if a plugin uses it: ``load()`` runs on first use (an
    attribute read, a comparison…), once. The per-step hooks pass the step's task this way,
    so a run whose plugins never look at it never reads it back from the store.
    """
    # lazy: the proxy class is needed only once a hook with such an argument fires
    import lazy_object_proxy

    return lazy_object_proxy.Proxy(load)


def has_impls(hook_name: str) -> bool:
    """Whether any plugin implements ``hook_name`` (lets hot paths skip the call)."""
    return bool(getattr(get_plugin_manager().hook, hook_name).get_hookimpls())


def list_plugins(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """Every registered plugin with its distribution, version and implemented hooks."""
    pm = pm or get_plugin_manager()
    dists = getattr(pm, "dists", {})
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(name)
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        out.append(PluginInfo(
            name=name,
            dist=dist.name if dist is not None else "",
            version=dist.version if dist is not None else "",
            module=getattr(plugin, "__name__", type(plugin).__name__),
            hooks=hooks,
        ))
    return sorted(out, key=lambda p: (p.dist != CORE_DIST, p.name))


@attrs.frozen
class Registration:
    """One thing a plugin registered through a ``register`` callback."""

    name: str
    value: Any
    plugin: str


def collect(hook_name: str, kind: str, accept: Callable[..., tuple[str, Any]]
            ) -> list[Registration]:
    """Call a registration hook and gather what plugins register, in call order.

    :param kind: what is registered (``"serializer"``, ``"executor"``), for messages.
    :param accept: turns ``register``'s arguments into ``(name, value)``; it raises
        ``TypeError``/``ValueError`` (saying what is wrong) for a bad registration.
    :raises PluginError: a bad registration, or one name registered twice (naming both
        plugins).
    """
    found: dict[str, Registration] = {}
    current = {"plugin": "?"}

    def register(*args: Any, **kwargs: Any) -> None:
        plugin = current["plugin"]
        try:
            name, value = accept(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"plugin {plugin!r} registered {exc}", plugin=plugin) from exc
        if name in found:
            raise PluginError(f"{kind} {name!r} is registered by both "
                              f"{found[name].plugin!r} and {plugin!r}", plugin=plugin)
        found[name] = Registration(name, value, plugin)

    call_each(hook_name, before=lambda name: current.update(plugin=name), register=register)
    return list(found.values())



# -- registries ---------------------------------------------------------------------------------

_registries: weakref.WeakSet[Registry] = weakref.WeakSet()


def _reset_registries() -> None:
    for registry in list(_registries):
        registry.reset()


class Registry:
    """What plugins register through one registration hook, gathered on first use.

    :param hook_name: the registration hook (``pipekit_serializers``, ``pipekit_executors``).
    :param kind: what is registered, for messages.
    :param accept: turns ``register``'s arguments into ``(name, value)`` (see :func:`collect`).
    :param build: turns the registrations, in call order, into what :meth:`get` returns.
    """

    def __init__(self, hook_name: str, kind: str, accept: Callable[..., tuple[str, Any]],
                 build: Callable[[list[Registration]], Any] = list) -> None:
        self.hook_name, self.kind, self.accept, self.build = hook_name, kind, accept, build
        # re-entrant: gathering may build the plugin manager, whose registrations reset this
        self._lock = threading.RLock()
        self._value: Any = None
        _registries.add(self)

    def get(self) -> Any:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self.build(collect(self.hook_name, self.kind, self.accept))
                value = self._value
        return value

    def reset(self) -> None:
        """Forget what was gathered: the next :meth:`get` asks the plugins again."""
        with self._lock:
            self._value = None
