"""Training corpora for the static embedder, and the docstring -> code pairs mined from them.

Sources, all present on every machine that runs this project (nothing is downloaded):

* the running interpreter's standard library, minus its tests and minus ``HELD_OUT_PACKAGES``
  (what ``bench/bench_eval.py`` and the demo evaluate on: a model must never train on its test);
* the packages ``pyproject.toml`` depends on (read from this project's installed metadata),
  minus their tests and minus ``NEVER_TRAINED_ON`` (pip, setuptools and wheel come with the
  virtual-environment tool, so their version is not ours to pin);
* any repository the user names (``--corpus PATH``), so a catalog can carry a model adapted
  to its own code.

A pair is (first paragraph of a docstring, the function, method or class it documents with
every docstring inside blanked out), mined along Python's syntax tree (``ast``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import logging
import re
import sysconfig
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from udfs.chunking import DEFAULT_MAX_CHARS, chunk_source

logger = logging.getLogger("codeintel.corpus")

#: Standard-library packages the demo ingests and bench/bench_eval.py evaluates on.
DEMO_PACKAGES = ("json", "http", "urllib", "logging", "concurrent", "tomllib", "zoneinfo", "wsgiref", "sqlite3")
#: Never mined for training pairs: the evaluation's packages.
HELD_OUT_PACKAGES = frozenset(DEMO_PACKAGES)
#: Never mined: installed by the virtual-environment tool, not pinned by this project.
NEVER_TRAINED_ON = frozenset({"pip", "setuptools", "wheel"})
#: Directory names whose files are tests, fixtures or vendored copies: docstrings there are
#: "GH 12345"-style notes, not descriptions of the code.
SKIPPED_DIRECTORIES = frozenset({
    "test", "tests", "testing", "idle_test", "__pycache__", "site-packages", ".git", ".hg", ".venv", "venv",
    "node_modules", "_vendor", "vendor", "turtledemo", "__phello__",
})
PROJECT_DISTRIBUTION = "codeintel-sql"
#: A pair's code is cut here: a chunk of the store is ~1,200 non-blank characters, so code
#: is retrieved by what its first ~1,500 characters say.
MAX_CODE_CHARS = 1500
MAX_QUERY_CHARS = 400
MIN_QUERY_WORDS = 3


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """A named set of Python files under one root."""

    name: str
    version: str
    root: Path
    files: tuple[Path, ...]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "files": len(self.files)}


@dataclasses.dataclass(frozen=True)
class Pair:
    """A docstring's first paragraph (or sentence) and the code it documents, docstrings blanked.

    ``symbols`` are the names the code defines (the function, its nested functions and
    classes), as the chunker lists a chunk's symbols; ``origin`` is source:relative path.
    """

    query: str
    code: str
    symbols: tuple[str, ...]
    origin: str


def stdlib_source() -> CorpusSource:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = tuple(path for path in python_files(root)
                  if not _held_out(path.relative_to(root)))
    return CorpusSource("python-stdlib", sysconfig.get_python_version(), root, files)


def _held_out(relative: Path) -> bool:
    top = relative.parts[0]
    return top in HELD_OUT_PACKAGES or top.removesuffix(".py") in HELD_OUT_PACKAGES


def pinned_distributions() -> list[str]:
    """The distributions this project depends on (no extras), as its installed metadata names them."""
    try:
        requirements = importlib.metadata.requires(PROJECT_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeError(
            f"train-embedder: {PROJECT_DISTRIBUTION} is not installed, so its dependencies are unknown; "
            "run `pip install -e .` in this repository first"
        ) from error
    names = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match:
            names.append(match.group(0))
    return sorted(set(names))


def package_sources() -> list[CorpusSource]:
    """One source per installed pinned distribution with Python files, minus NEVER_TRAINED_ON."""
    sources = []
    for name in pinned_distributions():
        if _normalised(name) in NEVER_TRAINED_ON:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform-specific pin (faiss-cpu on Linux x86_64, say)
        files = []
        for entry in distribution.files or []:
            if entry.suffix != ".py" or SKIPPED_DIRECTORIES.intersection(entry.parts[:-1]):
                continue
            if entry.parts[0] in NEVER_TRAINED_ON or entry.parts[0] in HELD_OUT_PACKAGES:
                continue
            path = Path(distribution.locate_file(entry))
            if path.is_file():
                files.append(path)
        if files:
            root = Path(distribution.locate_file(""))
            sources.append(CorpusSource(_normalised(name), distribution.version, root, tuple(sorted(files))))
    return sources


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def repository_source(path: Path) -> CorpusSource:
    """A user's repository: its Python files outside tests, caches and virtual environments."""
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"train-embedder: --corpus {path} is not a directory; pass a repository's root")
    files = tuple(python_files(root))
    if not files:
        raise ValueError(f"train-embedder: --corpus {path} holds no Python files outside tests and caches")
    return CorpusSource(f"repo:{root.name}", "working tree", root, files)


def python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_DIRECTORIES.intersection(path.relative_to(root).parts[:-1]):
            continue
        if path.is_file():
            yield path


def default_sources(extra_repositories: Iterable[Path] = ()) -> list[CorpusSource]:
    return [stdlib_source(), *package_sources(), *(repository_source(path) for path in extra_repositories)]


