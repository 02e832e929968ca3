"""The chunking UDF family: exact tiling, token-safe cuts, budget, merging, symbols, ids, SQL surface."""

from __future__ import annotations

import bisect
import concurrent.futures
import itertools
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import tree_sitter
import tree_sitter_go
import tree_sitter_java
import tree_sitter_javascript
import tree_sitter_python
import tree_sitter_rust
import tree_sitter_typescript
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs import chunking, registry
from udfs.context import CatalogContext

# The test's own grammar table, so the oracle does not share the chunker's loading code.
GRAMMARS = {
    "python": tree_sitter_python.language,
    "javascript": tree_sitter_javascript.language,
    "typescript": tree_sitter_typescript.language_typescript,
    "tsx": tree_sitter_typescript.language_tsx,
    "go": tree_sitter_go.language,
    "rust": tree_sitter_rust.language,
    "java": tree_sitter_java.language,
}

SAMPLES = {
    "javascript": """\
// Utilities for the «café» menu.
import { readFile } from "node:fs/promises";

/** Prices in euros; keys are dish names. */
const PRICES = { "crème brûlée": 7.5, "naïve salad": 6, "日本茶": 3 };

export function total(order) {
  let sum = 0;
  for (const dish of order) {
    if (!(dish in PRICES)) {
      throw new Error(`unknown dish: ${dish} ✗`);
    }
    sum += PRICES[dish];
  }
  return sum;
}

export class Menu {
  #items = [];
  constructor(items) {
    this.#items = items;
  }
  *[Symbol.iterator]() {
    yield* this.#items;
  }
  describe() {
    return this.#items.map((item) => `• ${item}`).join("\\n");
  }
}

const load = async (path) => JSON.parse(await readFile(path, "utf8"));
export default load;
""",
    "typescript": """\
// Geometry helpers — ½ of them are trivial.
export interface Point {
  x: number;
  y: number;
}

export type Shape = { kind: "circle"; radius: number } | { kind: "square"; side: number };

export enum Unit {
  Metre = "m",
  Micrometre = "µm",
}

export abstract class Figure {
  abstract area(): number;
  describe(unit: Unit = Unit.Metre): string {
    return `area ${this.area().toFixed(2)} ${unit}²`;
  }
}

export class Circle extends Figure {
  constructor(private readonly radius: number) {
    super();
  }
  area(): number {
    return Math.PI * this.radius ** 2;
  }
}

export function distance(a: Point, b: Point): number {
  const dx = a.x - b.x;
  const dy = a.y - b.y;
  return Math.sqrt(dx * dx + dy * dy);
}

namespace Legacy {
  export const origin: Point = { x: 0, y: 0 };
}
""",
    "tsx": """\
import React, { useState } from "react";

type Props = { label: string; initial?: number };

export function Counter({ label, initial = 0 }: Props) {
  const [count, setCount] = useState<number>(initial);
  return (
    <div className="counter">
      <span>{label} — {count} 👍</span>
      <button onClick={() => setCount(count + 1)}>+1</button>
    </div>
  );
}

export const Greeting = ({ name }: { name: string }) => <p>Grüß dich, {name}!</p>;
""",
    "go": """\
// Package queue implements a bounded FIFO — «file d'attente».
package queue

import (
\t"errors"
\t"sync"
)

// ErrFull is returned when the queue has no room left.
var ErrFull = errors.New("queue: full ✗")

// Queue is safe for concurrent use.
type Queue struct {
\tmu    sync.Mutex
\titems []string
\tlimit int
}

// Sizer reports a length.
type Sizer interface {
\tLen() int
}

// New returns an empty queue holding at most limit items.
func New(limit int) *Queue {
\treturn &Queue{limit: limit}
}

// Push appends an item, or fails with ErrFull.
func (q *Queue) Push(item string) error {
\tq.mu.Lock()
\tdefer q.mu.Unlock()
\tif len(q.items) >= q.limit {
\t\treturn ErrFull
\t}
\tq.items = append(q.items, item)
\treturn nil
}

// Len is the number of queued items.
func (q *Queue) Len() int {
\tq.mu.Lock()
\tdefer q.mu.Unlock()
\treturn len(q.items)
}
""",
    "rust": """\
//! Temperature conversions — °C, °F and K.

/* Absolute zero is 0 K, −273.15 °C.
   Nothing here checks for negative kelvin:
   callers construct only physical values. */
use std::fmt;

// A plain comment, not documentation.

/// A temperature in kelvin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kelvin(pub f64);

/// Scales we can print.
pub enum Scale {
    Celsius,
    Fahrenheit,
}

pub trait Convert {
    fn to_celsius(&self) -> f64;
    fn to_fahrenheit(&self) -> f64 {
        self.to_celsius() * 9.0 / 5.0 + 32.0
    }
}

impl Convert for Kelvin {
    fn to_celsius(&self) -> f64 {
        self.0 - 273.15
    }
}

impl fmt::Display for Kelvin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} K (≈ {:.1} °C)", self.0, self.to_celsius())
    }
}

macro_rules! kelvin {
    ($value:expr) => {
        Kelvin($value as f64)
    };
}

mod tests {
    #[test]
    fn freezing() {
        assert_eq!(kelvin!(273.15).to_celsius(), 0.0);
    }
}
""",
    "java": """\
package org.example.library;

import java.util.ArrayList;
import java.util.List;

/** A shelf of books — «bibliothèque». */
public class Shelf {
    private final List<String> titles = new ArrayList<>();

    public Shelf() {}

    /** Adds a title; blank titles are refused. */
    public void add(String title) {
        if (title.isBlank()) {
            throw new IllegalArgumentException("blank title ✗");
        }
        titles.add(title);
    }

    public int size() {
        return titles.size();
    }

    interface Visitor {
        void visit(String title);
    }

    enum Genre { NOVEL, ESSAY, 詩 }

    record Entry(String title, Genre genre) {}
}
""",
}


