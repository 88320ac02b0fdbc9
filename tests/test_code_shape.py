"""The code stays readable: short functions, short positional parameter lists, one logger.

Read from the source with `ast` (nothing is imported). Scope: every .py under yolov5/.
"""
import ast
from pathlib import Path

YOLOV5 = Path(__file__).resolve().parents[1] / "yolov5"
MAX_LINES = 60
MAX_POSITIONAL = 8
# print() calls whose output is the product of the command, not a log message
PRINT_ALLOWED = {"utils/errors.py": 1}  # the one ERROR line on stderr before exit 2, even before logging is set up


def _functions():
    for path in sorted(YOLOV5.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(YOLOV5), node


def _positional_count(node):
    args = node.args.posonlyargs + node.args.args
    if args and args[0].arg in ("self", "cls"):
        args = args[1:]
    return len(args)


def test_functions_are_at_most_60_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def test_functions_take_at_most_8_positional_parameters():
    many = [f"{path}:{node.lineno} {node.name} ({_positional_count(node)})"
            for path, node in _functions() if _positional_count(node) > MAX_POSITIONAL]
    assert not many, "use keyword-only options (and utils/upstream_call.py for v6.0 call orders):\n" + "\n".join(many)


def test_output_goes_through_the_logger():
    prints = {}
    for path in sorted(YOLOV5.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        count = sum(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
                    for n in ast.walk(tree))
        if count:
            prints[str(path.relative_to(YOLOV5))] = count
    assert prints == PRINT_ALLOWED, "use the 'yolov5' logger (utils/cli.py) instead of print()"


def test_the_checks_see_a_bad_function(tmp_path):
    """The counting itself: a 61-line function with 9 positional parameters is caught."""
    source = "def f(self, a, b, c, d, e, f, g, h, i):\n" + "    x = 1\n" * 60
    node = ast.parse(source).body[0]
    assert node.end_lineno - node.lineno + 1 == 61
    assert _positional_count(node) == 9
    assert _positional_count(ast.parse("def g(a, *, b, c, d, e, f, g, h, i, j): pass").body[0]) == 1
