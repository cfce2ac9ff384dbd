"""The layering rules of STYLE.md, checked on the source: imports point down, one error base, click in commands only."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import defr
from defr.errors import DefrError

ROOT = Path(defr.__file__).parent
COMMAND_MODULES = {"defr.cli", "defr.clikit", "defr.export.cli"}  # besides defr.commands.*


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every ``defr`` module ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


@functools.cache
def _tree(name: str) -> ast.Module:
    """The parsed source of module ``name`` (parsed once for the source scans below)."""
    return ast.parse(MODULES[name].read_text())


def test_runtime_never_imports_export():
    offenders = {m: sorted(i for i in deps if i.startswith("defr.export")) for m, deps in GRAPH.items()}
    offenders = {m: deps for m, deps in offenders.items() if m.startswith("defr.runtime") and deps}
    assert not offenders


def test_model_imports_neither_runtime_nor_export():
    for module, deps in GRAPH.items():
        if module.startswith("defr.model"):
            assert not [d for d in deps if d.startswith(("defr.runtime", "defr.export", "defr.commands"))], module


def test_leaves_import_nothing_from_defr():
    for leaf in ("defr.errors", "defr.signals"):
        assert GRAPH[leaf] == set(), leaf
    assert GRAPH["defr.vocab"] <= {"defr.jsonio"}  # its packaged table, read by the one reader
    assert GRAPH["defr.atomic"] <= {"defr.jsonio"}  # writes JSON through the one writer
    assert GRAPH["defr.output_manifest"] <= {"defr.errors", "defr.jsonio", "defr.atomic"}
    assert GRAPH["defr.files"] <= {"defr.errors", "defr.jsonio", "defr.atomic", "defr.output_manifest"}
    leaves = (
        "defr.images",
        "defr.typecheck",
        "defr.optional",
        "defr.jsonio",
        "defr.choices",
        "defr.machine",
    )
    for leaf in leaves:
        assert GRAPH[leaf] <= {"defr.errors"}, leaf
    assert GRAPH["defr.kernels.spec"] <= {"defr.errors", "defr.choices"}
    assert GRAPH["defr.runtime.contract"] <= {"defr.vocab", "defr.errors"}
    assert GRAPH["defr.detections"] <= {"defr.vocab", "defr.errors", "defr.typecheck", "defr.jsonio"}
    leaves = {"defr.vocab", "defr.errors", "defr.jsonio", "defr.choices"}  # docs/architecture.md says the same
    assert GRAPH["defr.runtime.provenance"] <= {"defr.choices"}
    assert GRAPH["defr.runtime.sidecar"] <= {"defr.runtime.contract", "defr.runtime.provenance", *leaves}


JSON_PARSERS = {"load", "loads", "JSONDecoder", "raw_decode"}


def _json_parsers(tree: ast.AST) -> list[int]:
    """Lines that parse JSON without ``defr.jsonio``: ``json.load(s)`` / a decoder, or ``from json import`` one."""
    lines = []
    for node in ast.walk(tree):
        named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "json"
        if named and node.attr in JSON_PARSERS:
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "json":
            lines += [node.lineno for a in node.names if a.name in JSON_PARSERS]
    return sorted(lines)


def test_json_is_parsed_only_in_jsonio():
    """Every JSON text defr reads (files, headers, answers, its own assets) goes through ``defr.jsonio``,
    so every one gets its bounds (64-bit integers, finite floats, nesting, repeated keys, UTF-8)."""
    found = {name: _json_parsers(_tree(name)) for name in MODULES}
    assert {name: lines for name, lines in found.items() if lines and name != "defr.jsonio"} == {}
    assert _json_parsers(_tree("defr.jsonio"))  # the scan sees the one parser


def test_the_json_scan_finds_a_parser():
    assert _json_parsers(ast.parse("import json\nx = json.loads(t)\nfrom json import load\n")) == [2, 3]
    assert _json_parsers(ast.parse("import json\nx = json.dumps(t)\n")) == []


def test_kernels_sit_below_the_model():
    for module, deps in GRAPH.items():
        if module.startswith("defr.kernels"):
            assert all(d.startswith(("defr.kernels", "defr.errors", "defr.optional", "defr.choices")) for d in deps), (
                module,
                deps,
            )


# Keys of model.json: only its contract module (defr.runtime.sidecar, the typed Sidecar) reads them. The
# first set names nothing else in the project; the second is read only where a module deals with sidecars.
SIDECAR_ONLY_KEYS = {"class_objects", "plugin_library", "external_data", "logit_scale", "score_rule"}
SIDECAR_TOP_KEYS = {"files", "graph", "engine", "input", "classes", "head"}
SIDECAR_WORDS = ("model.json", "SIDECAR_NAME", "read_sidecar", "Sidecar")


def _indexed_keys(tree: ast.AST) -> set[str]:
    """String keys a module reads from a mapping: ``x["key"]`` and ``x.get("key", ...)``."""
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    return {k for k in keys if isinstance(k, str)}


def test_only_the_contract_module_defines_the_sidecar_schema():
    offenders = {}
    for name, path in MODULES.items():
        if name == "defr.runtime.sidecar":
            continue
        text = path.read_text()
        keys = _indexed_keys(ast.parse(text))
        bad = keys & SIDECAR_ONLY_KEYS
        if any(word in text for word in SIDECAR_WORDS):
            bad |= keys & SIDECAR_TOP_KEYS
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, f"modules that index model.json keys instead of using the typed Sidecar: {offenders}"


REGISTRY = "defr.choices"
REGISTRY_NAMES = {"MASK_MODES", "DEFAULT_MASK_MODE", "PRECISIONS", "DEFAULT_PRECISION", "TORCH_PRECISIONS",
                  "ENGINE_PRECISIONS"}  # fmt: skip


def _strings(node: ast.AST) -> list[str] | None:
    """The strings of a tuple / list literal made only of string constants, else None."""
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List)) else []
    if elts and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
        return [e.value for e in elts]
    return None


def _literal_in(node: ast.AST | None, values: set[str]) -> bool:
    return isinstance(node, ast.Constant) and node.value in values


def test_choices_are_defined_only_in_the_registry():
    """Mask modes and precisions, their lists and their defaults are spelt out in ``defr.choices`` only:
    no other module defines a registry name, types out a list of its values, or writes a default as a
    literal (a parameter default, a field default, a click ``default=``)."""
    from defr import choices

    values = set(choices.MASK_MODES) | set(choices.PRECISIONS)
    defaults = {choices.DEFAULT_MASK_MODE, choices.DEFAULT_PRECISION}
    offenders = []
    for name, path in MODULES.items():
        if name == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                offenders += [f"{where} defines {t.id}" for t in targets if getattr(t, "id", None) in REGISTRY_NAMES]
                if isinstance(node, ast.AnnAssign) and _literal_in(node.value, defaults):
                    offenders.append(f"{where} a field default {node.value.value!r}")
            strings = _strings(node)
            if strings and len(strings) >= 2 and set(strings) <= values:
                offenders.append(f"{where} lists {strings}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in [*node.args.defaults, *node.args.kw_defaults]:
                    if _literal_in(d, defaults):
                        offenders.append(f"{where} {node.name}() defaults to {d.value!r}")
            if isinstance(node, ast.keyword) and node.arg == "default" and _literal_in(node.value, defaults):
                offenders.append(f"{where} default={node.value.value!r}")
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):  # ``mask_mode or "hard"``
                offenders += [f"{where} or {v.value!r}" for v in node.values if _literal_in(v, values)]
    assert offenders == []


def test_one_precision_vocabulary():
    """The torch dtypes, the exported files (as the sidecar records them) and the verification tolerances
    are keyed by names of the one vocabulary, ``defr.choices.PRECISIONS``."""
    from defr.choices import ENGINE_PRECISIONS, PRECISIONS, TORCH_PRECISIONS
    from defr.export.exporter import ONNX_FILES
    from defr.export.verify import TOLERANCES
    from defr.runtime.contract import PRECISION_DTYPES

    assert tuple(PRECISION_DTYPES) == TORCH_PRECISIONS
    assert {*ONNX_FILES, *TOLERANCES, *ENGINE_PRECISIONS, *TORCH_PRECISIONS} <= set(PRECISIONS)


def test_no_import_cycles_between_files():
    """Depth-first search over explicit imports; a package's ``__init__`` re-exporting its own
    submodules is not a cycle of files."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in GRAPH[node]:
            if node.startswith(dep + ".") and MODULES[dep].name == "__init__.py":
                continue  # a submodule importing its own package: Python resolves the names already set
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    cycles = [c for c in cycles if not all(MODULES[m].name == "__init__.py" or m == c[0] for m in c)]
    assert not cycles


