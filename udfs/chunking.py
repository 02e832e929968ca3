"""Structure-aware chunking of source files (cAST: split-then-merge on tree-sitter trees).

A file is cut into chunks that tile it exactly: concatenated in order they reproduce the
file's bytes.  For a language with a grammar, syntax nodes whose size exceeds the budget
are split into their children until every piece fits (or is a single token, which is
never cut), then adjacent pieces are merged greedily while the merged size still fits.
Sizes count non-whitespace characters, so indentation style does not change the cut.
Whitespace between nodes goes to the chunk before it up to the last line break, the
indentation to the chunk after, so chunks start at the beginning of a line wherever the
code allows.

Pieces of a top-level definition that had to be split are not merged with neighbouring
top-level definitions, so a chunk does not mix the tail of one class with the next one
(a mere remnant, such as a lone closing brace, is merged all the same).  Comments and
attributes stay with the node that follows them when the budget allows.

Files without a grammar are chunked by line windows: whole lines merged up to the budget.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from types import MappingProxyType

import numpy as np
import pyarrow as pa
import tree_sitter
import tree_sitter_go
import tree_sitter_java
import tree_sitter_javascript
import tree_sitter_python
import tree_sitter_rust
import tree_sitter_typescript

from udfs import progress
from udfs.context import CatalogContext
from udfs.registry import UdfError, UdfSpec

logger = logging.getLogger("codeintel.chunking")

DEFAULT_MAX_CHARS = 1200
LINE_WINDOW_KIND = "lines"

_GRAMMAR_EXTENSIONS = {
    "python": (".py", ".pyi"),
    "javascript": (".js", ".mjs", ".cjs", ".jsx"),
    "typescript": (".ts", ".mts", ".cts"),
    "tsx": (".tsx",),
    "go": (".go",),
    "rust": (".rs",),
    "java": (".java",),
}
_LINE_WINDOW_EXTENSIONS = {
    "markdown": (".md", ".markdown", ".mdx"),
    "rst": (".rst",),
    "text": (".txt",),
    "toml": (".toml",),
    "yaml": (".yaml", ".yml"),
    "json": (".json", ".jsonc", ".jsonl"),
    "ini": (".ini", ".cfg", ".conf"),
    "shell": (".sh", ".bash", ".zsh"),
    "c": (".c", ".h"),
    "cpp": (".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx"),
    "csharp": (".cs",),
    "kotlin": (".kt", ".kts"),
    "swift": (".swift",),
    "scala": (".scala",),
    "ruby": (".rb",),
    "php": (".php",),
    "lua": (".lua",),
    "perl": (".pl", ".pm"),
    "html": (".html", ".htm"),
    "xml": (".xml",),
    "css": (".css", ".scss", ".less"),
    "sql": (".sql",),
    "protobuf": (".proto",),
    "graphql": (".graphql", ".gql"),
    "make": (".mk",),
    "dockerfile": (".dockerfile",),
}

LANGUAGE_BY_EXTENSION: MappingProxyType[str, str] = MappingProxyType(
    {
        extension: language
        for languages in (_GRAMMAR_EXTENSIONS, _LINE_WINDOW_EXTENSIONS)
        for language, extensions in languages.items()
        for extension in extensions
    }
)
"""Lower-case file extension (with its dot) to language name: the only place this is decided."""

# Build files that conventionally carry no extension; matched on the exact file name.
LANGUAGE_BY_FILENAME: MappingProxyType[str, str] = MappingProxyType(
    {"Makefile": "make", "GNUmakefile": "make", "Dockerfile": "dockerfile"}
)

_GRAMMAR_LOADERS = {
    "python": tree_sitter_python.language,
    "javascript": tree_sitter_javascript.language,
    "typescript": tree_sitter_typescript.language_typescript,
    "tsx": tree_sitter_typescript.language_tsx,
    "go": tree_sitter_go.language,
    "rust": tree_sitter_rust.language,
    "java": tree_sitter_java.language,
}
GRAMMAR_LANGUAGES = frozenset(_GRAMMAR_LOADERS)

# Nodes that describe the node after them: doc comments, Rust ``#[derive(...)]`` attributes.
_PREFIX_KINDS = frozenset({"comment", "line_comment", "block_comment", "attribute_item"})
# A window smaller than this share of the budget may merge across a split definition's
# edge anyway: a lone closing brace or a few imports are not worth a chunk of their own.
_REMNANT_FRACTION = 0.1


def _definitions_pattern(*kinds: str) -> str:
    return "\n".join(f"({kind} name: (_) @name) @definition" for kind in kinds)


_JAVASCRIPT_DEFINITIONS = (
    _definitions_pattern(
        "function_declaration", "generator_function_declaration", "class_declaration", "method_definition"
    )
    + """
(variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression) (generator_function) (class)]) @definition
"""
)
_TYPESCRIPT_DEFINITIONS = _JAVASCRIPT_DEFINITIONS + _definitions_pattern(
    "abstract_class_declaration",
    "interface_declaration",
    "type_alias_declaration",
    "enum_declaration",
    "function_signature",
    "method_signature",
    "abstract_method_signature",
    "internal_module",
)
# Tree-sitter queries capturing each definition node as @definition and its name as @name.
_DEFINITION_QUERIES = {
    "python": _definitions_pattern("function_definition", "class_definition")
    + "\n(module (expression_statement (assignment left: (identifier) @name) @definition))",
    "javascript": _JAVASCRIPT_DEFINITIONS,
    "typescript": _TYPESCRIPT_DEFINITIONS,
    "tsx": _TYPESCRIPT_DEFINITIONS,
    "go": _definitions_pattern(
        "function_declaration", "method_declaration", "method_elem", "type_spec", "type_alias"
    ),
    "rust": _definitions_pattern(
        "function_item",
        "function_signature_item",
        "struct_item",
        "enum_item",
        "union_item",
        "trait_item",
        "type_item",
        "mod_item",
        "macro_definition",
    ),
    "java": _definitions_pattern(
        "class_declaration",
        "interface_declaration",
        "enum_declaration",
        "record_declaration",
        "annotation_type_declaration",
        "method_declaration",
        "constructor_declaration",
    ),
}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of a file; field order and types match the ``chunk_code`` STRUCT."""

    id: int
    start_byte: int
    end_byte: int
    start_line: int
    end_line: int
    kind: str
    symbols: tuple[str, ...]
    content: str


CHUNK_SQL_TYPE = (
    "STRUCT(id BIGINT, start_byte BIGINT, end_byte BIGINT, start_line INTEGER, end_line INTEGER, "
    "kind VARCHAR, symbols VARCHAR[], content VARCHAR)"
)
_CHUNK_ARROW_TYPE = pa.struct(
    [
        ("id", pa.int64()),
        ("start_byte", pa.int64()),
        ("end_byte", pa.int64()),
        ("start_line", pa.int32()),
        ("end_line", pa.int32()),
        ("kind", pa.string()),
        ("symbols", pa.list_(pa.string())),
        ("content", pa.string()),
    ]
)


def chunk_id(uri: str, start_byte: int, end_byte: int, content: str) -> int:
    """A positive 63-bit id, the same for the same code at the same place on every machine."""
    hasher = hashlib.blake2b(digest_size=8)
    # Length-prefixing each field keeps ("ab", "c") and ("a", "bc") apart.
    for field in (uri.encode(), str(start_byte).encode(), str(end_byte).encode(), content.encode()):
        hasher.update(len(field).to_bytes(8, "big"))
        hasher.update(field)
    return (int.from_bytes(hasher.digest(), "big") & (2**63 - 1)) or 1


def language_for_path(path: str) -> str | None:
    """The language of a file path or URI by its extension; None when no language is known."""
    name = re.split(r"[/\\]", path)[-1]
    if name in LANGUAGE_BY_FILENAME:
        return LANGUAGE_BY_FILENAME[name]
    dot = name.rfind(".")
    return LANGUAGE_BY_EXTENSION.get(name[dot:].lower()) if dot > 0 else None


# ---------------------------------------------------------------------------------------
# Sizes


# Per byte: 1 when it starts a non-whitespace character.  UTF-8 continuation bytes
# (0x80-0xBF) count 0 so a multi-byte character counts once.
_NON_WHITESPACE_WEIGHT = bytes(
    0 if (byte < 128 and chr(byte).isspace()) or 0x80 <= byte < 0xC0 else 1 for byte in range(256)
)
_NON_ASCII_WHITESPACE = re.compile(r"[^\S\x00-\x7f]")


