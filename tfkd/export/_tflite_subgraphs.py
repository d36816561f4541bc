"""Which subgraphs a `.tflite` file's ops run, read from the tables `_tflite_file` checked.

WHILE, IF, CALL_ONCE, CALL and the StableHLO ops with bodies name subgraphs in
their options. LiteRT refuses an index out of range (a bare RuntimeError), but a WHILE
whose condition or body is the subgraph holding it, or a subgraph that runs that one,
crashed the process (SIGSEGV: LiteRT prepares the subgraphs an op runs within the op,
without end). `called_subgraphs` reads the indices, and `check_cycles` refuses any
subgraph that runs itself, through any of these ops.
"""

from tfkd.export._tflite_ops import Refused

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
