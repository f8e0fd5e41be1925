"""Plain functions from ``__main__`` by value, with the standard pickler only.

A script's ``fn`` lives in ``__main__``, which a worker never imports: it must travel by
value. cloudpickle can carry anything, but importing it costs ~20 ms in the caller and
again in every process that unpickles its output (the template or each worker), on the
critical path of a script's first call. The common case is small: a top-level function
(or lambda) of ``__main__`` without a closure, whose globals are modules, other such
functions and picklable values. :func:`dumps` handles exactly that, and raises
:class:`Unsupported` for anything else (a class or a closure from ``__main__``, a module
that is not importable) so that the caller falls back to cloudpickle. The output needs only
this module (and what its values need) to load.

Functions of one pickle share one globals dictionary on the receiving side, as they did
in ``__main__``; a function that refers to itself or to another (recursion) works,
because the globals are filled in after the function exists.
"""

from __future__ import annotations

import builtins
import importlib
import io
import marshal
import pickle
import sys
import types

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Unsupported", "dumps"]

_BASE_NAMES = ("__name__", "__package__", "__file__")  # kept from the original globals


class Unsupported(Exception):
    """What :func:`dumps` cannot carry: use cloudpickle."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: Any, protocol: int, buffer_callback: Any):
        super().__init__(file, protocol, buffer_callback=buffer_callback)
        # id(original globals) -> the dict that stands for them
        self.shared: dict[int, dict[str, Any]] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType and obj.__module__ == "__main__":
            return self._function(obj)
        if kind is types.CodeType:  # workers run this very interpreter: marshal's format fits
            return marshal.loads, (marshal.dumps(obj),)
        if kind is types.ModuleType:
            name = obj.__name__
            if name == "__main__" or sys.modules.get(name) is not obj:
                raise Unsupported(f"module {name!r} is not importable by name")
            return importlib.import_module, (name,)
        if getattr(obj if isinstance(obj, type) else kind, "__module__", None) == "__main__":
            raise Unsupported(f"{obj!r}: a class of __main__, or an instance of one")
        return NotImplemented

    def _function(self, fn: types.FunctionType) -> Any:
        if fn.__closure__ is not None:
            raise Unsupported(f"{fn.__qualname__} has a closure")
        original = fn.__globals__
        base = self.shared.get(id(original))
        if base is None:
            base = self.shared[id(original)] = {
                k: original[k] for k in _BASE_NAMES if k in original
            }
        used = {name: original[name] for name in _global_names(fn.__code__) if name in original}
        state = (
            used,
            fn.__defaults__,
            fn.__kwdefaults__,
            fn.__dict__ or None,
            fn.__doc__,
            fn.__qualname__,
            fn.__annotations__ or None,
        )
        return _new_function, (fn.__code__, base, fn.__name__), state, None, None, _set_state


def _global_names(code: types.CodeType) -> set[str]:
    """The global names ``code`` (and the code nested in it) may look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _new_function(code: types.CodeType, base: dict[str, Any], name: str) -> types.FunctionType:
    base.setdefault("__builtins__", builtins)
    return types.FunctionType(code, base, name)


def _set_state(fn: types.FunctionType, state: tuple[Any, ...]) -> types.FunctionType:
    (
        used,
        fn.__defaults__,
        fn.__kwdefaults__,
        attributes,
        fn.__doc__,
        fn.__qualname__,
        annotations,
    ) = state
    fn.__globals__.update(used)
    if annotations:
        fn.__annotations__ = annotations
    if attributes:
        fn.__dict__.update(attributes)
    return fn


def dumps(obj: Any, protocol: int, buffer_callback: Any = None) -> bytes:
    """``obj`` pickled with its ``__main__`` functions by value; :class:`Unsupported` if
    something needs cloudpickle.

    Example:
        >>> code = compile("def double(x):\\n    return 2 * x", "<script>", "exec")
        >>> script = {"__name__": "__main__"}
        >>> exec(code, script)
        >>> pickle.loads(dumps(script["double"], 5))(21)
        42
    """
    file = io.BytesIO()
    _Pickler(file, protocol, buffer_callback).dump(obj)
    return file.getvalue()
