"""Every command the docs show is accepted, every name they give exists, every link resolves.

The docs are README.md and docs/**/*.md. From each ```bash block, each ``lrbatch ...`` command
(``\\`` continuations, ``&&`` chains, comments, ``.venv/bin/lrbatch``, ``python -m lrbatch``, a
leading ``$``, and ``[--option VALUE]`` shown as optional, which is kept) runs through lrbatch's
own entry point, ``lrbatch.cli.main``, in an empty directory (one per block, so that an
``import`` feeds the ``predict`` after it):

- ``sweep`` and ``noise-scale`` run with ``--cfg job``: composed and validated, nothing trained;
  their sweep file must exist, and their overrides (and ``worker``'s) must compose with
  :func:`lrbatch.load_config`;
- every other command runs as it is; it must succeed, or stop only because the empty directory
  has no study, storage or file of the user's (a study from a previous sweep, a user's CSV).
  An error of the argument parser (an unknown option or command, a missing argument) fails;
- a repository file a command names (``sweeps/*.yaml``, ``docs/results/*.csv``) must exist.

Python blocks must compile and their ``lrbatch`` imports resolve; a dotted ``lrbatch.x.y``
quoted in the text must be importable (or be one of :data:`STUDY_ATTRIBUTES`); relative links
and their anchors must resolve. Commands that would need what a test cannot have are skipped
by :data:`SKIPPED`, each with its reason.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT

from lrbatch import ConfigError, load_config
from lrbatch.cli import main

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")
CONFIG_ONLY = ("sweep", "noise-scale")  # run with --cfg job: composed, validated, nothing trained
COMPOSED = (*CONFIG_ONLY, "worker")  # take Hydra overrides: composed with load_config too
# `lrbatch dashboard` serves until stopped: it runs only in a directory of its own, with no
# study, where it stops at once.
SERVES = ("dashboard",)
# What a test cannot have: reason -> (command, its words) -> skip it.
SKIPPED: dict[str, Callable[[str, list[str]], bool]] = {
    "it connects to a PostgreSQL server": lambda command, words: (
        command not in CONFIG_ONLY and any(w.startswith("postgresql") for w in words)
    ),
}
# The empty directory a command runs in lacks what a user would have made before: a study, its
# storage, their own CSV file. Stopping there is not a fault of the command as written.
ABSENT = re.compile(
    r"no study found|there is no file|\$LRBATCH_STORAGE is not set|No such file or directory"
)
# Quoted in the text as ``lrbatch.x``, but keys of a study's user attributes, not import paths.
STUDY_ATTRIBUTES = ("lrbatch.config", "lrbatch.training", "lrbatch.noise_scale")
CHAINS = ("&&", "||", ";", "|", "&")
REDIRECTIONS = (">", ">>", "<", ">&")
REPO_FILE = re.compile(r"^(?:docs|sweeps|conf|tests|benchmarks|src)/\S+\.(?:ya?ml|csv|py|json)$")


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the first line inside, language, body) of each fenced code block."""
    found: list[tuple[int, str, str]] = []
    language: str | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(text.splitlines(), 1):
        if language is None and line.startswith("```"):
            language, start, body = line[3:].strip(), number + 1, []
        elif language is not None and line.startswith("```"):
            found.append((start, language, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return found


def shell_commands(body: str) -> list[tuple[int, list[str]]]:
    """(line offset, words) of each simple command in a shell block: continuations joined,
    comments and redirections dropped, chains (``&&``, ``||``, ``;``, ``|``) split, optional
    ``[--option VALUE]`` kept, variables of an ``export`` before it expanded."""
    commands: list[tuple[int, list[str]]] = []
    exports: dict[str, str] = {}
    offset, pending = 0, ""
    for index, line in enumerate(body.splitlines()):
        if not pending:
            offset = index
        line = re.sub(r"\[(--[^\[\]]*)\]", r"\1", line.strip().removeprefix("$ "))
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lexer = shlex.shlex(pending + line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        pending, words = "", []
        tokens = iter([*lexer, ";"])
        for token in tokens:
            if token in REDIRECTIONS:
                next(tokens, None)  # (and the file it names)
            elif token not in CHAINS:
                words.append(re.sub(r"\$\{?(\w+)\}?", lambda m: exports.get(m[1], m[0]), token))
            elif words[:1] == ["export"] and "=" in words[-1]:
                name, value = words[-1].split("=", 1)
                exports[name], words = value, []
            elif words:
                commands.append((offset, words))
                words = []
    return commands


def lrbatch_arguments(words: list[str]) -> list[str] | None:
    """The arguments after ``lrbatch`` (or ``.venv/bin/lrbatch``, ``python -m lrbatch``)."""
    if words and Path(words[0]).name == "lrbatch":
        return words[1:]
    if words[:1] and words[0].startswith("python") and words[1:3] == ["-m", "lrbatch"]:
        return words[3:]
    return None


def _config_items(arguments: list[str]) -> tuple[str | None, list[str]]:
    """(sweep file, Hydra overrides) among a command's arguments."""
    items = [w for w in arguments[1:] if not w.startswith("-") and "://" not in w]
    sweep_file = next((w for w in items if w.endswith((".yaml", ".yml"))), None)
    return sweep_file, [w for w in items if "=" in w or w.startswith(("~", "+"))]


def _run(arguments: list[str]) -> tuple[int, str]:
    """lrbatch's own entry point on ``arguments``: (exit status, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            status = main(arguments)
        except SystemExit as exit_:  # (--help, --version)
            status = int(exit_.code or 0)
    return status, " ".join(printed.getvalue().split())


def check_command(arguments: list[str], where: Path) -> str | None:
    """What is wrong with ``lrbatch ARGUMENTS`` run in ``where``, or None (module docstring)."""
    command = arguments[0] if arguments else ""
    if any(applies(command, arguments) for applies in SKIPPED.values()):
        return None
    missing = [w for w in arguments if REPO_FILE.match(w) and not (ROOT / w).exists()]
    arguments = [  # files of the repository, named from its root
        str(ROOT / word) if "/" in word and "://" not in word and (ROOT / word).exists() else word
        for word in arguments
    ]
    sweep_file, overrides = _config_items(arguments)
    if command in CONFIG_ONLY and sweep_file and not (ROOT / sweep_file).is_file():
        missing.append(sweep_file)
    if missing:
        return f"no such file in the repository: {', '.join(missing)}"
    if command in COMPOSED:
        try:
            load_config(sweep_file if command in CONFIG_ONLY else None, overrides)
        except ConfigError as error:
            return f"its config does not compose: {error}"
    if command in CONFIG_ONLY and "--cfg" not in arguments:
        arguments = [*arguments, "--cfg", "job"]
    if command in SERVES:
        where = where / command
        where.mkdir(exist_ok=True)
    with contextlib.chdir(where):
        status, printed = _run(arguments)
    if status == 0 or (status == 2 and ABSENT.search(printed)):
        return None
    return f"exit status {status}: {printed[-400:]}"


def check_commands(text: str, name: str, tmp: Path) -> list[str]:
    """Every ``lrbatch`` command of the shell blocks of ``text``, run (:func:`check_command`)."""
    problems = []
    for start, language, body in fenced_blocks(text):
        if language not in SHELL:
            continue
        where = tmp / f"line{start}"
        where.mkdir()
        for offset, words in shell_commands(body):
            arguments = lrbatch_arguments(words)
            if arguments is None:
                continue
            problem = check_command(arguments, where)
            if problem:
                shown = f"lrbatch {shlex.join(arguments)}"
                problems.append(f"{name}:{start + offset}: {shown}: {problem}")
    return problems


def _resolves(dotted: str) -> bool:
    """``dotted`` names an importable module, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def check_python(text: str, name: str) -> list[str]:
    """Python blocks compile; their ``lrbatch`` imports resolve."""
    problems = []
    for start, language, body in fenced_blocks(text):
        if language != "python":
            continue
        try:
            tree = ast.parse(body)
            compile(tree, f"{name}:{start}", "exec")
        except SyntaxError as error:
            problems.append(f"{name}:{start + (error.lineno or 1) - 1}: {error.msg}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lrbatch":
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "lrbatch"]
            else:
                continue
            problems += [
                f"{name}:{start + node.lineno - 1}: {dotted} does not exist"
                for dotted in names
                if not _resolves(dotted)
            ]
    return problems


def check_names(text: str, name: str) -> list[str]:
    """Every ``lrbatch.x.y`` quoted in the text (outside code blocks) can be imported."""
    prose = text
    for _, _, body in fenced_blocks(text):
        prose = prose.replace(body, "")
    quoted = set(re.findall(r"`(lrbatch(?:\.\w+)+)`", prose)) - set(STUDY_ATTRIBUTES)
    return [
        f"{name}: `{dotted}` does not exist" for dotted in sorted(quoted) if not _resolves(dotted)
    ]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text`` (code blocks left out)."""
    anchors: set[str] = set()
    fence = False
    for line in text.splitlines():
        fence ^= line.startswith("```")
        if fence or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        anchor, count = slug, 1
        while anchor in anchors:
            anchor, count = f"{slug}-{count}", count + 1
        anchors.add(anchor)
    return anchors


def check_links(text: str, path: Path) -> list[str]:
    """Relative links and images of ``text`` (at ``path``) point at files and anchors that exist."""
    problems = []
    prose = text
    for _, _, body in fenced_blocks(text):
        prose = prose.replace(body, "")
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve()
        if file and not linked.exists():
            problems.append(f"{path.name}: link to {target}: no such file")
        elif anchor and anchor not in heading_anchors(linked.read_text() if file else text):
            problems.append(f"{path.name}: link to {target}: no such heading")
    return problems


def _id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_command_shown_is_accepted(doc: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LRBATCH_STORAGE", raising=False)
    assert check_commands(doc.read_text(), _id(doc), tmp_path) == []


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_python_blocks_and_quoted_names_exist(doc: Path) -> None:
    text = doc.read_text()
    assert check_python(text, _id(doc)) + check_names(text, _id(doc)) == []


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_links_resolve(doc: Path) -> None:
    assert check_links(doc.read_text(), doc) == []


def test_the_readme_runs_the_tests_as_ci_does() -> None:
    """.ci/run runs the README's test command exactly as written there."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if line.startswith("python3 -m venv"))
    readme = fenced_blocks((ROOT / "README.md").read_text())
    assert command in [line for _, language, body in readme for line in body.splitlines()]


BROKEN = """\
```bash
lrbatch sweep sweeps/adam_mnist1d.yaml sweep.lr_mx=0.3   # an unknown override
$ lrbatch predict --base-lr 0.01 --base-bach 128 --batch 512
cd runs && .venv/bin/lrbatch reprot
lrbatch sweep sweeps/no_such_sweep.yaml \\
    --trial-limit 5
lrbatch worker --study s hardwre=gpu
lrbatch predict --base-lr 0.01 --base-batch 128 --batch 512 [--b-noise 900]
```

```python
from lrbatch.sampler import LRBatchSampler
```

Read them with `lrbatch.noise_torch.measure`; [the plan](nowhere.md), [more](#no-such-heading).
"""


def test_the_checks_report_what_is_wrong(tmp_path: Path, monkeypatch) -> None:
    """A misspelt option or command, an unknown override, a missing sweep file, an old module
    path, a broken link: each is reported, with its line; a well-formed command is not."""
    monkeypatch.delenv("LRBATCH_STORAGE", raising=False)
    problems = check_commands(BROKEN, "made-up.md", tmp_path)
    assert len(problems) == 5, problems
    unknown_setting, misspelt, unknown, missing, override = problems
    assert unknown_setting.startswith("made-up.md:2: lrbatch sweep") and "lr_mx" in unknown_setting
    assert misspelt.startswith("made-up.md:3:") and "--base-bach" in misspelt
    assert unknown.startswith("made-up.md:4:") and "reprot" in unknown
    assert missing.startswith("made-up.md:5:") and "sweeps/no_such_sweep.yaml" in missing
    assert override.startswith("made-up.md:7:") and "hardwre" in override
    old = check_python(BROKEN, "made-up.md") + check_names(BROKEN, "made-up.md")
    assert old == [
        "made-up.md:12: lrbatch.sampler.LRBatchSampler does not exist",
        "made-up.md: `lrbatch.noise_torch.measure` does not exist",
    ]
    links = check_links(BROKEN, tmp_path / "made-up.md")
    assert links == [
        "made-up.md: link to nowhere.md: no such file",
        "made-up.md: link to #no-such-heading: no such heading",
    ]
