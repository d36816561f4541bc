"""Which subgraphs a `.tflite` file's ops run, read from the tables `_tflite_file` checked.

WHILE, IF, CALL_ONCE, CALL and the StableHLO ops with bodies name subgraphs in
their options. LiteRT refuses an index out of range (a bare RuntimeError), but a WHILE
whose condition or body is the subgraph holding it, or a subgraph that runs that one,
crashed the process (SIGSEGV: LiteRT prepares the subgraphs an op runs within the op,
without end). `called_subgraphs` reads the indices, and `check_cycles` refuses any
subgraph that runs itself, through any of these ops.

WHILE, IF and STABLEHLO_CASE resize the inputs of the subgraphs they run to the shapes of
their own inputs (IF's and STABLEHLO_CASE's after the first), then prepare those
subgraphs (LiteRT's while.cc, if.cc, stablehlo_case.cc): a CONV_2D in a WHILE's body whose
input declares [1, 1, 1, 1], given [1, 1024, 1024, 1], made LiteRT reserve 2.4 GB at load.
`follow_sizes` follows each subgraph from the sizes it declares, and again from those each
such op gives it, once for each different set of sizes (the cost bounded: see
`_FOLLOWED_PER_OP`). A WHILE's outputs take its body's outputs' sizes, an IF's its
branches' (as declared where they differ: LiteRT sizes them when it runs). CALL_ONCE's
subgraph has no inputs (LiteRT prepares it as declared, when it first runs);
STABLEHLO_SCATTER and STABLEHLO_REDUCE_WINDOW read which op their body holds, and LiteRT
runs no kernel for CALL, STABLEHLO_WHILE, STABLEHLO_REDUCE or STABLEHLO_SORT: those
subgraphs are followed from the sizes they declare.
"""

from tfkd.export import _tflite_ops
from tfkd.export._tflite_ops import Refused
from tfkd.export._tflite_rules import CODES, op_name

# Ops naming subgraphs: code -> (options union, its type there, [(field, name)]), the
# union 1 for `builtin_options`, 2 for `builtin_options_2`. A field that is a vector
# (STABLEHLO_CASE's branches) is marked with a trailing "s".
_CALLS = {
    119: (1, 93, [(0, "cond_subgraph_index"), (1, "body_subgraph_index")]),
    118: (1, 92, [(0, "then_subgraph_index"), (1, "else_subgraph_index")]),
    129: (1, 103, [(0, "init_subgraph_index")]),
    31: (1, 16, [(0, "subgraph")]),
    200: (2, 15, [(0, "cond_subgraph_index"), (1, "body_subgraph_index")]),
    209: (2, 23, [(0, "branch_subgraph_indices")]),
    206: (2, 21, [(1, "decomposition_subgraph_index")]),
    174: (2, 6, [(1, "body_subgraph_index")]),
    198: (2, 13, [(5, "body_subgraph_index")]),
    199: (2, 14, [(2, "comparator_subgraph_index")]),
    190: (2, 7, [(6, "update_computation_subgraph_index")]),
}


def called_subgraphs(code, operator):
    """`[(field name, subgraph index)]` for the subgraphs an op runs. Options of another
    type than the op's (or none) read as index 0, as LiteRT reads them."""
    if code not in _CALLS:
        return []
    union, kind, fields = _CALLS[code]
    table = operator.options(union, kind)
    called = []
    for field, name in fields:
        if name.endswith("s"):
            values = table.int32s(field).tolist() if table is not None else []
            called += [(f"{name}[{i}]", value) for i, value in enumerate(values)]
        else:
            called.append((name, table.int32(field) if table is not None else 0))
    return called


def check_cycles(calls):
    """Refuses a subgraph that runs itself, directly or through others. `calls`: for each
    subgraph, `[(op index, op name, field, subgraph index)]`, the indices in range."""
    state = [0] * len(calls)  # 0: not reached, 1: on the path followed, 2: done
    for root in range(len(calls)):
        if state[root]:
            continue
        state[root] = 1
        path = [(root, iter(calls[root]), None)]  # (subgraph, its calls left, call to it)
        while path:
            graph, left, _ = path[-1]
            call = next(left, None)
            if call is None:
                state[graph] = 2
                path.pop()
            elif state[call[3]] == 1:
                start = next(i for i, entry in enumerate(path) if entry[0] == call[3])
                steps = [(g, path[i + 1][2]) for i, (g, _, _) in enumerate(path[start:-1], start)]
                steps = " -> ".join(
                    f"subgraph {g} (op {c[0]}, {c[1]}'s {c[2]})" for g, c in [*steps, (graph, call)]
                )
                raise Refused(
                    f"its subgraphs run themselves: {steps} -> subgraph {call[3]}; LiteRT "
                    "prepares a subgraph an op runs within that op, and recursed until the "
                    "process crashed (SIGSEGV)"
                )
            elif state[call[3]] == 0:
                state[call[3]] = 1
                path.append((call[3], iter(calls[call[3]]), call))


_WHILE, _IF, _CASE = CODES["WHILE"], CODES["IF"], CODES["STABLEHLO_CASE"]

# How many times, on average, each tensor and op of a file may be followed (the subgraphs
# they are in run with other sizes), and 1,000 more: a file whose WHILEs run a subgraph
# with ever other sizes is refused past that, rather than followed at a cost that grows
# faster than its size.
_FOLLOWED_PER_OP = 4


