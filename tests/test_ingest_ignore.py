"""Ingest skips what .gitignore and setting ingest_exclude say, records why, and reports progress."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import bootstrap
from codeintel import errors, sqlfiles, store
from tests.test_ingest import make_repo
from udfs import ignore, progress, store_schema
from udfs.settings import SettingError

CODE = "def f():\n    return 1\n"

REPO_FILES = {
    # A real source package named build (pip/_internal/operations/build/): ingested unless ignored.
    "pkg/__init__.py": "",
    "pkg/operations/build/metadata.py": CODE,
    "pkg/operations/build/wheel.py": CODE,
    "pkg/secret_key.py": CODE,
    "pkg/secret_ok.py": CODE,
    "pkg/.gitignore": "secret_*.py\n!secret_ok.py\n",
    "generated/one.py": CODE,
    "generated/keep.py": CODE,
    "out/bundle.js": "module.exports = 1;\n",
    "out/nested/deep.js": "module.exports = 2;\n",
    "notes/todo.py": CODE,
    "local_only.py": CODE,
    ".gitignore": "# build output of this repository\nout/\ngenerated/*\n!generated/keep.py\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/info/exclude": "local_only.py\n",
    "main.py": CODE,
}


def files_table(catalog: Path) -> dict[str, str]:
    table = pq.read_table(catalog / "store" / "CURRENT" / "files.parquet").to_pydict()
    return dict(zip(table["uri"], table["status"], strict=True))


@pytest.fixture(scope="module")
def ignore_ingest(tmp_path_factory: pytest.TempPathFactory):
    repo = make_repo(tmp_path_factory.mktemp("repo"), REPO_FILES)
    catalog = tmp_path_factory.mktemp("catalog")
    result = bootstrap.ingest(repo, catalog)
    return repo, catalog, result


def test_gitignore_rules_decide_and_files_records_why(ignore_ingest) -> None:
    _, catalog, _ = ignore_ingest
    statuses = files_table(catalog)
    # A directory named build is source code unless something ignores it.
    assert statuses["pkg/operations/build/metadata.py"] == "chunked"
    assert statuses["pkg/operations/build/wheel.py"] == "chunked"
    # Nested .gitignore, relative to its directory, with a negation.
    assert statuses["pkg/secret_key.py"] == "skipped: .gitignore (secret_*.py in pkg/.gitignore)"
    assert statuses["pkg/secret_ok.py"] == "chunked"
    # Root .gitignore: contents pattern with a negation.
    assert statuses["generated/one.py"] == "skipped: .gitignore (generated/* in .gitignore)"
    assert statuses["generated/keep.py"] == "chunked"
    # A directory pattern: the directory is one row, its contents are not listed (as git does).
    assert statuses["out/"] == "skipped: .gitignore (out/ in .gitignore)"
    assert not [uri for uri in statuses if uri.startswith("out/") and uri != "out/"]
    # .git/info/exclude, and the default ingest_exclude keeping .git out.
    assert statuses["local_only.py"] == "skipped: .gitignore (local_only.py in .git/info/exclude)"
    assert statuses[".git/"] == "skipped: ingest_exclude (.git/)"
    assert statuses["main.py"] == statuses["notes/todo.py"] == "chunked"
    # Statuses that are not about ignoring are kept.
    assert statuses["pkg/__init__.py"] == "skipped: empty"
    assert statuses[".gitignore"] == "skipped: no known language"


def test_ignored_files_are_not_in_the_store(ignore_ingest) -> None:
    _, catalog, _ = ignore_ingest
    uris = set(store_schema.read_live_chunks(catalog / "store" / "CURRENT", ["uri"])["uri"].to_pylist())
    assert uris == {"pkg/operations/build/metadata.py", "pkg/operations/build/wheel.py", "pkg/secret_ok.py",
                    "generated/keep.py", "notes/todo.py", "main.py"}


def test_ingest_exclude_setting_is_honoured(ignore_ingest, tmp_path: Path) -> None:
    repo, _, _ = ignore_ingest
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "settings.json").write_text(json.dumps({"ingest_exclude": [".git/", "notes/", "build/"]}))
    bootstrap.ingest(repo, catalog)
    statuses = files_table(catalog)
    assert statuses["notes/"] == "skipped: ingest_exclude (notes/)"
    assert statuses["pkg/operations/build/"] == "skipped: ingest_exclude (build/)"
    assert "pkg/operations/build/wheel.py" not in statuses
    assert statuses["main.py"] == "chunked"


def test_an_empty_ingest_exclude_excludes_nothing_of_its_own(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"node_modules/dep/index.js": "module.exports = 1;\n", "a.py": CODE})
    bootstrap.ingest(repo, tmp_path / "catalog", settings={"ingest_exclude": []})
    statuses = files_table(tmp_path / "catalog")
    assert statuses == {"node_modules/dep/index.js": "chunked", "a.py": "chunked"}


@pytest.mark.parametrize("value", ["node_modules/", [".git/", 3], {"a": 1}, None])
def test_bad_ingest_exclude_is_refused_naming_the_setting(tmp_path: Path, value) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": CODE})
    with pytest.raises(SettingError, match="--set: setting ingest_exclude must be a list of strings"):
        bootstrap.ingest(repo, tmp_path / "catalog", settings={"ingest_exclude": value})
    assert not (tmp_path / "catalog").exists(), "refused before anything is made"


def test_an_ingest_exclude_that_is_no_gitwildmatch_is_refused_naming_the_setting(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": CODE})
    with pytest.raises(errors.CatalogError, match="setting ingest_exclude holds a pattern that is not gitwildmatch"):
        bootstrap.ingest(repo, tmp_path / "catalog", settings={"ingest_exclude": ["a/**/b/***x\\"]})
    assert not (tmp_path / "catalog").exists()


def test_include_globs_limit_the_walk_but_ancestor_gitignores_apply(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        ".gitignore": "*_pb2.py\n", "src/app.py": CODE, "src/app_pb2.py": CODE, "other/x.py": CODE,
    })
    decision = ignore.decide(repo, [], ["src/**"])
    assert decision.ignored == {"src/app_pb2.py": "skipped: .gitignore (*_pb2.py in .gitignore)"}
    assert decision.files_seen == 3  # .gitignore at the root, and src/; other/ is not walked
    assert ignore.include_prefixes(["src/**/*.py", "**", "a/b/c.py", "a/*/c/**"]) == ["src/", "", "a/b/", "a/"]


def test_deeper_gitignore_overrides_shallower_and_ignored_parents_stay_ignored(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        ".gitignore": "*.gen.py\nlogs/\n",
        "a/.gitignore": "!keep.gen.py\n",
        "a/keep.gen.py": CODE, "a/drop.gen.py": CODE,
        # git cannot re-include a file whose directory is ignored; neither does ingest.
        "logs/.gitignore": "!*\n", "logs/run.py": CODE,
    })
    decision = ignore.decide(repo, [])
    assert "a/keep.gen.py" not in decision.ignored
    assert decision.ignored["a/drop.gen.py"] == "skipped: .gitignore (*.gen.py in .gitignore)"
    assert decision.ignored["logs/"] == "skipped: .gitignore (logs/ in .gitignore)"
    assert "logs/run.py" not in decision.ignored


def test_ingest_logs_progress_when_not_on_a_terminal(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.0)
    repo = make_repo(tmp_path / "repo", {f"m{i}.py": CODE for i in range(5)})
    with caplog.at_level(logging.INFO, logger="codeintel"):
        bootstrap.ingest(repo, tmp_path / "catalog")
    lines = [record.getMessage() for record in caplog.records if record.name == "codeintel.progress"]
    assert any("5 files chunked" in line and "5 chunks made" in line for line in lines), lines
    assert any("5/5 chunks embedded" in line for line in lines), lines
    # Interval 0: every statement of the ingest scripts counts as slow and is logged.
    assert any(line.startswith("write_chunk_store.sql: statement 1 of ") for line in lines), lines


def test_progress_bar_on_a_terminal_counts_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.tracking(files_listed=3, bar=True) as tracker:
        progress.advance(progress.FILES_CHUNKED, 3)
        progress.advance(progress.CHUNKS_MADE, 7)
        progress.advance(progress.CHUNKS_EMBEDDED, 7)
        assert tracker.summary().startswith("3 files listed, 3 files chunked, 7 chunks made, 7/7 chunks embedded")
    assert "embedding" in capsys.readouterr().err
    progress.advance(progress.CHUNKS_MADE, 1)  # no tracker open: nothing happens


def test_duckdb_progress_bar_is_off_while_the_ingest_bar_draws(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # apply_settings would turn DuckDB's bar on
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the tracker draws a tqdm bar
    seen = []
    run_script = sqlfiles.run_script

    def recording(connection, script, parameters=None):  # noqa: ANN001, ANN202
        seen.append(connection.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0])
        return run_script(connection, script, parameters)

    monkeypatch.setattr(store, "run_script", recording)
    bootstrap.ingest(make_repo(tmp_path / "repo", {"m.py": CODE}), tmp_path / "catalog")
    assert seen and not any(seen), seen