# ---------------------------------------------------------------------------------------
# Oracles


def parse(text: str, language: str) -> tree_sitter.Node:
    return tree_sitter.Parser(tree_sitter.Language(GRAMMARS[language]())).parse(text.encode()).root_node


def tokens(root: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Leaves, and nodes whose children leave part of their text uncovered (a Rust ``/* text */``).

    Every leaf lies inside one of these, so a cut between them never splits a leaf either.
    """
    pending = [root]
    while pending:
        node = pending.pop()
        children_size = sum(non_whitespace(child.text.decode()) for child in node.children)
        if node.child_count and children_size == non_whitespace(node.text.decode()):
            pending.extend(node.children)
        else:
            yield node


def non_whitespace(text: str) -> int:
    # str.split() drops exactly the characters for which str.isspace() is true.
    return len("".join(text.split()))


def assert_tiles(chunks: list[chunking.Chunk], text: str) -> None:
    """Chunks reproduce the file exactly and their offsets and lines describe their content."""
    data = text.encode()
    assert "".join(chunk.content for chunk in chunks) == text
    if not data:
        assert chunks == []
        return
    assert chunks[0].start_byte == 0
    assert chunks[-1].end_byte == len(data)
    for previous, following in itertools.pairwise(chunks):
        assert previous.end_byte == following.start_byte
    for chunk in chunks:
        assert chunk.start_byte < chunk.end_byte
        assert data[chunk.start_byte : chunk.end_byte].decode() == chunk.content
        assert chunk.start_line == data[: chunk.start_byte].count(b"\n") + 1
        assert chunk.end_line == data[: chunk.end_byte - 1].count(b"\n") + 1


def assert_cuts_between_tokens(chunks: list[chunking.Chunk], root: tree_sitter.Node) -> None:
    boundaries = [chunk.start_byte for chunk in chunks]
    for token in tokens(root):
        following = bisect.bisect_right(boundaries, token.start_byte)
        cut = following < len(boundaries) and boundaries[following] < token.end_byte
        assert not cut, (
            f"{token.type} token {token.start_byte}..{token.end_byte} cut at {boundaries[following]}"
        )


def assert_syntax_budget(chunks: list[chunking.Chunk], root: tree_sitter.Node, max_chars: int) -> None:
    """Every chunk fits, unless its non-whitespace text is that of one token too large to fit."""
    token_sizes = [
        (token.start_byte, token.end_byte, non_whitespace(token.text.decode())) for token in tokens(root)
    ]
    for chunk in chunks:
        size = non_whitespace(chunk.content)
        if size > max_chars:
            assert any(
                chunk.start_byte <= start and end <= chunk.end_byte and token_size == size
                for start, end, token_size in token_sizes
            ), f"chunk {chunk.start_byte}..{chunk.end_byte} holds {size} > {max_chars} and is not one token"


def assert_line_budget(chunks: list[chunking.Chunk], max_chars: int) -> None:
    for chunk in chunks:
        assert chunk.kind == chunking.LINE_WINDOW_KIND
        if non_whitespace(chunk.content) > max_chars:
            assert "\n" not in chunk.content[:-1], "an over-budget line window holds more than one line"


def assert_well_chunked(text: str, language: str, max_chars: int) -> list[chunking.Chunk]:
    chunks = chunking.chunk_source(text, language, "sample", max_chars)
    assert_tiles(chunks, text)
    root = parse(text, language)
    assert_cuts_between_tokens(chunks, root)
    assert_syntax_budget(chunks, root, max_chars)
    return chunks


# ---------------------------------------------------------------------------------------
# Generated inputs

identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
# Quotes, backslashes and line breaks would end the literal the snippet puts them in.
literal_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\"'`\\{}$"),
    max_size=30,
)
long_tokens = st.integers(100, 600).map(lambda length: "x" * length)
blank_lines = st.integers(1, 3).map(lambda count: "\n" * count)
indents = st.sampled_from(["", "  ", "    ", "\t"])

python_statements = st.one_of(
    st.builds("return {}\n".format, identifiers),
    st.builds('text = "{}"\n'.format, literal_text),
    st.builds("{} = {}\n".format, identifiers, long_tokens),
    st.builds("# {}\n".format, literal_text),
    blank_lines,
)
python_functions = st.builds(
    lambda indent, name, body: (
        f"{indent}def {name}(value):\n" + "".join(f"{indent}    {line}" for line in body)
    ),
    indents,
    identifiers,
    st.lists(python_statements, min_size=1, max_size=6),
)
python_classes = st.builds(
    lambda name, methods: f"class {name}:\n" + "".join(methods),
    identifiers,
    st.lists(python_functions.map(lambda function: "    " + function), min_size=1, max_size=4),
)
python_sources = st.lists(st.one_of(python_functions, python_classes, python_statements), max_size=12).map(
    "".join
)

brace_statements = st.one_of(
    st.builds("return {};\n".format, identifiers),
    st.builds('let text = "{}";\n'.format, literal_text),
    st.builds("let {} = {};\n".format, identifiers, long_tokens),
    st.builds("// {}\n".format, literal_text),
    st.builds("/* {} */\n".format, literal_text),
    blank_lines,
)
brace_blocks = st.recursive(
    st.lists(brace_statements, max_size=5).map("".join),
    lambda inner: st.builds(
        lambda keyword, name, body: f"{keyword} {name}() {{\n{body}}}\n",
        st.sampled_from(["function", "class", "fn", "func", "if", "void"]),
        identifiers,
        st.lists(inner, max_size=4).map("".join),
    ),
    max_leaves=20,
)
brace_sources = st.lists(brace_blocks, max_size=6).map("".join)

GENERATED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(
    text=st.text(max_size=400),
    language=st.sampled_from([None, "markdown", "text"]),
    max_chars=st.integers(1, 120),
)
def test_line_windows_tile_any_text_within_budget(text: str, language: str | None, max_chars: int) -> None:
    chunks = chunking.chunk_source(text, language, "notes", max_chars)
    assert_tiles(chunks, text)
    assert_line_budget(chunks, max_chars)


BRACE_LANGUAGES = sorted(chunking.GRAMMAR_LANGUAGES - {"python"})
# Mostly code shaped for its grammar; mismatched pairs exercise tree-sitter's error recovery.
generated_code = st.one_of(
    st.tuples(st.just("python"), python_sources),
    st.tuples(st.sampled_from(BRACE_LANGUAGES), brace_sources),
    st.tuples(st.sampled_from(sorted(chunking.GRAMMAR_LANGUAGES)), st.one_of(python_sources, brace_sources)),
)


@GENERATED
@given(language_and_text=generated_code, max_chars=st.integers(1, 400))
def test_syntax_chunks_tile_generated_code(language_and_text: tuple[str, str], max_chars: int) -> None:
    language, text = language_and_text
    assert_well_chunked(text, language, max_chars)


# ---------------------------------------------------------------------------------------
# Real files


def stdlib_sample(count: int = 12, max_bytes: int = 60_000) -> list[Path]:
    """A fixed, spread-out sample of standard-library modules, so every run checks the same files."""
    modules = sorted(
        path
        for path in Path(sysconfig.get_paths()["stdlib"]).glob("*.py")
        if 2_000 < path.stat().st_size < max_bytes
    )
    return modules[:: max(1, len(modules) // count)][:count]


@pytest.mark.parametrize("path", stdlib_sample(), ids=lambda path: path.name)
@pytest.mark.parametrize("max_chars", [150, chunking.DEFAULT_MAX_CHARS])
def test_stdlib_modules_tile_and_cut_between_tokens(path: Path, max_chars: int) -> None:
    assert_well_chunked(path.read_text(encoding="utf-8"), "python", max_chars)


@pytest.mark.parametrize("language", sorted(SAMPLES))
@pytest.mark.parametrize("max_chars", [1, 40, 200, chunking.DEFAULT_MAX_CHARS])
def test_hand_written_samples_tile_and_cut_between_tokens(language: str, max_chars: int) -> None:
    assert_well_chunked(SAMPLES[language], language, max_chars)


def test_concurrent_threads_chunk_like_one_thread() -> None:
    jobs = [
        (text, language, max_chars) for language, text in SAMPLES.items() for max_chars in (1, 40, 200)
    ] * 8
    expected = [chunking.chunk_source(*job[:2], "sample", job[2]) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: chunking.chunk_source(*job[:2], "sample", job[2]), jobs))
    assert results == expected


def test_broken_code_still_tiles() -> None:
    text = "def broken(:\n    return ((\nclass\n  } ]] émoji 😀 (\n" * 20
    chunks = assert_well_chunked(text, "python", 60)
    assert len(chunks) > 1


def test_non_ascii_offsets_are_utf8_bytes_on_character_boundaries() -> None:
    text = 'naïve = "日本語テキスト"\n\n\ndef émoji():\n    return "😀😃😄"\n' * 8
    for language in ("python", None):
        chunks = chunking.chunk_source(text, language, "unicode.py", 12)
        assert_tiles(chunks, text)
        assert any(chunk.end_byte - chunk.start_byte > len(chunk.content) for chunk in chunks)


def test_size_counts_characters_not_bytes() -> None:
    text = "日本\né😀\n"
    assert len(chunking.chunk_source(text, None, "unicode.txt", 4)) == 1
    assert len(chunking.chunk_source(text, None, "unicode.txt", 3)) == 2


def test_size_does_not_count_unicode_spaces() -> None:
    text = "a\u3000b\n\u00a0c\u2003d\n"
    assert len(chunking.chunk_source(text, None, "spaces.txt", 4)) == 1
    assert len(chunking.chunk_source(text, None, "spaces.txt", 3)) == 2


# ---------------------------------------------------------------------------------------
# Shape of the result


def test_empty_file_has_no_chunks_and_blank_file_has_one() -> None:
    assert chunking.chunk_source("", "python", "empty.py") == []
    assert chunking.chunk_source("", None, "empty.txt") == []
    for language in ("python", "go", None):
        (chunk,) = chunking.chunk_source("\n  \n", language, "blank")
        assert (chunk.start_byte, chunk.end_byte, chunk.start_line, chunk.end_line) == (0, 4, 1, 2)


def test_small_siblings_are_merged() -> None:
    text = "".join(f"def function_{index}(value):\n    return value + {index}\n\n" for index in range(50))
    chunks = assert_well_chunked(text, "python", chunking.DEFAULT_MAX_CHARS)
    assert len(chunks) <= 3
    assert chunks[0].kind == "function_definition"


def test_large_definition_is_split_into_pieces_within_budget() -> None:
    body = "".join(f"    total += compute_{index}(value)\n" for index in range(120))
    text = f"def accumulate(value):\n    total = 0\n{body}    return total\n"
    chunks = assert_well_chunked(text, "python", 300)
    assert len(chunks) >= 5
    assert chunks[0].content.startswith("def accumulate(value):\n    total = 0\n")
    assert all(non_whitespace(chunk.content) <= 300 for chunk in chunks)
    # Cuts fall after whole lines when statements are split.
    assert all(chunk.content.endswith("\n") for chunk in chunks)


def test_pieces_of_a_split_definition_do_not_absorb_the_next_definition() -> None:
    body = "".join(f"        self.field_{index} = value_{index}\n" for index in range(60))
    big_class = f"class Big:\n    def __init__(self):\n{body}"
    text = big_class + "\n\ndef small():\n    return 1\n"
    chunks = assert_well_chunked(text, "python", 400)
    assert chunks[-1].content.lstrip("\n") == "def small():\n    return 1\n"
    assert chunks[-1].symbols == ("small",)


def test_remnant_of_a_split_definition_joins_its_neighbour() -> None:
    text = f'"""{"documentation " * 40}"""\nVERSION = 1\n'
    chunks = assert_well_chunked(text, "python", 50)
    assert chunks[-1].content == '"""\nVERSION = 1\n'


def test_multi_line_comment_over_budget_stays_whole() -> None:
    comment = "/* " + "".join(f"line {index} of a long comment\n" for index in range(20)) + "*/\n"
    chunks = assert_well_chunked(f"fn a() {{}}\n{comment}fn b() {{}}\n", "rust", 30)
    assert any(comment in chunk.content for chunk in chunks)


def test_comment_stays_with_the_definition_it_precedes() -> None:
    functions = [
        f"// helper number {index}\nfunc helper{index}() int {{\n\treturn {index}\n}}\n\n"
        for index in range(30)
    ]
    chunks = assert_well_chunked("package p\n\n" + "".join(functions), "go", 100)
    for chunk in chunks:
        for symbol in chunk.symbols:
            assert f"// helper number {symbol.removeprefix('helper')}\n" in chunk.content


def test_rust_attributes_stay_with_their_item() -> None:
    items = [f"#[derive(Debug)]\n#[repr(C)]\npub struct Item{index}(u8);\n\n" for index in range(20)]
    chunks = assert_well_chunked("".join(items), "rust", 70)
    for chunk in chunks:
        assert chunk.content.startswith("#[derive(Debug)]\n")
        assert chunk.kind == "struct_item"


@pytest.mark.parametrize("max_chars", [30, 120, 400])
def test_chunks_start_at_the_line_of_their_first_token(max_chars: int) -> None:
    for language in ("go", "java", "rust", "typescript"):
        chunks = chunking.chunk_source(SAMPLES[language], language, "sample", max_chars)
        for chunk in chunks:
            first_line = chunk.content.split("\n", 1)[0]
            assert first_line.strip(), f"{language} chunk at line {chunk.start_line} starts with a blank line"


def test_over_long_token_and_line_stay_whole() -> None:
    token = "y" * 5000
    text = f"short = 1\n{token} = 2\nlast = 3\n"
    chunks = assert_well_chunked(text, "python", 50)
    assert any(token in chunk.content for chunk in chunks)
    line_chunks = chunking.chunk_source(text, "text", "long.txt", 50)
    assert_tiles(line_chunks, text)
    assert f"{token} = 2\n" in [chunk.content for chunk in line_chunks]


def test_line_windows_merge_whole_lines() -> None:
    text = "".join(f"line {index}\n" for index in range(100))
    chunks = chunking.chunk_source(text, "markdown", "notes.md", 60)
    assert_tiles(chunks, text)
    assert 10 <= len(chunks) <= 20
    assert all(chunk.content.endswith("\n") for chunk in chunks)


def test_kind_names_the_chunk_node_or_its_largest_top_node() -> None:
    (single,) = chunking.chunk_source("def only():\n    return 1\n", "python", "a.py")
    assert single.kind == "function_definition"
    (mixed,) = chunking.chunk_source("x = 1\nclass Large:\n    a = 1\n    b = 2\n", "python", "a.py")
    assert mixed.kind == "class_definition"
    documented_function = f"# {'long words ' * 20}\ndef short():\n    pass\n"
    (documented,) = chunking.chunk_source(documented_function, "python", "a.py")
    assert documented.kind == "function_definition"
    assert {chunk.kind for chunk in chunking.chunk_source("a\nb\n", "toml", "a.toml", 1)} == {"lines"}


def test_max_chars_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="chunk_source: max_chars must be at least 1, got 0"):
        chunking.chunk_source("x = 1\n", "python", "a.py", 0)


