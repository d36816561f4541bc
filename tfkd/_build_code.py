"""Whether a layer class's own `build` may make layers, read from its source.

`prune` keeps a block of the user's own class whole, and in a model never called it cannot
see the layers such a block's `build` will make. Most user layers' `build` makes weights
only (`self.add_weight`), and warning about each was noise: this reads the code instead.
"""

import ast
import builtins
import inspect
import textwrap

import keras

from tfkd import _graph

# Calls on the layer itself that make weights, not layers.
_WEIGHT_MAKERS = {"add_weight", "add_variable", "build"}


def build_may_make_layers(cls):
    """Whether the `build` that `cls` runs (the first class in its MRO that defines one)
    is the user's and may make layers: it calls a Layer class, a function or method of
    the user's own, or something it does not name plainly; or its source cannot be read.
    A `super().build(...)` counts as the `build` it reaches; `self.<layer>.build(...)`
    and `self.add_weight(...)` make no layer; classes that are not layers (initializers,
    `InputSpec`), builtins and library functions neither."""
    owner = next((c for c in cls.__mro__ if "build" in vars(c)), None)
    if owner is None or _graph.is_library_class(owner):
        return False
    build = vars(owner)["build"]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(build)))
    except (OSError, TypeError, SyntaxError):
        return True
    parent = cls.__mro__[cls.__mro__.index(owner) + 1]
    local = _local_names(tree)
    calls = (node.func for node in ast.walk(tree) if isinstance(node, ast.Call))
    return any(_may_make_layers(call, build.__globals__, local, parent) for call in calls)


def _may_make_layers(function, namespace, local, parent):
    if _is_super_call(function):  # super().build(...), or super() itself
        return isinstance(function, ast.Attribute) and (
            function.attr != "build" or build_may_make_layers(parent)
        )
    names = _dotted(function)
    if names is None:
        return True
    if names == ("super",):
        return False
    if names[0] == "self":
        return not (len(names) >= 2 and names[-1] in _WEIGHT_MAKERS)
    if names[0] in local:  # a method of a value made here (`input_shape.as_list()`)
        return len(names) == 1
    value = _resolve(names, namespace)
    if value is _UNRESOLVED:
        return True
    if isinstance(value, type):
        return issubclass(value, keras.layers.Layer)
    module = getattr(value, "__module__", None) or ""
    return module.split(".")[0] not in _LIBRARIES


# Modules whose functions make no layer of the user's (Keras's own layer classes are
# caught as classes).
_LIBRARIES = ("keras", "numpy", "tensorflow", "jax", "torch", "math", "builtins", "tfkd")

_UNRESOLVED = object()


def _local_names(tree):
    """The names `build` takes as arguments or assigns."""
    arguments = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    stored = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    return (arguments | stored) - {"self"}


def _is_super_call(function):
    base = function.value if isinstance(function, ast.Attribute) else None
    return (
        isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super"
    )


def _dotted(function):
    """("keras", "layers", "Dense") for `keras.layers.Dense`; None for a computed callee."""
    names = []
    while isinstance(function, ast.Attribute):
        names.append(function.attr)
        function = function.value
    if not isinstance(function, ast.Name):
        return None
    return (function.id, *reversed(names))


def _resolve(names, namespace):
    head = names[0]
    if head in namespace:
        value = namespace[head]
    elif hasattr(builtins, head):  # len, tuple, print...
        value = getattr(builtins, head)
    else:
        return _UNRESOLVED
    for name in names[1:]:
        try:
            value = getattr(value, name)
        except AttributeError:
            return _UNRESOLVED
    return value