class _NonWhitespaceCounter:
    """O(1) count of non-whitespace characters in any byte range, after an O(n) prefix sum."""

    def __init__(self, text: str, data: bytes) -> None:
        weights = bytearray(data.translate(_NON_WHITESPACE_WEIGHT))
        if not text.isascii():
            byte_offset, char_offset = 0, 0
            for match in _NON_ASCII_WHITESPACE.finditer(text):
                byte_offset += len(text[char_offset : match.start()].encode())
                char_offset = match.start()
                weights[byte_offset] = 0
        self._prefix = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(weights, dtype=np.uint8), out=self._prefix[1:])

    def count(self, start: int, end: int) -> int:
        return int(self._prefix[end] - self._prefix[start])


# ---------------------------------------------------------------------------------------
# Pieces and windows


@dataclasses.dataclass(frozen=True, slots=True)
class _Piece:
    """An indivisible run of bytes: one syntax node (or line) plus the gap text assigned to it.

    ``unit`` numbers the top-level definition the piece belongs to (leading prefixes share
    the unit of the node they precede); see :func:`_kept_apart` for why it matters.
    """

    start: int
    end: int
    size: int
    kind: str
    unit: int
    is_prefix: bool


def _gap_boundary(data: bytes, left_end: int, right_start: int, floor: int, ceiling: int) -> int:
    """Where the text between two sibling nodes is cut: just after its last newline, if any.

    The node after the cut then starts its chunk at the beginning of its own line, so the
    chunk's start line is the line of its first token; blank lines end the chunk before.

    Clamping to ``[floor, ceiling]`` keeps the pieces contiguous even when tree-sitter
    reports a child outside its parent or overlapping siblings (error recovery).
    """
    gap_start = min(max(left_end, floor), ceiling)
    gap_end = min(max(right_start, gap_start), ceiling)
    newline = data.rfind(b"\n", gap_start, gap_end)
    return newline + 1 if newline != -1 else gap_end


def _sibling_extents(
    data: bytes, nodes: Sequence[tree_sitter.Node], start: int, end: int
) -> list[tuple[tree_sitter.Node, int, int]]:
    """Each sibling with the byte range it owns; together the ranges tile ``[start, end)``."""
    bounds = [start]
    for left, right in itertools.pairwise(nodes):
        bounds.append(_gap_boundary(data, left.end_byte, right.start_byte, bounds[-1], end))
    bounds.append(end)
    return [(node, bounds[index], bounds[index + 1]) for index, node in enumerate(nodes)]


def _top_level_units(nodes: Sequence[tree_sitter.Node]) -> list[int]:
    """Unit number per top-level node; a prefix (comment, attribute) takes that of the node it precedes."""
    units = [0] * len(nodes)
    next_unit = len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        if nodes[index].type not in _PREFIX_KINDS:
            next_unit = index
        units[index] = next_unit
    return units


def _divisible(node: tree_sitter.Node, sizes: _NonWhitespaceCounter) -> bool:
    """Whether splitting ``node`` into its children loses none of its text.

    Leaves are tokens; so is a node whose children leave some of its text uncovered, such
    as a Rust comment, which is a ``//`` child followed by bare text.
    """
    if not node.child_count:
        return False
    covered = sum(sizes.count(child.start_byte, child.end_byte) for child in node.children)
    return covered == sizes.count(node.start_byte, node.end_byte)


def _syntax_pieces(
    data: bytes, root: tree_sitter.Node, sizes: _NonWhitespaceCounter, max_chars: int
) -> tuple[list[_Piece], set[int]]:
    """Split nodes over budget into their children, in source order; also return the split units."""
    top_nodes = root.children
    if not top_nodes:
        return [_Piece(0, len(data), sizes.count(0, len(data)), root.type, 0, False)], set()
    units = _top_level_units(top_nodes)
    # An explicit stack instead of recursion: long else-if chains nest thousands deep.
    top_extents = _sibling_extents(data, top_nodes, 0, len(data))
    pending = [(node, start, end, unit) for (node, start, end), unit in zip(top_extents, units, strict=True)]
    pending.reverse()
    pieces: list[_Piece] = []
    split_units: set[int] = set()
    while pending:
        node, start, end, unit = pending.pop()
        size = sizes.count(start, end)
        if size > max_chars and _divisible(node, sizes):
            split_units.add(unit)
            for child, child_start, child_end in reversed(_sibling_extents(data, node.children, start, end)):
                pending.append((child, child_start, child_end, unit))
        else:
            pieces.append(_Piece(start, end, size, node.type, unit, node.type in _PREFIX_KINDS))
    return pieces, split_units