# ---------------------------------------------------------------------------------------
# Symbols


SYMBOL_CASES = [
    (
        "python",
        "import os\nX = 1\n\nclass A:\n    def m(self):\n        pass\n\n@decorated\ndef f():\n    y = 2\n",
        ("X", "A", "m", "f"),
    ),
    (
        "javascript",
        "function f() {}\nclass C { m() {} [computed]() {} }\nconst g = () => 1;\nlet h = 3;\n",
        ("f", "C", "m", "g"),
    ),
    (
        "typescript",
        "interface I { x: number; run(): void }\ntype T = string;\nenum E { A }\n"
        "abstract class B { abstract area(): number }\nclass C { m(): void {} }\nfunction f(): void {}\n"
        "namespace N {}\ndeclare function d(): void;\n",
        ("I", "run", "T", "E", "B", "area", "C", "m", "f", "N", "d"),
    ),
    ("tsx", "function App() { return <div/>; }\nconst Button = () => <button/>;\n", ("App", "Button")),
    (
        "go",
        "package p\ntype S struct{}\ntype I interface{ M() }\nfunc F() {}\nfunc (s S) M() {}\n",
        ("S", "I", "M", "F"),
    ),
    (
        "rust",
        "struct S;\nenum E { A }\ntrait T { fn t(&self); }\nimpl S { fn m(&self) {} }\nfn f() {}\n"
        "mod inner {}\nmacro_rules! mac { () => {} }\ntype Alias = u8;\nunion U { a: u8 }\n",
        ("S", "E", "T", "t", "m", "f", "inner", "mac", "Alias", "U"),
    ),
    (
        "java",
        "class C { C() {} void m() {} interface I {} enum E { A } record R(int x) {} @interface Note {} }\n",
        ("C", "m", "I", "E", "R", "Note"),
    ),
]