def read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def corpus_hash(sources: Iterable[CorpusSource]) -> str:
    """SHA-256 over every file's relative path and bytes, source by source: the corpus's identity."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"{source.name}\0".encode())
        for path in source.files:
            digest.update(f"{path.relative_to(source.root)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def first_paragraph(docstring: str) -> str:
    paragraph = re.split(r"\n\s*\n", docstring.strip(), maxsplit=1)[0]
    return " ".join(paragraph.split())


def first_sentence(paragraph: str) -> str:
    """Up to the first . ! or ? followed by white space or the end (as queries are often asked)."""
    match = re.search(r"[.!?](?=\s|$)", paragraph)
    return paragraph[:match.end()] if match else paragraph


def docstring_nodes(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.Expr]]:
    """Every module, class and function node with a docstring, and that docstring's statement."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and node.body and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)):
            yield node, node.body[0]


def blank_docstrings(source: str) -> str:
    """``source`` with each module, class and function docstring replaced by ``pass``.

    The lines a docstring took are kept as blank lines, so every other line keeps its number.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for _, docstring in sorted(docstring_nodes(tree), key=lambda found: found[1].lineno, reverse=True):
        first, last = docstring.lineno - 1, (docstring.end_lineno or docstring.lineno) - 1
        # ast column offsets count UTF-8 bytes.
        head = lines[first].encode()[: docstring.col_offset].decode()
        tail = lines[last].encode()[docstring.end_col_offset or 0 :].decode()
        lines[first : last + 1] = [head + "pass" + tail, *["\n"] * (last - first)]
    return "".join(lines)


def mine_chunk_pairs(text: str, origin: str, max_chunk_chars: int = DEFAULT_MAX_CHARS) -> list[Pair]:
    """Pairs as a store holds them: the source with its docstrings blanked, chunked as ingest
    chunks it (cAST), each docstring's question paired with the chunk holding its ``def`` line
    and that chunk's symbols (the chunker's); unparsable sources give none."""
    try:
        tree = ast.parse(text)
        blanked = blank_docstrings(text)
    except (SyntaxError, ValueError):
        return []
    chunks = chunk_source(blanked, "python", origin, max_chunk_chars)
    if not chunks:
        return []
    starts = np.array([chunk.start_line for chunk in chunks])
    pairs = []
    for node, statement in docstring_nodes(tree):
        if isinstance(node, ast.Module):
            continue
        chunk = chunks[int(np.searchsorted(starts, node.lineno, side="right")) - 1]
        paragraph = first_paragraph(statement.value.value)[:MAX_QUERY_CHARS]
        for query in dict.fromkeys((paragraph, first_sentence(paragraph))):
            if len(query.split()) >= MIN_QUERY_WORDS and chunk.content.strip():
                pairs.append(Pair(query, chunk.content, tuple(chunk.symbols), origin))
    return pairs


def mine_pairs(text: str, origin: str) -> list[Pair]:
    """The (docstring, code) pairs of one Python source; unparsable sources give none."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    lines = text.splitlines(keepends=True)
    documented = list(docstring_nodes(tree))
    docstring_lines = set()
    for _, statement in documented:
        docstring_lines.update(range(statement.lineno - 1, (statement.end_lineno or statement.lineno)))
    pairs = []
    for node, statement in documented:
        if isinstance(node, ast.Module):
            continue
        paragraph = first_paragraph(statement.value.value)[:MAX_QUERY_CHARS]
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        body = [lines[i] for i in range(first, node.end_lineno or node.lineno) if i not in docstring_lines]
        code = textwrap.dedent("".join(body))[:MAX_CODE_CHARS]
        if not code.strip():
            continue
        symbols = tuple(dict.fromkeys(
            child.name for child in ast.walk(node)
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)))
        # The paragraph, and its first sentence when shorter: both are how people ask.
        for query in dict.fromkeys((paragraph, first_sentence(paragraph))):
            if len(query.split()) >= MIN_QUERY_WORDS:
                pairs.append(Pair(query, code, symbols, origin))
    return pairs


def corpus_pairs(sources: Iterable[CorpusSource], as_chunks: Callable[[str], bool] = lambda _origin: False
                 ) -> tuple[list[Pair], list[str]]:
    """Every pair of every source (duplicates dropped, first kept) and every file's text (the tokenizer's corpus).

    Files whose origin ``as_chunks`` accepts give chunk pairs (:func:`mine_chunk_pairs`), the
    others function pairs (:func:`mine_pairs`).
    """
    pairs: list[Pair] = []
    texts: list[str] = []
    seen: set[tuple[str, str]] = set()
    for source in sources:
        before = len(pairs)
        for path in source.files:
            text = read_source(path)
            if text is None:
                continue
            texts.append(text)
            origin = f"{source.name}:{path.relative_to(source.root)}"
            for pair in (mine_chunk_pairs if as_chunks(origin) else mine_pairs)(text, origin):
                key = (pair.query, pair.code)
                if key not in seen:
                    seen.add(key)
                    pairs.append(pair)
        logger.info("corpus %s %s: %d files, %d pairs", source.name, source.version, len(source.files),
                    len(pairs) - before)
    return pairs, texts