def _line_pieces(data: bytes, sizes: _NonWhitespaceCounter) -> list[_Piece]:
    pieces = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline == -1 else newline + 1
        pieces.append(_Piece(start, end, sizes.count(start, end), LINE_WINDOW_KIND, 0, False))
        start = end
    return pieces


def _runs(pieces: list[_Piece], max_chars: int) -> Iterator[list[_Piece]]:
    """Pieces grouped so prefixes travel with the piece after them, unless together they overflow."""
    run: list[_Piece] = []
    for piece in pieces:
        if run and run[-1].unit != piece.unit:
            yield from _fitting(run, max_chars)
            run = []
        run.append(piece)
        if not piece.is_prefix:
            yield from _fitting(run, max_chars)
            run = []
    if run:
        yield from _fitting(run, max_chars)


def _fitting(run: list[_Piece], max_chars: int) -> Iterator[list[_Piece]]:
    if len(run) > 1 and sum(piece.size for piece in run) > max_chars:
        yield from ([piece] for piece in run)
    else:
        yield run


def _kept_apart(
    window: list[_Piece], window_size: int, following: _Piece, split_units: set[int], max_chars: int
) -> bool:
    """Whether ``following`` starts a new window although it would fit.

    That is at the edge of a top-level definition that had to be split, so its pieces do
    not mix with its neighbours; unless the window is a mere remnant (see _REMNANT_FRACTION).
    """
    if window_size < max_chars * _REMNANT_FRACTION or window[-1].unit == following.unit:
        return False
    return not split_units.isdisjoint((window[-1].unit, following.unit))


def _merge(pieces: list[_Piece], split_units: set[int], max_chars: int) -> list[list[_Piece]]:
    """Greedily merge adjacent pieces into windows whose total size fits the budget."""
    windows: list[list[_Piece]] = []
    window: list[_Piece] = []
    window_size = 0
    for run in _runs(pieces, max_chars):
        run_size = sum(piece.size for piece in run)
        joins = (
            window
            and window_size + run_size <= max_chars
            and not _kept_apart(window, window_size, run[0], split_units, max_chars)
        )
        if joins:
            window.extend(run)
            window_size += run_size
        else:
            if window:
                windows.append(window)
            window, window_size = list(run), run_size
    if window:
        windows.append(window)
    return windows


# ---------------------------------------------------------------------------------------
# Parsing and symbols


@functools.cache
def _grammar(language: str) -> tree_sitter.Language:
    return tree_sitter.Language(_GRAMMAR_LOADERS[language]())


class _ThreadParsers(threading.local):
    """Parsers and queries of one thread: tree-sitter parsers must not be shared across threads."""

    def __init__(self) -> None:
        self.parsers: dict[str, tree_sitter.Parser] = {}
        self.queries: dict[str, tree_sitter.Query] = {}

    def parser(self, language: str) -> tree_sitter.Parser:
        if language not in self.parsers:
            self.parsers[language] = tree_sitter.Parser(_grammar(language))
        return self.parsers[language]

    def definition_query(self, language: str) -> tree_sitter.Query:
        if language not in self.queries:
            self.queries[language] = tree_sitter.Query(_grammar(language), _DEFINITION_QUERIES[language])
        return self.queries[language]


thread_parsers = _ThreadParsers()


def _definitions(language: str, root: tree_sitter.Node) -> list[tuple[int, str]]:
    """(start byte of the definition node, defined name) in source order."""
    definitions = []
    for _, captures in tree_sitter.QueryCursor(thread_parsers.definition_query(language)).matches(root):
        name_node = captures["name"][0]
        # Computed or quoted names (``[Symbol.iterator]() {}``) are expressions, not symbols.
        if name_node.type.endswith("identifier") and name_node.text is not None:
            definitions.append((captures["definition"][0].start_byte, name_node.text.decode()))
    definitions.sort(key=lambda definition: definition[0])
    return definitions


# ---------------------------------------------------------------------------------------
# Entry points