def _signal_handlers(tree: ast.AST) -> list[int]:
    """Lines that install a signal handler: ``signal.signal(...)`` or ``from signal import signal``."""
    lines = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr == "signal" and getattr(func.value, "id", None) == "signal":
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "signal":
            lines += [node.lineno for a in node.names if a.name == "signal"]
    return sorted(lines)


def test_signal_handlers_are_installed_only_in_signals():
    """One way to stop: SIGTERM as Ctrl-C, video's frame-boundary guard and serve's flag are all ``defr.signals``."""
    found = {name: _signal_handlers(_tree(name)) for name in MODULES}
    assert {name: lines for name, lines in found.items() if lines and name != "defr.signals"} == {}
    assert found["defr.signals"]
    assert _signal_handlers(ast.parse("import signal\nsignal.signal(signal.SIGTERM, f)\n")) == [2]
    assert not any(d.startswith("defr.commands") for m, deps in GRAPH.items() if m == "defr.export.cli" for d in deps)


DOCS = ROOT.parent / "docs" / "architecture.md"


def _layer_table() -> list[tuple[str, list[str], set[str]]]:
    """docs/architecture.md's layer table, top row first: (layer, modules and packages, layers it imports)."""
    text = DOCS.read_text()
    table = text[text.index("<!-- layers:") : text.index("<!-- /layers -->")]
    rows = []
    for line in table.splitlines()[3:]:
        layer, modules, imports = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((layer, re.findall(r"`([\w.]+)`", modules), set(imports.split())))
    return rows