@pytest.mark.parametrize(
    ("language", "text", "expected"), SYMBOL_CASES, ids=[language for language, _, _ in SYMBOL_CASES]
)
def test_symbols_are_defined_names_in_order(language: str, text: str, expected: tuple[str, ...]) -> None:
    (chunk,) = chunking.chunk_source(text, language, "symbols")
    assert chunk.symbols == expected


def test_symbols_belong_to_the_chunk_where_their_definition_starts() -> None:
    text = "".join(f"def f{index}():\n    return {'1 + ' * 20}1\n\n" for index in range(6))
    chunks = chunking.chunk_source(text, "python", "a.py", 60)
    assert [chunk.symbols for chunk in chunks if chunk.symbols] == [(f"f{index}",) for index in range(6)]
    assert all("def" in chunk.content for chunk in chunks if chunk.symbols)


def test_line_windows_have_no_symbols() -> None:
    assert all(chunk.symbols == () for chunk in chunking.chunk_source("def f():\n  pass\n", None, "a.txt"))


# ---------------------------------------------------------------------------------------
# Ids


def test_ids_are_stable_distinct_positive_int64() -> None:
    text = SAMPLES["java"]
    first = chunking.chunk_source(text, "java", "src/Shelf.java", 40)
    second = chunking.chunk_source(text, "java", "src/Shelf.java", 40)
    ids = [chunk.id for chunk in first]
    assert ids == [chunk.id for chunk in second]
    assert len(set(ids)) == len(ids) > 1
    assert all(0 < identifier < 2**63 for identifier in ids)
    assert chunking.chunk_source(text, "java", "other/Shelf.java", 40)[0].id != ids[0]