def chunk_source(
    text: str, language: str | None, uri: str, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Chunk]:
    """Cut ``text`` into chunks that tile it; ``language`` None or without a grammar means line windows."""
    if max_chars < 1:
        raise ValueError(f"chunk_source: max_chars must be at least 1, got {max_chars}")
    data = text.encode()
    if not data:
        return []
    sizes = _NonWhitespaceCounter(text, data)
    definitions: list[tuple[int, str]] = []
    if language in GRAMMAR_LANGUAGES:
        root = thread_parsers.parser(language).parse(data).root_node
        if root.has_error:
            logger.debug("%s: %s syntax errors; chunking tree-sitter's recovered tree", uri, language)
        pieces, split_units = _syntax_pieces(data, root, sizes, max_chars)
        definitions = _definitions(language, root)
    else:
        pieces, split_units = _line_pieces(data, sizes), set()
    return _chunks(data, uri, _merge(pieces, split_units, max_chars), definitions)


def _window_kind(window: list[_Piece]) -> str:
    """The kind of the largest piece, prefixes only when there is nothing else: a function
    with a long doc comment is still a function."""
    code = [piece for piece in window if not piece.is_prefix] or window
    return max(code, key=lambda piece: piece.size).kind


def _chunks(
    data: bytes, uri: str, windows: list[list[_Piece]], definitions: list[tuple[int, str]]
) -> list[Chunk]:
    chunks = []
    line = 1
    next_definition = 0
    for window in windows:
        start, end = window[0].start, window[-1].end
        if start == end:  # only zero-width nodes (e.g. a MISSING token): nothing to tile
            continue
        raw = data[start:end]
        symbols: dict[str, None] = {}
        while next_definition < len(definitions) and definitions[next_definition][0] < end:
            symbols[definitions[next_definition][1]] = None
            next_definition += 1
        content = raw.decode()
        kind = _window_kind(window)
        end_line = line + raw.count(b"\n", 0, len(raw) - 1)
        identifier = chunk_id(uri, start, end, content)
        chunks.append(Chunk(identifier, start, end, line, end_line, kind, tuple(symbols), content))
        line += raw.count(b"\n")
    return chunks


def chunk_code(
    context: CatalogContext,
    uris: pa.ChunkedArray,
    contents: pa.ChunkedArray,
    languages: pa.ChunkedArray,
    max_chars: pa.ChunkedArray,
) -> pa.Array:
    """Arrow UDF: one list of chunks per row; NULL content gives NULL, NULL max_chars the default."""
    rows = []
    for uri, content, language, budget in zip(
        uris.to_pylist(), contents.to_pylist(), languages.to_pylist(), max_chars.to_pylist(), strict=True
    ):
        budget = DEFAULT_MAX_CHARS if budget is None else budget
        if budget < 1:
            raise UdfError(f"chunk_code: max_chars must be at least 1, got {budget}")
        if content is None:
            rows.append(None)
            continue
        chunks = chunk_source(content, language and language.lower(), uri or "", budget)
        rows.append([_chunk_row(chunk) for chunk in chunks])
    progress.advance(progress.FILES_CHUNKED, sum(row is not None for row in rows))
    progress.advance(progress.CHUNKS_MADE, sum(len(row) for row in rows if row is not None))
    return pa.array(rows, type=pa.list_(_CHUNK_ARROW_TYPE))


def _chunk_row(chunk: Chunk) -> dict[str, object]:
    row = {field.name: getattr(chunk, field.name) for field in dataclasses.fields(Chunk)}
    row["symbols"] = list(chunk.symbols)
    return row


def language_of(context: CatalogContext, uris: pa.ChunkedArray) -> pa.Array:
    """Arrow UDF: the language of each path by its extension, NULL when unknown."""
    languages = [None if uri is None else language_for_path(uri) for uri in uris.to_pylist()]
    return pa.array(languages, type=pa.string())


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="chunk_code",
        function=chunk_code,
        parameters=("VARCHAR", "VARCHAR", "VARCHAR", "INTEGER"),
        return_type=f"{CHUNK_SQL_TYPE}[]",
        null_handling="special",
        doc="chunk_code(uri, content, language, max_chars): structure-aware chunks tiling content; "
        "language NULL or without a grammar chunks by lines, NULL max_chars means 1200.",
    ),
    UdfSpec(
        name="language_of",
        function=language_of,
        parameters=("VARCHAR",),
        return_type="VARCHAR",
        # Unknown extensions return NULL, which DuckDB only accepts with special null handling.
        null_handling="special",
        doc="language_of(uri): the language name for a path by its extension, NULL when unknown.",
    ),
)
