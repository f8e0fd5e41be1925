"""Write the keywords of ``parallel()`` and ``advise()`` from ``fastparallel.options.OPTIONS``.

The options are declared once, in ``OPTIONS``; this script writes them where Python needs
them spelled out (a signature is what IDEs and ``inspect.signature`` show, and a docstring
is what ``help()`` and the API docs show):

* ``api.py``: the overloads and the implementation of ``parallel()``, its docstring's
  Args, its ``Options(...)`` call; the keywords of ``advise()`` and its docstring's Args;
* ``options.py``: the fields of ``Options``.

Run ``python tools/generate_options.py`` after changing ``OPTIONS``; ``--check`` only
says whether the files are up to date (``tests/test_options.py`` runs it).
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fastparallel"
sys.path.insert(0, str(ROOT / "src"))

from fastparallel.options import OPTIONS, Option

# parallel()'s overloads: (fn's hint, return_as's hint and default, the return type).
OVERLOADS = [
    ("Callable[..., Coroutine[Any, Any, R]]", 'Literal["list"] = "list"', "list[R]"),
    (
        "Callable[..., Coroutine[Any, Any, R]]",
        'Literal["generator", "generator_unordered"]',
        "Iterator[R]",
    ),
    ("Callable[..., R]", 'Literal["list"] = "list"', "list[R]"),
    ("Callable[..., R]", 'Literal["generator", "generator_unordered"]', "Iterator[R]"),
]
IMPLEMENTATION = ("Callable[..., Any]", None, "list[Any] | Iterator[Any]")
ARGS_INDENT = " " * 8
WIDTH = 92


def source(value: Any) -> str:
    """A default as the signature writes it."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def keyword(option: Option, hint_and_default: str | None = None) -> str:
    if hint_and_default is None:
        hint_and_default = f"{option.hint} = {source(option.default)}"
    return f"    {option.name}: {hint_and_default},\n"


def signature(fn_hint: str, return_as: str | None, returns: str, overload: bool) -> str:
    lines = ["@overload\n"] if overload else []
    lines += ["def parallel(\n", f"    fn: {fn_hint},\n", "    items: Iterable[Any],\n"]
    lines += ["    /,\n", "    *args: Any,\n"]
    for option in OPTIONS:
        given = return_as if option.name == "return_as" else None
        lines.append(keyword(option, given))
    lines += ["    **kwargs: Any,\n", f") -> {returns}:"]
    return "".join(lines) + (" ...\n\n\n" if overload else "\n")


def args_entries(doc: Callable[[Option], str]) -> str:
    """Docstring Args entries, wrapped as ruff and readers expect."""
    out = []
    for option in OPTIONS:
        text = doc(option)
        if not text:
            continue
        out.append(
            textwrap.fill(
                f"{option.name}: {text}",
                WIDTH,
                initial_indent=ARGS_INDENT,
                subsequent_indent=ARGS_INDENT + "    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
            + "\n"
        )
    return "".join(out)


def replace_between(text: str, start: str, end: str, new: str, where: str, after: str = "") -> str:
    """``text`` with what lies between the first ``start`` (after ``after``) and the next
    ``end`` replaced."""
    pattern = re.compile(re.escape(start) + "(.*?)" + re.escape(end), re.DOTALL)
    match = pattern.search(text, text.index(after) if after else 0)
    if match is None:
        raise SystemExit(f"generate_options: cannot find {start.strip()!r} ... in {where}")
    return text[: match.start(1)] + new + text[match.end(1) :]


def render_api(text: str) -> str:
    signatures = "".join(signature(*variant, overload=True) for variant in OVERLOADS)
    signatures += signature(*IMPLEMENTATION, overload=False)
    text = replace_between(
        text, "# tools/generate_options.py.\n", '    """Apply', signatures, "api.py"
    )
    entries = args_entries(lambda option: option.doc)
    text = replace_between(
        text,
        "passed before the item.\n",
        "        **kwargs: keyword arguments passed to ``fn``.",
        entries,
        "parallel()'s docstring",
        after='    """Apply',
    )
    call = "".join(f"        {o.name}={o.name},\n" for o in OPTIONS if o.name != "total")
    call = call.replace(
        "        chunksize=",
        "        total=_length(items) if total is None else total,\n        chunksize=",
        1,
    )
    text = replace_between(
        text, "    options = Options(\n", "        coroutine=", call, "parallel()'s body"
    )
    advise_keywords = "".join(keyword(o) for o in OPTIONS if o.advise)
    text = replace_between(
        text,
        "def advise(\n    fn: Callable[..., Any],\n    items: Iterable[Any],\n    /,\n    *args: Any,\n",
        "    max_seconds: float = 2.0,",
        advise_keywords,
        "advise()'s signature",
    )
    entries = args_entries(lambda option: option.advise)
    text = replace_between(
        text,
        "*args: positional arguments passed before the item.\n",
        "        max_seconds:",
        entries,
        "advise()'s docstring",
        after="def advise(",
    )
    given = "".join(f'            "{o.name}": {o.name},\n' for o in OPTIONS if o.advise)
    return replace_between(
        text,
        "        fn,\n        max_seconds,\n        {\n",
        "        },",
        given,
        "advise()'s body",
        after="def advise(",
    )


def render_options(text: str) -> str:
    fields = "".join(f"    {o.name}: {o.stored or o.hint}\n" for o in OPTIONS)
    return replace_between(
        text,
        "    # written by tools/generate_options.py from OPTIONS.\n",
        "    # Not keywords",
        fields,
        "options.py",
    )


TARGETS = {PACKAGE / "api.py": render_api, PACKAGE / "options.py": render_options}


def stale() -> list[Path]:
    """The files whose generated parts differ from what ``OPTIONS`` declares."""
    return [
        path for path, render in TARGETS.items() if render(path.read_text()) != path.read_text()
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        paths = stale()
        for path in paths:
            print(f"{path.relative_to(ROOT)} is out of date: run python tools/generate_options.py")
        return 1 if paths else 0
    for path, render in TARGETS.items():
        path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
