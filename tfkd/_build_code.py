"""Whether a layer's own `build` may make layers, read from its source.

`prune` keeps a block of the user's own class whole, and in a model never called it cannot
see the layers such a block's `build` will make, so it names the block. Most user layers'
`build` makes weights only (`self.add_weight`), and naming each was noise. A build is read
as weights-only when every call in it is one of a few known kinds; anything else, or a
build whose source cannot be read, may make layers (a wrong "may" keeps a warning, a wrong
"no" would hide one).
"""

import ast
import builtins
import inspect
import math
import textwrap

import keras
import numpy as np

from tfkd import _graph

# Calls on the layer itself that make weights, not layers.
_WEIGHT_MAKERS = ("add_weight", "add_variable")
# Keras's modules whose functions and classes make no layer.
_NO_LAYERS = ("ops", "initializers", "regularizers", "constraints", "backend", "dtype_policies")


def build_may_make_layers(layer):
    """Whether the `build` that `layer` runs is the user's and may make layers: it makes
    none where each call it holds is `self.add_weight(...)`, a builtin, a numpy, math or
    `keras.ops` function, an initializer, regularizer or constraint, `keras.InputSpec`, a
    method of one of its arguments (`input_shape.as_list()`), `self.<attr>.build(...)` of
    a layer that makes none itself (Keras's, or the user's by the same reading), or
    `super().build(...)` that reaches Keras's `Layer.build` or such a build."""
    try:
        return _from(type(layer), 0, layer)
    except Exception:  # a build this does not understand: it may
        return True


def _from(cls, start, layer):
    """Whether the first `build` in `cls.__mro__[start:]` may make layers."""
    mro = cls.__mro__
    index = next(i for i in range(start, len(mro)) if "build" in vars(mro[i]))
    owner = mro[index]
    if owner is keras.layers.Layer:
        return False
    if _graph.is_library_class(owner):  # Keras's own layers' builds make their sublayers
        return start > 0
    build = inspect.unwrap(getattr(vars(owner)["build"], "__func__", vars(owner)["build"]))
    tree = ast.parse(textwrap.dedent(inspect.getsource(build)))
    (definition,) = tree.body
    arguments = {argument.arg for argument in definition.args.args[1:]}
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return any(_may(call, build.__globals__, arguments, cls, index + 1, layer) for call in calls)


def _may(function, namespace, arguments, cls, parent, layer):
    names = _dotted(function)
    if _reaches_super(function):
        return function.attr != "build" or _from(cls, parent, layer)
    if names is None:
        return True
    if names == ("super",):
        return False
    if names[0] == "self":
        return _may_on_self(names[1:], layer)
    if names[0] in arguments and len(names) > 1:  # input_shape.as_list()
        return False
    value = _resolve(names, namespace)
    return value is _UNRESOLVED or not _makes_no_layer(value)


def _may_on_self(names, layer):
    if len(names) == 1:
        return names[0] not in _WEIGHT_MAKERS
    if len(names) == 2 and names[1] == "build":
        held = getattr(layer, names[0], None)
        if isinstance(held, keras.layers.Layer):
            return not _graph.is_library_class(type(held)) and _from(type(held), 0, held)
    return True


def _makes_no_layer(value):
    if value is keras.InputSpec or any(value is item for item in vars(builtins).values()):
        return True
    module = getattr(value, "__module__", None) or ""
    parts = module.split(".")
    if parts[:2] == ["keras", "src"] and len(parts) > 2 and parts[2] in _NO_LAYERS:
        return True
    return any(
        value is getattr(library, getattr(value, "__name__", ""), None) for library in (np, math)
    )


_UNRESOLVED = object()


def _reaches_super(function):
    base = function.value if isinstance(function, ast.Attribute) else None
    return isinstance(base, ast.Call) and _dotted(base.func) == ("super",)


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
        value = getattr(value, name, _UNRESOLVED)
        if value is _UNRESOLVED:
            break
    return value
