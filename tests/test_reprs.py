"""House rule (DESIGN.md): a ``repr`` on every class."""

import importlib
import inspect
import pkgutil

import aekit


def test_every_class_has_a_repr_of_its_own():
    missing = []
    for module_info in pkgutil.iter_modules(aekit.__path__):
        if module_info.name == "__main__":
            continue
        module = importlib.import_module(f"aekit.{module_info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and not issubclass(cls, BaseException):
                if cls.__repr__ is object.__repr__:
                    missing.append(f"{module.__name__}.{name}")
    assert not missing, f"classes without a repr: {missing}"
