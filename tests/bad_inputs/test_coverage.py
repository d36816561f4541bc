"""Every name in every `__all__` of tfkd has at least three bad-input cases (issue 16.9)."""

import importlib
import pkgutil
import types

import tfkd

MINIMUM = 3

# Public names that are not entry points, each with the reason. A test module may add
# its own in a dict `EXEMPT` of the same form (e.g. a result type tfkd returns).
EXEMPT = {
    "tfkd.distill.UNLABELED": "a constant (the label of unlabelled examples)",
    "tfkd.export.QUANTIZATIONS": "a constant (the quantization names)",
}


def _public_names():
    """(qualified name, object) for every name in every `__all__`, modules walked."""
    seen, names, queue = set(), [], [tfkd]
    while queue:
        module = queue.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                assert hasattr(value, "__all__"), f"{value.__name__} has no __all__"
                queue.append(value)
            else:
                names.append((f"{module.__name__}.{name}", value))
    return names


def _test_modules():
    package = importlib.import_module("tests.bad_inputs")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("test_") or info.name == "test_coverage":
            continue
        yield importlib.import_module(f"tests.bad_inputs.{info.name}")


def _cases_by_target():
    counts = {}
    for module in _test_modules():
        for case in module.CASES:
            counts[id(case.target)] = counts.get(id(case.target), 0) + 1
    return counts


def _exempt():
    exempt = dict(EXEMPT)
    for module in _test_modules():
        exempt.update(getattr(module, "EXEMPT", {}))
    return exempt


def test_every_public_name_has_bad_input_cases():
    counts, exempt = _cases_by_target(), _exempt()
    missing = []
    for name, value in _public_names():
        if name in exempt:
            continue
        assert callable(value), f"{name} is not callable: add it to EXEMPT with a reason"
        if counts.get(id(value), 0) < MINIMUM:
            missing.append(f"{name} ({counts.get(id(value), 0)} cases)")
    assert not missing, f"public names with fewer than {MINIMUM} bad-input cases: {missing}"


def test_the_walk_finds_every_package():
    names = {name for name, _ in _public_names()}
    assert {"tfkd.Distiller", "tfkd.prune.prune", "tfkd.pipeline.run_config"} <= names
    assert len(names) > 80