class Graph:
    """A subgraph as `_tflite_file` read it: its tensors, inputs and outputs (indices), its
    ops (`[(index, code, operator table, inputs, outputs)]`) and the bytes counted for
    each tensor, the most of each time it is followed."""

    __slots__ = ("tensors", "inputs", "outputs", "ops", "counted", "declared")

    def __init__(self, tensors, inputs, outputs):
        self.tensors, self.inputs, self.outputs = tensors, inputs.tolist(), outputs.tolist()
        self.ops = []
        self.counted = [tensor.counted for tensor in tensors]
        # The sizes its inputs declare, as `follow_sizes` keys sizes given.
        self.declared = tuple(_size(tensors[i].dims, tensors[i]) for i in self.inputs)


def follow_sizes(checker, graphs):
    """Follows the sizes of each subgraph's ops (`_tflite_ops.Sizes`), from those its
    inputs declare, and from those each WHILE, IF or STABLEHLO_CASE gives it. Cycles must
    have been refused (`check_cycles`)."""
    follower = _Follower(checker, graphs)
    for index, graph in enumerate(graphs):
        key = (index, graph.declared)
        if key not in follower.followed:
            follower.run(key, f"subgraph {index}")


class _Follower:
    def __init__(self, checker, graphs):
        self.checker, self.graphs = checker, graphs
        self.followed = {}  # (subgraph, sizes given) -> the sizes of its outputs
        self.size = sum(len(graph.tensors) + len(graph.ops) for graph in graphs)
        self.left = _FOLLOWED_PER_OP * self.size + 1000

    def run(self, key, where):
        """Follows a subgraph and those its ops run, without recursion (a chain of 10,000
        subgraphs is deeper than Python's stack): each follow is a generator that yields
        `(key, where)` for a subgraph it runs, and is sent what that one's outputs take."""
        stack, result = [(key, self.follow(key, where))], None
        while stack:
            try:
                call = stack[-1][1].send(result)
            except StopIteration as done:
                self.followed[stack.pop()[0]] = result = done.value
                continue
            result = self.followed.get(call[0])
            if result is None:
                stack.append((call[0], self.follow(*call)))

    def follow(self, key, where):
        index, given = key
        graph = self.graphs[index]
        self.spend(len(graph.tensors) + len(graph.ops), where)
        sizes = _tflite_ops.Sizes(self.checker, where, graph.tensors, graph.counted)
        if given != graph.declared:
            for tensor, (dims, elements, bits) in zip(graph.inputs, given):
                dims = None if dims is None else list(dims)
                sizes.resize(tensor, dims, elements, f"{where} takes as", bits)
        for op, code, operator, inputs, outputs in graph.ops:
            made = None
            if code in (_WHILE, _IF, _CASE):
                made = yield from self.called(sizes, index, op, code, operator, inputs, outputs)
            sizes.follow(op, code, operator, inputs, outputs, made)
        return [(sizes.dims[t], sizes.elements[t]) for t in graph.outputs]

    def spend(self, work, where):
        self.left -= work
        if self.left < 0:
            raise Refused(
                f"its WHILE, IF and STABLEHLO_CASE ops run subgraphs with more different "
                f"sizes than tfkd follows: {where} would make it follow more than "
                f"{_FOLLOWED_PER_OP} times the file's {self.size} tensors and ops (and 1000)"
            )

    def called(self, sizes, caller, index, code, operator, inputs, outputs):
        """What a WHILE, IF or STABLEHLO_CASE makes: the subgraphs it runs followed (a
        generator, as `follow`) from the sizes of the inputs it passes them; None where
        LiteRT refuses to prepare it (the inputs or outputs do not match in number)."""
        passed = inputs.tolist()[0 if code == _WHILE else 1 :]
        given = tuple(_size(sizes.dims[i], sizes.tensors[i], sizes.elements[i]) for i in passed)
        where = f"as op {index} ({op_name(code)}) of subgraph {caller} runs it"
        made, callees = [], called_subgraphs(code, operator)
        self.spend(len(callees), f"op {index} of subgraph {caller}")
        for _, callee in callees:
            if len(self.graphs[callee].inputs) != len(given):
                return None
            made.append((yield (callee, given), f"subgraph {callee} ({where})"))
        if code == _WHILE:  # its body's outputs, or its inputs (the body never run)
            made = [[(None if d is None else list(d), e) for d, e, _ in given], made[-1]]
        if any(len(sizes_made) != len(outputs) for sizes_made in made):
            return None
        declared = [(sizes.tensors[t].dims, sizes.tensors[t].elements) for t in outputs.tolist()]
        return [_agreed(mine, *theirs) for mine, theirs in zip(declared, zip(*made))]


def _size(dims, tensor, elements=None):
    """A tensor's size as a key: its dims (None where only its elements are known), its
    elements and the bits of its type (LiteRT gives a WHILE's type to the subgraphs'
    inputs)."""
    elements = tensor.elements if elements is None else elements
    return (None if dims is None else tuple(dims), elements, tensor.bits)


def _agreed(declared, *sizes):
    """An output of a WHILE, IF or STABLEHLO_CASE: the size its subgraphs (and a WHILE's
    inputs) give it where they agree; where they differ, LiteRT makes it a tensor sized
    when the op runs, from data, and allocates nothing for it at load: as declared, as
    every output sized from values the graph computes. (Counted as the larger, or its
    elements alone, a stacked LSTM's sequence, [5, 1, 8] going in and its body's output
    counted [3, 32, 32] from a SLICE sized from data, became 3,072 elements of any shape,
    which the next loop's broadcasting ops multiplied past 1 GiB: tfkd refused its own
    export.)"""
    dims = [shape for shape, _ in sizes]
    return sizes[0] if all(shape == dims[0] for shape in dims) else declared
