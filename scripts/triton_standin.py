"""An inert stand-in for `triton`, installed only into the SGLang parser-check venv.

SGLang imports triton (and `triton.language`, decorators like `triton.jit`) at module level; argument
parsing never runs a kernel. Any attribute or submodule resolves to an inert object; calling a kernel
would fail loudly.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "3.0.0"


class _Inert:
    def __init__(self, name="triton"):
        self._name = name

    def __getattr__(self, item):
        return _Inert(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        # Used as a decorator (`@triton.jit`, `@triton.autotune(...)`): give back the function.
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return _Inert(f"{self._name}()")

    def __getitem__(self, item):
        return _Inert(f"{self._name}[]")

    def __mro_entries__(self, bases):
        return (object,)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Inert(f"triton.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("triton."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda item: _Inert(f"{spec.name}.{item}")  # type: ignore[method-assign]
        return module

    def exec_module(self, module):
        pass


sys.meta_path.append(_Finder())