def test_id_is_pinned_so_it_matches_across_machines_and_releases() -> None:
    assert chunking.chunk_id("a.py", 0, 6, "x = 1\n") == chunking.chunk_id("a.py", 0, 6, "x = 1\n")
    assert chunking.chunk_id("a.py", 0, 6, "x = 1\n") == PINNED_ID
    assert chunking.chunk_id("a.p", 0, 6, "yx = 1\n") != PINNED_ID


PINNED_ID = 4031961204653724352


# ---------------------------------------------------------------------------------------
# Languages


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("pkg/module.py", "python"),
        ("pkg/stub.pyi", "python"),
        ("web/app.JS", "javascript"),
        ("web/app.mjs", "javascript"),
        ("web/app.cjs", "javascript"),
        ("web/app.jsx", "javascript"),
        ("web/app.ts", "typescript"),
        ("web/app.mts", "typescript"),
        ("web/app.cts", "typescript"),
        ("web/App.tsx", "tsx"),
        ("cmd/main.go", "go"),
        ("src/lib.rs", "rust"),
        ("src/Main.java", "java"),
        ("README.md", "markdown"),
        ("docs/index.rst", "rst"),
        ("notes.txt", "text"),
        ("pyproject.toml", "toml"),
        (".github/ci.yml", "yaml"),
        ("data.json", "json"),
        ("setup.cfg", "ini"),
        ("run.sh", "shell"),
        ("core.c", "c"),
        ("core.hpp", "cpp"),
        ("site/index.html", "html"),
        ("site/style.css", "css"),
        ("schema.sql", "sql"),
        ("build/Makefile", "make"),
        ("file:///repo/src/lib.rs", "rust"),
        ("image.png", None),
        ("LICENSE", None),
        (".bashrc", None),
        ("archive.tar.gz", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert chunking.language_for_path(path) == language


def test_every_language_in_the_map_is_chunked() -> None:
    for language in set(chunking.LANGUAGE_BY_EXTENSION.values()):
        chunks = chunking.chunk_source("a\nb\n", language, "x")
        assert "".join(chunk.content for chunk in chunks) == "a\nb\n"
    assert chunking.GRAMMAR_LANGUAGES.issubset(chunking.LANGUAGE_BY_EXTENSION.values())


# ---------------------------------------------------------------------------------------
# DuckDB surface


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    context = CatalogContext(catalog_dir=tmp_path_factory.mktemp("catalog"))
    for spec in chunking.REGISTRY:
        spec.register(con, context)
    return con


def test_chunk_code_unnests_to_chunks_that_rebuild_the_file(connection: duckdb.DuckDBPyConnection) -> None:
    text = SAMPLES["rust"]
    rows = connection.execute(
        "SELECT unnest(chunk_code(?, ?, ?, ?), recursive := true)", ["src/lib.rs", text, "rust", 80]
    ).fetchall()
    expected = chunking.chunk_source(text, "rust", "src/lib.rs", 80)
    assert [chunking.Chunk(*row[:6], tuple(row[6]), row[7]) for row in rows] == expected
    (rebuilt,) = connection.execute(
        "SELECT string_agg(content, '' ORDER BY start_byte) "
        "FROM (SELECT unnest(chunk_code('src/lib.rs', ?, 'rust', 80), recursive := true))",
        [text],
    ).fetchone()
    assert rebuilt == text


def test_chunk_code_result_type(connection: duckdb.DuckDBPyConnection) -> None:
    (type_name,) = connection.execute("SELECT typeof(chunk_code('a.py', 'x = 1', 'python', 10))").fetchone()
    assert type_name == str(duckdb.sqltype(chunking.CHUNK_SQL_TYPE + "[]"))


def test_chunk_code_nulls(connection: duckdb.DuckDBPyConnection) -> None:
    (null_content,) = connection.execute("SELECT chunk_code('a.py', NULL, 'python', 100)").fetchone()
    assert null_content is None
    (no_language,) = connection.execute("SELECT chunk_code('a', 'x\ny\n', NULL, 1)").fetchone()
    assert [chunk["kind"] for chunk in no_language] == ["lines", "lines"]
    (default_budget,) = connection.execute("SELECT chunk_code(NULL, 'x = 1\n', 'python', NULL)").fetchone()
    assert [chunk["content"] for chunk in default_budget] == ["x = 1\n"]


def test_chunk_code_rejects_a_budget_below_one(connection: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error, match="chunk_code: max_chars must be at least 1, got 0"):
        connection.execute("SELECT chunk_code('a.py', 'x = 1', 'python', 0)").fetchall()


def test_chunk_code_keeps_rows_aligned_across_batches(connection: duckdb.DuckDBPyConnection) -> None:
    rows = connection.execute(
        """
        WITH files AS (
            SELECT
                i,
                'f' || i || '.py' AS uri,
                CASE WHEN i % 7 <> 0 THEN repeat('def f' || i || '():\n    return ' || i || '\n', i % 5 + 1)
                END AS text
            FROM range(5000) AS t(i)
        )
        SELECT
            i,
            text,
            array_to_string(list_transform(chunk_code(uri, text, language_of(uri), 20), c -> c.content), '')
        FROM files
        """
    ).fetchall()
    assert len(rows) == 5000
    assert all(rebuilt == text for _, text, rebuilt in rows)


def test_registry_names() -> None:
    registry.check_unique(list(chunking.REGISTRY))
    assert [spec.name for spec in chunking.REGISTRY] == ["chunk_code", "language_of"]


def test_language_of(connection: duckdb.DuckDBPyConnection) -> None:
    rows = connection.execute(
        "SELECT language_of(uri) FROM (VALUES ('a/b.py'), ('c.tsx'), ('d.bin'), (NULL)) AS t(uri)"
    ).fetchall()
    assert rows == [("python",), ("tsx",), (None,), (None,)]