def _layer_of(module: str, rows: list[tuple[str, list[str], set[str]]]) -> str | None:
    """The row naming ``module`` or the longest package above it (``defr`` itself names only the package)."""
    found = [
        (len(p), layer)
        for layer, names, _ in rows
        for p in names
        if module == p or (p != "defr" and module.startswith(p + "."))
    ]
    return max(found)[1] if found else None


def _upward_imports(graph: dict[str, set[str]], rows: list[tuple[str, list[str], set[str]]]) -> list[str]:
    """``a -> b`` for every import of a module of a lower row by one of a higher row."""
    rank = {layer: i for i, (layer, _, _) in enumerate(rows)}
    return sorted(
        f"{m} -> {d}" for m, deps in graph.items() for d in deps if rank[_layer_of(d, rows)] < rank[_layer_of(m, rows)]
    )


def test_the_layer_table_is_the_code():
    """Every module is in one row of docs/architecture.md's table; imports point to its own row or below (no upward
    import); and each row's ``imports`` column is exactly the rows its modules import (the table says what the
    code does). With ``test_no_import_cycles_between_files``: 0 circles, 0 upward imports."""
    rows = _layer_table()
    layer = {m: _layer_of(m, rows) for m in MODULES}
    assert [m for m, found in layer.items() if found is None] == []
    assert _upward_imports(GRAPH, rows) == []
    imported: dict[str, set[str]] = {name: set() for name, _, _ in rows}
    for m, deps in GRAPH.items():
        imported[layer[m]] |= {layer[d] for d in deps if layer[d] != layer[m] or layer[m] == "leaves"}
    assert {name: imports for name, _, imports in rows} == imported


def test_the_layer_check_finds_an_upward_import():
    rows = [("top", ["defr.cli"], {"low"}), ("low", ["defr.model"], set())]
    assert _layer_of("defr.model.vit", rows) == "low" and _layer_of("defr.cli", rows) == "top"
    assert _layer_of("defr.runtime.io", rows) is None  # a module in no row is reported, not guessed
    graph = {"defr.cli": {"defr.model.vit"}, "defr.model.vit": {"defr.cli"}}
    assert _upward_imports(graph, rows) == ["defr.model.vit -> defr.cli"]


