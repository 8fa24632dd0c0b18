"""House rule (docs/design.md#conventions): no function in src/ over 60 lines of code — lines that are
not blank, not comments and not the docstring, read from the source with `ast`."""
from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
LIMIT = 60


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of code of `function`: its source lines less blanks, comment lines and its docstring."""
    body = function.body
    first = body[0]
    docstring = (range(first.lineno, first.end_lineno + 1) if isinstance(first, ast.Expr)
                 and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str) else range(0))
    return sum(1 for number in range(function.lineno, function.end_lineno + 1)
               if number not in docstring and (line := lines[number - 1].strip()) and not line.startswith("#"))


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    lines = source.splitlines()
    return [(node.name, n) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n := code_lines(node, lines)) > limit]


def test_no_function_in_src_is_over_60_lines_of_code():
    found = [f"{path.relative_to(SOURCE)}:{name} ({n} lines)" for path in sorted(SOURCE.rglob("*.py"))
             for name, n in long_functions(path.read_text())]
    assert not found, "functions over 60 lines of code: " + ", ".join(found)


def test_the_count_skips_docstring_comments_and_blanks_and_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    source = f'def f():\n    """Doc.\n\n    More."""\n    # a comment\n\n{body}\n'
    assert long_functions(source) == [("f", 62)]          # 61 statements + the def line
    assert long_functions(source, limit=62) == []
