"""YAML (and JSON) as plain data only, with the line of every key, for pipeline configs."""

import re

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers: `1e-3` is a float (YAML 1.1 wants
    `1.0e-3`), `2:4` a string (YAML 1.1 reads it as the base-60 integer 124) and `010` the
    integer 10 (YAML 1.1 reads it as octal 8, and `028` as nothing)."""

    def construct_yaml_int(self, node):
        return int(self.construct_scalar(node), 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

_PLAIN_TAGS = (
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
)


# A config needs a few levels (stages, a stage, its arguments, a list in them); deeper
# nesting is refused before anything recurses through it (Python's recursion limit).
MAX_DEPTH = 32
TOO_DEEP = f"the config is nested more than {MAX_DEPTH} levels deep; a config needs a few."


class Invalid:
    """Stands for a value that was refused (and reported), so that it is not checked again."""

    def __repr__(self):
        return "<invalid>"


class SyntaxProblem(ValueError):
    """The text is no YAML at all: nothing further can be read. `line` says where."""

    def __init__(self, line, message):
        super().__init__(message)
        self.line = line


class PlainData:
    """Reads YAML into dicts, lists and scalars; records each key's line, and problems.

    Attributes:
        lines: `{key path (tuple): line}`, for keys and values.
        problems: `[(key path, message, line)]`: refused tags, aliases, repeated or
            non-string keys. Their values read as `Invalid`; the rest is read on.
    """

    def __init__(self):
        self.lines = {}
        self.problems = []
        self._nodes = set()

    def read(self, text):
        try:
            node = yaml.compose(text, Loader=_Loader)
        except RecursionError:  # PyYAML composes nested nodes recursively
            raise SyntaxProblem(1, TOO_DEEP) from None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            raise SyntaxProblem(
                mark.line + 1 if mark else 1, f"invalid YAML: {error.problem}"
            ) from None
        except yaml.reader.ReaderError as error:  # a control character, say
            line = text[: error.position].count("\n") + 1
            raise SyntaxProblem(line, f"invalid YAML: {error.reason}") from None
        if node is None:
            raise SyntaxProblem(1, "the config is empty.")
        return self._value(node, ())

    def _value(self, node, key):
        self.lines.setdefault(key, node.start_mark.line + 1)
        if len(key) > MAX_DEPTH:
            return self._refuse(key, TOO_DEEP)
        if id(node) in self._nodes:  # an alias: refused, as a self-reference would never end
            return self._refuse(key, "YAML aliases (*name) are not supported in configs.")
        self._nodes.add(id(node))
        if node.tag not in _PLAIN_TAGS:
            return self._refuse(
                key,
                f"tag {node.tag!r} is not allowed: a config holds data only (mappings, lists, "
                "strings, numbers, booleans, null).",
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, key)
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, (*key, index)) for index, item in enumerate(node.value)]
        try:
            return _Loader("").construct_object(node)
        except (ValueError, KeyError, IndexError, yaml.YAMLError):  # `!!int abc`, `!!float`
            kind = node.tag.rsplit(":", 1)[-1]
            return self._refuse(key, f"{node.value!r} cannot be read as the {kind} its tag asks.")

    def _mapping(self, node, key):
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _PLAIN_TAGS[0]:
                self._refuse(key, "keys must be strings.", key_node.start_mark.line + 1)
                continue
            child = (*key, key_node.value)
            self.lines[child] = key_node.start_mark.line + 1
            if key_node.value in result:
                self._refuse(child, "this key appears twice.")
                continue
            result[key_node.value] = self._value(value_node, child)
        return result

    def _refuse(self, key, message, line=None):
        self.problems.append((key, message, line or self.lines.get(key, 1)))
        return Invalid()