def test_click_only_in_command_modules():
    users = {m for m in MODULES if "click" in _third_party_imports(m)}
    assert {m for m in users if not (m in COMMAND_MODULES or m.startswith("defr.commands"))} == set()


def _third_party_imports(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_every_error_class_derives_from_defr_error():
    classes = []
    for info in pkgutil.walk_packages(defr.__path__, "defr."):
        if info.name == "defr.__main__":
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # an interruption (a KeyboardInterrupt, e.g. StreamInterrupted) is no error: Exception only
            if cls.__module__ == info.name and issubclass(cls, Exception):
                classes.append(cls)
    assert len(classes) >= 15
    assert [c.__qualname__ for c in classes if not issubclass(c, DefrError)] == []


def _error_classes() -> dict[str, str]:
    """{class: module} of every class in ``defr`` that derives, at any depth, from ``DefrError`` (read from the
    source: a base named ``DefrError`` or another such class) or whose name ends in ``Error``."""
    bases = {}
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.ClassDef):
                names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                bases[node.name] = (name, names)
    found = {"DefrError": "defr.errors"}
    while grown := {c: m for c, (m, b) in bases.items() if c not in found and (b & set(found) or c.endswith("Error"))}:
        found.update(grown)
    return found


def test_few_error_classes():
    """A class only where a caller handles it differently (issue 29: 40 classes in 25 modules before)."""
    classes = _error_classes()
    assert len(classes) <= 30, sorted(classes.items(), key=lambda kv: kv[1])
    assert {"DefrError", "ConfigError", "JsonInputError", "OutputRefused", "WriteError"} <= set(classes)
    assert "Interrupted" not in classes  # an interruption is no error


def test_project_deprecations_are_errors_in_tests():
    """pyproject.toml's filterwarnings: a test that calls a deprecated defr API fails (no API is
    deprecated today; the next one to be warns with this class)."""
    import warnings

    from defr.errors import DefrDeprecationWarning

    with pytest.raises(DefrDeprecationWarning, match="is deprecated"):
        warnings.warn("defr.old_api is deprecated: use defr.new_api", DefrDeprecationWarning, stacklevel=1)


def test_commands_catch_project_errors_not_bugs(monkeypatch):
    """A project error is one line and exit 1; an unexpected RuntimeError keeps its traceback."""
    import defr.commands.bench as bench_command
    from defr.cli import main

    def project_error(cfg, progress=None):
        raise DefrError("tiny-vit: something the user can fix")

    monkeypatch.setattr(bench_command, "run_bench", project_error)
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-vit", "--image-size", "32"])
    assert r.exit_code == 1 and r.output == "Error: tiny-vit: something the user can fix\n"

    def bug(cfg, progress=None):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(bench_command, "run_bench", bug)
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-vit", "--image-size", "32"])
    assert isinstance(r.exception, RuntimeError) and "CUDA out of memory" in str(r.exception)
    assert r.exc_info is not None and r.exc_info[2] is not None  # a traceback, not a one-line message


def test_every_command_takes_sigterm_like_ctrl_c():
    """``one_line_errors``, around every command's work, turns SIGTERM into one line and exit 143 (Ctrl-C: 130)."""
    import os
    import signal
    import time

    from defr.commands import one_line_errors

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e, one_line_errors():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert e.value.code == 143 and signal.getsignal(signal.SIGTERM) is previous
    with pytest.raises(SystemExit) as e, one_line_errors():
        raise KeyboardInterrupt  # Ctrl-C (a test run in the background may ignore a real SIGINT)
    assert e.value.code == 130


@pytest.mark.parametrize("command", ["train", "evaluate", "detect", "bench", "box-noise", "eval-hicodet", "demo"])
def test_help_is_instant_and_lists_commands(command):
    from defr.cli import main

    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


# The detection box rules (boxes not inverted, scores in [0, 1], labels among the HICO objects) live in the
# contract modules only: ``defr.detections`` (detections) and the results reader of ``defr.eval.hicodet``
# (the results format). Every other module takes a ``Detections`` and trusts it.
BOX_RULE_MODULES = {"defr.detections", "defr.eval.hicodet"}
BOX_RULES = {
    "inverted boxes": re.compile(r"\[\s*:\s*,\s*[23]\s*\]\s*<\s*[\w.]+\[\s*:\s*,\s*[01]\s*\]"),
    "scores in [0, 1]": re.compile(r"scores\w*(\[[^\]]*\])?\s*(<\s*0|>\s*1)\b"),
    "labels in 0..79": re.compile(r"[<>]=?\s*(vocab\.)?NUM_OBJECTS\b"),
}


def _box_rules(text: str) -> list[str]:
    return [rule for rule, pattern in BOX_RULES.items() if pattern.search(text)]


def test_the_box_rules_are_recognised():
    """The scan finds the rules as they were restated before ``defr.detections`` (video's check_detections)."""
    old = (
        "if ((dets.boxes[:, 2] < dets.boxes[:, 0]) | (dets.boxes[:, 3] < dets.boxes[:, 1])).any():\n"
        "if ((dets.scores < 0) | (dets.scores > 1)).any():\n"
        "if ((dets.labels < 0) | (dets.labels >= vocab.NUM_OBJECTS)).any():\n"
    )
    assert _box_rules(old) == list(BOX_RULES)
    assert _box_rules("keep = scores >= cfg.score_threshold\nw = boxes[:, 2] - boxes[:, 0]") == []


def test_only_the_contract_modules_define_the_box_rules():
    found = {name: _box_rules(path.read_text()) for name, path in MODULES.items() if name not in BOX_RULE_MODULES}
    assert {name: rules for name, rules in found.items() if rules} == {}
    assert all(_box_rules(MODULES[name].read_text()) for name in BOX_RULE_MODULES)


# The front door: the runtime table (defr.runtime.registry) is the one place that constructs the backend
# classes it lists; elsewhere a backend class is built only by its own classmethods (``cls(...)``).
DOOR = "defr.runtime.registry"


def _constructions(text: str, names: set[str]) -> list[str]:
    """``Name(`` calls of the classes ``names`` in source text: not their ``class Name(`` lines."""
    pattern = re.compile(r"(?<!class )\b(" + "|".join(sorted(names)) + r")\(")
    return [m.group(1) for m in pattern.finditer(text)]


def test_the_construction_scan_finds_constructions():
    names = {"TorchBackend", "OnnxBackend"}
    old = 'backend = TorchBackend(model, mask_mode="hard")\nclass OnnxBackend:\nx = OnnxBackend(session, sc, "fp32")'
    assert _constructions(old, names) == ["TorchBackend", "OnnxBackend"]
    assert _constructions("class TorchBackend(Base):\n    return cls(engine)", names) == []


def test_backend_classes_are_constructed_only_by_the_front_door():
    from defr.runtime.registry import RUNTIMES

    names = {row.backend.__name__ for row in RUNTIMES.values()}
    offenders = {
        name: found
        for name, path in MODULES.items()
        if name != DOOR and (found := _constructions(path.read_text(), names))
    }
    assert offenders == {}
    assert set(_constructions(MODULES[DOOR].read_text(), names)) == {"TorchBackend"}  # the rest: their own open()


def test_model_choices_are_checked_once():
    """``check_mask_mode`` / ``check_precision`` are called where a record holding the choice is built
    (``ModelOptions``, ``PairOp``, the export's configs, the mask-bias rule), nowhere else."""
    allowed = {
        "check_mask_mode": {
            "defr.runtime.registry",
            "defr.kernels.spec",
            "defr.export.exporter",
            "defr.export.onnx_export",
        },
        "check_precision": {"defr.runtime.registry"},
    }
    for check, modules in allowed.items():
        users = {name for name, path in MODULES.items() if name != REGISTRY and f"{check}(" in path.read_text()}
        assert users == modules, check


MAX_MODULE_LINES = 500  # issue 29: past this a module mixes ideas; split it by idea


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"
